"""Detection: does a window's score tell windows where the feature fires from windows where it does not?

Two uses. (1) From a simulation: one score per window (its max prediction, 0..10) against whether the
feature fired in it (true max > 0); :func:`auroc` is the headline, :func:`balanced_accuracy` needs a
threshold (:func:`balanced_split_threshold` when the predictions are expected values). (2) From a detection
scorer, where an LLM answers yes/no per window: :func:`detection_scores`.
"""

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from autointerp.errors import expected
from autointerp.scoring.metric import Metric, pair_arrays, rank_average

# max p >= 0.5 <=> the window's highest prediction rounds to a level >= 1 (see quantise.to_level).
DEFAULT_DETECTION_THRESHOLD = 0.5
ThresholdSetting = float | Literal["auto"]


def auroc(labels: Any, scores: Any) -> Metric:
    """AUROC = P(score of a random positive > score of a random negative), ties counting 1/2.

    Computed as Mann-Whitney U / (n_pos * n_neg) from average ranks:
    U = sum of positives' ranks - n_pos (n_pos + 1) / 2. In [0, 1]; 0.5 is chance. Any score scale
    (only the order matters), so it needs no threshold. Undefined when there is no positive or no negative.
    """
    y, s = pair_arrays(labels, scores, "auroc")
    pos = y.astype(bool)
    n_pos = int(pos.sum())
    n_neg = int(pos.size - n_pos)
    if n_pos == 0:
        return Metric.undefined("no positive windows")
    if n_neg == 0:
        return Metric.undefined("no negative windows")
    u = float(rank_average(s)[pos].sum()) - n_pos * (n_pos + 1) / 2.0
    return Metric.ok(u / (n_pos * n_neg))


def balanced_accuracy(labels: Any, scores: Any, threshold: float = DEFAULT_DETECTION_THRESHOLD) -> Metric:
    """(TPR + TNR) / 2 with "predicted positive" = score >= threshold; in [0, 1], 0.5 is chance.

    Undefined when there is no positive or no negative (one of the two rates has no denominator).
    """
    y, s = pair_arrays(labels, scores, "balanced_accuracy")
    pos = y.astype(bool)
    if not pos.any():
        return Metric.undefined("no positive windows")
    if pos.all():
        return Metric.undefined("no negative windows")
    hit = s >= threshold
    tpr = float(np.mean(hit[pos]))
    tnr = float(np.mean(~hit[~pos]))
    return Metric.ok((tpr + tnr) / 2.0)


def balanced_split_threshold(scores: Any) -> float:
    """A label-free cut for window scores: the one that calls the share of windows closest to one half
    positive (a median that keeps tied scores on one side).

    Args:
        scores: one score per window, e.g. its max prediction on the 0..10 scale.

    Returns:
        The midpoint between two consecutive distinct scores such that the share of windows at or above
        it is closest to 1/2 (on a tie, the lower cut, calling more windows positive: random windows
        that happen to fire make firing windows slightly more than half); the one value when all scores
        are equal (every window then counts as predicted positive: balanced accuracy 0.5). Same units
        as ``scores``.

    Why this rule: logprob simulators give expected values that never drop to 0 (a window of quiet
    tokens still peaks at ~0.6-2), so the fixed 0.5 cut calls every window positive and balanced
    accuracy is 0.500 whatever the explanation. Scoring sets are built about half firing (ours: top +
    interval windows against random + non-activating ones; delphi 100 + 100; OpenAI 5 top + 5 random),
    so a cut at the median puts as many windows above it as the design says fire. It uses only the
    order of the scores, so any increasing map of the predictions (sampled integers, expected values)
    gives the same split, and one outlier cannot move it. A plain median is wrong for sampled answers:
    with 12 windows at 0 and 8 at 10 it is 0, and ``>= 0`` calls all 20 positive; here the cut is 5.
    Two-means (Otsu) was tried and rejected: firing windows' maxima spread from weak interval windows
    to top ones while quiet windows bunch together, and it cut into the firing windows. Where a set is
    far from half firing (a dense feature whose random windows fire), this cut misplaces balanced
    accuracy; AUROC, the detection headline, needs no threshold.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise ValueError(expected("balanced_split_threshold scores", "no windows", "at least one score"))
    if not np.all(np.isfinite(s)):
        raise ValueError(expected("balanced_split_threshold scores", "NaN or inf", "finite scores"))
    values, counts = np.unique(s, return_counts=True)
    if values.size == 1:
        return float(values[0])
    # cut between values[j] and values[j + 1]: the windows at or above it are those above values[j]
    share_above = (s.size - np.cumsum(counts)[:-1]) / s.size
    j = int(np.argmin(np.abs(share_above - 0.5)))  # first minimum: the lower cut on a tie
    return float((values[j] + values[j + 1]) / 2.0)


def resolve_detection_threshold(setting: ThresholdSetting, window_scores: Any) -> float:
    """The threshold to use: ``setting`` itself when a number (0..10 scale), or the balanced split of the
    windows' scores when ``"auto"`` (see :func:`balanced_split_threshold`)."""
    if isinstance(setting, str):
        if setting != "auto":
            raise ValueError(expected("detection_threshold", repr(setting), "a number on the 0..10 scale or 'auto'"))
        return balanced_split_threshold(window_scores)
    threshold = float(setting)
    if not np.isfinite(threshold):
        raise ValueError(expected("detection_threshold", repr(setting), "a finite number or 'auto'"))
    return threshold


class DetectionScores(BaseModel):
    """Scores of a detection scorer (an LLM answering yes/no per window). None means undefined; the reason
    is in `undefined`."""

    n_pos: int = Field(description="windows where the feature fires (label True)")
    n_neg: int = Field(description="windows where it does not (random and hard negatives)")
    n_yes: int = Field(description="windows the LLM said match the explanation")
    balanced_accuracy: float | None = Field(description="(recall + specificity) / 2, [0, 1]; 0.5 is chance")
    precision: float | None = Field(description="share of yes answers that fire, [0, 1]; low = explanation too broad")
    recall: float | None = Field(description="share of firing windows answered yes, [0, 1]; low = too narrow")
    f1: float | None = Field(description="2 precision recall / (precision + recall), [0, 1]; 0 when no true yes")
    auroc: float | None = Field(description="P(yes) ranks firing above non-firing windows, [0, 1]; 0.5 is chance")
    undefined: dict[str, str] = Field(default_factory=dict, description="metric name -> why it is None")


def detection_scores(labels: Any, said_yes: Any, p_yes: Any | None = None) -> DetectionScores:
    """Score yes/no answers of a detection scorer against whether the feature fires in each window.

    Args:
        labels: per window, True when the feature fires in it (true max activation > 0).
        said_yes: per window, True when the LLM said the window matches the explanation.
        p_yes: per window, the LLM's probability of "yes" (0..1) from logprobs; None when the backend
            gives no logprobs (AUROC is then undefined: a yes/no answer alone only gives one ROC point,
            whose AUROC would just repeat balanced accuracy).

    Balanced accuracy is undefined with no positive or no negative window; precision with no yes
    answer; recall with no positive window; F1 when either of those is. Raises ValueError on lists of
    different lengths or P(yes) outside [0, 1].
    """
    y, yes = pair_arrays(labels, said_yes, "detection_scores said_yes")
    pos, hit = y.astype(bool), yes.astype(bool)
    n_pos, n_neg, n_yes = int(pos.sum()), int((~pos).sum()), int(hit.sum())
    tp = int((pos & hit).sum())
    metrics: dict[str, Metric] = {
        "balanced_accuracy": balanced_accuracy(pos, hit.astype(np.float64), threshold=0.5),
        "precision": Metric.ok(tp / n_yes) if n_yes else Metric.undefined("no yes answers"),
        "recall": Metric.ok(tp / n_pos) if n_pos else Metric.undefined("no positive windows"),
    }
    p_m, r_m = metrics["precision"], metrics["recall"]
    if not p_m.defined or not r_m.defined:
        metrics["f1"] = Metric.undefined(f"{'precision' if not p_m.defined else 'recall'} undefined")
    else:
        # tp == 0 makes both 0: F1 is 0 (2 tp / (2 tp + fp + fn)), not 0/0
        metrics["f1"] = Metric.ok(2 * p_m.value * r_m.value / (p_m.value + r_m.value) if tp else 0.0)
    if p_yes is None:
        metrics["auroc"] = Metric.undefined("no P(yes) given")
    else:
        _, prob = pair_arrays(labels, p_yes, "detection_scores p_yes")
        if not np.all(np.isfinite(prob)) or prob.min(initial=0.0) < 0 or prob.max(initial=0.0) > 1:
            raise ValueError(expected("detection_scores p_yes", "values outside [0, 1] or NaN", "probabilities"))
        metrics["auroc"] = auroc(pos, prob)
    return DetectionScores(
        n_pos=n_pos,
        n_neg=n_neg,
        n_yes=n_yes,
        **{name: m.value for name, m in metrics.items()},
        undefined={name: m.reason for name, m in metrics.items() if m.reason is not None},
    )
