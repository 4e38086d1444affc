"""SAEDashboard-style JSON: one file, `saedashboard.json`, with every feature's dashboard data.

    {"features": [{
        "feature_index": int,
        "frac_nonzero": float 0..1,          # density: share of non-special tokens where it is > 0
        "max_activation": float,             # raw scale
        "explanation": str | None,           # None when explaining failed
        "scores": {column: value} | None,    # scoring.COLUMNS; None when not scored
        "activations": [{"bin_min": float, "bin_max": float, "bin_contains": float | None,
                         "tokens": [str], "values": [float],    # raw activations, same length
                         "group": "top" | "interval" | "random" | "nonactivating",
                         "interval": int | None, "split": "explain" | "score"}],
        "histogram": {"bin_edges": [float], "counts": [int], "n_tokens": int, "n_active": int}}]}

Bins (see autointerp.export.common): the top windows share one bin [lowest top peak, feature max];
each interval is its own bin, the intervals together covering (0, lowest top peak); random windows
[0, max]; non-activating windows [0, 0]. bin_contains is the share of the feature's active tokens in
the bin, computed from the histogram, and None for random and non-activating windows or when the
histogram is empty.
"""

from pathlib import Path
from typing import Any

from autointerp.export.common import (
    activation_bins,
    bin_key,
    check_unique_features,
    score_columns,
    write_json,
)
from autointerp.records import FeatureReport

FILE_NAME = "saedashboard.json"


def feature_dashboard(report: FeatureReport) -> dict[str, Any]:
    """The dashboard dict of one feature (the shape in the module doc)."""
    bins = activation_bins(report)
    activations = []
    for window in report.windows:
        b = bins[bin_key(window)]
        activations.append(
            {
                "bin_min": b.bin_min,
                "bin_max": b.bin_max,
                "bin_contains": b.bin_contains,
                "tokens": list(window.tokens),
                "values": [float(v) for v in window.activations],
                "group": window.group,
                "interval": window.interval,
                "split": window.split,
            }
        )
    stats = report.stats
    return {
        "feature_index": report.feature,
        "frac_nonzero": stats.density,
        "max_activation": stats.max_activation,
        "explanation": report.explanation.text if report.explanation is not None else None,
        "scores": score_columns(report),
        "activations": activations,
        "histogram": {
            "bin_edges": list(stats.histogram_edges),
            "counts": list(stats.histogram_counts),
            "n_tokens": stats.n_tokens,
            "n_active": stats.n_active,
        },
    }


def write_saedashboard(reports: list[FeatureReport], out_dir: Path) -> list[Path]:
    """Write out_dir/saedashboard.json (features sorted by index); return [its path]."""
    check_unique_features(reports, "SAEDashboard")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    features = [feature_dashboard(report) for report in sorted(reports, key=lambda r: r.feature)]
    return [write_json(out_dir / FILE_NAME, {"features": features})]
