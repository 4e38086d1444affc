"""JSON Lines: `features.jsonl`, one JSON object per feature, sorted by feature index.

    {"run_id": str, "feature": int,
     "explanation": {"text", "backend", "prompt_hash", "usage", "cost_usd"} | None,
     "scores": {column: value} | None,            # scoring.COLUMNS
     "score_details": {...} | None,               # the full FeatureScores (group correlations,
                                                  #   undefined reasons, reliability table)
     "controls": {name: {column: value}},         # the baseline and another feature's explanation,
                                                  #   scored on the same windows
     "detection": {source: {column: value}},      # detection scorer rows ('llm', 'baseline', 'other');
                                                  #   {} when it did not run
     "top_logits": [{"token", "value"}] | None,   # W_dec @ W_U, when the run stores them
     "bottom_logits": [{"token", "value"}] | None,
     "stats": {"n_tokens", "n_active", "density", "max_activation", "mean_active",
               "histogram_edges", "histogram_counts"},
     "errors": [str], "model_name": str, "sae_name": str}

This is where a run's numbers travel: Neuronpedia's upload takes no scores, and the SAEDashboard format
has no field for them. The LLM's raw completion is left out (it is in the run database); windows too
(see the other formats).
"""

import json
from pathlib import Path
from typing import Any

from autointerp.errors import InputError, expected
from autointerp.export.common import (
    check_unique_features,
    clean_columns,
    detection_columns,
    score_columns,
    score_details,
)
from autointerp.records import FeatureReport

FILE_NAME = "features.jsonl"


def feature_record(report: FeatureReport) -> dict[str, Any]:
    """The JSONL object of one feature (the shape in the module doc)."""
    explanation = None
    if report.explanation is not None:
        explanation = report.explanation.model_dump(include={"text", "backend", "prompt_hash", "usage", "cost_usd"})
    stats = report.stats
    return {
        "run_id": report.run_id,
        "feature": report.feature,
        "explanation": explanation,
        "scores": score_columns(report),
        "score_details": score_details(report),
        "controls": {name: clean_columns(columns) for name, columns in sorted(report.controls.items())},
        "detection": detection_columns(report),
        "top_logits": None if report.top_logits is None else [t.model_dump() for t in report.top_logits],
        "bottom_logits": None if report.bottom_logits is None else [t.model_dump() for t in report.bottom_logits],
        "stats": {
            "n_tokens": stats.n_tokens,
            "n_active": stats.n_active,
            "density": stats.density,
            "max_activation": stats.max_activation,
            "mean_active": stats.mean_active,
            "histogram_edges": list(stats.histogram_edges),
            "histogram_counts": list(stats.histogram_counts),
        },
        "errors": list(report.errors),
        "model_name": report.model_name,
        "sae_name": report.sae_name,
    }


def write_jsonl(reports: list[FeatureReport], out_dir: Path) -> list[Path]:
    """Write out_dir/features.jsonl; return [its path]."""
    check_unique_features(reports, "JSONL")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / FILE_NAME
    lines = []
    for report in sorted(reports, key=lambda r: r.feature):
        try:
            lines.append(json.dumps(feature_record(report), ensure_ascii=False, allow_nan=False))
        except ValueError as error:
            raise InputError(
                expected(
                    f"JSONL export, feature {report.feature}",
                    f"a non-finite number ({error})",
                    "finite numbers",
                )
            ) from error
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return [path]
