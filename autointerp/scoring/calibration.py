"""Calibration diagnostics: does a predicted level k mean the feature is at level k?

Scales: ``a_q`` true activations quantised to 0..10; ``p`` predictions on the 0..10 scale; a
prediction's *level* is ``p`` rounded halves up (:func:`~.quantise.to_level`).

On a sparse feature almost every token is 0 and predicted 0, so diagnostics over all tokens say mostly
"zeros are predicted as zeros": a wrong explanation predicting 0 everywhere got ECE 0.21 and binarity
1.0 over all tokens. :func:`calibration_tokens` picks the set where they mean something: every firing
token and as many non-firing ones. The functions here take whatever arrays they are given; the caller
(:func:`~.feature.score_feature`) passes that set.
"""

from typing import Any

import numpy as np

from autointerp.scoring.metric import N_LEVELS, Metric, is_constant, pair_arrays
from autointerp.scoring.quantise import to_level


def calibration_tokens(a: Any) -> np.ndarray:
    """Indices of the calibration set: every firing token plus an equal number of non-firing ones.

    Args:
        a: raw true activations of all tokens, pooled over the windows in window order (1-d).

    Returns:
        Sorted int64 indices into ``a``. Firing means ``a > 0`` (raw, so under ``floor`` quantisation a
        firing token can have a_q = 0). The k = min(#firing, #non-firing) non-firing tokens are evenly
        spaced through the non-firing ones in window order (the i-th of k is number
        ``floor((i + 1/2) m / k)`` of the m), so the choice is deterministic, needs no seed, and draws
        from every window in proportion to its non-firing tokens (the quiet tokens around a peak as well
        as whole non-activating windows). Empty when no token fires: calibration is then undefined.
    """
    x = np.asarray(a, dtype=np.float64).ravel()
    firing = np.flatnonzero(x > 0)
    quiet = np.flatnonzero(~(x > 0))
    k = min(firing.size, quiet.size)
    if firing.size == 0:
        return firing.astype(np.int64)
    picked = quiet[np.floor((np.arange(k) + 0.5) * quiet.size / k).astype(np.int64)] if k else quiet[:0]
    return np.sort(np.concatenate([firing, picked])).astype(np.int64)


def calibration_fit(a_q: Any, p: Any) -> tuple[Metric, Metric]:
    """Least-squares fit a_q ~ slope * p + intercept; returns (slope, intercept).

    a_q and p on the 0..10 scale; slope 1, intercept 0 is perfect calibration.
    slope = sum (p - mean p)(a_q - mean a_q) / sum (p - mean p)^2, intercept = mean a_q - slope * mean p.
    Both undefined with fewer than two tokens or constant p. Constant a_q is fine (slope 0).
    """
    x, y = pair_arrays(a_q, p, "calibration_fit")
    if x.size < 2:
        reason = f"fewer than 2 tokens ({x.size})"
        return Metric.undefined(reason), Metric.undefined(reason)
    if is_constant(y):
        return Metric.undefined("constant prediction"), Metric.undefined("constant prediction")
    dy = y - y.mean()
    slope = float(np.dot(dy, x - x.mean()) / np.dot(dy, dy))
    return Metric.ok(slope), Metric.ok(float(x.mean()) - slope * float(y.mean()))


def prediction_histogram(p: Any) -> list[int]:
    """Count of predictions per level 0..10 after rounding (:func:`to_level`); 11 integers."""
    return np.bincount(to_level(np.asarray(p).ravel()), minlength=N_LEVELS).tolist()


def reliability_table(a_q: Any, p: Any) -> list[dict[str, float | int | None]]:
    """For each predicted level 0..10 (p rounded by :func:`to_level`): how many tokens, and their mean a_q.

    Returns 11 rows ``{"level": k, "count": n_k, "mean_true_q": mean a_q or None when n_k == 0}``.
    A calibrated simulator has mean_true_q == level on every non-empty row.
    """
    x, y = pair_arrays(a_q, p, "reliability_table")
    levels = to_level(y)
    counts = np.bincount(levels, minlength=N_LEVELS)
    sums = np.bincount(levels, weights=x, minlength=N_LEVELS)
    return [
        {
            "level": k,
            "count": int(counts[k]),
            "mean_true_q": float(sums[k] / counts[k]) if counts[k] else None,
        }
        for k in range(N_LEVELS)
    ]


def ece(a_q: Any, p: Any) -> Metric:
    """Expected calibration error = sum_k n_k |mean a_q at level k - k| / N over non-empty levels, in [0, 10].

    Levels are p rounded by :func:`to_level`; a_q on the 0..10 scale. 0 is perfect. Undefined with no tokens.
    """
    x, y = pair_arrays(a_q, p, "ece")
    if x.size == 0:
        return Metric.undefined("no tokens")
    total = 0.0
    for row in reliability_table(x, y):
        if row["count"]:
            total += row["count"] * abs(row["mean_true_q"] - row["level"])
    return Metric.ok(total / x.size)


def binarity(p: Any) -> Metric:
    """Share of predictions that round (:func:`to_level`) to 0 or 10, in [0, 1]. Undefined with no tokens.

    An LLM that only ever answers 0 or 10 scores 1.
    """
    levels = to_level(np.asarray(p).ravel())
    if levels.size == 0:
        return Metric.undefined("no tokens")
    return Metric.ok(float(np.mean((levels == 0) | (levels == 10))))
