"""Scores per activation bin (Anthropic's "specificity by bin"): how well an explanation predicts the
strongest windows, the weak ones, and the windows where the feature does not fire.

Scales: ``a`` raw true activations; ``p`` predictions on the 0..10 scale.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np

from autointerp.errors import expected
from autointerp.scoring.agreement import pearson


def window_bin(group: str, interval: int | None, fired: bool) -> str:
    """The bin of one scoring window.

    A window where the feature fires (true max > 0) is binned by how it was drawn: ``"top"``,
    ``"interval_<k>"`` (k = 0 the lowest interval), or ``"random_firing"`` (a uniform draw that happens to
    fire). A window where it does not fire is ``"hard_negative"`` when drawn as one (the feature's top
    tokens, not firing), else ``"nonfiring"`` (non-activating and quiet random windows alike).
    """
    if not fired:
        return "hard_negative" if group == "hard_negative" else "nonfiring"
    if group == "top":
        return "top"
    if group == "interval":
        if interval is None:
            raise ValueError(expected("window_bin", "group 'interval' with no interval index", "an index"))
        return f"interval_{interval}"
    return "random_firing"


def _bin_order(key: str) -> tuple[int, int]:
    # strongest first: top, interval_K-1 .. interval_0, random_firing, nonfiring, hard_negative
    if key == "top":
        return (0, 0)
    if key.startswith("interval_"):
        return (1, -int(key.removeprefix("interval_")))
    return (2, ("random_firing", "nonfiring", "hard_negative").index(key))


def score_by_bin(
    windows_true: Sequence[Any],
    windows_pred: Sequence[Any],
    groups: Sequence[str],
    intervals: Sequence[int | None],
    max_activation: float,
    threshold: float,
) -> list[dict[str, Any]]:
    """One row per bin (see :func:`window_bin`) present among the windows, strongest bin first.

    Args:
        windows_true: per window, raw true activations.
        windows_pred: per window, predictions on the 0..10 scale (same lengths).
        groups, intervals: per window, how it was drawn (as for score_feature).
        max_activation: the feature's max, raw, to put true maxima on the 0..10 scale.
        threshold: 0..10 scale; a window counts as detected when its max prediction >= this.

    Each row: ``bin``; ``n_windows``; ``mean_true_max`` = mean over the bin's windows of
    ``10 * max a / max_activation`` (unquantised, clipped to 0..10; 0 when max_activation <= 0);
    ``mean_pred_max`` = mean of the windows' max p (0..10); ``detected`` = share of windows with
    max p >= threshold ([0, 1]: a recall in firing bins, a false-positive rate in non-firing ones);
    ``correlation`` = Pearson r(a, p) pooled over the bin's tokens, None with its reason in
    ``correlation_reason`` (always "constant truth" in non-firing bins).
    """
    n = len(windows_true)
    if not (len(windows_pred) == len(groups) == len(intervals) == n):
        raise ValueError(
            expected(
                "score_by_bin",
                f"{n} true windows, {len(windows_pred)} predicted, {len(groups)} groups, {len(intervals)} intervals",
                "the same number of each",
            )
        )
    trues = [np.asarray(t, dtype=np.float64).ravel() for t in windows_true]
    preds = [np.asarray(p, dtype=np.float64).ravel() for p in windows_pred]
    members: dict[str, list[int]] = {}
    for i, (t, q, g, k) in enumerate(zip(trues, preds, groups, intervals)):
        if t.size == 0 or t.size != q.size:
            where = f"score_by_bin window {i}"
            raise ValueError(expected(where, f"{t.size} true activations and {q.size} predictions", "equal, > 0"))
        members.setdefault(window_bin(g, k, bool(t.max() > 0)), []).append(i)
    rows = []
    for key in sorted(members, key=_bin_order):
        idx = members[key]
        true_max = np.array([trues[i].max() for i in idx])
        pred_max = np.array([preds[i].max() for i in idx])
        scaled = np.clip(10.0 * true_max / max_activation, 0.0, 10.0) if max_activation > 0 else 0.0 * true_max
        corr = pearson(np.concatenate([trues[i] for i in idx]), np.concatenate([preds[i] for i in idx]))
        rows.append(
            {
                "bin": key,
                "n_windows": len(idx),
                "mean_true_max": float(np.mean(scaled)),
                "mean_pred_max": float(np.mean(pred_max)),
                "detected": float(np.mean(pred_max >= threshold)),
                "correlation": corr.value,
                "correlation_reason": corr.reason,
            }
        )
    return rows
