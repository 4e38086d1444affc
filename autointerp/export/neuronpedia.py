"""Neuronpedia upload-batch JSON: bodies its feature upload-batch endpoint takes, plus scores.json.

Followed: `apps/webapp/app/api/feature/upload-batch/route.tsx` in hijohnnylin/neuronpedia at commit
ebb8426f (2026-08-20; the route last changed in 1e8e576f, 2025-05-29, "feature upload logits"), and the
Python client `neuronpedia` 1.2.1 (`FeatureRequest.upload_batch` sends exactly this body).

Batch file (`batch-000.json`, `batch-001.json`, ...; at most 128 features each, as the endpoint allows):

    {"modelId": str, "source": str,            # e.g. "smollm2-135m", "8-demo" (<layer>-<set name>)
     "features": [{"index": int 0..10_000_000,
                   "density": float 0..1,     # share of non-special tokens where the feature is > 0
                   "explanations": [{"text": 1..512 chars, "methodName": str | None, "modelName": str | None}],
                   "activations": [{"tokens": [str, 1..1024], "values": [float, same length],
                                    "quantileMax": float, "quantileMin": float,
                                    "quantileFraction": float 0..1 | None}],
                   "topLogits": [{"token": str, "value": float}, <= 20],       # only when the run has them
                   "bottomLogits": [{"token": str, "value": float}, <= 20]}]}

What goes in, and what stays out:
- explanations: the run's LLM explanation only. The baseline (top tokens, no LLM) is a control, not an
  explanation: with `--explainer baseline` nothing is uploaded as an explanation. `methodName` and
  `modelName` must name an explanation type / explanation model registered on Neuronpedia, or be null
  (the endpoint refuses any other name); they are null unless `explanation_type` / `explanation_model`
  are given, since a name of ours (the backend's model id, say) is not one of theirs.
- activations: windows that show the feature firing, the top and interval windows with a max > 0. Random
  and non-activating windows (and hard negatives) are scoring material, not examples of the feature.
  Quantile fields are the window group's activation bin (autointerp.export.common: top windows ->
  [lowest top peak, feature max], each interval its own slice below); quantileFraction is the share of
  the feature's active tokens in that bin. The site stores them as binMin / binMax / binContains.
- a feature with no such window is left out (the endpoint needs one activation) and listed under
  "skipped" in scores.json.
- scores: the endpoint takes none, so `scores.json` carries them (the score columns, the controls'
  columns and the detection rows per feature, with the batch file names); `features.jsonl` (the jsonl
  format) carries them too.

Rules of the endpoint enforced here rather than left to a failed upload: explanation text is 1..512
characters as JavaScript counts them (UTF-16 code units; longer text is cut to 511 units plus "…", blank
text is left out); a window longer than 1024 tokens is cut to the 1024 around its peak; an empty decoded
token becomes "\ufffd" (the endpoint requires non-empty strings); at most 20 logits a side.
"""

import re
from pathlib import Path
from typing import Any

from autointerp.errors import InputError, expected
from autointerp.export.common import (
    ACTIVATING_GROUPS,
    activation_bins,
    backend_parts,
    bin_key,
    check_unique_features,
    clean_columns,
    detection_columns,
    score_columns,
    write_json,
)
from autointerp.export.context import ExportContext
from autointerp.export.naming import NeuronpediaTarget, resolve_target
from autointerp.records import FeatureReport, TokenLogit, Window
from autointerp.scoring import COLUMNS

MAX_FEATURES_PER_BATCH = 128
MAX_EXPLANATION_UNITS = 512  # UTF-16 code units, as the endpoint's JavaScript validator counts
MAX_TOKENS_PER_ACTIVATION = 1024
MAX_FEATURE_INDEX = 10_000_000
MAX_LOGITS = 20
EMPTY_TOKEN = "\ufffd"
BATCH_NAME = re.compile(r"batch-(\d{3,})\.json")
CONTROL_BACKENDS = ("baseline",)  # explanations that are controls, never uploaded as explanations


def utf16_len(text: str) -> int:
    """Length of text as JavaScript's String.length counts it (astral characters count 2)."""
    return len(text.encode("utf-16-le")) // 2


def clip_explanation(text: str) -> str | None:
    """Strip text; None if empty; cut to 512 UTF-16 units (511 + '…') if longer."""
    text = text.strip()
    if not text:
        return None
    if utf16_len(text) <= MAX_EXPLANATION_UNITS:
        return text
    kept: list[str] = []
    units = 0
    for char in text:
        width = utf16_len(char)
        if units + width > MAX_EXPLANATION_UNITS - 1:
            break
        kept.append(char)
        units += width
    return "".join(kept).rstrip() + "…"


def activating_windows(report: FeatureReport) -> list[Window]:
    """The windows that show the feature firing: top and interval groups with a max activation > 0."""
    return [w for w in report.windows if w.group in ACTIVATING_GROUPS and w.max_activation > 0]


def _activation(window: Window, quantiles: dict[str, float | None]) -> dict[str, Any]:
    tokens = [token if token else EMPTY_TOKEN for token in window.tokens]
    values = [float(v) for v in window.activations]
    if len(tokens) > MAX_TOKENS_PER_ACTIVATION:
        peak = max(range(len(values)), key=values.__getitem__)
        start = min(max(0, peak - MAX_TOKENS_PER_ACTIVATION // 2), len(values) - MAX_TOKENS_PER_ACTIVATION)
        tokens = tokens[start : start + MAX_TOKENS_PER_ACTIVATION]
        values = values[start : start + MAX_TOKENS_PER_ACTIVATION]
    return {"tokens": tokens, "values": values, **quantiles}


def _logits(logits: list[TokenLogit]) -> list[dict[str, Any]]:
    return [
        {"token": logit.token if logit.token else EMPTY_TOKEN, "value": logit.value} for logit in logits[:MAX_LOGITS]
    ]


def _explanations(
    report: FeatureReport, explanation_type: str | None, explanation_model: str | None
) -> list[dict[str, Any]]:
    if report.explanation is None:
        return []
    kind, _ = backend_parts(report.explanation.backend)
    text = clip_explanation(report.explanation.text)
    if kind in CONTROL_BACKENDS or text is None:
        return []
    return [
        {
            "text": text,
            # The endpoint lowercases both names before looking them up; null passes unlooked-up.
            "methodName": explanation_type.strip().lower() if explanation_type else None,
            "modelName": explanation_model.strip().lower() if explanation_model else None,
        }
    ]


def feature_entry(
    report: FeatureReport, explanation_type: str | None = None, explanation_model: str | None = None
) -> dict[str, Any]:
    """The upload-batch entry of one feature (raises InputError for an index the endpoint refuses)."""
    if not 0 <= report.feature <= MAX_FEATURE_INDEX:
        raise InputError(expected("Neuronpedia export: feature index", str(report.feature), f"0..{MAX_FEATURE_INDEX}"))
    bins = activation_bins(report)
    activations = []
    for window in activating_windows(report):
        b = bins[bin_key(window)]
        quantiles = {"quantileMax": b.bin_max, "quantileMin": b.bin_min, "quantileFraction": b.bin_contains}
        activations.append(_activation(window, quantiles))
    entry: dict[str, Any] = {
        "index": report.feature,
        "density": min(1.0, max(0.0, report.stats.density)),
        "explanations": _explanations(report, explanation_type, explanation_model),
        "activations": activations,
    }
    if report.top_logits is not None:
        entry["topLogits"] = _logits(report.top_logits)
    if report.bottom_logits is not None:
        entry["bottomLogits"] = _logits(report.bottom_logits)
    return entry


def _skip_reason(report: FeatureReport) -> str | None:
    if not activating_windows(report):
        return "no top or interval window where it fires (the endpoint needs one activation)"
    return None


def write_neuronpedia(
    reports: list[FeatureReport],
    out_dir: Path,
    *,
    model_id: str | None = None,
    source: str | None = None,
    set_name: str | None = None,
    explanation_type: str | None = None,
    explanation_model: str | None = None,
    batch_size: int = MAX_FEATURES_PER_BATCH,
    context: ExportContext | None = None,
) -> list[Path]:
    """Write upload-batch files and scores.json into out_dir; return their paths (batches first).

    Args:
        reports: one per feature, any order (written sorted by feature index).
        out_dir: created if missing. Older `batch-NNN.json` files beyond the new count are removed so
            that uploading `batch-*.json` never sends a stale batch.
        model_id, source, set_name: Neuronpedia names (autointerp.export.naming: default from SAELens's
            `neuronpedia_id`, else the model name and `<hook layer>-<set name>`).
        explanation_type: `methodName`, a Neuronpedia explanation type (e.g. "oai_token-act-pair"); None
            sends null.
        explanation_model: `modelName`, a Neuronpedia explanation model (e.g. "gpt-4o-mini"); None sends null.
        batch_size: features per file, 1..128.
        context: the run's ExportContext (hook, SAE cfg), for the default names.
    """
    if not 1 <= batch_size <= MAX_FEATURES_PER_BATCH:
        raise InputError(expected("Neuronpedia export batch_size", str(batch_size), f"1..{MAX_FEATURES_PER_BATCH}"))
    if not reports:
        raise InputError(expected("Neuronpedia export", "no reports", "at least one feature"))
    check_unique_features(reports, "Neuronpedia")
    target = resolve_target(reports, context, model_id=model_id, source=source, set_name=set_name)

    ordered = sorted(reports, key=lambda r: r.feature)
    entries: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for report in ordered:
        reason = _skip_reason(report)
        if reason is None:
            entries.append(feature_entry(report, explanation_type, explanation_model))
        else:
            skipped.append({"index": report.feature, "reason": reason})

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for number, start in enumerate(range(0, len(entries), batch_size)):
        body = {"modelId": target.model_id, "source": target.source, "features": entries[start : start + batch_size]}
        paths.append(write_json(out_dir / f"batch-{number:03d}.json", body))
    for old in out_dir.glob("batch-*.json"):
        match = BATCH_NAME.fullmatch(old.name)
        if match and int(match.group(1)) >= len(paths):
            old.unlink()
    paths.append(write_json(out_dir / "scores.json", _side_file(ordered, target, skipped, paths), indent=1))
    return paths


def _side_file(
    reports: list[FeatureReport], target: NeuronpediaTarget, skipped: list[dict[str, Any]], batches: list[Path]
) -> dict[str, Any]:
    """What the endpoint does not take: every feature's scores, controls, detection rows and errors."""
    return {
        "modelId": target.model_id,
        "source": target.source,
        "namesFrom": target.origin,
        "runIds": sorted({report.run_id for report in reports}),
        "columns": list(COLUMNS),
        "features": {
            str(report.feature): {
                "explanationBackend": report.explanation.backend if report.explanation is not None else None,
                "scores": score_columns(report),
                "controls": {name: clean_columns(cols) for name, cols in sorted(report.controls.items())},
                "detection": detection_columns(report),
                "errors": list(report.errors),
            }
            for report in reports
        },
        "skipped": skipped,
        "batches": [path.name for path in batches],
    }
