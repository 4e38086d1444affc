"""Tests for autointerp/scoring/feature.py: score_feature and FeatureScores on hand-made windows."""

import json

import numpy as np
import pytest

from autointerp.scoring import COLUMNS, FeatureScores, Metric, permutation_null, quantise, score_feature


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
    # 5 firing tokens + 5 of the 8 quiet ones
    assert s.n_calibration_tokens == 10 and sum(s.details["histogram"]) == 10
    assert sum(s.details["histogram_all_tokens"]) == 13
    # pooled correlation is over tokens, cross-checked against numpy
    a = np.concatenate([np.array(t, float) for t in trues])
    p = np.concatenate([np.array(q, float) for q in preds])
    assert s.correlation == pytest.approx(np.corrcoef(a, p)[0, 1])
    a_q = quantise(a, 4.0)
    assert s.correlation_quantised == pytest.approx(np.corrcoef(a_q, p)[0, 1])
    assert s.abs_dev_explained == pytest.approx(1 - np.mean(np.abs(a_q - p)) / np.mean(a_q))
    assert s.abs_dev_explained_centred == pytest.approx(
        1 - np.mean(np.abs(a_q - p)) / np.mean(np.abs(a_q - a_q.mean()))
    )


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
    s = score_feature(trues, preds, groups, intervals, max_activation=4.0, n_permutations=50)
    assert s.correlation is None and s.undefined["correlation"] == "constant prediction"
    assert s.spearman is None and s.slope is None and s.intercept is None
    assert s.auroc == pytest.approx(0.5)  # all window scores tie
    assert s.binarity == 1.0
    assert s.abs_dev_explained == 0.0  # OpenAI's: predicting nothing explains nothing
    assert s.permutation_z is None and s.undefined["permutation_z"] == "constant prediction"
    assert s.metric("correlation") == Metric.undefined("constant prediction")


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
    trues, preds, groups, intervals = _windows()
    groups[0] = "best"
    with pytest.raises(ValueError, match="window 0.*'best'"):
        score_feature(trues, preds, groups, intervals, max_activation=4.0)


def test_score_feature_takes_hard_negatives():
    trues, preds, groups, intervals = _windows()
    groups[4] = "hard_negative"
    s = score_feature(trues, preds, groups, intervals, max_activation=4.0)
    assert s.n_negative_windows == 2 and "hard_negative" not in s.group_correlations
    assert [row["bin"] for row in s.details["by_bin"]][-1] == "hard_negative"


def test_score_feature_by_bin_details():
    trues, preds, groups, intervals = _windows()
    s = score_feature(trues, preds, groups, intervals, max_activation=4.0, detection_threshold=8.5)
    rows = {row["bin"]: row for row in s.details["by_bin"]}
    assert list(rows) == ["top", "interval_2", "interval_1", "nonfiring"]
    # interval_1: true max 3 of 4 -> 7.5; predicted max 8 < 8.5: not detected
    assert (rows["interval_1"]["mean_true_max"], rows["interval_1"]["detected"]) == (7.5, 0.0)
    assert rows["interval_2"]["detected"] == 1.0 and rows["nonfiring"]["n_windows"] == 2
    assert FeatureScores.model_validate_json(s.to_json()).details["by_bin"] == s.details["by_bin"]


def test_score_feature_permutation_fields():
    rng = np.random.default_rng(0)
    trues, preds = [], []
    for _ in range(10):
        t, p = np.zeros(6), rng.uniform(0, 1, 6)
        k = int(rng.integers(6))
        t[k], p[k] = 2.0, 9.0
        trues.append(t)
        preds.append(p)
    args = (trues, preds, ["top"] * 10, [None] * 10, 2.0)
    s = score_feature(*args, n_permutations=500, seed=3, feature=11)
    null = permutation_null(trues, preds, 500, 3, feature=11)
    assert (s.permutation_mean, s.permutation_std, s.permutation_z, s.permutation_p) == (
        null.mean,
        null.std,
        null.z,
        null.p_value,
    )
    assert s.n_permutations == 500 and s.permutation_z > 3 and "permutation_z" not in s.undefined
    assert score_feature(*args, n_permutations=500, seed=3, feature=11) == s  # repeatable
    plain = score_feature(*args)  # the old call: no null, and it says so
    assert plain.n_permutations == 0 and plain.permutation_z is None
    assert plain.undefined["permutation_z"] == "not computed (n_permutations=0)"


def test_right_explanation_beats_wrong_one_and_the_null():
    # Feature A fires on one token (at a random position) in half the windows; the right explanation
    # predicts that token, another feature's explanation predicts other tokens.
    rng = np.random.default_rng(9)
    trues, pred_right, pred_wrong = [], [], []
    for i in range(20):
        t, right, wrong = np.zeros(12), np.zeros(12), np.zeros(12)
        k = int(rng.integers(12))
        if i < 10:
            t[k] = rng.uniform(1, 4)
            right[k] = 10.0 * t[k] / 4
        if i % 2:
            wrong[(k + 1 + int(rng.integers(11))) % 12] = 8.0  # never A's token
        trues.append(t)
        pred_right.append(right)
        pred_wrong.append(wrong)
    groups, intervals = ["top"] * 10 + ["nonactivating"] * 10, [None] * 20
    right = score_feature(trues, pred_right, groups, intervals, 4.0, n_permutations=1000, feature=1)
    wrong = score_feature(trues, pred_wrong, groups, intervals, 4.0, n_permutations=1000, feature=1)
    assert right.correlation == pytest.approx(1.0) and right.permutation_p < 0.01
    assert abs(right.permutation_mean) < 0.1  # the right predictions on the wrong windows score ~0
    assert wrong.correlation < 0 and wrong.permutation_p > 0.05


def test_permutation_null_is_not_fooled_by_peak_aligned_windows():
    # A feature that always fires on token 3, predicted at token 3. Windows are cut around the peak, so
    # pairing windows alone would keep the alignment and give a null near the real score; the null
    # also rotates each prediction window, so it sits near 0 and the real score stands far above it.
    trues = [np.eye(12)[3] * (1 + i % 3) for i in range(10)] + [np.zeros(12) for _ in range(10)]
    preds = [np.eye(12)[3] * 9.0 for _ in range(20)]
    s = score_feature(trues, preds, ["top"] * 10 + ["nonactivating"] * 10, [None] * 20, 3.0, n_permutations=500)
    assert s.correlation > 0.6
    assert abs(s.permutation_mean) < 0.1 * s.correlation and s.permutation_z > 5


def test_feature_scores_columns_and_json():
    trues, preds, groups, intervals = _windows()
    s = score_feature(trues, preds, groups, intervals, max_activation=4.0, rule="ceil", n_permutations=10)
    cols = s.to_columns()
    assert all(isinstance(v, (int, float, str)) or v is None for v in cols.values())
    assert cols["quantise_rule"] == "ceil" and cols["correlation_random"] is None
    assert cols["n_permutations"] == 10 and cols["detection_threshold_rule"] == "fixed"
    assert "correlation_interval_1" not in cols  # fixed column set; per-interval ones are in the JSON
    data = json.loads(s.to_json())
    assert data["group_correlations"]["interval_2"] == s.group_correlations["interval_2"]
    assert FeatureScores.model_validate_json(s.to_json()) == s
    # same columns for a feature with different intervals
    s2 = score_feature([[1, 0]], [[3, 0]], ["interval"], [7], max_activation=1.0)
    assert list(s2.to_columns()) == list(cols) == list(COLUMNS)
    # the first columns keep their order: a store made by an older version only gains columns at the end
    assert COLUMNS[:21] == (
        "n_windows", "n_tokens", "n_positive_windows", "n_negative_windows", "max_activation", "quantise_rule",
        "detection_threshold", "correlation", "correlation_quantised", "spearman", "r2_centred",
        "abs_dev_explained", "slope", "intercept", "ece", "binarity", "auroc", "balanced_accuracy",
        "correlation_top", "correlation_interval", "correlation_random",
    )  # fmt: skip


def test_feature_scores_from_older_json_still_load():
    trues, preds, groups, intervals = _windows()
    data = json.loads(score_feature(trues, preds, groups, intervals, max_activation=4.0).to_json())
    for name in COLUMNS[21:]:
        data.pop(name)
    old = FeatureScores.model_validate(data)
    assert old.n_permutations == 0 and old.abs_dev_explained_centred is None
    assert old.metric("permutation_z").reason == "not computed (n_permutations=0)"
    assert old.metric("correlation_top").value == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no_such"):
        old.metric("no_such")
