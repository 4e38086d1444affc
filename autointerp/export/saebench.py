"""SAEBench autointerp `eval_results` JSON, so a run's scores sit in SAEBench tables beside its other metrics.

Followed: `sae_bench/evals/autointerp/eval_output.py` (`AutoInterpEvalOutput`, `AutoInterpMetricCategories`,
`AutoInterpMetrics`), `eval_config.py` (`AutoInterpEvalConfig`) and `base_eval_output.py` of `sae-bench`
0.6.0; the file name is SAEBench's `get_results_filepath`: `<release>_<sae id>_eval_results.json`, '/'
replaced by '_'. tests/test_export.py loads the file with those classes.

What goes where (SAEBench's `autointerp_score` is a detection score: per latent, the share of a shuffled
set of windows the LLM classified correctly as activating or not, then the mean over latents):
- `autointerp_score`: the mean over features of one per-feature detection figure of ours, by default
  balanced accuracy ((recall + specificity) / 2) rather than SAEBench's plain accuracy, which rewards an
  answer of "never fires" on a set with few positives. `metric="accuracy"` writes SAEBench's own
  definition instead (detection scorer only). Which scorer gave the figure: `scorer="detection"` (our
  detection scorer: the LLM says which held-out windows match the explanation, SAEBench's method) or
  `"simulation"` (balanced accuracy of the simulated activations' per-window max against firing); the
  default takes detection when the run has it.
- `autointerp_std_dev`: the standard deviation over those features (n - 1 in the denominator, as
  SAEBench's torch.std); NaN with fewer than two features, as SAEBench would write it.
- features whose figure is undefined (no positive or no negative window) or that failed are left out of
  both, and counted; `eval_result_unstructured` says which scorer and metric, the n of each kind, the
  baseline control's mean on the same features, and holds one entry per feature ("latents", shaped like
  SAEBench's own per-latent results: latent, explanation, score, ...).
- `eval_config`: SAEBench's fields filled from our run config where one matches (model, corpus, context
  size, tokens, example counts, seed); `n_iw_sampled_*` are 0 (we draw equal-width activation intervals,
  not importance-weighted samples; their counts are in the unstructured part). `sae_bench_commit_hash`
  names autointerp and its version (no SAEBench code ran); `sae_cfg_dict` is the SAE's cfg.json.
"""

import json
import math
import statistics
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from autointerp.errors import InputError, expected
from autointerp.export.common import backend_parts, write_json
from autointerp.export.context import ExportContext
from autointerp.records import FeatureReport
from autointerp.scoring import summarise

Scorer = Literal["auto", "detection", "simulation"]
Metric = Literal["balanced_accuracy", "accuracy"]
EVAL_TYPE = "autointerp"
CUSTOM_SAE_ID = "custom_sae"  # what SAEBench itself names an SAE passed as an object, not a SAELens id


def _detection_json(row: dict[str, Any]) -> dict[str, Any]:
    try:
        data = json.loads(row.get("json") or "{}")
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def accuracy(labels: list[bool], said_yes: list[bool]) -> float | None:
    """SAEBench's per-latent score: the share of windows whose verdict matches whether the feature fired."""
    if not labels or len(labels) != len(said_yes):
        return None
    return sum(label == said for label, said in zip(labels, said_yes)) / len(labels)


def feature_value(row: dict[str, Any] | None, metric: str) -> float | None:
    """One feature's figure from its detection row or simulation scores row; None when undefined or absent."""
    if row is None:
        return None
    if metric == "accuracy":
        data = _detection_json(row)
        return accuracy(list(data.get("labels") or []), list(data.get("said_yes") or []))
    value = row.get("balanced_accuracy")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _row(report: FeatureReport, scorer: str, source: str) -> dict[str, Any] | None:
    if scorer == "detection":
        return report.detection.get(source)
    return report.scores if source == "llm" else report.controls.get(source)


def _resolve_scorer(reports: list[FeatureReport], scorer: str, metric: str) -> str:
    if scorer not in ("auto", "detection", "simulation"):
        raise InputError(expected("SAEBench export scorer", repr(scorer), "'auto', 'detection' or 'simulation'"))
    if metric not in ("balanced_accuracy", "accuracy"):
        raise InputError(expected("SAEBench export metric", repr(metric), "'balanced_accuracy' or 'accuracy'"))
    has_detection = any("llm" in report.detection for report in reports)
    if scorer == "auto":
        scorer = "detection" if has_detection else "simulation"
    if scorer == "detection" and not has_detection:
        raise InputError(
            expected("SAEBench export scorer 'detection'", "no detection scores in the run", "a run scored with it")
        )
    if metric == "accuracy" and scorer != "detection":
        raise InputError(
            expected(
                "SAEBench export metric 'accuracy'",
                f"scorer {scorer!r}",
                "the detection scorer (plain accuracy needs its per-window verdicts)",
            )
        )
    return scorer


def _eval_config(context: ExportContext, features: list[int]) -> dict[str, Any]:
    """AutoInterpEvalConfig's fields, from our run config where a field has a counterpart (module doc)."""
    cfg = context.config
    sampler, llm = cfg.get("sampler") or {}, cfg.get("llm") or {}
    return {
        "model_name": str(cfg.get("model") or ""),
        "n_latents": None,
        "override_latents": features,
        "dead_latent_threshold": 1.0,  # a feature must have fired to be explained; ours are drawn from live ones
        "random_seed": int(sampler.get("seed", 0)),
        "dataset_name": context.corpus_name,
        "llm_context_size": context.context_size,
        "llm_batch_size": int(sampler.get("batch_size", 0)),
        "llm_dtype": str(cfg.get("dtype") or ""),
        "buffer": int(sampler.get("window_left", 0)),  # tokens left of the peak; ours are not centred
        "no_overlap": True,  # explanation and scoring windows never share a context
        "act_threshold_frac": 0.0,  # a window "fires" when any activation is > 0
        "total_tokens": int(sampler.get("n_tokens", 0)),
        "scoring": True,
        "max_tokens_in_explanation": int(llm.get("explainer_max_tokens", 0)),
        "use_demos_in_explanation": True,
        "n_top_ex_for_generation": int(sampler.get("n_top_explain", 0)),
        "n_iw_sampled_ex_for_generation": 0,
        "n_top_ex_for_scoring": int(sampler.get("n_top_score", 0)),
        "n_random_ex_for_scoring": int(sampler.get("n_random_score", 0)),
        "n_iw_sampled_ex_for_scoring": 0,
    }


def _epoch_millis(iso: str | None) -> int:
    if iso:
        try:
            return int(datetime.fromisoformat(iso).timestamp() * 1000)
        except ValueError:
            pass
    return 0


def _latent(report: FeatureReport, scorer: str, metric: str) -> dict[str, Any]:
    row = _row(report, scorer, "llm")
    kind = backend_parts(report.explanation.backend)[0] if report.explanation is not None else None
    positives = None if row is None else row.get("n_positive", row.get("n_positive_windows"))
    negatives = None if row is None else row.get("n_negative", row.get("n_negative_windows"))
    return {
        "latent": report.feature,
        "explanation": report.explanation.text if report.explanation is not None else None,
        "explanation_backend": kind,
        "score": feature_value(row, metric),
        "n_positive_windows": positives,
        "n_negative_windows": negatives,
        "control_baseline_score": feature_value(_row(report, scorer, "baseline"), metric),
        "errors": list(report.errors),
    }


def write_saebench(
    reports: list[FeatureReport],
    out_dir: Path,
    *,
    scorer: Scorer = "auto",
    metric: Metric = "balanced_accuracy",
    sae_release: str | None = None,
    sae_id: str = CUSTOM_SAE_ID,
    context: ExportContext | None = None,
) -> list[Path]:
    """Write `<sae_release>_<sae_id>_eval_results.json` into out_dir; return [its path].

    Args:
        scorer: 'detection', 'simulation' or 'auto' (detection when the run has it).
        metric: 'balanced_accuracy' (default) or 'accuracy' (SAEBench's own definition; detection only).
        sae_release, sae_id: SAEBench's names for the SAE (its `sae_lens_release_id` / `sae_lens_id` and the
            file name); default: the SAE's name and 'custom_sae', as SAEBench names an SAE object.
        context: the run's ExportContext (config, SAE cfg, versions): required.
    """
    if context is None:
        raise InputError(
            expected(
                "SAEBench export",
                "no run context",
                "the run's config and SAE (export through `autointerp export RUN --format saebench` or export_run)",
            )
        )
    if not reports:
        raise InputError(expected("SAEBench export", "no reports", "at least one feature"))
    scorer = _resolve_scorer(reports, scorer, metric)
    ordered = sorted(reports, key=lambda r: r.feature)
    latents = [_latent(report, scorer, metric) for report in ordered]
    values = [latent["score"] for latent in latents if latent["score"] is not None]
    if not values:
        raise InputError(
            expected(f"SAEBench export ({scorer}, {metric})", "no feature with a defined score", "at least one")
        )
    n_failed = sum(1 for report in ordered if _row(report, scorer, "llm") is None)
    controls = [latent["control_baseline_score"] for latent in latents if latent["score"] is not None]
    summary = summarise(values, undefined_as_zero=False)
    control_summary = summarise(controls, undefined_as_zero=False, n_boot=0)
    release = sae_release or (ordered[0].sae_name or "autointerp")
    version = context.versions.get("autointerp", "unknown")
    output = {
        "eval_type_id": EVAL_TYPE,
        "eval_config": _eval_config(context, [report.feature for report in ordered]),
        # Stable for a run and a choice of figure, so exporting twice gives the same file.
        "eval_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"autointerp:{context.run_id}:{scorer}:{metric}")),
        "datetime_epoch_millis": _epoch_millis(context.updated_at or context.created_at),
        "eval_result_metrics": {
            "autointerp": {
                "autointerp_score": statistics.fmean(values),
                "autointerp_std_dev": statistics.stdev(values) if len(values) > 1 else math.nan,
            }
        },
        "eval_result_details": [],
        "sae_bench_commit_hash": f"autointerp-{version} (not run by SAEBench)",
        "sae_lens_id": sae_id,
        "sae_lens_release_id": release,
        "sae_lens_version": None,
        "sae_cfg_dict": context.sae_cfg,
        "eval_result_unstructured": {
            "autointerp": {
                "exported_by": f"autointerp {version}",
                "run_id": context.run_id,
                "scorer": scorer,
                "metric": metric,
                "autointerp_score_is": (
                    f"mean over {len(values)} features of the {scorer} scorer's per-feature {metric}"
                    + (" ((recall + specificity) / 2), not SAEBench's plain accuracy" if metric != "accuracy" else "")
                ),
                "n_features": len(ordered),
                "n_scored": len(values),
                "n_undefined": len(ordered) - n_failed - len(values),
                "n_failed_or_unscored": n_failed,
                "mean_ci95": [summary["ci_lo"], summary["ci_hi"]],
                "control_baseline_mean": control_summary["mean"],
                "control_baseline_n": control_summary["n"],
                "scoring_windows_per_feature": _window_mix(context),
            },
            "latents": {str(latent["latent"]): latent for latent in latents},
        },
    }
    file_name = f"{release}_{sae_id}_eval_results.json".replace("/", "_")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [write_json(out_dir / file_name, output, indent=2, allow_nan=True)]


def _window_mix(context: ExportContext) -> dict[str, int]:
    sampler = context.config.get("sampler") or {}
    return {
        "top": int(sampler.get("n_top_score", 0)),
        "interval": int(sampler.get("n_intervals", 0)) * int(sampler.get("per_interval_score", 0)),
        "random": int(sampler.get("n_random_score", 0)),
        "nonactivating": int(sampler.get("n_nonactivating_score", 0)),
    }
