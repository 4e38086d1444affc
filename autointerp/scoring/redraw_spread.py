"""Per-feature spread over fresh window draws (autointerp.redraws): pure maths on stored values.

Here rather than in autointerp.redraws so readers (run summary, `show`) need not import the redraw stage,
which loads models and samples."""

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

# run-summary prefix -> (scorer, redraw_scores column, whether an undefined value counts as 0): the
# per-feature spreads the summary, `table` and `show` give.
SPREAD_SCORES = {
    "correlation": ("simulation", "correlation", True),
    "detection_balanced_accuracy": ("detection", "balanced_accuracy", False),
    "detection_auroc": ("detection", "detection_auroc", False),
}


def per_feature_spread(values: Sequence[float | None], as_zero: bool) -> tuple[float | None, int]:
    """(standard deviation with ddof 1, n) of one feature's score over its draws (the run's and the redraws');
    an undefined value counts as 0 with as_zero, else is left out; std None with fewer than 2 values."""
    kept = [float(v or 0.0) for v in values] if as_zero else [float(v) for v in values if v is not None]
    return (statistics.stdev(kept) if len(kept) >= 2 else None), len(kept)


def redraw_spread(
    own: Mapping[str, Mapping[int, float | None]], redraws: Sequence[Mapping[str, Any]]
) -> dict[str, dict[int, tuple[float | None, int]]]:
    """prefix (SPREAD_SCORES) -> feature -> (std, n draws) over the run's own value (`own[prefix][feature]`,
    when the feature has one) and its redraw rows' values (rows as RunStore.redraw_rows gives them)."""
    out: dict[str, dict[int, tuple[float | None, int]]] = {}
    for prefix, (scorer, column, as_zero) in SPREAD_SCORES.items():
        draws: dict[int, list[float | None]] = {}
        for row in redraws:
            if row["scorer"] == scorer:
                draws.setdefault(row["feature"], []).append(row[column])
        values = own.get(prefix, {})
        out[prefix] = {
            f: per_feature_spread(([values[f]] if f in values else []) + extra, as_zero) for f, extra in draws.items()
        }
    return out
