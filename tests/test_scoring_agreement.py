"""Tests for autointerp/scoring/agreement.py: hand-worked values, and OpenAI's own code where it exists."""

import math

import numpy as np
import pytest

from autointerp.scoring import abs_dev_explained, abs_dev_explained_centred, pearson, r2_centred, spearman


def test_pearson_perfect_and_anti():
    a = [0.0, 1.0, 2.0, 3.0]
    assert pearson(a, [0, 2, 4, 6]).value == pytest.approx(1.0)
    assert pearson(a, [6, 4, 2, 0]).value == pytest.approx(-1.0)


def test_pearson_hand_value():
    # a=[1,2,3], p=[1,3,2]: dx=[-1,0,1], dy=[-1,1,0]; sum dx*dy = 1; sum dx^2 = sum dy^2 = 2 -> r = 1/2
    assert pearson([1, 2, 3], [1, 3, 2]).value == pytest.approx(0.5)


def test_pearson_undefined_cases():
    m = pearson([0, 1, 2], [3, 3, 3])
    assert m.value is None and m.reason == "constant prediction"
    m = pearson([0, 0, 0], [1, 2, 3])
    assert m.value is None and m.reason == "constant truth"
    m = pearson([1.0], [1.0])
    assert m.value is None and "fewer than 2" in m.reason
    # a constant whose mean is not exactly representable must still be "constant", not a tiny-variance r
    assert pearson([0.1] * 7, [0, 1, 2, 3, 4, 5, 6]).reason == "constant truth"


def test_pearson_length_mismatch_raises():
    with pytest.raises(ValueError, match="length 3.*length 2"):
        pearson([1, 2, 3], [1, 2])


def test_spearman_with_ties():
    # ranks a=[1,2,2,3] -> [1,2.5,2.5,4]; ranks p=[1,3,2,4] -> [1,3,2,4]; both mean 2.5
    # dx=[-1.5,0,0,1.5], dy=[-1.5,.5,-.5,1.5]; sum dx*dy = 4.5; sum dx^2 = 4.5; sum dy^2 = 5
    # rho = 4.5 / sqrt(4.5*5) = sqrt(0.9)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]).value == pytest.approx(math.sqrt(0.9))
    # monotone but non-linear: rho 1 where r < 1
    assert spearman([1, 2, 3, 4], [1, 4, 9, 100]).value == pytest.approx(1.0)
    assert spearman([1, 2, 3], [0, 0, 0]).reason == "constant prediction"


def test_r2_hand_values():
    # a_q=[0,2,4], p=[1,2,3]; mean a_q = 2; SST = 4+0+4 = 8, SSE = 1+0+1 = 2 -> r2 = 1 - 2/8 = 0.75
    assert r2_centred([0, 2, 4], [1, 2, 3]).value == pytest.approx(0.75)
    assert r2_centred([0, 2, 4], [2, 2, 2]).value == pytest.approx(0.0)  # the mean everywhere
    assert r2_centred([3, 3], [1, 2]).reason == "constant truth"
    assert r2_centred([], []).reason == "no tokens"


def test_abs_dev_explained_is_openais_uncentred_version():
    # a_q=[0,2,4], p=[1,2,3]: mean|a_q-p| = 2/3, mean|a_q| = 2 -> 1 - (2/3)/2 = 2/3
    assert abs_dev_explained([0, 2, 4], [1, 2, 3]).value == pytest.approx(2 / 3)
    # centred: mean|a_q - 2| = 4/3 -> 1 - (2/3)/(4/3) = 1/2
    assert abs_dev_explained_centred([0, 2, 4], [1, 2, 3]).value == pytest.approx(0.5)
    # constant a_q is fine uncentred (mean|a_q| = 3): p=[1,2] -> errors 2,1 -> 1 - 1.5/3 = 0.5
    assert abs_dev_explained([3, 3], [1, 2]).value == pytest.approx(0.5)
    assert abs_dev_explained_centred([3, 3], [1, 2]).reason == "constant truth"
    assert abs_dev_explained([0, 0], [1, 2]).reason == "all-zero truth"
    assert abs_dev_explained([], []).reason == "no tokens"


def test_always_zero_prediction_on_a_sparse_feature_explains_nothing():
    # 95 quiet tokens, 5 at level 8; predicting 0 everywhere
    a_q = np.r_[np.zeros(95), np.full(5, 8.0)]
    p = np.zeros(100)
    assert abs_dev_explained(a_q, p).value == 0.0
    # centred: error mean 0.4; mean|a_q - 0.4| = 0.95*0.4 + 0.05*7.6 = 0.76 -> 1 - 0.4/0.76 = 9/19 ~ 0.47
    assert abs_dev_explained_centred(a_q, p).value == pytest.approx(9 / 19)


def test_abs_dev_explained_matches_neuron_explainer(monkeypatch):
    # neuron-explainer's api_client asserts an API key at import; it makes no call here.
    monkeypatch.setenv("OPENAI_API_KEY", "unused-by-this-test")
    openai_scoring = pytest.importorskip("neuron_explainer.explanations.scoring")
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(50):
        n = int(rng.integers(5, 200))
        a_q = rng.integers(0, 11, size=n) * (rng.random(n) < 0.2)
        a_q[0] = max(a_q[0], 1)  # OpenAI's divides by mean|a_q|: keep it nonzero
        p = rng.uniform(0, 10, size=n) * (rng.random(n) < 0.5)
        ours = abs_dev_explained(a_q, p).value
        theirs = openai_scoring.absolute_dev_explained_score_from_sequences(a_q.tolist(), p.tolist())
        worst = max(worst, abs(ours - theirs))
        assert openai_scoring.correlation_score(a_q, p) == pytest.approx(pearson(a_q, p).value, abs=1e-12)
    assert worst < 1e-12
    # OpenAI's gives exactly 0 to an always-zero prediction, as ours does
    assert openai_scoring.absolute_dev_explained_score_from_sequences([0, 0, 3, 10], [0, 0, 0, 0]) == 0.0
