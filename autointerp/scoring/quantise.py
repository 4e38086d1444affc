"""Raw activations onto the integer 0..10 scale the explainer sees, and predictions onto integer levels."""

from typing import Any, Literal

import numpy as np

from autointerp.errors import expected

QuantiseRule = Literal["floor", "ceil"]

_SNAP = 1e-9  # in levels: 10*a/max within this of an integer is that integer (float noise at boundaries)


def quantise(acts: Any, max_activation: float, rule: QuantiseRule = "floor") -> np.ndarray:
    """Map raw activations onto the integer 0..10 scale shown to the explainer.

    floor (OpenAI): ``q = min(10, floor(10 * a / max))``: only ``a == max`` reaches 10.
    ceil (delphi):  ``q = min(10, ceil(10 * a / max))``: any ``a > 0`` is at least 1, 0 stays 0.

    Negative activations count as 0; ``max_activation <= 0`` gives all zeros. ``10 * a / max`` within
    1e-9 of an integer is taken as that integer, so ``a = 0.3 * max`` is level 3 under both rules
    rather than a float-rounding accident.

    Args:
        acts: raw activations, any shape.
        max_activation: the feature's max, raw scale.
        rule: "floor" or "ceil".

    Returns:
        int64 array of the same shape, values in 0..10.
    """
    if rule not in ("floor", "ceil"):
        raise ValueError(expected("quantise rule", repr(rule), "'floor' or 'ceil'"))
    a = np.asarray(acts, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(expected("quantise acts", "NaN or inf", "finite raw activations"))
    if not np.isfinite(max_activation):
        raise ValueError(expected("quantise max_activation", repr(max_activation), "a finite number"))
    if max_activation <= 0:
        return np.zeros(a.shape, dtype=np.int64)
    x = np.clip(a, 0.0, None) / max_activation * 10.0
    nearest = np.rint(x)
    x = np.where(np.abs(x - nearest) < _SNAP, nearest, x)
    q = np.floor(x) if rule == "floor" else np.ceil(x)
    return np.minimum(q, 10).astype(np.int64)


def to_level(p: Any) -> np.ndarray:
    """Round 0..10 predictions to the nearest integer level, halves up (2.5 -> 3), clipped to 0..10."""
    return np.clip(np.floor(np.asarray(p, dtype=np.float64) + 0.5), 0, 10).astype(np.int64)
