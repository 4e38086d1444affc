"""What every exporter needs from a FeatureReport: activation bins, score columns, backend parts, JSON out.

Activation bins (used by the SAEDashboard batch as bin_min/bin_max/bin_contains and by the Neuronpedia
upload batch as quantileMin/quantileMax/quantileFraction, which that site stores as binMin/binMax/
binContains). One bin per window group, on the raw activation scale:

- top: [lowest peak among the top windows, feature max].
- interval k: the activating range below the top is cut into one bin per interval present, in index
  order. Interval k starts at the lowest peak of its windows (the lowest interval at 0) and ends where
  the next interval (or the top bin) starts. The sampler's own interval edges are not part of
  FeatureReport, so the edges are read off the windows' peaks; for equal-width intervals of (0, max]
  this lands within one interval's spread of the true edges. Together with the top bin these bins
  cover (0, feature max] without overlap.
- random: [0, feature max] (drawn from all tokens, not from a range).
- nonactivating and hard_negative: [0, 0].

bin_contains is the share of the feature's active tokens whose activation falls in the bin, read off
the feature's histogram (counts spread evenly inside a histogram bin where a bin edge cuts it). It is
None for random, nonactivating and hard_negative windows (not an activation range of active tokens) and when the
histogram is empty or malformed.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autointerp.errors import InputError, expected
from autointerp.records import FeatureReport, Window

ACTIVATING_GROUPS = ("interval", "top")


@dataclass(frozen=True)
class ActivationBin:
    """Activation range (raw scale) a window group stands for, and the share of active tokens in it."""

    bin_min: float
    bin_max: float
    bin_contains: float | None


BinKey = tuple[str, int | None]  # (group, interval index or None)


def bin_key(window: Window) -> BinKey:
    return (window.group, window.interval if window.group == "interval" else None)


def histogram_share(edges: list[float], counts: list[int], lo: float, hi: float) -> float | None:
    """Share in [0, 1] of the histogram's tokens with activation in [lo, hi] (raw scale).

    A histogram bin cut by lo or hi contributes in proportion to the overlap (tokens assumed spread
    evenly inside it). None when there are no counts or len(edges) != len(counts) + 1.
    """
    total = sum(counts)
    if total <= 0 or len(edges) != len(counts) + 1 or hi < lo:
        return None
    inside = 0.0
    for left, right, count in zip(edges[:-1], edges[1:], counts, strict=True):
        if count <= 0:
            continue
        width = right - left
        if width <= 0:
            inside += count if lo <= left <= hi else 0
            continue
        overlap = min(right, hi) - max(left, lo)
        if overlap > 0:
            inside += count * min(1.0, overlap / width)
    return min(1.0, max(0.0, inside / total))


def activation_bins(report: FeatureReport) -> dict[BinKey, ActivationBin]:
    """One ActivationBin per (group, interval) present among the report's windows (see module doc)."""
    peaks: dict[BinKey, list[float]] = {}
    for window in report.windows:
        peaks.setdefault(bin_key(window), []).append(window.max_activation)
    observed_max = max((p for values in peaks.values() for p in values), default=0.0)
    feature_max = max(report.stats.max_activation, observed_max)
    edges, counts = report.stats.histogram_edges, report.stats.histogram_counts

    # Activating groups from the lowest range up: intervals by index, then top.
    interval_keys = sorted((k for k in peaks if k[0] == "interval"), key=lambda k: k[1] or 0)
    ladder = interval_keys + ([("top", None)] if ("top", None) in peaks else [])
    starts = [min(peaks[key]) for key in ladder]
    if interval_keys:
        starts[0] = 0.0
    bins: dict[BinKey, ActivationBin] = {}
    for i, key in enumerate(ladder):
        lo = starts[i]
        hi = feature_max if i + 1 == len(ladder) else max(lo, starts[i + 1])
        bins[key] = ActivationBin(lo, hi, histogram_share(edges, counts, lo, hi))
    if ("random", None) in peaks:
        bins[("random", None)] = ActivationBin(0.0, feature_max, None)
    for silent in ("nonactivating", "hard_negative"):
        if (silent, None) in peaks:
            bins[(silent, None)] = ActivationBin(0.0, 0.0, None)
    return bins


def score_columns(report: FeatureReport) -> dict[str, Any] | None:
    """The report's flat score columns (scoring.COLUMNS), without the 'json' blob; None if unscored."""
    return None if report.scores is None else clean_columns(report.scores)


def clean_columns(columns: dict[str, Any]) -> dict[str, Any]:
    """Score columns without the 'json' blob, NaN/inf as None."""
    return {name: finite_or_none(value) for name, value in columns.items() if name != "json"}


def detection_columns(report: FeatureReport) -> dict[str, dict[str, Any]]:
    """The detection scorer's rows ('llm', 'baseline', 'other'), without their 'json'; {} if it did not run."""
    return {source: clean_columns(row) for source, row in sorted(report.detection.items())}


def score_details(report: FeatureReport) -> dict[str, Any] | None:
    """The full FeatureScores as a dict (group correlations, reasons, reliability table), or None."""
    if report.scores is None or not isinstance(report.scores.get("json"), str):
        return None
    try:
        details = json.loads(report.scores["json"])
    except json.JSONDecodeError:
        return None
    return details if isinstance(details, dict) else None


def reliability_rows(report: FeatureReport) -> list[dict[str, Any]] | None:
    """details.reliability: 11 rows {level, count, mean_true_q} on the 0..10 scale, or None."""
    details = score_details(report) or {}
    rows = (details.get("details") or {}).get("reliability")
    return rows if isinstance(rows, list) else None


def backend_parts(backend: str) -> tuple[str, str | None]:
    """'anthropic:claude-x@http://h/v1' -> ('anthropic', 'claude-x'); 'baseline' -> ('baseline', None)."""
    kind, _, rest = backend.strip().partition(":")
    cut = max(rest.rfind("@http://"), rest.rfind("@https://"))
    model = rest[:cut] if cut >= 0 else rest
    return kind.lower(), (model or None)


def finite_or_none(value: Any) -> Any:
    """NaN and inf become None (JSON has no spelling for them); anything else passes through."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def check_unique_features(reports: list[FeatureReport], what: str) -> None:
    seen: set[int] = set()
    for report in reports:
        if report.feature in seen:
            raise InputError(
                expected(
                    f"{what} export",
                    f"feature {report.feature} twice",
                    "one report per feature",
                    "Export one run at a time.",
                )
            )
        seen.add(report.feature)


def write_json(path: Path, data: Any, indent: int | None = None, allow_nan: bool = False) -> Path:
    """Write strict JSON (no NaN/Infinity unless allow_nan, for a format whose own writer emits them), UTF-8,
    and return the path."""
    try:
        text = json.dumps(data, ensure_ascii=False, allow_nan=allow_nan, indent=indent)
    except ValueError as error:
        raise InputError(
            expected(f"export data for {path.name}", f"a non-finite number ({error})", "finite numbers")
        ) from error
    path.write_text(text + "\n", encoding="utf-8")
    return path
