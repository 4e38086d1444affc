"""Tests for autointerp/scoring/bins.py: scores per activation bin on hand-made windows."""

import numpy as np
import pytest

from autointerp.scoring import score_by_bin, window_bin


def test_window_bin():
    assert window_bin("top", None, True) == "top"
    assert window_bin("interval", 3, True) == "interval_3"
    assert window_bin("random", None, True) == "random_firing"
    assert window_bin("random", None, False) == "nonfiring"
    assert window_bin("nonactivating", None, False) == "nonfiring"
    assert window_bin("hard_negative", None, False) == "hard_negative"
    assert window_bin("top", None, False) == "nonfiring"  # binned by what it is, not how it was drawn


def test_score_by_bin_rows():
    trues = [[0, 4, 2], [1, 0, 3], [0, 2, 0], [0, 1, 0], [0, 0, 0], [0, 0]]
    preds = [[0, 9, 4], [2, 0, 8], [0, 3, 1], [0, 0, 0], [0, 6, 0], [0, 0]]
    groups = ["top", "top", "interval", "random", "random", "nonactivating"]
    intervals = [None, None, 0, None, None, None]
    rows = score_by_bin(trues, preds, groups, intervals, max_activation=4.0, threshold=5.0)
    assert [r["bin"] for r in rows] == ["top", "interval_0", "random_firing", "nonfiring"]
    top, interval, random_firing, nonfiring = rows
    # top: true maxima 4, 3 -> 10, 7.5 on 0..10 -> 8.75; predicted maxima 9, 8 -> 8.5; both >= 5
    assert (top["n_windows"], top["mean_true_max"], top["mean_pred_max"], top["detected"]) == (2, 8.75, 8.5, 1.0)
    # pooled over the two top windows' tokens
    expected_r = np.corrcoef([0, 4, 2, 1, 0, 3], [0, 9, 4, 2, 0, 8])[0, 1]
    assert top["correlation"] == pytest.approx(expected_r) and top["correlation_reason"] is None
    assert (interval["mean_true_max"], interval["mean_pred_max"], interval["detected"]) == (5.0, 3.0, 0.0)
    # a firing random window predicted all 0: correlation undefined, with its reason
    assert random_firing["correlation"] is None and random_firing["correlation_reason"] == "constant prediction"
    # non-firing: one of two windows predicted 6 >= 5 -> a false-positive rate of 1/2
    assert (nonfiring["n_windows"], nonfiring["mean_true_max"], nonfiring["detected"]) == (2, 0.0, 0.5)
    assert nonfiring["correlation_reason"] == "constant truth"


def test_score_by_bin_orders_intervals_strongest_first():
    trues = [[1.0], [2.0], [3.0]]
    rows = score_by_bin(trues, [[1.0], [1.0], [1.0]], ["interval"] * 3, [0, 2, 1], 3.0, 0.5)
    assert [r["bin"] for r in rows] == ["interval_2", "interval_1", "interval_0"]
    assert rows[0]["correlation_reason"] == "fewer than 2 tokens (1)"
    with pytest.raises(ValueError, match="window 0"):
        score_by_bin([[]], [[]], ["top"], [None], 1.0, 0.5)
