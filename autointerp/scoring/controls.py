"""Controls: what a score is worth next to something that explains nothing.

- :func:`lift` / :func:`lift_metric`: a score minus the same score under a control explanation (the
  top-tokens baseline, another feature's explanation) on the same held-out windows.
- :func:`permutation_null`: a control that needs no LLM call: the feature's own predictions scored
  against the wrong windows, each rotated by a random offset.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from autointerp.errors import expected
from autointerp.scoring.metric import Metric, is_constant

# Null values this close are equal: the identity permutation recomputes the observed r by a different
# summation order, and permutations of identical prediction windows differ only by rounding.
_TIE = 1e-12


def lift(score: float | None, control: float | None, *, undefined_as_zero: bool = False) -> float | None:
    """score - control (e.g. correlation under the LLM explanation minus under a control one).

    With ``undefined_as_zero=False`` (the old behaviour), None if either is None. With True, an undefined
    side counts as 0, as a constant prediction explains nothing: use it for correlation-type scores
    when averaging lift over features, so features with undefined scores are not dropped.
    """
    if undefined_as_zero:
        return float(score or 0.0) - float(control or 0.0)
    if score is None or control is None:
        return None
    return float(score) - float(control)


def lift_metric(score: Metric, control: Metric, *, undefined_as_zero: bool = False) -> Metric:
    """:func:`lift` of two Metrics, keeping why it is undefined.

    The reason names the side: ``"score undefined: constant prediction"``, ``"control undefined: ..."``
    (the score's reason first when both are). With ``undefined_as_zero=True`` it is always defined.
    """
    if not undefined_as_zero:
        if not score.defined:
            return Metric.undefined(f"score undefined: {score.reason}")
        if not control.defined:
            return Metric.undefined(f"control undefined: {control.reason}")
    return Metric.ok(float(score.value or 0.0) - float(control.value or 0.0))


@dataclass(frozen=True)
class PermutationNull:
    """The observed pooled Pearson r against its permutation null.

    r: observed r(a, p), [-1, 1]. mean, std: of the null r values (std with ddof 0). z: (r - mean) / std,
    None when std is 0. p_value: (1 + #{null r >= r}) / (1 + n), in (0, 1]. n: permutations drawn
    (0 when undefined). reason: why everything is None (observed r undefined, nothing to permute), or
    why only z is None ("null has no spread"); None when all is defined.
    """

    r: float | None
    mean: float | None
    std: float | None
    z: float | None
    p_value: float | None
    n: int
    reason: str | None = None

    @classmethod
    def undefined(cls, reason: str) -> "PermutationNull":
        return cls(None, None, None, None, None, 0, reason)


def permutation_null(
    windows_true: Sequence[Any],
    windows_pred: Sequence[Any],
    n_permutations: int,
    seed: int,
    *,
    feature: int = 0,
) -> PermutationNull:
    """The feature's own predictions scored against the wrong windows, at the wrong positions.

    Each draw (a) reassigns which prediction window goes with which truth window, among windows of equal
    length (a window with no equal-length partner keeps its own), and (b) rotates each prediction window
    circularly by its own uniform random offset in 0..length-1. The statistic is the pooled Pearson
    r(a raw, p) over all tokens, as the headline correlation.

    Why the rotation: windows are cut around their peak (`window_left` tokens before it), so every top and
    interval window fires at the same position. Pairing windows alone keeps that alignment, and a perfect
    explanation's null then averaged r ~ 0.1 instead of 0. With the rotation the null's expectation is
    exactly what chance placement gives: for every equal-length group, E[<t_i, roll(p_j, s)>] over j and s
    is sum(t_i) * mean(p over the group), so the expected pooled cross term equals n * mean(a) * mean(p) and
    the expected null r is exactly 0 when all windows have one length (as the sampler cuts them); otherwise
    it is how the length groups' mean activation and mean prediction co-vary. What the null no longer
    catches: a prediction that only says *where* in a window the feature fires ("the 25th token") stands
    above it, as a real explanation does; the baseline and other-feature controls are the checks on meaning.

    Args:
        windows_true: per window, raw true activations (1-d).
        windows_pred: per window, predictions on the 0..10 scale (same lengths).
        n_permutations: null draws (e.g. 1000; p can be no smaller than 1 / (1 + n)).
        seed: run seed. The generator is seeded by (seed, feature), so a feature's null is the same in
            every run with that seed, whatever other features the run holds.
        feature: SAE feature index (>= 0).

    Vectorised: the pooled sums of a, p, a^2, p^2 do not change under a draw, only sum a*p, which is the
    sum over windows of <true window i, prediction window pi(i) rotated by s_i>; the dot products of every
    pair of equal-length windows at every rotation are computed once ([W, W, L] per length), and each draw
    sums W of them.

    Undefined (reason) when the observed r is (fewer than 2 tokens, constant truth or prediction).
    """
    if n_permutations < 1:
        raise ValueError(expected("permutation_null n_permutations", str(n_permutations), ">= 1"))
    if seed < 0 or feature < 0:
        raise ValueError(expected("permutation_null seed, feature", f"{seed}, {feature}", "non-negative integers"))
    if len(windows_true) != len(windows_pred):
        raise ValueError(
            expected("permutation_null", f"{len(windows_true)} true and {len(windows_pred)} predicted windows", "equal")
        )
    trues = [np.asarray(t, dtype=np.float64).ravel() for t in windows_true]
    preds = [np.asarray(p, dtype=np.float64).ravel() for p in windows_pred]
    for i, (t, q) in enumerate(zip(trues, preds)):
        if t.size != q.size:
            where = f"permutation_null window {i}"
            raise ValueError(expected(where, f"{t.size} true activations and {q.size} predictions", "equal"))
    a = np.concatenate(trues) if trues else np.zeros(0)
    p = np.concatenate(preds) if preds else np.zeros(0)
    if a.size < 2:
        return PermutationNull.undefined(f"fewer than 2 tokens ({a.size})")
    if is_constant(a):
        return PermutationNull.undefined("constant truth")
    if is_constant(p):
        return PermutationNull.undefined("constant prediction")

    by_length: dict[int, list[int]] = {}
    for i, t in enumerate(trues):
        by_length.setdefault(t.size, []).append(i)

    rng = np.random.default_rng(np.random.SeedSequence([seed, feature]))
    cross = np.zeros(n_permutations)  # sum of a*p per draw
    observed_cross = 0.0
    for length in sorted(by_length):
        idx = by_length[length]
        n_windows = len(idx)
        t_WL = np.stack([trues[i] for i in idx])
        p_WL = np.stack([preds[i] for i in idx])
        rolled_SL = (np.arange(length)[None, :] - np.arange(length)[:, None]) % length  # [s] = roll by s
        dots_WWS = np.einsum("il,jsl->ijs", t_WL, p_WL[:, rolled_SL])  # <true i, prediction j rolled by s>
        observed_cross += float(np.trace(dots_WWS[:, :, 0]))
        if n_windows > 1:
            perms_NW = rng.permuted(np.tile(np.arange(n_windows), (n_permutations, 1)), axis=1)
        else:
            perms_NW = np.zeros((n_permutations, 1), dtype=np.int64)
        shifts_NW = rng.integers(0, length, size=(n_permutations, n_windows))
        cross += dots_WWS[np.arange(n_windows)[None, :], perms_NW, shifts_NW].sum(axis=1)

    n_tok = a.size
    scale = np.sqrt(np.sum((a - a.mean()) ** 2) * np.sum((p - p.mean()) ** 2))
    offset = n_tok * a.mean() * p.mean()
    r = float(np.clip((observed_cross - offset) / scale, -1.0, 1.0))
    null = np.clip((cross - offset) / scale, -1.0, 1.0)
    mean, std = float(null.mean()), float(null.std())
    if np.ptp(null) <= _TIE:  # equal up to summation order: a rounding residue is not spread
        std = 0.0
    z = (r - mean) / std if std > 0 else None
    p_value = (1 + int(np.sum(null >= r - _TIE))) / (1 + n_permutations)
    return PermutationNull(r, mean, std, z, p_value, n_permutations, None if z is not None else "null has no spread")
