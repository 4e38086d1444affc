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

Fresh draws (autointerp.redraws, `--redraws N`): `redraw_std_<score>_*` for correlation, detection balanced
accuracy and detection AUROC summarises each redrawn feature's std over its own draw and its redraws;
`redraw_draws` is the draws per feature (0: none).

Coverage: `scored` counts features every configured scorer judged; `partly_scored` those a scorer failed on
(`partly_scored_missing`: feature -> missing scorers; `--retry-failed` redoes them). `notes`: plain sentences
on what the run's scores can and cannot show, from its backends (reading_notes; the CLI prints them).

Detection (the detection scorer's rows, where it ran): `detection_<score>_*` for balanced accuracy,
precision, recall and AUROC of the LLM explanation (undefined left out: precision when the judge said yes
to nothing, AUROC when it gave no probabilities), and `detection_<score>_lift_*`, the lift over the baseline
explanation judged on the same windows.
"""

import json
from dataclasses import dataclass
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
# Detection's headline scores (paired by `compare`): balanced accuracy, and AUROC where the judge gave P(yes).
DETECTION_HEADLINES = ("balanced_accuracy", "auroc")
_NULL_COLUMNS = ("n_permutations", "permutation_mean", "permutation_std", "permutation_z", "permutation_p")
SIGNIFICANCE = 0.05
# What a run's scores can and cannot show, by backend (reading_notes); figures in docs/scores.md.
LOCAL_EXPLAINER_NOTE = (
    "Explanations come from the local SmolLM2-135M model, a very small model: its explanations are close to "
    "noise, so low scores here say little about the SAE's features. Use an API explainer to judge the features."
)
LOCAL_JUDGE_NOTE = (
    "Scores come from the local judge, which reads each token alone with no context (the same token gets the "
    "same prediction everywhere): it can tell whether an explanation names the tokens a feature fires on, not "
    "whether it captures context, and its detection is per-token matching, not an LLM reading each window."
)
BASELINE_NOTE = (
    "'baseline' is the no-LLM control (the feature's top tokens), not an LLM: its scores measure that token "
    "list, a floor for what an explanation should beat."
)
READ_LIFTS_NOTE = (
    "Read each score next to its controls: lift over the baseline and over another feature's explanation, and "
    "the permutation null; a score that does not beat them shows nothing."
)


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


@dataclass(frozen=True)
class Headline:
    """One headline score per feature of a run: values (feature -> value; None = undefined and left out),
    as_zero (undefined counts as 0: values then hold the 0 already) and undefined (features whose value, or
    a side of whose lift, was undefined)."""

    values: dict[int, float | None]
    as_zero: bool
    undefined: frozenset[int]


def _headline(pairs: dict[int, tuple[float | None, float | None] | float | None], as_zero: bool) -> Headline:
    """A Headline from feature -> value, or feature -> (score, control) for a lift (score - control)."""
    values: dict[int, float | None] = {}
    undefined = set()
    for feature, value in pairs.items():
        sides = value if isinstance(value, tuple) else (value,)
        if any(v is None for v in sides):
            undefined.add(feature)
            if not as_zero:
                values[feature] = None
                continue
        filled = [float(v or 0.0) for v in sides]
        values[feature] = filled[0] - filled[1] if len(filled) == 2 else filled[0]
    return Headline(values, as_zero, frozenset(undefined))


def feature_headlines(
    rows: dict[int, dict[str, dict[str, Any]]], detection: dict[int, dict[str, dict[str, Any]]]
) -> dict[str, Headline]:
    """Every headline score of a run per feature, named as in the run summary: each HEADLINE_SCORES of the
    simulation and its lifts over each control (`lift`, `lift_other`, `auroc_lift`, ...), and detection's
    balanced accuracy and AUROC with their lifts over the baseline explanation (`detection_<m>_lift`).
    rows / detection: RunStore.score_rows / detection_rows (with the scores' columns). For `compare`."""
    out: dict[str, Headline] = {}
    for score, as_zero in HEADLINE_SCORES.items():
        out[score] = _headline({f: s["llm"][score] for f, s in rows.items() if "llm" in s}, as_zero)
        for control in CONTROLS:
            pairs = {f: (s["llm"][score], s[control][score]) for f, s in rows.items() if "llm" in s and control in s}
            out[lift_prefix(score, control)] = _headline(pairs, as_zero)  # type: ignore[arg-type]
    for score in DETECTION_HEADLINES:
        judged = {f: s for f, s in detection.items() if "llm" in s}
        own = {f: s["llm"][score] for f, s in judged.items()}
        pairs = {f: (s["llm"][score], s["baseline"][score]) for f, s in judged.items() if "baseline" in s}
        out[f"detection_{score}"] = _headline(own, False)
        out[f"detection_{score}_lift"] = _headline(pairs, False)  # type: ignore[arg-type]
    return out


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


def run_scorers(scoring: dict[str, Any], rows: dict[int, Any], detection: dict[int, Any]) -> list[str]:
    """The scorers a run was configured with; for a run whose stored config leaves them open (stored before
    `scoring.scorers` was settled, or through the Python API), the scorers that left rows."""
    if scoring.get("scorers"):
        return list(scoring["scorers"])
    return [name for name, found in (("simulation", rows), ("detection", detection)) if found]


def reading_notes(config: dict[str, Any]) -> list[str]:
    """Plain sentences on what this run's scores can and cannot show, from its explainer and judge: the
    local model and the no-LLM baseline are told apart from LLM judges (the CLI prints them under the
    summary)."""
    from autointerp.llm.spec import parse_backend_spec

    llm = config.get("llm") or {}
    explainer = llm.get("explainer") or ""
    judge = llm.get("simulator") or explainer
    kinds = {role: parse_backend_spec(spec).kind if spec else None for role, spec in (("e", explainer), ("j", judge))}
    notes = []
    if kinds["e"] == "local":
        notes.append(LOCAL_EXPLAINER_NOTE)
    if kinds["j"] == "local":
        notes.append(LOCAL_JUDGE_NOTE)
    if "baseline" in (explainer, judge):
        notes.append(BASELINE_NOTE)
    if notes:
        notes.append(READ_LIFTS_NOTE)
    return notes


def redraw_statistics(
    rows: dict[int, dict[str, dict[str, Any]]],
    detection: dict[int, dict[str, dict[str, Any]]],
    redraws: list[dict[str, Any]],
) -> dict[str, Any]:
    """Spread over fresh window draws (autointerp.redraws): for each SPREAD_SCORES prefix
    (scoring.redraw_spread), summarise() of the per-feature standard deviation over the run's own draw and its
    redraws, under
    `redraw_std_<prefix>` (n = features with a std; undefined left out), and `redraw_draws`, the most draws
    a feature has (its own + redraws; 0 when no feature was redrawn)."""
    from autointerp.scoring.redraw_spread import redraw_spread

    own = {
        "correlation": {f: s["llm"]["correlation"] for f, s in rows.items() if "llm" in s},
        "detection_balanced_accuracy": {f: s["llm"]["balanced_accuracy"] for f, s in detection.items() if "llm" in s},
        "detection_auroc": {f: s["llm"]["auroc"] for f, s in detection.items() if "llm" in s},
    }
    out: dict[str, Any] = {}
    draws = 0
    for prefix, per_feature in redraw_spread(own, redraws).items():
        out.update(
            _flat(f"redraw_std_{prefix}", summarise([std for std, _ in per_feature.values()], undefined_as_zero=False))
        )
        draws = max([draws, *(n for _, n in per_feature.values())])
    return out | {"redraw_draws": draws}


def scorer_coverage(
    scorers: list[str], rows: dict[int, dict[str, dict[str, Any]]], detection: dict[int, dict[str, dict[str, Any]]]
) -> dict[str, Any]:
    """scored: features whose LLM explanation every configured scorer judged; partly_scored: those some but not
    all did (a scorer failed on them; `--retry-failed` redoes that scorer), with partly_scored_missing:
    feature -> the scorers missing."""
    have = {
        "simulation": {f for f, s in rows.items() if "llm" in s},
        "detection": {f for f, s in detection.items() if "llm" in s},
    }
    wanted = [name for name in scorers if name in have]
    judged = set().union(*(have[name] for name in have))
    missing = {f: [name for name in wanted if f not in have[name]] for f in sorted(judged)}
    missing = {f: names for f, names in missing.items() if names}
    return {"scored": len(judged) - len(missing), "partly_scored": len(missing), "partly_scored_missing": missing}


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
    scoring = run["config"].get("scoring") or {}
    n_permutations = int(scoring.get("n_permutations") or 0)
    return {
        "run_id": run_id,
        "name": run["name"],
        "status": run["status"],
        "training_run": run["training_run"],
        "step": run["step"],
        "sae_fingerprint": run["sae_fingerprint"],
        "settings_hash": ",".join(h for h in hashes if h) or None,
        "sampled": sum(stages.values()),
        **scorer_coverage(run_scorers(scoring, rows, detection), rows, detection),
        "failed": stages.get("failed", 0),
        **score_statistics(rows, n_permutations),
        **detection_statistics(detection),
        **redraw_statistics(rows, detection, store.redraw_rows(run_id)),
        "notes": reading_notes(run["config"]),
        **store.call_totals(run_id),
    }
