"""All scores of one feature's simulation: :func:`score_feature` and the record it returns.

Scales: ``a`` raw true activations; ``a_q`` their 0..10 quantisation; ``p`` predictions on the 0..10
scale. Definitions: ``docs/scores.md``.
"""

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from autointerp.errors import expected
from autointerp.scoring.agreement import abs_dev_explained, abs_dev_explained_centred, pearson, r2_centred, spearman
from autointerp.scoring.bins import score_by_bin
from autointerp.scoring.calibration import (
    binarity,
    calibration_fit,
    calibration_tokens,
    ece,
    prediction_histogram,
    reliability_table,
)
from autointerp.scoring.controls import permutation_null
from autointerp.scoring.detection import (
    DEFAULT_DETECTION_THRESHOLD,
    ThresholdSetting,
    auroc,
    balanced_accuracy,
    resolve_detection_threshold,
)
from autointerp.scoring.metric import Metric
from autointerp.scoring.quantise import QuantiseRule, quantise
from autointerp.scoring.spread import window_bootstrap

# Groups with a per-group correlation; "nonactivating" and "hard_negative" have none (truth all zeros).
SCORED_GROUPS = ("top", "interval", "random")
WINDOW_GROUPS = ("top", "interval", "random", "nonactivating", "hard_negative")

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
# Added after the first schema; kept at the end so existing columns keep their order.
_LATER_FIELDS = (
    "abs_dev_explained_centred",
    "n_calibration_tokens",
    "detection_threshold_rule",
    "n_permutations",
    "permutation_mean",
    "permutation_std",
    "permutation_z",
    "permutation_p",
)
_PERMUTATION_FIELDS = ("permutation_mean", "permutation_std", "permutation_z", "permutation_p")
# The scalar columns FeatureScores.to_columns() returns, in order (a store can create its table from this).
COLUMNS = (*_SCALAR_FIELDS, *(f"correlation_{g}" for g in SCORED_GROUPS), *_LATER_FIELDS)


class FeatureScores(BaseModel):
    """All scores of one feature's simulation. An undefined metric is None, its reason in `undefined`.

    Fields added after the first schema have defaults, so score JSON stored by older versions still loads.
    """

    n_windows: int = Field(description="scoring windows")
    n_tokens: int = Field(description="tokens over all scoring windows")
    n_positive_windows: int = Field(description="windows whose true max activation is > 0")
    n_negative_windows: int = Field(description="windows whose true max activation is <= 0")
    max_activation: float = Field(description="the feature's max, raw scale, used to quantise")
    quantise_rule: QuantiseRule = Field(description="how a became a_q: 'floor' (OpenAI) or 'ceil' (delphi)")
    detection_threshold: float = Field(
        description="0..10 scale: the threshold actually used; a window is predicted to fire if max p >= this"
    )
    correlation: float | None = Field(description="Pearson r(a raw, p) pooled over all tokens; the headline score")
    correlation_quantised: float | None = Field(description="Pearson r(a_q, p) pooled over all tokens")
    spearman: float | None = Field(description="Spearman rho(a raw, p), average ranks for ties")
    r2_centred: float | None = Field(description="1 - SSE/SST of p against a_q, (-inf, 1]")
    abs_dev_explained: float | None = Field(
        description="OpenAI's 1 - mean|a_q - p| / mean|a_q|, (-inf, 1]; an always-zero prediction gets 0"
    )
    slope: float | None = Field(
        description="calibration set: least-squares a_q ~ slope * p + intercept; 1 is calibrated"
    )
    intercept: float | None = Field(description="calibration set, 0..10 scale; 0 is calibrated")
    ece: float | None = Field(
        description="calibration set: count-weighted mean |mean a_q - level| over predicted levels, [0, 10]"
    )
    binarity: float | None = Field(description="calibration set: share of predictions rounding to 0 or 10, [0, 1]")
    auroc: float | None = Field(description="windows: max p vs fired (true max > 0), [0, 1]; detection headline")
    balanced_accuracy: float | None = Field(description="windows: (TPR + TNR) / 2 at detection_threshold, [0, 1]")
    group_correlations: dict[str, float | None] = Field(
        description="Pearson r(a raw, p) within groups: 'top', 'interval' (all intervals pooled), "
        "'interval_<k>' for each interval k present, 'random'"
    )
    abs_dev_explained_centred: float | None = Field(
        default=None,
        description="secondary: 1 - mean|a_q - p| / mean|a_q - mean a_q|; ~0.5 for an always-zero prediction on "
        "a sparse feature, so misleading there",
    )
    n_calibration_tokens: int = Field(
        default=0, description="tokens in the calibration set: every firing token plus as many non-firing ones"
    )
    detection_threshold_rule: Literal["fixed", "auto"] = Field(
        default="fixed", description="'fixed': detection_threshold was given; 'auto': balanced split of window max p"
    )
    n_permutations: int = Field(default=0, description="permutation-null draws; 0 when the null was not computed")
    permutation_mean: float | None = Field(default=None, description="mean pooled r over window permutations")
    permutation_std: float | None = Field(default=None, description="std (ddof 0) of the null r values")
    permutation_z: float | None = Field(default=None, description="(correlation - null mean) / null std")
    permutation_p: float | None = Field(
        default=None, description="(1 + #null r >= correlation) / (1 + n_permutations), (0, 1]"
    )
    bootstrap_std: float | None = Field(
        default=None,
        description="window-bootstrap std (ddof 1) of the pooled correlation: the scored windows resampled with "
        "replacement, seeded by (seed, feature); not a re-draw of fresh windows (scoring.spread)",
    )
    n_bootstrap: int = Field(
        default=0, description="bootstrap resamples with a defined correlation behind bootstrap_std"
    )
    undefined: dict[str, str] = Field(
        default_factory=dict,
        description="metric name -> why it is None (group ones as 'correlation_<group>')",
    )
    details: dict[str, Any] = Field(
        default_factory=dict,
        description="'reliability': 11 rows {level, count, mean_true_q} on the calibration set; 'histogram': "
        "predictions per level 0..10 on the calibration set; 'histogram_all_tokens': the same over all tokens; "
        "'calibration_set': {n_firing, n_nonfiring}; 'by_bin': rows of scoring.score_by_bin",
    )

    def to_columns(self) -> dict[str, float | int | str | None]:
        """Flat scalar columns named by COLUMNS, the same for every feature (per-interval ones: to_json)."""
        columns: dict[str, float | int | str | None] = {}
        for name in COLUMNS:
            if name.startswith("correlation_") and name.removeprefix("correlation_") in SCORED_GROUPS:
                columns[name] = self.group_correlations.get(name.removeprefix("correlation_"))
            else:
                columns[name] = getattr(self, name)
        return columns

    def to_json(self) -> str:
        """Everything, as JSON (round-trips through FeatureScores.model_validate_json)."""
        return self.model_dump_json()

    def metric(self, name: str) -> Metric:
        """One score as a Metric, with its reason when undefined ('correlation_<group>' for group ones)."""
        if name.startswith("correlation_") and name.removeprefix("correlation_") in self.group_correlations:
            value = self.group_correlations[name.removeprefix("correlation_")]
        elif name in type(self).model_fields:
            value = getattr(self, name)
        else:
            raise ValueError(expected("FeatureScores.metric", repr(name), "a score field or 'correlation_<group>'"))
        if value is None:
            return Metric.undefined(self.undefined.get(name, "not computed"))
        return Metric.ok(value)


def _validated(
    windows_true: Sequence[Any], windows_pred: Sequence[Any], groups: Sequence[str], intervals: Sequence[int | None]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    n = len(windows_true)
    if not (len(windows_pred) == len(groups) == len(intervals) == n):
        raise ValueError(
            expected(
                "score_feature",
                f"{n} true windows, {len(windows_pred)} predicted, {len(groups)} groups, {len(intervals)} intervals",
                "the same number of each",
            )
        )
    trues: list[np.ndarray] = []
    preds: list[np.ndarray] = []
    for i, (t, p, g, k) in enumerate(zip(windows_true, windows_pred, groups, intervals, strict=True)):
        where = f"score_feature window {i}"
        t_arr = np.asarray(t, dtype=np.float64).ravel()
        p_arr = np.asarray(p, dtype=np.float64).ravel()
        if t_arr.size != p_arr.size:
            raise ValueError(
                expected(where, f"{t_arr.size} true activations and {p_arr.size} predictions", "one per token")
            )
        if t_arr.size == 0:
            raise ValueError(expected(where, "no tokens", "at least one"))
        if not (np.all(np.isfinite(t_arr)) and np.all(np.isfinite(p_arr))):
            raise ValueError(expected(where, "NaN or inf", "finite values"))
        if p_arr.min() < 0 or p_arr.max() > 10:
            raise ValueError(expected(where, f"predictions in [{p_arr.min()}, {p_arr.max()}]", "0..10"))
        if g not in WINDOW_GROUPS:
            raise ValueError(expected(where, f"group {g!r}", " or ".join(repr(x) for x in WINDOW_GROUPS)))
        if g == "interval" and k is None:
            raise ValueError(expected(where, "group 'interval' with no interval index", "an interval index"))
        trues.append(t_arr)
        preds.append(p_arr)
    return trues, preds


def _group_order(key: str) -> tuple[int, int]:
    # top, interval (pooled), interval_0, interval_1, ..., random
    if key == "top":
        return (0, 0)
    if key == "interval":
        return (1, -1)
    if key.startswith("interval_"):
        return (1, int(key.removeprefix("interval_")))
    return (2, 0)


def _group_correlations(
    trues: list[np.ndarray], preds: list[np.ndarray], groups: Sequence[str], intervals: Sequence[int | None]
) -> dict[str, Metric]:
    members: dict[str, list[int]] = {g: [] for g in SCORED_GROUPS}
    for i, (g, k) in enumerate(zip(groups, intervals, strict=True)):
        if g in members:
            members[g].append(i)
        if g == "interval":
            members.setdefault(f"interval_{k}", []).append(i)
    result: dict[str, Metric] = {}
    for key in sorted(members, key=_group_order):
        idx = members[key]
        if not idx:
            result[key] = Metric.undefined("no windows in group")
        else:
            result[key] = pearson(np.concatenate([trues[i] for i in idx]), np.concatenate([preds[i] for i in idx]))
    return result


def score_feature(
    windows_true: Sequence[Any],
    windows_pred: Sequence[Any],
    groups: Sequence[str],
    intervals: Sequence[int | None],
    max_activation: float,
    rule: QuantiseRule = "floor",
    detection_threshold: ThresholdSetting = DEFAULT_DETECTION_THRESHOLD,
    *,
    n_permutations: int = 0,
    seed: int = 0,
    feature: int = 0,
) -> FeatureScores:
    """Score one feature's simulation over its held-out windows.

    Args:
        windows_true: per window, raw true activations (1-d, one per token).
        windows_pred: per window, simulated activations on the 0..10 scale, same lengths.
        groups: per window, 'top' | 'interval' | 'random' | 'nonactivating' | 'hard_negative'.
        intervals: per window, the interval index for group 'interval', else None.
        max_activation: the feature's max (raw), used to quantise a into a_q.
        rule: quantisation rule, see :func:`~.quantise.quantise`.
        detection_threshold: 0..10 scale, a window is predicted to fire when its max p >= this; or
            "auto" for the balanced split of the windows' max p (use it for expected values from
            logprobs, which never drop below ~0.5). The threshold used is stored.
        n_permutations: draws of the permutation null (0: not computed; 1000 gives p down to ~0.001).
        seed: run seed for the permutation null.
        feature: SAE feature index; with `seed` it seeds the null, so it does not depend on the run's
            other features.

    Token agreement metrics are pooled over all tokens of all windows. Calibration (slope, intercept,
    ECE, binarity, reliability table, histogram) uses the calibration set
    (:func:`~.calibration.calibration_tokens`). Detection uses one (max p, fired) pair per window, fired
    meaning true max activation > 0. Raises ValueError on mismatched lengths, empty windows, non-finite
    values or predictions outside 0..10: callers validate LLM output before this.
    """
    trues, preds = _validated(windows_true, windows_pred, groups, intervals)
    n = len(trues)
    a = np.concatenate(trues) if trues else np.zeros(0)
    p = np.concatenate(preds) if preds else np.zeros(0)
    a_q = quantise(a, max_activation, rule)

    metrics: dict[str, Metric] = {
        "correlation": pearson(a, p),
        "correlation_quantised": pearson(a_q, p),
        "spearman": spearman(a, p),
        "r2_centred": r2_centred(a_q, p),
        "abs_dev_explained": abs_dev_explained(a_q, p),
        "abs_dev_explained_centred": abs_dev_explained_centred(a_q, p),
    }

    calib = calibration_tokens(a)
    if calib.size == 0:
        for name in ("slope", "intercept", "ece", "binarity"):
            metrics[name] = Metric.undefined("no firing tokens")
    else:
        metrics["slope"], metrics["intercept"] = calibration_fit(a_q[calib], p[calib])
        metrics["ece"] = ece(a_q[calib], p[calib])
        metrics["binarity"] = binarity(p[calib])
    n_firing = int(np.sum(a > 0))

    fired = np.array([t.max() > 0 for t in trues], dtype=bool)
    window_score = np.array([q.max() for q in preds])
    if n == 0 and detection_threshold == "auto":
        threshold = DEFAULT_DETECTION_THRESHOLD  # nothing to cut; detection is undefined anyway
    else:
        threshold = resolve_detection_threshold(detection_threshold, window_score)
    metrics["auroc"] = auroc(fired, window_score)
    metrics["balanced_accuracy"] = balanced_accuracy(fired, window_score, threshold)

    permutation: dict[str, float | None] = dict.fromkeys(_PERMUTATION_FIELDS)
    n_drawn = 0
    if n_permutations > 0:
        null = permutation_null(trues, preds, n_permutations, seed, feature=feature)
        n_drawn = null.n
        permutation = {
            "permutation_mean": null.mean,
            "permutation_std": null.std,
            "permutation_z": null.z,
            "permutation_p": null.p_value,
        }
        reasons = {name: null.reason or "" for name, value in permutation.items() if value is None}
    else:
        reasons = dict.fromkeys(_PERMUTATION_FIELDS, "not computed (n_permutations=0)")

    spread = window_bootstrap(trues, preds, seed=seed, feature=feature)
    if spread.reason is not None:
        reasons["bootstrap_std"] = spread.reason
    group_metrics = _group_correlations(trues, preds, groups, intervals)
    undefined = {name: m.reason for name, m in metrics.items() if m.reason is not None}
    undefined.update({f"correlation_{g}": m.reason for g, m in group_metrics.items() if m.reason is not None})
    undefined.update(reasons)
    return FeatureScores(
        n_windows=n,
        n_tokens=int(a.size),
        n_positive_windows=int(fired.sum()),
        n_negative_windows=int(n - fired.sum()),
        max_activation=float(max_activation),
        quantise_rule=rule,
        detection_threshold=threshold,
        detection_threshold_rule="auto" if detection_threshold == "auto" else "fixed",
        **{name: m.value for name, m in metrics.items()},
        group_correlations={g: m.value for g, m in group_metrics.items()},
        n_calibration_tokens=int(calib.size),
        n_permutations=n_drawn,
        **permutation,
        bootstrap_std=spread.std,
        n_bootstrap=spread.n,
        undefined=undefined,
        details={
            "reliability": reliability_table(a_q[calib], p[calib]),
            "histogram": prediction_histogram(p[calib]),
            "histogram_all_tokens": prediction_histogram(p),
            "calibration_set": {"n_firing": n_firing, "n_nonfiring": int(calib.size) - n_firing},
            "by_bin": score_by_bin(trues, preds, groups, intervals, max_activation, threshold),
        },
    )
