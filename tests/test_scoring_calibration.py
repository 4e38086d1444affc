"""Tests for autointerp/scoring/calibration.py on hand-made arrays."""

import numpy as np
import pytest

from autointerp.scoring import (
    binarity,
    calibration_fit,
    calibration_tokens,
    ece,
    prediction_histogram,
    quantise,
    reliability_table,
    score_feature,
)


def test_calibration_fit():
    slope, intercept = calibration_fit([0, 5, 10], [0, 5, 10])
    assert slope.value == pytest.approx(1.0) and intercept.value == pytest.approx(0.0)
    # a_q=[0,2,4], p=[1,2,3]: dp=[-1,0,1], da=[-2,0,2]; slope = 4/2 = 2; intercept = 2 - 2*2 = -2
    slope, intercept = calibration_fit([0, 2, 4], [1, 2, 3])
    assert slope.value == pytest.approx(2.0) and intercept.value == pytest.approx(-2.0)
    slope, intercept = calibration_fit([0, 2, 4], [5, 5, 5])
    assert slope.reason == intercept.reason == "constant prediction"
    slope, intercept = calibration_fit([3, 3, 3], [1, 2, 3])  # constant truth is a fine fit: slope 0
    assert slope.value == pytest.approx(0.0) and intercept.value == pytest.approx(3.0)


def test_reliability_table_ece_binarity_histogram():
    a_q = [0, 1, 3, 5, 5]
    p = [0.2, 0.4, 2.6, 2.5, 9.7]  # levels 0, 0, 3, 3, 10
    table = reliability_table(a_q, p)
    assert len(table) == 11
    # level 0: a_q 0,1 -> mean 0.5; level 3: a_q 3,5 -> mean 4; level 10: a_q 5
    assert table[0] == {"level": 0, "count": 2, "mean_true_q": 0.5}
    assert table[3] == {"level": 3, "count": 2, "mean_true_q": 4.0}
    assert table[10] == {"level": 10, "count": 1, "mean_true_q": 5.0}
    assert table[5] == {"level": 5, "count": 0, "mean_true_q": None}
    # ece = (2*|0.5-0| + 2*|4-3| + 1*|5-10|) / 5 = (1 + 2 + 5) / 5 = 1.6
    assert ece(a_q, p).value == pytest.approx(1.6)
    # levels 0,0,3,3,10 -> 3 of 5 are 0 or 10
    assert binarity(p).value == pytest.approx(0.6)
    assert prediction_histogram(p) == [2, 0, 0, 2, 0, 0, 0, 0, 0, 0, 1]
    assert ece([0, 5, 10], [0, 5, 10]).value == 0.0


def test_binarity_hand_value():
    assert binarity([0, 10, 10, 5]).value == pytest.approx(0.75)
    assert binarity([]).reason == "no tokens"


def test_calibration_tokens_firing_plus_evenly_spaced_quiet_ones():
    a = [0, 0, 3, 0, 0, 0, 2, 0, 0, 0]
    # firing 2, 6; quiet m=8 tokens [0,1,3,4,5,7,8,9], k=2: picks number floor(0.5*4)=2 -> 3, floor(1.5*4)=6 -> 8
    assert calibration_tokens(a).tolist() == [2, 3, 6, 8]
    # more firing than quiet: all quiet tokens are taken
    assert calibration_tokens([1, 0, 2, 3]).tolist() == [0, 1, 2, 3]
    assert calibration_tokens([0, 0, 0]).tolist() == []
    assert calibration_tokens([-1, 0.5]).tolist() == [0, 1]  # negative counts as not firing


def _sparse_feature():
    """10 firing windows of 32 tokens, window j firing on token j only at 0.2 (j + 1) (level j + 1 of 10
    under floor with max 2.0), then 10 non-activating windows: 10 firing tokens of 640."""
    trues = []
    for j in range(10):
        t = np.zeros(32)
        t[j] = 0.2 * (j + 1)
        trues.append(t)
    trues += [np.zeros(32) for _ in range(10)]
    return trues, ["top"] * 10 + ["nonactivating"] * 10, [None] * 20


def test_ece_means_something_on_a_sparse_feature():
    trues, groups, intervals = _sparse_feature()
    wrong = [np.zeros_like(t) for t in trues]  # a wrong explanation: predicts nothing anywhere
    s = score_feature(trues, wrong, groups, intervals, max_activation=2.0)
    a_q = quantise(np.concatenate(trues), 2.0)
    # over all 640 tokens, level 0 holds a_q 1..10 once each and 630 zeros: ECE = 55/640 ~ 0.09
    assert ece(a_q, np.zeros(640)).value == pytest.approx(55 / 640)
    # calibration set: 10 firing + 10 quiet tokens, all at level 0, mean a_q 55/20 -> ECE 2.75
    assert s.n_calibration_tokens == 20
    assert s.details["calibration_set"] == {"n_firing": 10, "n_nonfiring": 10}
    assert s.ece == pytest.approx(2.75)
    assert s.details["reliability"][0] == {"level": 0, "count": 20, "mean_true_q": 2.75}
    assert sum(s.details["histogram"]) == 20 and sum(s.details["histogram_all_tokens"]) == 640


def test_binarity_means_something_on_a_sparse_feature():
    trues, groups, intervals = _sparse_feature()
    graded = [quantise(t, 2.0).astype(float) for t in trues]  # perfect, graded 1..10 where it fires
    s = score_feature(trues, graded, groups, intervals, max_activation=2.0)
    # all tokens: 630 zeros and one 10 of 640 -> 631/640 ~ 0.99, as if it only answered 0 and 10
    assert binarity(np.concatenate(graded)).value == pytest.approx(631 / 640)
    # calibration set: 10 zeros, levels 1..10 -> (10 + 1) / 20
    assert s.binarity == pytest.approx(11 / 20)
    assert s.ece == 0.0 and s.slope == pytest.approx(1.0)


def test_calibration_undefined_when_nothing_fires():
    s = score_feature([[0, 0, 0], [0, 0]], [[1, 0, 0], [0, 2]], ["random", "nonactivating"], [None, None], 1.0)
    for name in ("ece", "binarity", "slope", "intercept"):
        assert getattr(s, name) is None and s.undefined[name] == "no firing tokens"
    assert s.n_calibration_tokens == 0
    assert all(row["count"] == 0 for row in s.details["reliability"])
