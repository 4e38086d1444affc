"""Tests for autointerp/scoring/controls.py: lift, and the permutation null checked against brute force."""

import itertools

import numpy as np
import pytest

from autointerp.scoring import Metric, PermutationNull, lift, lift_metric, pearson, permutation_null


def test_lift():
    assert lift(0.6, 0.2) == pytest.approx(0.4)
    assert lift(None, 0.2) is None and lift(0.6, None) is None
    # a constant prediction explains nothing: counted as 0
    assert lift(None, 0.2, undefined_as_zero=True) == pytest.approx(-0.2)
    assert lift(0.6, None, undefined_as_zero=True) == pytest.approx(0.6)


def test_lift_metric_keeps_the_reason():
    assert lift_metric(Metric.ok(0.6), Metric.ok(0.2)).value == pytest.approx(0.4)
    m = lift_metric(Metric.undefined("constant prediction"), Metric.ok(0.2))
    assert m.value is None and m.reason == "score undefined: constant prediction"
    m = lift_metric(Metric.ok(0.6), Metric.undefined("constant truth"))
    assert m.reason == "control undefined: constant truth"
    m = lift_metric(Metric.undefined("constant prediction"), Metric.ok(0.2), undefined_as_zero=True)
    assert m.value == pytest.approx(-0.2)


def _real_explanation(n_windows=12, width=8, seed=0):
    """Each window fires on its own random token; the prediction puts 8 there and noise elsewhere."""
    rng = np.random.default_rng(seed)
    trues, preds = [], []
    for _ in range(n_windows):
        t, p = np.zeros(width), rng.uniform(0, 2, size=width)
        k = int(rng.integers(width))
        t[k], p[k] = rng.uniform(1, 3), 8.0
        trues.append(t)
        preds.append(p)
    return trues, preds


def test_permutation_null_of_a_real_explanation_is_far_below_it():
    trues, preds = _real_explanation()
    null = permutation_null(trues, preds, 2000, seed=0, feature=4)
    assert null.r == pytest.approx(pearson(np.concatenate(trues), np.concatenate(preds)).value)
    assert abs(null.mean) < 0.15 and null.std > 0
    assert null.z == pytest.approx((null.r - null.mean) / null.std) and null.z > 5
    # no draw of 2000 reaches r: p is the smallest possible, 1 / 2001
    assert null.p_value == pytest.approx(1 / 2001) and null.n == 2000


def test_permutation_null_is_exact_on_two_windows():
    # two windows of equal length: every draw is the identity (r_id) or the swap (r_sw). With f the share
    # of identities, mean = f r_id + (1 - f) r_sw and std = |r_id - r_sw| sqrt(f (1 - f)), p = (1 + f n)/(1 + n)
    trues = [[0.0, 2.0, 0.0], [1.0, 0.0, 0.0]]
    preds = [[0.0, 9.0, 1.0], [6.0, 0.0, 2.0]]
    a = np.concatenate(trues)
    r_id = pearson(a, np.concatenate(preds)).value
    r_sw = pearson(a, np.concatenate(preds[::-1])).value
    n = 1001
    null = permutation_null(trues, preds, n, seed=3)
    f = (null.mean - r_sw) / (r_id - r_sw)
    assert 0.4 < f < 0.6 and round(f * n) == pytest.approx(f * n, abs=1e-6)
    assert null.std == pytest.approx(abs(r_id - r_sw) * np.sqrt(f * (1 - f)), abs=1e-12)
    assert null.p_value == pytest.approx((1 + round(f * n)) / (1 + n))


def test_permutation_null_mean_matches_every_permutation():
    # 4 windows of length 5 and one of length 3 (which keeps its partner): the mean over many draws
    # approaches the mean of r over all 4! permutations of the equal-length windows
    rng = np.random.default_rng(1)
    trues = [rng.uniform(0, 1, 5) * (rng.random(5) < 0.5) for _ in range(4)] + [np.array([0.0, 1.0, 0.0])]
    preds = [rng.uniform(0, 10, 5) for _ in range(4)] + [np.array([0.0, 7.0, 1.0])]
    a = np.concatenate(trues)
    exact = [
        pearson(a, np.concatenate([preds[i] for i in perm] + [preds[4]])).value
        for perm in itertools.permutations(range(4))
    ]
    null = permutation_null(trues, preds, 20000, seed=0)
    assert null.mean == pytest.approx(np.mean(exact), abs=0.01)
    assert null.std == pytest.approx(np.std(exact), abs=0.01)


def test_permutation_null_is_seeded_by_seed_and_feature():
    trues, preds = _real_explanation(seed=2)
    first = permutation_null(trues, preds, 300, seed=7, feature=12)
    assert permutation_null(trues, preds, 300, seed=7, feature=12) == first
    assert permutation_null(trues, preds, 300, seed=7, feature=13).mean != first.mean
    assert permutation_null(trues, preds, 300, seed=8, feature=12).mean != first.mean


def test_permutation_null_sees_through_a_position_only_prediction():
    # the feature fires on the first token of every window and the prediction says "the first token":
    # shuffling windows changes nothing, so the score is no evidence about what the feature means
    trues = [[1.0 + i, 0, 0, 0] for i in range(6)]
    preds = [[9.0, 1, 0, 0] for _ in range(6)]
    null = permutation_null(trues, preds, 200, seed=0)
    assert null.r == pytest.approx(null.mean) and null.std == 0.0
    assert null.p_value == 1.0 and null.z is None and null.reason == "null has no spread"


def test_permutation_null_undefined_cases():
    assert permutation_null([[0, 0], [0, 0]], [[1, 2], [3, 4]], 10, 0).reason == "constant truth"
    assert permutation_null([[0, 1], [1, 0]], [[2, 2], [2, 2]], 10, 0).reason == "constant prediction"
    und = permutation_null([[0, 1], [1, 0, 0]], [[0, 3], [3, 0, 1]], 10, 0)
    assert und == PermutationNull.undefined("no two windows of equal length") and und.n == 0
    with pytest.raises(ValueError, match="n_permutations"):
        permutation_null([[0, 1]], [[0, 1]], 0, 0)
    with pytest.raises(ValueError, match="window 1"):
        permutation_null([[0, 1], [1, 0]], [[0, 1], [1]], 5, 0)
