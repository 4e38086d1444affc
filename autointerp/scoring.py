"""Scores of one feature's simulation: pure functions over numpy arrays (no I/O, no LLM).

Scales used throughout:
- ``a``   raw true activations (the SAE's own scale, >= 0 in practice);
- ``a_q`` ``a`` quantised to the integers 0..10 against the feature's max (:func:`quantise`);
- ``p``   simulated activations, floats on the 0..10 scale (integers when sampled, expected values
  when computed from logprobs).

A metric that cannot be computed (a constant input, no positive windows, ...) is *undefined*: it is a
:class:`Metric` with ``value=None`` and a ``reason``, never 0 and never an exception. Exceptions are
kept for programming errors (arrays of different lengths, predictions off the 0..10 scale).

Definitions follow ``docs/scores.md`` and the design notes ("Scores and calibration diagnostics").
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, Field

QuantiseRule = Literal["floor", "ceil"]

N_LEVELS = 11  # the 0..10 scale
# Groups with a per-group correlation; "nonactivating" has none (its truth is all zeros).
SCORED_GROUPS = ("top", "interval", "random")
# max p >= 0.5 <=> the window's highest prediction rounds to a level >= 1 (see to_level).
DEFAULT_DETECTION_THRESHOLD = 0.5
_SNAP = 1e-9  # in levels: 10*a/max within this of an integer is that integer (float noise at boundaries)


@dataclass(frozen=True)
class Metric:
    """A metric value, or ``None`` with the reason it is undefined. Exactly one of the two is set."""

    value: float | None
    reason: str | None = None

    def __post_init__(self) -> None:
        if (self.value is None) == (self.reason is None):
            raise ValueError(f"Metric: found value={self.value!r}, reason={self.reason!r}; expected exactly one")

    @classmethod
    def ok(cls, value: float) -> "Metric":
        return cls(float(value), None)

    @classmethod
    def undefined(cls, reason: str) -> "Metric":
        return cls(None, reason)

    @property
    def defined(self) -> bool:
        return self.value is not None


# ---------------------------------------------------------------------------------------------------
# Quantisation


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
        raise ValueError(f"quantise rule: found {rule!r}; expected 'floor' or 'ceil'")
    a = np.asarray(acts, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError("quantise acts: found NaN or inf; expected finite raw activations")
    if not np.isfinite(max_activation):
        raise ValueError(f"quantise max_activation: found {max_activation!r}; expected a finite number")
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


# ---------------------------------------------------------------------------------------------------
# Helpers


def _pair(a: Any, p: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(p, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"{name}: found truth of length {x.size} and prediction of length {y.size}; expected equal")
    return x, y


def _constant(x: np.ndarray) -> bool:
    # Exact equality on the inputs: a centred sum of squares can be a rounding residue instead of 0.
    return bool(np.all(x == x[0]))


def rank_average(x: Any) -> np.ndarray:
    """Ranks 1..n of a 1-d array; ties share the mean of their ranks ([5, 1, 5] -> [2.5, 1, 2.5])."""
    v = np.asarray(x, dtype=np.float64).ravel()
    n = v.size
    if n == 0:
        return np.zeros(0)
    order = np.argsort(v, kind="mergesort")
    sorted_v = v[order]
    # start index of each run of equal values in sorted order
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], n]  # exclusive
    run_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(n)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


# ---------------------------------------------------------------------------------------------------
# Agreement between truth and prediction


def pearson(a: Any, p: Any) -> Metric:
    """Pearson r = sum (a - mean a)(p - mean p) / sqrt(sum (a - mean a)^2 * sum (p - mean p)^2), in [-1, 1].

    Any scales (raw or 0..10; r is invariant to affine changes of either). Undefined with fewer than two
    tokens, or when either side is constant.
    """
    x, y = _pair(a, p, "pearson")
    if x.size < 2:
        return Metric.undefined(f"fewer than 2 tokens ({x.size})")
    if _constant(x):
        return Metric.undefined("constant truth")
    if _constant(y):
        return Metric.undefined("constant prediction")
    dx = x - x.mean()
    dy = y - y.mean()
    r = float(np.dot(dx, dy) / np.sqrt(np.dot(dx, dx) * np.dot(dy, dy)))
    return Metric.ok(min(1.0, max(-1.0, r)))


def spearman(a: Any, p: Any) -> Metric:
    """Spearman rho = Pearson r of the average ranks (ties share their mean rank), in [-1, 1].

    Any scales. Undefined with fewer than two tokens, or when either side is constant.
    """
    x, y = _pair(a, p, "spearman")
    if x.size < 2:
        return Metric.undefined(f"fewer than 2 tokens ({x.size})")
    if _constant(x):
        return Metric.undefined("constant truth")
    if _constant(y):
        return Metric.undefined("constant prediction")
    return pearson(rank_average(x), rank_average(y))


def r2_centred(a_q: Any, p: Any) -> Metric:
    """1 - SSE / SST with SSE = sum (a_q - p)^2 and SST = sum (a_q - mean a_q)^2; in (-inf, 1].

    a_q and p on the 0..10 scale. 1 is perfect, 0 is no better than predicting the mean of a_q.
    Undefined with no tokens or constant a_q (SST = 0).
    """
    x, y = _pair(a_q, p, "r2_centred")
    if x.size == 0:
        return Metric.undefined("no tokens")
    if _constant(x):
        return Metric.undefined("constant truth")
    sse = float(np.sum((x - y) ** 2))
    sst = float(np.sum((x - x.mean()) ** 2))
    return Metric.ok(1.0 - sse / sst)


def abs_dev_explained(a_q: Any, p: Any) -> Metric:
    """1 - mean|a_q - p| / mean|a_q - mean(a_q)|; in (-inf, 1].

    a_q and p on the 0..10 scale. Centred (OpenAI's version divides by mean|a_q| instead).
    Undefined with no tokens or constant a_q.
    """
    x, y = _pair(a_q, p, "abs_dev_explained")
    if x.size == 0:
        return Metric.undefined("no tokens")
    if _constant(x):
        return Metric.undefined("constant truth")
    return Metric.ok(1.0 - float(np.mean(np.abs(x - y))) / float(np.mean(np.abs(x - x.mean()))))


# ---------------------------------------------------------------------------------------------------
# Calibration


def calibration_fit(a_q: Any, p: Any) -> tuple[Metric, Metric]:
    """Least-squares fit a_q ~ slope * p + intercept; returns (slope, intercept).

    a_q and p on the 0..10 scale; slope 1, intercept 0 is perfect calibration.
    slope = sum (p - mean p)(a_q - mean a_q) / sum (p - mean p)^2, intercept = mean a_q - slope * mean p.
    Both undefined with fewer than two tokens or constant p. Constant a_q is fine (slope 0).
    """
    x, y = _pair(a_q, p, "calibration_fit")
    if x.size < 2:
        reason = f"fewer than 2 tokens ({x.size})"
        return Metric.undefined(reason), Metric.undefined(reason)
    if _constant(y):
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
    x, y = _pair(a_q, p, "reliability_table")
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
    x, y = _pair(a_q, p, "ece")
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


# ---------------------------------------------------------------------------------------------------
# Detection (one score and one label per window)


def auroc(labels: Any, scores: Any) -> Metric:
    """AUROC = P(score of a random positive > score of a random negative), ties counting 1/2.

    Computed as Mann-Whitney U / (n_pos * n_neg) from average ranks:
    U = sum of positives' ranks - n_pos (n_pos + 1) / 2. In [0, 1]; 0.5 is chance.
    Undefined when there is no positive or no negative.
    """
    y, s = _pair(labels, scores, "auroc")
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
    y, s = _pair(labels, scores, "balanced_accuracy")
    pos = y.astype(bool)
    if not pos.any():
        return Metric.undefined("no positive windows")
    if pos.all():
        return Metric.undefined("no negative windows")
    hit = s >= threshold
    tpr = float(np.mean(hit[pos]))
    tnr = float(np.mean(~hit[~pos]))
    return Metric.ok((tpr + tnr) / 2.0)


# ---------------------------------------------------------------------------------------------------
# One feature


HEADLINE = (
    "correlation",
    "correlation_quantised",
    "spearman",
    "r2_centred",
    "abs_dev_explained",
    "slope",
    "intercept",
    "ece",
    "binarity",
    "auroc",
    "balanced_accuracy",
)
_SCALAR_FIELDS = (
    "n_windows",
    "n_tokens",
    "n_positive_windows",
    "n_negative_windows",
    "max_activation",
    "quantise_rule",
    "detection_threshold",
    *HEADLINE,
)
# The scalar columns FeatureScores.to_columns() returns, in order (a store can create its table from this).
COLUMNS = (*_SCALAR_FIELDS, *(f"correlation_{g}" for g in SCORED_GROUPS))


class FeatureScores(BaseModel):
    """All scores of one feature's simulation. An undefined metric is None, its reason in `undefined`."""

    n_windows: int = Field(description="scoring windows")
    n_tokens: int = Field(description="tokens over all scoring windows")
    n_positive_windows: int = Field(description="windows whose true max activation is > 0")
    n_negative_windows: int = Field(description="windows whose true max activation is <= 0")
    max_activation: float = Field(description="the feature's max, raw scale, used to quantise")
    quantise_rule: QuantiseRule = Field(description="how a became a_q: 'floor' (OpenAI) or 'ceil' (delphi)")
    detection_threshold: float = Field(description="0..10 scale: a window is predicted to fire if max p >= this")
    correlation: float | None = Field(description="Pearson r(a raw, p) pooled over all tokens; the headline score")
    correlation_quantised: float | None = Field(description="Pearson r(a_q, p) pooled over all tokens")
    spearman: float | None = Field(description="Spearman rho(a raw, p), average ranks for ties")
    r2_centred: float | None = Field(description="1 - SSE/SST of p against a_q, (-inf, 1]")
    abs_dev_explained: float | None = Field(description="1 - mean|a_q - p| / mean|a_q - mean a_q|, (-inf, 1]")
    slope: float | None = Field(description="least-squares a_q ~ slope * p + intercept; 1 is calibrated")
    intercept: float | None = Field(description="0..10 scale; 0 is calibrated")
    ece: float | None = Field(description="count-weighted mean |mean a_q - level| over predicted levels, [0, 10]")
    binarity: float | None = Field(description="share of predictions rounding to 0 or 10, [0, 1]")
    auroc: float | None = Field(description="windows: max p vs fired (true max > 0), [0, 1]")
    balanced_accuracy: float | None = Field(description="windows: (TPR + TNR) / 2 at detection_threshold, [0, 1]")
    group_correlations: dict[str, float | None] = Field(
        description="Pearson r(a raw, p) within groups: 'top', 'interval' (all intervals pooled), "
        "'interval_<k>' for each interval k present, 'random'"
    )
    undefined: dict[str, str] = Field(
        default_factory=dict,
        description="metric name -> why it is None (group ones as 'correlation_<group>')",
    )
    details: dict[str, Any] = Field(
        default_factory=dict,
        description="'reliability': 11 rows {level, count, mean_true_q}; 'histogram': 11 prediction counts per level",
    )

    def to_columns(self) -> dict[str, float | int | str | None]:
        """Flat scalar columns named by COLUMNS, the same for every feature (per-interval ones: to_json)."""
        columns: dict[str, float | int | str | None] = {name: getattr(self, name) for name in _SCALAR_FIELDS}
        for group in SCORED_GROUPS:
            columns[f"correlation_{group}"] = self.group_correlations.get(group)
        return columns

    def to_json(self) -> str:
        """Everything, as JSON (round-trips through FeatureScores.model_validate_json)."""
        return self.model_dump_json()


def score_feature(
    windows_true: Sequence[Any],
    windows_pred: Sequence[Any],
    groups: Sequence[str],
    intervals: Sequence[int | None],
    max_activation: float,
    rule: QuantiseRule = "floor",
    detection_threshold: float = DEFAULT_DETECTION_THRESHOLD,
) -> FeatureScores:
    """Score one feature's simulation over its held-out windows.

    Args:
        windows_true: per window, raw true activations (1-d, one per token).
        windows_pred: per window, simulated activations on the 0..10 scale, same lengths.
        groups: per window, 'top' | 'interval' | 'random' | 'nonactivating'.
        intervals: per window, the interval index for group 'interval', else None.
        max_activation: the feature's max (raw), used to quantise a into a_q.
        rule: quantisation rule, see :func:`quantise`.
        detection_threshold: 0..10 scale; a window is predicted to fire when its max p >= this.

    Token metrics are pooled over all tokens of all windows. Detection uses one (max p, fired) pair per
    window, fired meaning true max activation > 0. Raises ValueError on mismatched lengths, empty
    windows, non-finite values or predictions outside 0..10: callers validate LLM output before this.
    """
    n = len(windows_true)
    if not (len(windows_pred) == len(groups) == len(intervals) == n):
        raise ValueError(
            f"score_feature: found {n} true windows, {len(windows_pred)} predicted, {len(groups)} groups, "
            f"{len(intervals)} intervals; expected the same number of each"
        )
    trues: list[np.ndarray] = []
    preds: list[np.ndarray] = []
    for i, (t, p, g, k) in enumerate(zip(windows_true, windows_pred, groups, intervals, strict=True)):
        t_arr = np.asarray(t, dtype=np.float64).ravel()
        p_arr = np.asarray(p, dtype=np.float64).ravel()
        if t_arr.size != p_arr.size:
            raise ValueError(
                f"score_feature window {i}: found {t_arr.size} true activations and "
                f"{p_arr.size} predictions; expected one prediction per token"
            )
        if t_arr.size == 0:
            raise ValueError(f"score_feature window {i}: found no tokens; expected at least one")
        if not (np.all(np.isfinite(t_arr)) and np.all(np.isfinite(p_arr))):
            raise ValueError(f"score_feature window {i}: found NaN or inf; expected finite values")
        if p_arr.min() < 0 or p_arr.max() > 10:
            raise ValueError(
                f"score_feature window {i}: found predictions in [{p_arr.min()}, {p_arr.max()}]; expected 0..10"
            )
        if g not in ("top", "interval", "random", "nonactivating"):
            raise ValueError(
                f"score_feature window {i}: found group {g!r}; expected 'top', 'interval', 'random' or 'nonactivating'"
            )
        if g == "interval" and k is None:
            raise ValueError(f"score_feature window {i}: found group 'interval' with no interval index")
        trues.append(t_arr)
        preds.append(p_arr)

    a = np.concatenate(trues) if trues else np.zeros(0)
    p = np.concatenate(preds) if preds else np.zeros(0)
    a_q = quantise(a, max_activation, rule)

    metrics: dict[str, Metric] = {
        "correlation": pearson(a, p),
        "correlation_quantised": pearson(a_q, p),
        "spearman": spearman(a, p),
        "r2_centred": r2_centred(a_q, p),
        "abs_dev_explained": abs_dev_explained(a_q, p),
        "ece": ece(a_q, p),
        "binarity": binarity(p),
    }
    metrics["slope"], metrics["intercept"] = calibration_fit(a_q, p)

    fired = np.array([t.max() > 0 for t in trues], dtype=bool)
    window_score = np.array([q.max() for q in preds])
    metrics["auroc"] = auroc(fired, window_score)
    metrics["balanced_accuracy"] = balanced_accuracy(fired, window_score, detection_threshold)

    # Per-group correlations: which windows each key pools.
    members: dict[str, list[int]] = {g: [] for g in SCORED_GROUPS}
    for i, (g, k) in enumerate(zip(groups, intervals, strict=True)):
        if g in members:
            members[g].append(i)
        if g == "interval":
            members.setdefault(f"interval_{k}", []).append(i)
    group_metrics: dict[str, Metric] = {}
    for key in sorted(members, key=_group_order):
        idx = members[key]
        if not idx:
            group_metrics[key] = Metric.undefined("no windows in group")
        else:
            group_metrics[key] = pearson(
                np.concatenate([trues[i] for i in idx]), np.concatenate([preds[i] for i in idx])
            )

    undefined = {name: m.reason for name, m in metrics.items() if m.reason is not None}
    undefined.update({f"correlation_{g}": m.reason for g, m in group_metrics.items() if m.reason is not None})
    return FeatureScores(
        n_windows=n,
        n_tokens=int(a.size),
        n_positive_windows=int(fired.sum()),
        n_negative_windows=int(n - fired.sum()),
        max_activation=float(max_activation),
        quantise_rule=rule,
        detection_threshold=float(detection_threshold),
        **{name: metrics[name].value for name in HEADLINE},
        group_correlations={g: m.value for g, m in group_metrics.items()},
        undefined=undefined,
        details={"reliability": reliability_table(a_q, p), "histogram": prediction_histogram(p)},
    )


def _group_order(key: str) -> tuple[int, int]:
    # top, interval (pooled), interval_0, interval_1, ..., random
    if key == "top":
        return (0, 0)
    if key == "interval":
        return (1, -1)
    if key.startswith("interval_"):
        return (1, int(key.removeprefix("interval_")))
    return (2, 0)


# ---------------------------------------------------------------------------------------------------
# Controls and summaries over features


def lift(score: float | None, control: float | None) -> float | None:
    """score - control (e.g. correlation under the LLM explanation minus under a control one).

    None if either is None (undefined).
    """
    if score is None or control is None:
        return None
    return float(score) - float(control)


def summarise(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """n, mean, median, q25, q75 of the defined values (None and NaN skipped); statistics None when n == 0.

    Quantiles use numpy's default linear interpolation.
    """
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return {"n": 0, "mean": None, "median": None, "q25": None, "q75": None}
    q25, median, q75 = np.quantile(v, [0.25, 0.5, 0.75])
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "median": float(median),
        "q25": float(q25),
        "q75": float(q75),
    }


class PairedDiff(NamedTuple):
    """Mean of a - b over pairs and its bootstrap percentile interval; all None with no complete pair."""

    mean_diff: float | None
    lo: float | None
    hi: float | None


def bootstrap_paired_diff(
    a: Sequence[float | None],
    b: Sequence[float | None],
    n_boot: int = 2000,
    seed: int = 0,
    ci: float = 0.95,
) -> PairedDiff:
    """Paired bootstrap of mean(a_i - b_i) (e.g. one feature's score under two runs or two explainers).

    Pairs where either side is None or NaN are dropped. Resamples the n differences with replacement
    n_boot times (numpy default_rng(seed), so the result is deterministic for a seed) and returns
    (mean difference, lower, upper) with lower/upper the (1 - ci)/2 and (1 + ci)/2 percentiles of the
    resampled means. Raises ValueError if a and b differ in length or ci is not in (0, 1).
    """
    if len(a) != len(b):
        raise ValueError(f"bootstrap_paired_diff: found {len(a)} and {len(b)} values; expected paired lists")
    if not 0 < ci < 1:
        raise ValueError(f"bootstrap_paired_diff ci: found {ci}; expected a level in (0, 1), e.g. 0.95")
    if n_boot < 1:
        raise ValueError(f"bootstrap_paired_diff n_boot: found {n_boot}; expected >= 1")
    d = np.array(
        [float(x) - float(y) for x, y in zip(a, b, strict=True) if x is not None and y is not None],
        dtype=np.float64,
    )
    d = d[~np.isnan(d)]
    if d.size == 0:
        return PairedDiff(None, None, None)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 1_000_000 // d.size)  # bounds memory at ~8 MB of indices per step
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        means[start:stop] = d[rng.integers(0, d.size, size=(stop - start, d.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - ci) / 2, (1 + ci) / 2])
    return PairedDiff(float(d.mean()), float(lo), float(hi))
