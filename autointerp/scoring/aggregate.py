"""Summaries of one score over many features: honest means with their n and a bootstrap interval.

A constant prediction (all zeros, say) explains nothing, so by default an undefined correlation-type
score counts as 0 in every statistic here and the count of such values is reported beside the mean.
"""

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from autointerp.errors import expected

_BOOT_CHUNK = 1_000_000  # resampled indices per step: bounds memory at ~8 MB


class MeanCI(NamedTuple):
    """A mean and its bootstrap percentile interval; all None when there is no value."""

    mean: float | None
    lo: float | None
    hi: float | None


class PairedDiff(NamedTuple):
    """Mean of a - b over pairs and its bootstrap percentile interval; all None with no complete pair."""

    mean_diff: float | None
    lo: float | None
    hi: float | None


def _defined(values: Sequence[float | None]) -> np.ndarray:
    v = np.array([np.nan if x is None else float(x) for x in values], dtype=np.float64)
    return v[~np.isnan(v)]


def _check_boot(name: str, n_boot: int, ci: float) -> None:
    if not 0 < ci < 1:
        raise ValueError(expected(f"{name} ci", str(ci), "a level in (0, 1), e.g. 0.95"))
    if n_boot < 1:
        raise ValueError(expected(f"{name} n_boot", str(n_boot), ">= 1"))


def _bootstrap(v: np.ndarray, n_boot: int, seed: int, ci: float) -> MeanCI:
    # numpy default_rng(seed): deterministic for a seed; the chunking does not change the draws' order.
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, _BOOT_CHUNK // v.size)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        means[start:stop] = v[rng.integers(0, v.size, size=(stop - start, v.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - ci) / 2, (1 + ci) / 2])
    return MeanCI(float(v.mean()), float(lo), float(hi))


def bootstrap_mean_ci(values: Sequence[float | None], n_boot: int = 2000, seed: int = 0, ci: float = 0.95) -> MeanCI:
    """Mean of the values and its percentile bootstrap interval over features.

    None and NaN are dropped (pass zeros yourself, or use :func:`summarise`, to count them). Resamples
    the n values with replacement n_boot times (numpy ``default_rng(seed)``: deterministic for a seed)
    and returns (mean, lo, hi), lo/hi the (1 - ci)/2 and (1 + ci)/2 quantiles of the resampled means.
    All None when no value is left. With one value the interval is that value: a bootstrap cannot see
    spread it was not shown.
    """
    _check_boot("bootstrap_mean_ci", n_boot, ci)
    v = _defined(values)
    if v.size == 0:
        return MeanCI(None, None, None)
    return _bootstrap(v, n_boot, seed, ci)


def summarise(
    values: Sequence[float | None],
    *,
    undefined_as_zero: bool = True,
    n_boot: int = 2000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, Any]:
    """Statistics of one score over features, saying how many values were undefined and how they count.

    Args:
        values: one per feature; None (or NaN) where the score is undefined.
        undefined_as_zero: True (for correlation-type scores and their lifts): an undefined value counts
            as 0, since a constant prediction explains nothing. False (for scores where 0 is not "no
            skill": AUROC, where chance is 0.5; ECE, where 0 is perfect; binarity): undefined values are
            left out.
        n_boot, seed, ci: bootstrap of the mean (see :func:`bootstrap_mean_ci`); ``n_boot=0`` skips it.

    Returns:
        ``n_total`` values given; ``n_defined`` of them defined; ``n_undefined_as_zero`` counted as 0
        (0 unless undefined_as_zero); ``n`` = the values the statistics are over (n_total when
        undefined_as_zero, else n_defined); ``mean``, ``median``, ``q25``, ``q75`` (numpy's linear
        quantiles); ``ci_lo``, ``ci_hi`` the bootstrap interval of the mean. Statistics are None when
        n is 0 (and the interval when n_boot is 0).
    """
    if n_boot:
        _check_boot("summarise", n_boot, ci)
    n_total = len(values)
    v = _defined(values)
    n_undefined = n_total - v.size
    if undefined_as_zero:
        v = np.concatenate([v, np.zeros(n_undefined)])
    result: dict[str, Any] = {
        "n": int(v.size),
        "n_total": n_total,
        "n_defined": n_total - n_undefined,
        "n_undefined_as_zero": n_undefined if undefined_as_zero else 0,
        "mean": None,
        "median": None,
        "q25": None,
        "q75": None,
        "ci_lo": None,
        "ci_hi": None,
    }
    if v.size == 0:
        return result
    q25, median, q75 = np.quantile(v, [0.25, 0.5, 0.75])
    result.update(mean=float(v.mean()), median=float(median), q25=float(q25), q75=float(q75))
    if n_boot:
        boot = _bootstrap(v, n_boot, seed, ci)
        result.update(ci_lo=boot.lo, ci_hi=boot.hi)
    return result


def bootstrap_paired_diff(
    a: Sequence[float | None],
    b: Sequence[float | None],
    n_boot: int = 2000,
    seed: int = 0,
    ci: float = 0.95,
) -> PairedDiff:
    """Paired bootstrap of mean(a_i - b_i) (e.g. one feature's score under two runs or two explainers).

    Pairs where either side is None or NaN are dropped (count undefined correlations as 0 before calling
    to keep them). The bootstrap is :func:`bootstrap_mean_ci` of the differences. Raises ValueError if a
    and b differ in length or ci is not in (0, 1).
    """
    if len(a) != len(b):
        raise ValueError(expected("bootstrap_paired_diff", f"{len(a)} and {len(b)} values", "paired lists"))
    _check_boot("bootstrap_paired_diff", n_boot, ci)
    d = _defined([None if x is None or y is None else float(x) - float(y) for x, y in zip(a, b, strict=True)])
    if d.size == 0:
        return PairedDiff(None, None, None)
    return PairedDiff(*_bootstrap(d, n_boot, seed, ci))
