"""Tests for autointerp/scoring.py on hand-made arrays; the arithmetic is written next to each answer."""

import json
import math

import numpy as np
import pytest

from autointerp.scoring import (
    COLUMNS,
    FeatureScores,
    Metric,
    abs_dev_explained,
    auroc,
    balanced_accuracy,
    binarity,
    bootstrap_paired_diff,
    calibration_fit,
    ece,
    lift,
    pearson,
    prediction_histogram,
    quantise,
    r2_centred,
    rank_average,
    reliability_table,
    score_feature,
    spearman,
    summarise,
    to_level,
)

# --------------------------------------------------------------------------------------------- quantise


def test_quantise_floor_and_ceil():
    # max 2: 10*a/max = [0, 0.95, 1, 5, 9.95, 10, 15, -> negative counts as 0]
    acts = [0.0, 0.19, 0.2, 1.0, 1.99, 2.0, 3.0, -1.0]
    assert quantise(acts, 2.0, "floor").tolist() == [0, 0, 1, 5, 9, 10, 10, 0]
    assert quantise(acts, 2.0, "ceil").tolist() == [0, 1, 1, 5, 10, 10, 10, 0]
    assert quantise(acts, 2.0).dtype.kind == "i"


def test_quantise_a_equal_to_max_is_10():
    for m in (0.1, 0.3, 1.0, 7.77, 1e-6, 123456.789):
        assert quantise([m], m, "floor").tolist() == [10]
        assert quantise([m], m, "ceil").tolist() == [10]


def test_quantise_nonpositive_max_gives_zeros():
    assert quantise([0.0, 1.0, 5.0], 0.0).tolist() == [0, 0, 0]
    assert quantise([0.0, 1.0, 5.0], -1.0, "ceil").tolist() == [0, 0, 0]


def test_quantise_exact_boundaries_not_float_accidents():
    # 0.3/1*10 = 3.0000000000000004 and 0.7*10 = 7.000000000000001 in float64; both are levels 3 and 7.
    assert quantise([0.3, 0.7], 1.0, "ceil").tolist() == [3, 7]
    assert quantise([0.3, 0.7], 1.0, "floor").tolist() == [3, 7]


def test_quantise_keeps_shape_and_rejects_bad_input():
    assert quantise(np.ones((2, 3)), 1.0).shape == (2, 3)
    with pytest.raises(ValueError, match="rule"):
        quantise([1.0], 1.0, "round")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        quantise([float("nan")], 1.0)


def test_to_level_rounds_halves_up_and_clips():
    assert to_level([0.49, 0.5, 2.5, 9.5, 10.0, 12.0, -1.0]).tolist() == [0, 1, 3, 10, 10, 10, 0]


# --------------------------------------------------------------------------------------------- Metric


def test_metric_is_value_xor_reason():
    assert Metric.ok(1).value == 1.0 and Metric.ok(1).defined
    assert not Metric.undefined("x").defined
    with pytest.raises(ValueError):
        Metric(None, None)
    with pytest.raises(ValueError):
        Metric(1.0, "both")


# --------------------------------------------------------------------------------------------- agreement


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


def test_rank_average_ties():
    assert rank_average([5, 1, 5]).tolist() == [2.5, 1.0, 2.5]
    # [3,1,3,3,0]: sorted 0(r1) 1(r2) 3,3,3 (r3,4,5 -> 4)
    assert rank_average([3, 1, 3, 3, 0]).tolist() == [4.0, 2.0, 4.0, 4.0, 1.0]


def test_spearman_with_ties():
    # ranks a=[1,2,2,3] -> [1,2.5,2.5,4]; ranks p=[1,3,2,4] -> [1,3,2,4]; both mean 2.5
    # dx=[-1.5,0,0,1.5], dy=[-1.5,.5,-.5,1.5]; sum dx*dy = 4.5; sum dx^2 = 4.5; sum dy^2 = 5
    # rho = 4.5 / sqrt(4.5*5) = sqrt(0.9)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]).value == pytest.approx(math.sqrt(0.9))
    # monotone but non-linear: rho 1 where r < 1
    assert spearman([1, 2, 3, 4], [1, 4, 9, 100]).value == pytest.approx(1.0)
    assert spearman([1, 2, 3], [0, 0, 0]).reason == "constant prediction"


def test_r2_and_abs_dev_hand_values():
    # a_q=[0,2,4], p=[1,2,3]; mean a_q = 2
    # SST = 4+0+4 = 8, SSE = 1+0+1 = 2 -> r2 = 1 - 2/8 = 0.75
    # mean|a_q-p| = 2/3, mean|a_q-2| = 4/3 -> 1 - (2/3)/(4/3) = 0.5
    assert r2_centred([0, 2, 4], [1, 2, 3]).value == pytest.approx(0.75)
    assert abs_dev_explained([0, 2, 4], [1, 2, 3]).value == pytest.approx(0.5)
    # predicting the mean everywhere: r2 0, abs dev 0
    assert r2_centred([0, 2, 4], [2, 2, 2]).value == pytest.approx(0.0)
    assert abs_dev_explained([0, 2, 4], [2, 2, 2]).value == pytest.approx(0.0)
    assert r2_centred([3, 3], [1, 2]).reason == "constant truth"
    assert abs_dev_explained([3, 3], [1, 2]).reason == "constant truth"
    assert r2_centred([], []).reason == "no tokens"


# --------------------------------------------------------------------------------------------- calibration


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


# --------------------------------------------------------------------------------------------- detection


def test_auroc_with_ties():
    # positives score 3 and 1; negatives 1, 0, 2
    # pos 3 beats all 3 negatives -> 3; pos 1: tie with 1 (1/2), beats 0 (1), loses to 2 (0) -> 1.5
    # AUROC = 4.5 / (2*3) = 0.75
    assert auroc([1, 1, 0, 0, 0], [3, 1, 1, 0, 2]).value == pytest.approx(0.75)
    assert auroc([1, 0], [5, 5]).value == pytest.approx(0.5)  # all tied: chance
    assert auroc([1, 0, 0], [0, 1, 2]).value == pytest.approx(0.0)
    assert auroc([1, 1], [0, 1]).reason == "no negative windows"
    assert auroc([0, 0], [0, 1]).reason == "no positive windows"


def test_auroc_matches_pairwise_count_on_random_ties():
    rng = np.random.default_rng(3)
    for _ in range(20):
        labels = rng.random(30) < 0.4
        scores = rng.integers(0, 4, size=30).astype(float)  # many ties
        pos, neg = scores[labels], scores[~labels]
        wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
        assert auroc(labels, scores).value == pytest.approx(wins / (pos.size * neg.size))


def test_balanced_accuracy_hand_value():
    # threshold 0.5: predicted positive = [5>=.5, .4, .5>=.5, 0, .6>=.5] = [T, F, T, F, T]
    # TPR = 2/3 (positives 5, .4, .5), TNR = 1/2 (negatives 0, .6) -> (2/3 + 1/2) / 2 = 7/12
    labels = [1, 1, 1, 0, 0]
    scores = [5, 0.4, 0.5, 0, 0.6]
    assert balanced_accuracy(labels, scores).value == pytest.approx(7 / 12)
    # threshold 1: hits [T, F, F, F, F] -> TPR 1/3, TNR 1 -> 2/3
    assert balanced_accuracy(labels, scores, threshold=1.0).value == pytest.approx(2 / 3)
    assert balanced_accuracy([1, 1], [0, 1]).reason == "no negative windows"


# --------------------------------------------------------------------------------------------- score_feature


def _windows():
    trues = [[0, 2, 4], [1, 0, 3], [4, 0], [0, 0, 0], [0, 0]]
    preds = [[0, 5, 10], [2, 0, 8], [9, 1], [0, 0, 1], [0, 0]]
    groups = ["top", "interval", "interval", "random", "nonactivating"]
    intervals = [None, 1, 2, None, None]
    return trues, preds, groups, intervals


def test_score_feature_groups_and_detection():
    trues, preds, groups, intervals = _windows()
    s = score_feature(trues, preds, groups, intervals, max_activation=4.0)
    assert s.n_windows == 5 and s.n_tokens == 13
    assert list(s.group_correlations) == ["top", "interval", "interval_1", "interval_2", "random"]
    assert s.group_correlations["top"] == pytest.approx(1.0)  # p = 2.5 * a exactly
    # random windows are all zeros: constant truth, undefined with a reason
    assert s.group_correlations["random"] is None
    assert s.undefined["correlation_random"] == "constant truth"
    assert "nonactivating" not in s.group_correlations
    # windows fired: [T, T, T, F, F]; window scores max p = [10, 8, 9, 1, 0]
    assert s.n_positive_windows == 3 and s.n_negative_windows == 2
    assert s.auroc == pytest.approx(1.0)  # every positive outranks every negative
    # threshold 0.5: predicted [T, T, T, T, F] -> TPR 1, TNR 1/2 -> 0.75
    assert s.balanced_accuracy == pytest.approx(0.75)
    assert sum(s.details["histogram"]) == 13
    # pooled correlation is over tokens, cross-checked against numpy
    a = np.concatenate([np.array(t, float) for t in trues])
    p = np.concatenate([np.array(q, float) for q in preds])
    assert s.correlation == pytest.approx(np.corrcoef(a, p)[0, 1])
    a_q = quantise(a, 4.0)
    assert s.correlation_quantised == pytest.approx(np.corrcoef(a_q, p)[0, 1])


def test_score_feature_perfect_prediction():
    rng = np.random.default_rng(1)
    trues = [rng.uniform(0, 3, size=8) * (rng.random(8) < 0.5) for _ in range(6)] + [np.zeros(8)]
    max_act = float(max(t.max() for t in trues))
    preds = [quantise(t, max_act).astype(float) for t in trues]
    s = score_feature(trues, preds, ["top"] * 3 + ["random"] * 3 + ["nonactivating"], [None] * 7, max_act)
    assert s.correlation_quantised == pytest.approx(1.0)
    assert s.r2_centred == pytest.approx(1.0) and s.abs_dev_explained == pytest.approx(1.0)
    assert s.slope == pytest.approx(1.0) and s.intercept == pytest.approx(0.0, abs=1e-12)
    assert s.ece == 0.0
    # no interval windows: the pooled interval correlation is undefined, not 0
    assert s.group_correlations["interval"] is None
    assert s.undefined["correlation_interval"] == "no windows in group"


def test_score_feature_constant_prediction_is_undefined_not_zero():
    trues, _, groups, intervals = _windows()
    preds = [[0.0] * len(t) for t in trues]
    s = score_feature(trues, preds, groups, intervals, max_activation=4.0)
    assert s.correlation is None and s.undefined["correlation"] == "constant prediction"
    assert s.spearman is None and s.slope is None and s.intercept is None
    assert s.auroc == pytest.approx(0.5)  # all window scores tie
    assert s.binarity == 1.0


def test_score_feature_length_mismatch_names_window():
    trues, preds, groups, intervals = _windows()
    preds[1] = [2, 0]
    with pytest.raises(ValueError, match=r"window 1: found 3 true activations and 2 predictions"):
        score_feature(trues, preds, groups, intervals, max_activation=4.0)
    with pytest.raises(ValueError, match="groups"):
        score_feature(trues, preds[:-1], groups, intervals, max_activation=4.0)


def test_score_feature_rejects_off_scale_predictions_and_bad_groups():
    trues, preds, groups, intervals = _windows()
    preds[0] = [0, 5, 11]
    with pytest.raises(ValueError, match="window 0.*0..10"):
        score_feature(trues, preds, groups, intervals, max_activation=4.0)
    trues, preds, groups, intervals = _windows()
    intervals[1] = None
    with pytest.raises(ValueError, match="window 1.*interval"):
        score_feature(trues, preds, groups, intervals, max_activation=4.0)


def test_feature_scores_columns_and_json():
    trues, preds, groups, intervals = _windows()
    s = score_feature(trues, preds, groups, intervals, max_activation=4.0, rule="ceil")
    cols = s.to_columns()
    assert all(isinstance(v, (int, float, str)) or v is None for v in cols.values())
    assert cols["quantise_rule"] == "ceil" and cols["correlation_random"] is None
    assert "correlation_interval_1" not in cols  # fixed column set; per-interval ones are in the JSON
    data = json.loads(s.to_json())
    assert data["group_correlations"]["interval_2"] == s.group_correlations["interval_2"]
    assert FeatureScores.model_validate_json(s.to_json()) == s
    # same columns for a feature with different intervals
    s2 = score_feature([[1, 0]], [[3, 0]], ["interval"], [7], max_activation=1.0)
    assert list(s2.to_columns()) == list(cols) == list(COLUMNS)


# --------------------------------------------------------------------------------------------- summaries


def test_lift():
    assert lift(0.6, 0.2) == pytest.approx(0.4)
    assert lift(None, 0.2) is None and lift(0.6, None) is None


def test_summarise():
    # defined values 1,2,3,4: mean 2.5; linear quantiles at positions 0.75, 1.5, 2.25 -> 1.75, 2.5, 3.25
    assert summarise([1, None, 2, 3, 4]) == {"n": 4, "mean": 2.5, "median": 2.5, "q25": 1.75, "q75": 3.25}
    assert summarise([None, None]) == {"n": 0, "mean": None, "median": None, "q25": None, "q75": None}


def test_bootstrap_paired_diff_contains_truth_and_is_deterministic():
    rng = np.random.default_rng(123)
    b = rng.uniform(0, 1, size=300)
    a = b + 0.1 + rng.normal(0, 0.05, size=300)  # true mean difference 0.1
    mean_diff, lo, hi = bootstrap_paired_diff(a.tolist(), b.tolist(), seed=0)
    assert lo < 0.1 < hi
    assert lo < mean_diff < hi and hi - lo < 0.03  # se ~ 0.05/sqrt(300) ~ 0.003
    assert bootstrap_paired_diff(a.tolist(), b.tolist(), seed=0) == (mean_diff, lo, hi)
    assert bootstrap_paired_diff(a.tolist(), b.tolist(), seed=1) != (mean_diff, lo, hi)


def test_bootstrap_paired_diff_edges():
    # constant difference 1: every resampled mean is 1
    assert bootstrap_paired_diff([2, 3, None], [1, 2, 5]) == pytest.approx((1.0, 1.0, 1.0))
    assert bootstrap_paired_diff([None], [1.0]) == (None, None, None)
    with pytest.raises(ValueError, match="paired"):
        bootstrap_paired_diff([1, 2], [1])
