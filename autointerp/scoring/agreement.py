"""Agreement between true activations and a simulation, token by token.

Scales: ``a`` raw true activations; ``a_q`` their 0..10 quantisation (:func:`~.quantise.quantise`);
``p`` predictions on the 0..10 scale. Every function takes two flat arrays of equal length (pooled over
a feature's windows by the caller) and returns a :class:`~.metric.Metric`.
"""

from typing import Any

import numpy as np

from autointerp.scoring.metric import Metric, is_constant, pair_arrays, rank_average


def pearson(a: Any, p: Any) -> Metric:
    """Pearson r = sum (a - mean a)(p - mean p) / sqrt(sum (a - mean a)^2 * sum (p - mean p)^2), in [-1, 1].

    Any scales (raw or 0..10; r is invariant to affine changes of either). Undefined with fewer than two
    tokens, or when either side is constant.
    """
    x, y = pair_arrays(a, p, "pearson")
    if (reason := _why_no_correlation(x, y)) is not None:
        return Metric.undefined(reason)
    dx = x - x.mean()
    dy = y - y.mean()
    r = float(np.dot(dx, dy) / np.sqrt(np.dot(dx, dx) * np.dot(dy, dy)))
    return Metric.ok(min(1.0, max(-1.0, r)))


def _why_no_correlation(x: np.ndarray, y: np.ndarray) -> str | None:
    """Why a correlation of truth x and prediction y is undefined (too few tokens, a constant side), or None."""
    if x.size < 2:
        return f"fewer than 2 tokens ({x.size})"
    if is_constant(x):
        return "constant truth"
    if is_constant(y):
        return "constant prediction"
    return None


def spearman(a: Any, p: Any) -> Metric:
    """Spearman rho = Pearson r of the average ranks (ties share their mean rank), in [-1, 1].

    Any scales. Undefined with fewer than two tokens, or when either side is constant.
    """
    x, y = pair_arrays(a, p, "spearman")
    if (reason := _why_no_correlation(x, y)) is not None:
        return Metric.undefined(reason)
    return pearson(rank_average(x), rank_average(y))


def r2_centred(a_q: Any, p: Any) -> Metric:
    """1 - SSE / SST with SSE = sum (a_q - p)^2 and SST = sum (a_q - mean a_q)^2; in (-inf, 1].

    a_q and p on the 0..10 scale. 1 is perfect, 0 is no better than predicting the mean of a_q.
    Undefined with no tokens or constant a_q (SST = 0).
    """
    x, y = pair_arrays(a_q, p, "r2_centred")
    if x.size == 0:
        return Metric.undefined("no tokens")
    if is_constant(x):
        return Metric.undefined("constant truth")
    sse = float(np.sum((x - y) ** 2))
    sst = float(np.sum((x - x.mean()) ** 2))
    return Metric.ok(1.0 - sse / sst)


def abs_dev_explained(a_q: Any, p: Any) -> Metric:
    """OpenAI's absolute deviation explained: 1 - mean|a_q - p| / mean|a_q|; in (-inf, 1].

    a_q and p on the 0..10 scale. 1 is perfect; a prediction of 0 everywhere scores exactly 0 (its
    error is mean|a_q|), so a simulator only beats 0 by saying where the feature fires. Undefined with
    no tokens or when a_q is 0 everywhere (nothing to explain).
    """
    x, y = pair_arrays(a_q, p, "abs_dev_explained")
    if x.size == 0:
        return Metric.undefined("no tokens")
    scale = float(np.mean(np.abs(x)))
    if scale == 0:
        return Metric.undefined("all-zero truth")
    return Metric.ok(1.0 - float(np.mean(np.abs(x - y))) / scale)


def abs_dev_explained_centred(a_q: Any, p: Any) -> Metric:
    """Secondary figure: 1 - mean|a_q - p| / mean|a_q - mean(a_q)|; in (-inf, 1].

    a_q and p on the 0..10 scale; 0 means no better than predicting the mean of a_q everywhere.
    Misleading on sparse features: there mean a_q is near 0, so mean|a_q - mean a_q| ~ 2 mean a_q and an
    always-zero prediction (error mean a_q) scores ~0.5 while explaining nothing. Report
    :func:`abs_dev_explained` instead. Undefined with no tokens or constant a_q.
    """
    x, y = pair_arrays(a_q, p, "abs_dev_explained_centred")
    if x.size == 0:
        return Metric.undefined("no tokens")
    if is_constant(x):
        return Metric.undefined("constant truth")
    return Metric.ok(1.0 - float(np.mean(np.abs(x - y))) / float(np.mean(np.abs(x - x.mean()))))
