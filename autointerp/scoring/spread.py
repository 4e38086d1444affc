"""How much a feature's correlation moves when its scoring windows are resampled: a window bootstrap.

This is not a re-draw of fresh windows from the corpus (the sampler's windows are fixed by the seed); it
resamples the windows already scored, with replacement, and recomputes the pooled Pearson r(a raw, p) from
the stored predictions. It measures how much the score rests on a few windows, at no LLM cost.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from autointerp.errors import expected

DEFAULT_BOOTSTRAP_RESAMPLES = 200
# A third entropy word, so the bootstrap's stream never equals the permutation null's (seed, feature) one.
_BOOTSTRAP_STREAM = 2


@dataclass(frozen=True)
class WindowBootstrap:
    """std: standard deviation (ddof 1) of the pooled r over the resamples where r is defined; n: those
    resamples; reason: why std is None (fewer than 2 windows, or fewer than 2 defined resamples)."""

    std: float | None
    n: int
    reason: str | None = None


def window_bootstrap(
    windows_true: Sequence[Any],
    windows_pred: Sequence[Any],
    n_resamples: int = DEFAULT_BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    *,
    feature: int = 0,
) -> WindowBootstrap:
    """Window-bootstrap standard deviation of the pooled Pearson r of one feature's simulation.

    Args:
        windows_true: per window, raw true activations (1-d).
        windows_pred: per window, predictions on the 0..10 scale (same lengths).
        n_resamples: bootstrap resamples (each draws len(windows) windows with replacement).
        seed: run seed; the generator is seeded by (seed, feature), so a feature's spread does not depend
            on the run's other features.
        feature: SAE feature index (>= 0).

    A resample whose pooled truth or prediction is constant has no r and is left out (n counts the rest).
    Vectorised: the pooled r needs only six sums, each the count-weighted sum of per-window sums.
    """
    if n_resamples < 2:
        raise ValueError(expected("window_bootstrap n_resamples", str(n_resamples), ">= 2"))
    if seed < 0 or feature < 0:
        raise ValueError(expected("window_bootstrap seed, feature", f"{seed}, {feature}", "non-negative integers"))
    if len(windows_true) != len(windows_pred):
        raise ValueError(
            expected("window_bootstrap windows", f"{len(windows_true)} true, {len(windows_pred)} predicted", "equal")
        )
    W = len(windows_true)
    if W < 2:
        return WindowBootstrap(None, 0, "fewer than 2 windows")
    sums_W6 = np.zeros((W, 6))
    for i, (t, p) in enumerate(zip(windows_true, windows_pred, strict=True)):
        a, q = np.asarray(t, dtype=np.float64), np.asarray(p, dtype=np.float64)
        if a.shape != q.shape:
            raise ValueError(expected(f"window_bootstrap window {i}", f"shapes {a.shape}, {q.shape}", "equal"))
        sums_W6[i] = (a.size, a.sum(), q.sum(), (a * a).sum(), (q * q).sum(), (a * q).sum())
    rng = np.random.default_rng(np.random.SeedSequence([seed, feature, _BOOTSTRAP_STREAM]))
    counts_RW = rng.multinomial(W, np.full(W, 1.0 / W), size=n_resamples).astype(np.float64)
    n, sa, sp, saa, spp, sap = (counts_RW @ sums_W6).T
    var_a, var_p = saa - sa * sa / n, spp - sp * sp / n
    # Relative cut: a constant pooled truth or prediction leaves only rounding in the variance.
    ok = (var_a > 1e-12 * np.maximum(saa, 1e-300)) & (var_p > 1e-12 * np.maximum(spp, 1e-300))
    r = (sap[ok] - sa[ok] * sp[ok] / n[ok]) / np.sqrt(var_a[ok] * var_p[ok])
    if r.size < 2:
        return WindowBootstrap(None, int(r.size), "fewer than 2 resamples with a defined correlation")
    return WindowBootstrap(float(np.std(np.clip(r, -1.0, 1.0), ddof=1)), int(r.size))
