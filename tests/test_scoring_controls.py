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
    assert abs(null.mean) < 0.05 and null.std > 0
    assert null.z == pytest.approx((null.r - null.mean) / null.std) and null.z > 5
    # no draw of 2000 reaches r: p is the smallest possible, 1 / 2001
    assert null.p_value == pytest.approx(1 / 2001) and null.n == 2000


def _every_draw(trues, preds):
    """r under every (pairing of equal-length windows, rotation of each prediction window), each equally likely
    under the null: the brute-force distribution the sampled null estimates."""
    a = np.concatenate(trues)
    groups: dict[int, list[int]] = {}
    for i, t in enumerate(trues):
        groups.setdefault(len(t), []).append(i)
    per_group = []
    for length, idx in groups.items():
        options = []
        for perm in itertools.permutations(idx):
            for shifts in itertools.product(range(length), repeat=len(idx)):
                options.append({i: np.roll(preds[j], s) for i, j, s in zip(idx, perm, shifts)})
        per_group.append(options)
    values = []
    for combo in itertools.product(*per_group):
        assigned = {k: v for part in combo for k, v in part.items()}
        values.append(pearson(a, np.concatenate([assigned[i] for i in range(len(trues))])).value)
    return np.array(values)


def test_permutation_null_matches_the_exact_distribution_on_a_tiny_case():
    # two windows of length 3: 2 pairings x 3 x 3 rotations = 18 equally likely draws. The sampled null's mean
    # and std approach the brute-force ones, every draw is one of the 18 values, and the exact mean is the
    # closed form: the expected cross term is n * mean(a) * mean(p), so the expected r is exactly 0
    trues = [[0.0, 2.0, 0.0], [1.0, 0.0, 0.0]]
    preds = [[0.0, 9.0, 1.0], [6.0, 0.0, 2.0]]
    exact = _every_draw(trues, preds)
    assert len(exact) == 18 and np.mean(exact) == pytest.approx(0.0, abs=1e-12)
    n = 20000
    null = permutation_null(trues, preds, n, seed=3)
    standard_error = np.std(exact) / np.sqrt(n)
    assert abs(null.mean - np.mean(exact)) < 4 * standard_error
    assert null.std == pytest.approx(np.std(exact), rel=0.02)
    r = pearson(np.concatenate(trues), np.concatenate(preds)).value
    assert null.r == pytest.approx(r)
    # p is (1 + draws at or above r) / (1 + n); the share of draws at or above r approaches the exact share
    share_at_or_above = np.mean(exact >= r - 1e-12)
    assert null.p_value == pytest.approx((1 + share_at_or_above * n) / (1 + n), abs=0.01)


def test_permutation_null_mean_matches_every_draw_with_windows_of_two_lengths():
    # 3 windows of length 4 and one of length 3 (no partner: it is only rotated): 3! x 4^3 x 3 = 1152 draws.
    # With two lengths the expectation is no longer exactly 0; the sampled null still matches brute force
    rng = np.random.default_rng(1)
    trues = [rng.uniform(0, 1, 4) * (rng.random(4) < 0.5) for _ in range(3)] + [np.array([0.0, 1.0, 0.0])]
    preds = [rng.uniform(0, 10, 4) for _ in range(3)] + [np.array([0.0, 7.0, 1.0])]
    exact = _every_draw(trues, preds)
    assert len(exact) == 6 * 4**3 * 3
    null = permutation_null(trues, preds, 20000, seed=0)
    assert null.mean == pytest.approx(np.mean(exact), abs=4 * np.std(exact) / np.sqrt(20000))
    assert null.std == pytest.approx(np.std(exact), rel=0.03)


def test_a_perfect_explanation_of_peak_aligned_windows_has_a_null_near_zero():
    # windows cut around the peak: every window fires at position 5 and the prediction is right. Pairing
    # windows alone left the alignment in place (null mean = r); the rotation takes it away
    trues = [np.eye(8)[5] * (1 + i) for i in range(10)]
    preds = [np.eye(8)[5] * (1 + i) for i in range(10)]
    null = permutation_null(trues, preds, 2000, seed=0)
    assert null.r == pytest.approx(1.0, abs=1e-9)
    assert abs(null.mean) < 0.02 and null.z > 5 and null.p_value == pytest.approx(1 / 2001)


def test_permutation_null_is_seeded_by_seed_and_feature():
    trues, preds = _real_explanation(seed=2)
    first = permutation_null(trues, preds, 300, seed=7, feature=12)
    assert permutation_null(trues, preds, 300, seed=7, feature=12) == first
    assert permutation_null(trues, preds, 300, seed=7, feature=13).mean != first.mean
    assert permutation_null(trues, preds, 300, seed=8, feature=12).mean != first.mean


def test_one_token_windows_are_only_paired():
    # a one-token window cannot be rotated; pairing alone still moves the odd prediction around
    null = permutation_null([[1.0], [0.0], [2.0]], [[9.0], [9.0], [3.0]], 3000, seed=0)
    assert null.std > 0 and null.mean == pytest.approx(0.0, abs=0.05)  # 3! pairings, exact mean 0


def test_permutation_null_undefined_cases():
    assert permutation_null([[0, 0], [0, 0]], [[1, 2], [3, 4]], 10, 0).reason == "constant truth"
    assert permutation_null([[0, 1], [1, 0]], [[2, 2], [2, 2]], 10, 0).reason == "constant prediction"
    assert permutation_null([[1]], [[3]], 10, 0) == PermutationNull.undefined("fewer than 2 tokens (1)")
    # no two windows share a length: each is only rotated, and that is a null
    lone = permutation_null([[0, 1], [1, 0, 0]], [[0, 3], [3, 0, 1]], 10, 0)
    assert lone.n == 10 and lone.mean is not None
    with pytest.raises(ValueError, match="n_permutations"):
        permutation_null([[0, 1]], [[0, 1]], 0, 0)
    with pytest.raises(ValueError, match="window 1"):
        permutation_null([[0, 1], [1, 0]], [[0, 1], [1]], 5, 0)
