"""Tests for autointerp/scoring/detection.py on hand-made arrays."""

import numpy as np
import pytest

from autointerp.scoring import (
    auroc,
    balanced_accuracy,
    balanced_split_threshold,
    detection_scores,
    resolve_detection_threshold,
    score_feature,
)


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


def test_balanced_split_threshold_hand_values():
    assert balanced_split_threshold([0, 0, 10, 10]) == 5.0  # a 0-or-10 simulator: cut in the middle
    assert balanced_split_threshold([10, 1, 3, 2]) == 2.5  # half above 2.5
    # a plain median (0) would call all 20 positive; the cut between 0 and 10 calls 8 of 20
    assert balanced_split_threshold([0] * 12 + [10] * 8) == 5.0
    # [1..5]: cuts leave 0.8, 0.6, 0.4, 0.2 above; 0.6 and 0.4 tie -> the lower cut, between 2 and 3
    assert balanced_split_threshold([5, 4, 3, 2, 1]) == 2.5
    assert balanced_split_threshold([4.2, 4.2]) == 4.2  # one value: everything is "high"
    with pytest.raises(ValueError, match="no windows"):
        balanced_split_threshold([])


def test_balanced_split_threshold_is_closest_to_half_and_order_only():
    rng = np.random.default_rng(5)
    for _ in range(30):
        s = rng.integers(0, 11, size=int(rng.integers(2, 40))).astype(float)
        if np.unique(s).size < 2:
            continue
        t = balanced_split_threshold(s)
        best = min(abs(np.mean(s >= cut) - 0.5) for cut in np.unique(s)[1:])  # brute force over cuts
        assert abs(np.mean(s >= t) - 0.5) == best
        # the same windows are "high" after any increasing map of the scores
        assert np.array_equal(s >= t, np.sqrt(s) + 2 >= balanced_split_threshold(np.sqrt(s) + 2))


def test_resolve_detection_threshold():
    assert resolve_detection_threshold(0.5, [9, 9]) == 0.5
    assert resolve_detection_threshold("auto", [0, 10]) == 5.0
    with pytest.raises(ValueError, match="'auto'"):
        resolve_detection_threshold("median", [0, 10])  # type: ignore[arg-type]


def test_auto_threshold_fits_expected_values_where_05_cannot():
    # Expected values from logprobs never drop below ~0.6: quiet windows peak at 0.6..1.4, firing ones 3..9.
    rng = np.random.default_rng(2)
    trues, preds = [], []
    for i in range(20):
        fires = i < 10
        t = np.zeros(16)
        q = rng.uniform(0.6, 1.0, size=16)
        if fires:
            t[i] = 1.0 + i
            q[i] = 3.0 + 0.6 * i
        else:
            q[i % 16] = 1.4
        trues.append(t)
        preds.append(q)
    groups = ["top"] * 10 + ["nonactivating"] * 10
    fixed = score_feature(trues, preds, groups, [None] * 20, max_activation=10.0)
    assert fixed.balanced_accuracy == 0.5  # every window's max >= 0.5: all predicted to fire
    assert fixed.detection_threshold == 0.5 and fixed.detection_threshold_rule == "fixed"
    auto = score_feature(trues, preds, groups, [None] * 20, max_activation=10.0, detection_threshold="auto")
    assert auto.auroc == 1.0 and auto.balanced_accuracy == 1.0
    # the cut that leaves half the windows above: between the quiet windows' 1.4 and the lowest firing 3.0
    assert auto.detection_threshold == pytest.approx(2.2) and auto.detection_threshold_rule == "auto"


def test_detection_scores_hand_values():
    labels = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    yes = [1, 1, 1, 0, 1, 0, 0, 0, 0, 0]
    # tp 3, fn 1, fp 1, tn 5: recall 3/4, specificity 5/6, precision 3/4
    s = detection_scores(labels, yes)
    assert (s.n_pos, s.n_neg, s.n_yes) == (4, 6, 4)
    assert s.recall == pytest.approx(0.75) and s.precision == pytest.approx(0.75)
    assert s.balanced_accuracy == pytest.approx((3 / 4 + 5 / 6) / 2)
    assert s.f1 == pytest.approx(0.75)
    assert s.auroc is None and s.undefined["auroc"] == "no P(yes) given"
    # P(yes) ranks: positives 0.9, 0.8, 0.7, 0.2; negatives 0.6, 0.1 x5 -> 0.2 loses to 0.6 only:
    # wins = 3*6 + 5 = 23 of 24
    p_yes = [0.9, 0.8, 0.7, 0.2, 0.6, 0.1, 0.1, 0.1, 0.1, 0.1]
    assert detection_scores(labels, yes, p_yes).auroc == pytest.approx(23 / 24)


def test_detection_scores_broad_and_narrow_explanations_differ():
    labels = [1] * 5 + [0] * 5
    broad = detection_scores(labels, [1] * 10)  # says yes to everything
    narrow = detection_scores(labels, [1] + [0] * 9)  # says yes once, rightly
    assert broad.recall == 1.0 and broad.precision == 0.5 and broad.balanced_accuracy == 0.5
    assert narrow.recall == 0.2 and narrow.precision == 1.0 and narrow.balanced_accuracy == pytest.approx(0.6)


def test_detection_scores_undefined_and_errors():
    s = detection_scores([1, 0, 0], [0, 0, 0])
    assert s.precision is None and s.undefined["precision"] == "no yes answers"
    assert s.f1 is None and s.undefined["f1"] == "precision undefined"
    assert s.balanced_accuracy == 0.5 and s.recall == 0.0
    s = detection_scores([0, 0], [1, 0])
    assert (
        s.recall is None and s.balanced_accuracy is None and s.undefined["balanced_accuracy"] == "no positive windows"
    )
    assert detection_scores([1, 0], [0, 1]).f1 == 0.0  # precision and recall both 0: F1 0, not 0/0
    with pytest.raises(ValueError, match="p_yes"):
        detection_scores([1, 0], [1, 0], [1.2, 0.0])
    with pytest.raises(ValueError, match="length"):
        detection_scores([1, 0], [1])
