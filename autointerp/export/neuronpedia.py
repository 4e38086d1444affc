"""Neuronpedia upload-batch JSON: the body its feature upload-batch endpoint takes, plus scores.json.

Batch file (`batch-000.json`, `batch-001.json`, ...; at most 128 features each, as the endpoint allows):

    {"modelId": str, "source": str,            # e.g. "smollm2-135m", "8-res-demo" (<layer>-<set name>)
     "features": [{"index": int 0..10_000_000,
                   "density": float 0..1,     # share of non-special tokens where the feature is > 0
                   "explanations": [{"text": 1..512 chars, "methodName": str, "modelName": str}],
                   "activations": [{"tokens": [str, 1..1024], "values": [float, same length],
                                    "quantileMax": float, "quantileMin": float,
                                    "quantileFraction": float 0..1 | None}]}]}

One activation entry per example window (explanation and scoring windows, every group). The quantile
fields are the window group's activation bin (autointerp.export.common: top windows -> [lowest top
peak, feature max], each interval its own slice below that, random -> [0, max], non-activating ->
[0, 0]); quantileFraction is the share of the feature's active tokens in that bin, None for random and
non-activating windows. The site stores them as binMin / binMax / binContains.

Rules of the endpoint that this writer enforces rather than leaving to a failed upload:
- explanation text is 1..512 characters as JavaScript counts them (UTF-16 code units): longer text is
  cut to 511 units plus "…"; empty or whitespace-only text is left out.
- every feature needs at least one activation entry: a report with no windows is left out of the
  batches and listed under "skipped" in scores.json.
- a window longer than 1024 tokens is cut to the 1024 tokens around its peak.
- a token must be a non-empty string: an empty decoded token becomes "\ufffd" (the replacement
  character, which is what a partial UTF-8 byte decodes to elsewhere).
- methodName and modelName are lowercased (the endpoint lowercases them, then looks them up among
  the explanation types and models the site knows: an unknown name is refused at upload time, so
  pass `method_name` to match a registered type).

The endpoint takes no scores, so `scores.json` carries them: per feature the score columns
(scoring.COLUMNS) and the control columns, with the batch file names and the skipped features.
"""

import re
from pathlib import Path
from typing import Any

from autointerp.errors import InputError, expected
from autointerp.export.common import (
    activation_bins,
    backend_parts,
    bin_key,
    check_unique_features,
    clean_columns,
    score_columns,
    write_json,
)
from autointerp.records import FeatureReport, Window
from autointerp.scoring import COLUMNS

MAX_FEATURES_PER_BATCH = 128
MAX_EXPLANATION_UNITS = 512  # UTF-16 code units, as the endpoint's JavaScript validator counts
MAX_TOKENS_PER_ACTIVATION = 1024
MAX_FEATURE_INDEX = 10_000_000
EMPTY_TOKEN = "\ufffd"
BATCH_NAME = re.compile(r"batch-(\d{3,})\.json")


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


def _model_id_from(model_name: str) -> str:
    # "HuggingFaceTB/SmolLM2-135M" -> "smollm2-135m": Neuronpedia model ids are lowercase, no org.
    return model_name.strip().rstrip("/").rsplit("/", 1)[-1].lower()


def _one_value(reports: list[FeatureReport], attribute: str, option: str) -> str:
    values = {getattr(report, attribute).strip() for report in reports}
    values.discard("")
    if len(values) != 1:
        found = "no value" if not values else f"several values {sorted(values)}"
        raise InputError(
            expected(
                f"Neuronpedia export: the reports' {attribute}",
                found,
                "exactly one",
                f"Pass {option}=... to name it.",
            )
        )
    return values.pop()


def _activation(window: Window, quantiles: dict[str, float | None]) -> dict[str, Any]:
    tokens = [token if token else EMPTY_TOKEN for token in window.tokens]
    values = [float(v) for v in window.activations]
    if len(tokens) > MAX_TOKENS_PER_ACTIVATION:
        peak = max(range(len(values)), key=values.__getitem__)
        start = min(max(0, peak - MAX_TOKENS_PER_ACTIVATION // 2), len(values) - MAX_TOKENS_PER_ACTIVATION)
        tokens = tokens[start : start + MAX_TOKENS_PER_ACTIVATION]
        values = values[start : start + MAX_TOKENS_PER_ACTIVATION]
    return {"tokens": tokens, "values": values, **quantiles}


def feature_entry(report: FeatureReport, method_name: str | None = None) -> dict[str, Any]:
    """The upload-batch entry of one feature (raises InputError for an index the endpoint refuses)."""
    if not 0 <= report.feature <= MAX_FEATURE_INDEX:
        raise InputError(expected("Neuronpedia export: feature index", str(report.feature), f"0..{MAX_FEATURE_INDEX}"))
    explanations = []
    if report.explanation is not None:
        text = clip_explanation(report.explanation.text)
        if text is not None:
            kind, model = backend_parts(report.explanation.backend)
            explanations.append(
                {
                    "text": text,
                    "methodName": (method_name or f"autointerp:{kind}").lower(),
                    "modelName": (model or kind).lower(),
                }
            )
    bins = activation_bins(report)
    activations = []
    for window in report.windows:
        b = bins[bin_key(window)]
        quantiles = {"quantileMax": b.bin_max, "quantileMin": b.bin_min, "quantileFraction": b.bin_contains}
        activations.append(_activation(window, quantiles))
    return {
        "index": report.feature,
        "density": min(1.0, max(0.0, report.stats.density)),
        "explanations": explanations,
        "activations": activations,
    }


def write_neuronpedia(
    reports: list[FeatureReport],
    out_dir: Path,
    *,
    model_id: str | None = None,
    source: str | None = None,
    method_name: str | None = None,
    batch_size: int = MAX_FEATURES_PER_BATCH,
) -> list[Path]:
    """Write upload-batch files and scores.json into out_dir; return their paths (batches first).

    Args:
        reports: one per feature, any order (written sorted by feature index).
        out_dir: created if missing. Older `batch-NNN.json` files beyond the new count are removed so
            that uploading `batch-*.json` never sends a stale batch.
        model_id: Neuronpedia model id; default: the reports' model_name, last path part, lowercased.
        source: Neuronpedia source id ("<layer>-<set name>", e.g. "8-res-demo"); default: the
            reports' sae_name, lowercased.
        method_name: explanation methodName; default "autointerp:<backend kind>".
        batch_size: features per file, 1..128.
    """
    if not 1 <= batch_size <= MAX_FEATURES_PER_BATCH:
        raise InputError(expected("Neuronpedia export batch_size", str(batch_size), f"1..{MAX_FEATURES_PER_BATCH}"))
    if not reports:
        raise InputError(expected("Neuronpedia export", "no reports", "at least one feature"))
    check_unique_features(reports, "Neuronpedia")
    if model_id is None:
        model_id = _model_id_from(_one_value(reports, "model_name", "model_id"))
    if source is None:
        source = _one_value(reports, "sae_name", "source").lower()
    model_id, source = model_id.strip().lower(), source.strip().lower()
    for name, value in (("model_id", model_id), ("source", source)):
        if not value:
            raise InputError(expected(f"Neuronpedia export {name}", "an empty string", "a Neuronpedia id"))

    entries: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for report in sorted(reports, key=lambda r: r.feature):
        if not report.windows:
            skipped.append({"index": report.feature, "reason": "no example windows (the endpoint needs one)"})
            continue
        entries.append(feature_entry(report, method_name))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for number, start in enumerate(range(0, len(entries), batch_size)):
        body = {"modelId": model_id, "source": source, "features": entries[start : start + batch_size]}
        paths.append(write_json(out_dir / f"batch-{number:03d}.json", body))
    for old in out_dir.glob("batch-*.json"):
        match = BATCH_NAME.fullmatch(old.name)
        if match and int(match.group(1)) >= len(paths):
            old.unlink()

    side = {
        "modelId": model_id,
        "source": source,
        "runIds": sorted({report.run_id for report in reports}),
        "columns": list(COLUMNS),
        "features": {
            str(report.feature): {
                "scores": score_columns(report),
                "controls": {name: clean_columns(cols) for name, cols in sorted(report.controls.items())},
                "errors": list(report.errors),
            }
            for report in sorted(reports, key=lambda r: r.feature)
        },
        "skipped": skipped,
        "batches": [path.name for path in paths],
    }
    paths.append(write_json(out_dir / "scores.json", side, indent=1))
    return paths
