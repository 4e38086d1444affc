"""A run's summary row: feature counts, statistics of its scores over features with their controls, and its
LLM usage.

The store gives the raw rows (each scored feature's 'llm', 'baseline' and 'other' scores rows, features per
status, summed LLM calls); the statistics are computed here with `scoring.summarise`. Returned by
`autointerp run` and `score_checkpoint`, and the source of every run table row (`autointerp.tables`).

Every statistic is one `summarise` dict flattened under a prefix: `<prefix>_n_total`, `_n_defined`,
`_n_undefined_as_zero`, `_n`, `_mean`, `_median`, `_q25`, `_q75`, `_ci_lo`, `_ci_hi` (95% bootstrap
interval of the mean). How an undefined value counts (docs/scores.md, "Undefined counts as zero"):

- correlation-type (`correlation`, its controls, its lifts, the permutation null's mean r): as 0, since
  a constant prediction explains nothing; the store keeps the NULL and its reason;
- everything else (`auroc`, `balanced_accuracy`, `ece`, `binarity`, `abs_dev_explained`, z-scores, AUROC
  lifts): left out, the n says how many were defined.

Headline scores (`correlation`, `auroc`) come with each control: `<control>_<score>_*` is the control's own
score (control = 'baseline', the top-tokens explanation, or 'other', another feature's explanation, on the
same windows) and the lift over it, `lift_*` / `lift_other_*` for correlation and `auroc_lift_*` /
`auroc_lift_other_*` for AUROC, each over the features that had that control scored. The permutation null
(no LLM call): `null_correlation_*` (the null's mean r per feature), `null_std_*` (its spread),
`null_z_*` (how many null standard deviations the real correlation stands above it) and
`null_p05_share` (share of features with p < 0.05; an undefined p counts as not below).

Spread: `bootstrap_std_*` summarises each feature's window-bootstrap std of its correlation (the score
json's `bootstrap_std`: the feature's own scored windows resampled with replacement, seeded by (seed,
feature); not a re-draw of fresh windows), undefined left out; its `_mean` is the typical per-feature
spread to read next to `correlation_mean`. Rows stored before it existed have none.

Detection (the detection scorer's rows, where it ran): `detection_<score>_*` for balanced accuracy,
precision, recall and AUROC of the LLM explanation (undefined left out: precision when the judge said yes
to nothing, AUROC when it gave no probabilities), and `detection_<score>_lift_*`, the lift over the baseline
explanation judged on the same windows.
"""

import json
from typing import Any

from autointerp.scoring import summarise
from autointerp.store import RunStore

CONTROLS = ("baseline", "other")
# Headline scores, each with its controls and lifts -> whether an undefined value counts as 0.
HEADLINE_SCORES = {"correlation": True, "auroc": False}
# Secondary scores of the LLM explanation, undefined left out (0 is not "no skill" for them).
SECONDARY_SCORES = ("balanced_accuracy", "abs_dev_explained", "ece", "binarity")
# Detection scores of the LLM explanation, each with its lift over the baseline control; undefined left out.
DETECTION_SCORES = ("balanced_accuracy", "precision", "recall", "auroc")
_NULL_COLUMNS = ("n_permutations", "permutation_mean", "permutation_std", "permutation_z", "permutation_p")
SIGNIFICANCE = 0.05


def lift_prefix(score: str, control: str) -> str:
    """The summary prefix of a score's lift over a control: 'lift' / 'lift_other' for the correlation (the
    store's lift columns), '<score>_lift' / '<score>_lift_other' otherwise."""
    suffix = "lift" if control == "baseline" else f"lift_{control}"
    return suffix if score == "correlation" else f"{score}_{suffix}"


def _flat(prefix: str, stats: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}_{key}": value for key, value in stats.items()}


def _lift_stats(pairs: list[tuple[float | None, float | None]], as_zero: bool) -> dict[str, Any]:
    """summarise() of score - control over (score, control) pairs. With as_zero an undefined side counts as
    0, and n_undefined_as_zero / n_defined count the pairs with an undefined side (the lift's own value is
    then always defined); without, such pairs are left out."""
    if not as_zero:
        return summarise([None if a is None or c is None else a - c for a, c in pairs], undefined_as_zero=False)
    stats = summarise([float(a or 0.0) - float(c or 0.0) for a, c in pairs])
    undefined = sum(a is None or c is None for a, c in pairs)
    return stats | {"n_defined": len(pairs) - undefined, "n_undefined_as_zero": undefined}


def score_statistics(rows: dict[int, dict[str, dict[str, Any]]], n_permutations: int) -> dict[str, Any]:
    """The score statistics of a run from its score rows (feature -> source -> columns, as
    RunStore.score_rows gives them); n_permutations: the run's setting (0: the null was not computed, and
    its statistics cover no feature)."""
    llm = [sources["llm"] for sources in rows.values() if "llm" in sources]
    out: dict[str, Any] = {}
    for score, as_zero in HEADLINE_SCORES.items():
        out.update(_flat(score, summarise([r[score] for r in llm], undefined_as_zero=as_zero)))
        for control in CONTROLS:
            pairs = [(s["llm"][score], s[control][score]) for s in rows.values() if "llm" in s and control in s]
            own = summarise([c for _, c in pairs], undefined_as_zero=as_zero)
            lifts = _lift_stats(pairs, as_zero)
            out.update(_flat(f"{control}_{score}", own) | _flat(lift_prefix(score, control), lifts))
    # The null covers the features it was drawn for, and those whose correlation is undefined (a constant
    # prediction has no null either; it counts as 0 and as not significant). Rows scored before the null
    # existed, or whose windows all differ in length, have no draws and are left out.
    nulls = [r for r in llm if (r["n_permutations"] or 0) > 0 or r["correlation"] is None] if n_permutations else []
    out.update(_flat("null_correlation", summarise([r["permutation_mean"] for r in nulls])))
    out.update(_flat("null_std", summarise([r["permutation_std"] for r in nulls], undefined_as_zero=False)))
    out.update(_flat("null_z", summarise([r["permutation_z"] for r in nulls], undefined_as_zero=False)))
    below = [r["permutation_p"] is not None and r["permutation_p"] < SIGNIFICANCE for r in nulls]
    out["null_p05_share"] = sum(below) / len(below) if below else None
    out["null_p05_n"] = len(below)
    out["null_n_permutations"] = n_permutations
    spreads = [_bootstrap_std(r) for r in llm]
    out.update(_flat("bootstrap_std", summarise(spreads, undefined_as_zero=False)))
    for score in SECONDARY_SCORES:
        out.update(_flat(score, summarise([r[score] for r in llm], undefined_as_zero=False)))
    return out


def _bootstrap_std(row: dict[str, Any]) -> float | None:
    """The row's window-bootstrap std from its score json (None without json or without the field)."""
    if not row.get("json"):
        return None
    return json.loads(row["json"]).get("bootstrap_std")


def detection_statistics(rows: dict[int, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The detection statistics of a run from its detection rows (feature -> source -> columns, as
    RunStore.detection_rows gives them): each DETECTION_SCORES of the 'llm' rows, and its lift over the
    'baseline' row of the same feature."""
    out: dict[str, Any] = {}
    for score in DETECTION_SCORES:
        own = [sources["llm"][score] for sources in rows.values() if "llm" in sources]
        pairs = [(s["llm"][score], s["baseline"][score]) for s in rows.values() if "llm" in s and "baseline" in s]
        out.update(_flat(f"detection_{score}", summarise(own, undefined_as_zero=False)))
        out.update(_flat(f"detection_{score}_lift", _lift_stats(pairs, as_zero=False)))
    return out


def run_summary(store: RunStore, run_id: str) -> dict[str, Any]:
    """Counts, settings hash(es), score statistics (:func:`score_statistics`, see the module docstring) and
    LLM usage summed over every recorded call (cost_usd None when some call's price is unknown; then
    unpriced_calls says how many). Raises StoreError when the database has no such run."""
    run = store.require_run(run_id)
    columns = (*HEADLINE_SCORES, *SECONDARY_SCORES, *_NULL_COLUMNS, "json")
    rows = store.score_rows(run_id, columns)
    detection = store.detection_rows(run_id, DETECTION_SCORES)
    stages = store.stage_counts(run_id)
    hashes = store.settings_hash_counts(run_id)
    n_permutations = int((run["config"].get("scoring") or {}).get("n_permutations") or 0)
    return {
        "run_id": run_id,
        "name": run["name"],
        "status": run["status"],
        "training_run": run["training_run"],
        "step": run["step"],
        "sae_fingerprint": run["sae_fingerprint"],
        "settings_hash": ",".join(h for h in hashes if h) or None,
        "sampled": sum(stages.values()),
        # a feature counts as scored when any scorer judged its LLM explanation
        "scored": len({f for table in (rows, detection) for f, sources in table.items() if "llm" in sources}),
        "failed": stages.get("failed", 0),
        **score_statistics(rows, n_permutations),
        **detection_statistics(detection),
        **store.call_totals(run_id),
    }
