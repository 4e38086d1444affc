"""The window bootstrap against a plain resampling loop, and its seeding."""

import numpy as np
import pytest

from autointerp.scoring import score_feature, window_bootstrap


def windows(seed=0, n=12, length=16, noise=1.0):
    rng = np.random.default_rng(seed)
    trues = [rng.random(length) * (rng.random(length) < 0.3) * 5 for _ in range(n)]
    preds = [np.clip(2 * t + noise * rng.random(length), 0, 10) for t in trues]
    return trues, preds


def loop_std(trues, preds, n_resamples, seed):
    """Resample windows with replacement, concatenate, np.corrcoef: the definition, one draw at a time."""
    rng = np.random.default_rng(seed)
    rs = []
    for _ in range(n_resamples):
        pick = rng.integers(0, len(trues), len(trues))
        a = np.concatenate([trues[i] for i in pick])
        p = np.concatenate([preds[i] for i in pick])
        if a.std() > 0 and p.std() > 0:
            rs.append(np.corrcoef(a, p)[0, 1])
    return float(np.std(rs, ddof=1))


def test_window_bootstrap_matches_a_plain_resampling_loop():
    trues, preds = windows(noise=4.0)
    got = window_bootstrap(trues, preds, n_resamples=4000, seed=1, feature=3)
    want = loop_std(trues, preds, 4000, seed=99)
    assert got.n == 4000 and got.reason is None
    assert got.std > 0.01
    assert got.std == pytest.approx(want, rel=0.1)  # two independent 4000-draw estimates of one std


def test_window_bootstrap_is_seeded_by_seed_and_feature():
    trues, preds = windows(noise=4.0)
    a = window_bootstrap(trues, preds, seed=0, feature=5)
    assert window_bootstrap(trues, preds, seed=0, feature=5) == a
    assert window_bootstrap(trues, preds, seed=0, feature=6) != a
    assert window_bootstrap(trues, preds, seed=1, feature=5) != a


def test_exact_predictions_have_no_spread_and_tiny_inputs_are_undefined():
    trues, _ = windows()
    exact = window_bootstrap(trues, [2 * t for t in trues], seed=0)
    assert exact.std == pytest.approx(0.0, abs=1e-9)
    one = window_bootstrap(trues[:1], trues[:1])
    assert one.std is None and one.reason == "fewer than 2 windows"
    constant = window_bootstrap(trues, [np.zeros_like(t) for t in trues])
    assert constant.std is None and constant.n == 0


def test_score_feature_stores_the_bootstrap_std_in_its_json():
    trues, preds = windows(noise=4.0)
    groups = ["random"] * len(trues)
    scores = score_feature(trues, preds, groups, [None] * len(trues), 5.0, seed=2, feature=7)
    assert scores.bootstrap_std == window_bootstrap(trues, preds, seed=2, feature=7).std
    assert scores.n_bootstrap == 200
    assert '"bootstrap_std"' in scores.to_json()
