"""Readers across runs: a summary row per run, a breakdown by firing density, an A/B comparison, and
one formatter for all of them (terminal, markdown, CSV, JSON).

Every reader opens run databases read-only. Correlation means Pearson r of the LLM explanation's
simulation (scoring.pearson, pooled over tokens). Every mean comes with its n, how many undefined values
it counted as 0 (correlation-type scores: a constant prediction explains nothing) and a 95% bootstrap
interval; see autointerp.run_summary for which scores count undefined values as 0.
"""

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.table import Table
from rich.text import Text

from autointerp.errors import StoreError, expected
from autointerp.run_summary import DETECTION_HEADLINES, HEADLINE_SCORES, Headline, feature_headlines, run_summary
from autointerp.scoring import bootstrap_paired_diff, summarise
from autointerp.settings_hash import score_settings, settings_differences
from autointerp.store import RunStore

Format = Literal["terminal", "markdown", "csv", "json"]

TERMINAL_WIDTH = 100  # the terminal table never needs more columns than this
# Statistics a run table shows, in order, each as the run_summary() keys `<prefix>_<STAT_KEYS>`, with the
# label the terminal shows (indented labels are the controls and lifts of the score above them).
RUN_STATS = {
    "correlation": "correlation",
    "bootstrap_std": "  window-bootstrap std (resampled windows)",
    "redraw_std_correlation": "  fresh-draw std (per feature, --redraws)",
    "baseline_correlation": "  baseline explanation's",
    "lift": "  lift over baseline",
    "other_correlation": "  other feature's explanation's",
    "lift_other": "  lift over other feature's",
    "null_correlation": "  permutation null's mean r",
    "null_std": "  permutation null's std",
    "null_z": "  z over permutation null",
    "null_p05": "  share with p < 0.05",
    "auroc": "auroc (simulation)",
    "baseline_auroc": "  baseline explanation's",
    "auroc_lift": "  lift over baseline",
    "other_auroc": "  other feature's explanation's",
    "auroc_lift_other": "  lift over other feature's",
    "balanced_accuracy": "balanced accuracy (simulation)",
    "detection_balanced_accuracy": "detection: balanced accuracy",
    "detection_balanced_accuracy_lift": "  lift over baseline",
    "redraw_std_detection_balanced_accuracy": "  fresh-draw std (per feature, --redraws)",
    "detection_precision": "detection: precision",
    "detection_precision_lift": "  lift over baseline",
    "detection_recall": "detection: recall",
    "detection_recall_lift": "  lift over baseline",
    "detection_auroc": "detection: AUROC (P(yes))",
    "detection_auroc_lift": "  lift over baseline",
    "redraw_std_detection_auroc": "  fresh-draw std (per feature, --redraws)",
    "abs_dev_explained": "abs dev explained",
    "ece": "ece (calibration set)",
    "binarity": "binarity (calibration set)",
}
STAT_KEYS = ("n", "n_total", "n_defined", "n_undefined_as_zero", "mean", "median", "q25", "q75", "ci_lo", "ci_hi")
# The run_summary() keys a run table shows besides the statistics: first these ...
RUN_FIELDS = ("settings_hash", "scored", "partly_scored", "failed")
# ... and after them these.
RUN_USAGE = ("cost_usd", "unpriced_calls")
# log10-density buckets: (label, lower bound inclusive, upper bound exclusive); density 0 falls in the first.
DENSITY_BUCKETS = (
    ("<1e-4", 0.0, 1e-4),
    ("1e-4..1e-3", 1e-4, 1e-3),
    ("1e-3..1e-2", 1e-3, 1e-2),
    (">=1e-2", 1e-2, math.inf),
)


def _resolve_run(store: RunStore, run_id: str | None) -> str:
    """run_id, or the database's latest run when None."""
    if run_id is None:
        run_id = store.latest_run_id()
        if run_id is None:
            raise StoreError(expected(f"run database {store.path}", "no runs", "at least one run"))
    elif store.get_run(run_id) is None:
        raise StoreError(expected(f"run database {store.path}", f"no run {run_id!r}", "a run id it holds"))
    return run_id


def _summary_row(summary: dict[str, Any]) -> dict[str, Any]:
    row = {"run": summary["name"], "training_run": summary["training_run"], "step": summary["step"]}
    row |= {key: summary[key] for key in RUN_FIELDS}
    for prefix in RUN_STATS:
        if prefix == "null_p05":  # a share, not a mean: its n is the features the null was computed for
            row |= {"null_p05_share": summary["null_p05_share"], "null_p05_n": summary["null_p05_n"]}
        else:
            row |= {f"{prefix}_{key}": summary[f"{prefix}_{key}"] for key in STAT_KEYS}
    return row | {key: summary[key] for key in RUN_USAGE}


def run_table(run_dirs: Iterable[Path]) -> list[dict[str, Any]]:
    """One row per run in each directory's database (a training loop's checkpoints are one row each).

    Columns: run (name), training_run and step (only when some run has them), settings_hash, features
    scored and failed, then for each statistic of RUN_STATS its n / n_total / n_defined /
    n_undefined_as_zero / mean / median / q25 / q75 / ci_lo / ci_hi (the permutation null's share of
    p < 0.05 as null_p05_share and null_p05_n), then LLM cost (USD; None when a call's price is unknown)
    and the number of calls of unknown price.
    """
    rows = []
    for run_dir in run_dirs:
        with RunStore.open(run_dir, create=False) as store:
            rows += [_summary_row(run_summary(store, run["run_id"])) for run in store.list_runs()]
    if all(row["training_run"] is None and row["step"] is None for row in rows):
        for row in rows:
            del row["training_run"], row["step"]
    return rows


def density_breakdown(run_dir: Path, run_id: str | None = None) -> list[dict[str, Any]]:
    """Per log10-density bucket (DENSITY_BUCKETS): features sampled, features scored, and the correlation of
    the scored ones (undefined counted as 0): n, n_undefined_as_zero, mean, its 95% bootstrap interval and
    median. run_id None -> the latest run."""
    with RunStore.open(run_dir, create=False) as store:
        run_id = _resolve_run(store, run_id)
        densities = store.feature_densities(run_id)
        correlations = store.feature_scores(run_id, "correlation")
    rows = []
    for label, lo, hi in DENSITY_BUCKETS:
        members = [f for f, d in densities.items() if lo <= d < hi]
        stats = summarise([correlations[f] for f in members if f in correlations])
        row: dict[str, Any] = {"density": label, "features": len(members), "scored": stats["n_total"]}
        keys = ("n", "n_undefined_as_zero", "mean", "ci_lo", "ci_hi", "median")
        rows.append(row | {f"correlation_{key}": stats[key] for key in keys})
    return rows


def _run_settings(store: RunStore, run_id: str) -> tuple[dict[str, Any], bool]:
    """(the settings of the run's scores, whether they were recorded). A run stored before settings were
    recorded gets them rebuilt from its stored config and corpus fingerprint, without prompts (unknown)."""
    recorded = store.run_settings(run_id)
    if recorded:
        counts = store.settings_hash_counts(run_id)
        most = next((h for h in counts if h in recorded), next(iter(recorded)))
        return recorded[most], True
    run = store.require_run(run_id)
    return score_settings(run["results_key"], run["corpus_fingerprint"], {}), False


def _settings_note(a: tuple[dict[str, Any], bool], b: tuple[dict[str, Any], bool], hashes: list) -> tuple[list, str]:
    (set_a, recorded_a), (set_b, recorded_b) = a, b
    if not (recorded_a and recorded_b):  # prompts unknown on one side: compare the rest
        set_a, set_b = ({k: v for k, v in s.items() if k != "prompts"} for s in (set_a, set_b))
    diffs = settings_differences(set_a, set_b)
    listed = [{"setting": key, "a": va, "b": vb} for key, va, vb in diffs]
    if not diffs:
        same = f"Same settings (hash {hashes[0]})." if hashes[0] == hashes[1] and hashes[0] else "Same settings."
        return listed, same if recorded_a and recorded_b else same + " Prompts were not recorded for a run."
    shown = "; ".join(f"{key}: {_short(va)} vs {_short(vb)}" for key, va, vb in diffs[:8])
    more = f" and {len(diffs) - 8} more" if len(diffs) > 8 else ""
    return listed, (
        f"Settings differ (hash {hashes[0] or 'not recorded'} vs {hashes[1] or 'not recorded'}): {shown}{more}. "
        "Pipeline settings move scores as much as SAEs do: read the difference with that in mind."
    )


def _short(value: Any) -> str:
    text = str(value)
    return text[:12] + "…" if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else repr(value)


def _paired_row(score: str, a: Headline, b: Headline, n_boot: int, seed: int) -> dict[str, Any]:
    """One headline score B - A over the features both runs have it for: {score, n (pairs compared),
    n_undefined_as_zero (values counted as 0, over both runs), n_left_out (shared features with an undefined
    value on a side, for scores where 0 is not "no skill"), only_a, only_b, mean_a, mean_b (over the pairs),
    mean_diff, lo, hi (95% paired bootstrap interval)}."""
    shared = sorted(a.values.keys() & b.values.keys())
    pairs = [(a.values[f], b.values[f]) for f in shared]
    kept = [(va, vb) for va, vb in pairs if va is not None and vb is not None]
    diff = bootstrap_paired_diff([vb for _, vb in kept], [va for va, _ in kept], n_boot=n_boot, seed=seed)
    return {
        "score": score,
        "n": len(kept),
        "n_undefined_as_zero": (len(a.undefined & set(shared)) + len(b.undefined & set(shared))) if a.as_zero else 0,
        "n_left_out": len(pairs) - len(kept),
        "only_a": len(a.values.keys() - b.values.keys()),
        "only_b": len(b.values.keys() - a.values.keys()),
        "mean_a": sum(va for va, _ in kept) / len(kept) if kept else None,
        "mean_b": sum(vb for _, vb in kept) / len(kept) if kept else None,
        "mean_diff": diff.mean_diff,
        "lo": diff.lo,
        "hi": diff.hi,
    }


def compare_runs(
    a: Path,
    b: Path,
    n_boot: int = 2000,
    seed: int = 0,
    *,
    run_a: str | None = None,
    run_b: str | None = None,
) -> dict[str, Any]:
    """Compare run B against run A (the latest run of each directory unless run_a / run_b name one).

    Returns:
        runs: two run-table rows (A then B), each with its `dir`;
        same_sae: both runs carry the same SAE fingerprint;
        paired_scores: when same_sae, one row per headline score either run has (run_summary.
            feature_headlines: correlation, its lifts over the baseline and the other feature's explanation,
            simulation AUROC and its lifts, detection balanced accuracy and AUROC and their lifts over the
            baseline), paired over the features both runs have it for: {score, n, n_undefined_as_zero
            (correlation-type values counted as 0, as in every run mean, over both runs), n_left_out (pairs
            with an undefined value of another score), only_a, only_b (features one run only has), mean_a,
            mean_b, mean_diff, lo, hi, same_settings} with mean_diff = mean(B - A) and (lo, hi) its 95% paired
            bootstrap interval (scoring.bootstrap_paired_diff, n_boot resamples, seed); else [];
        paired: the correlation row of paired_scores (None when not same_sae);
        unpaired: when not same_sae, {mean_a, mean_b, diff = mean_b - mean_a}; else None;
        same_settings, settings_differences: whether the settings behind the two runs' scores match, and
            [{setting, a, b}] where they do not (settings_hash.score_settings; a run stored before settings
            were recorded is compared through its stored config, prompts left out);
        note: which comparison was made and why, and what differs in the settings.
    """
    sides = []
    for run_dir, run_id in ((a, run_a), (b, run_b)):
        with RunStore.open(run_dir, create=False) as store:
            run_id = _resolve_run(store, run_id)
            summary = run_summary(store, run_id)
            headlines = feature_headlines(
                store.score_rows(run_id, tuple(HEADLINE_SCORES)), store.detection_rows(run_id, DETECTION_HEADLINES)
            )
            sides.append((summary, headlines, _run_settings(store, run_id)))
    (sum_a, heads_a, settings_a), (sum_b, heads_b, settings_b) = sides
    runs = [{"dir": str(d), **_summary_row(s)} for d, s in ((a, sum_a), (b, sum_b))]
    same_sae = bool(sum_a["sae_fingerprint"]) and sum_a["sae_fingerprint"] == sum_b["sae_fingerprint"]
    hashes = [sum_a["settings_hash"], sum_b["settings_hash"]]
    differences, settings_note = _settings_note(settings_a, settings_b, hashes)
    result: dict[str, Any] = {
        "runs": runs,
        "same_sae": same_sae,
        "paired": None,
        "paired_scores": [],
        "unpaired": None,
        "same_settings": not differences,
        "settings_differences": differences,
    }
    if same_sae:
        rows = [
            _paired_row(score, heads_a[score], heads_b[score], n_boot, seed) | {"same_settings": not differences}
            for score in heads_a
            if any(v is not None for side in (heads_a, heads_b) for v in side[score].values.values())
        ]
        result["paired_scores"] = rows
        correlation = next(row for row in rows if row["score"] == "correlation") if rows else None
        result["paired"] = correlation
        n = correlation["n"] if correlation else 0
        result["note"] = (
            f"Same SAE: every headline score B - A paired over the features both runs have it for (correlation: "
            f"paired over the {n} features both runs scored; undefined correlation-type values counted as 0, "
            "other undefined values left out), with a 95% "
            f"bootstrap interval ({n_boot} resamples). {settings_note}"
        )
    else:
        mean_a, mean_b = sum_a["correlation_mean"], sum_b["correlation_mean"]
        result["unpaired"] = {
            "n_a": sum_a["correlation_n"],
            "mean_a": mean_a,
            "n_b": sum_b["correlation_n"],
            "mean_b": mean_b,
            "diff": None if mean_a is None or mean_b is None else mean_b - mean_a,
        }
        result["note"] = (
            "Different SAEs (fingerprints differ): feature indices do not name the same features, "
            f"so only the means of each run are compared, unpaired. {settings_note}"
        )
    return result


# ---------------------------------------------------------------------------------------------------
# Formatting


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


def _number(value: Any, column: str = "") -> str:
    """Human formatting: floats to 3 decimals (USD to 4), None as '-' (a cost of unknown price: 'unknown')."""
    if value is None:
        return "unknown" if column.endswith("usd") else "-"
    if isinstance(value, float):
        return f"{value:.4f}" if column.endswith("usd") else f"{value:.3f}"
    return str(value)


def _groups(columns: Sequence[str]) -> dict[str, dict[str, str]]:
    """Statistic groups among the columns: prefix -> {stat key -> column}. A group is a `<prefix>_mean`
    with its siblings (`_n`, `_ci_lo`, ... of STAT_KEYS), or a `<prefix>_share` with its `<prefix>_n`."""
    present = set(columns)
    groups: dict[str, dict[str, str]] = {}
    for column in columns:
        for anchor in ("_mean", "_share"):
            if column.endswith(anchor):
                prefix = column.removesuffix(anchor)
                keys = STAT_KEYS if anchor == "_mean" else ("n",)
                members = {key: f"{prefix}_{key}" for key in keys if f"{prefix}_{key}" in present}
                groups[prefix] = members | {"mean": column}
    return groups


def _interval(stats: dict[str, Any]) -> str:
    lo, hi = stats.get("ci_lo"), stats.get("ci_hi")
    return "" if lo is None or hi is None else f"[{lo:.3f}, {hi:.3f}]"


def _stat_cell(stats: dict[str, Any]) -> str:
    """One statistic in one cell: 'mean [lo, hi] n=N (k as 0)'."""
    parts = [_number(stats.get("mean")), _interval(stats)]
    if stats.get("n") is not None:
        parts.append(f"n={stats['n']}")
    if stats.get("n_undefined_as_zero"):
        parts.append(f"({stats['n_undefined_as_zero']} as 0)")
    return " ".join(p for p in parts if p)


def _collapsed(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[dict[str, str]], set[str]]:
    """Columns and text cells with every statistic group in one cell; and which columns are numeric."""
    columns = _columns(rows)
    groups = _groups(columns)
    grouped = {c for members in groups.values() for c in members.values()}
    out_columns: list[str] = []
    for column in columns:
        prefix = next((p for p, members in groups.items() if members["mean"] == column), None)
        if prefix is not None:
            out_columns.append(prefix)
        elif column not in grouped:
            out_columns.append(column)
    cells = []
    for row in rows:
        cell = {}
        for column in out_columns:
            if column in groups:
                cell[column] = _stat_cell({key: row.get(name) for key, name in groups[column].items()})
            else:
                cell[column] = _number(row.get(column), column)
        cells.append(cell)
    numeric = {c for c in columns if all(isinstance(r.get(c), int | float | None) for r in rows)}
    numeric = {c for c in out_columns if c in groups or c in numeric}
    return out_columns, cells, numeric


def _render(renderable: Any, width: int) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, force_terminal=False).print(renderable)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"


def _terminal(rows: Sequence[dict[str, Any]]) -> str:
    """A table if it fits TERMINAL_WIDTH columns; else one block per row (its plain fields on a line, then its
    statistics one per line with mean, 95% CI, n, values counted as 0 and the interquartile range)."""
    columns, cells, numeric = _collapsed(rows)
    table = Table(show_edge=False)
    for column in columns:
        table.add_column(column, justify="right" if column in numeric else "left")
    for cell in cells:
        table.add_row(*(cell[c] for c in columns))
    text = _render(table, 10_000)  # its natural width, to see whether it fits
    if max(len(line) for line in text.splitlines()) <= TERMINAL_WIDTH:
        return text
    groups = _groups(_columns(rows))
    blocks = []
    for row, cell in zip(rows, cells, strict=True):
        plain = [c for c in columns if c not in groups and row.get(c) is not None]
        header = Text("  ".join(f"{c}={cell[c]}" for c in plain))
        stats = Table("score", "mean", "95% CI", "n", "as 0", "q25..q75", show_edge=False)
        for prefix, members in groups.items():
            values = {key: row.get(name) for key, name in members.items()}
            if prefix.startswith("redraw_std") and not values.get("n_total"):
                continue  # the run has no fresh draws (--redraws): no line for them
            spread = "" if values.get("q25") is None else f"{values['q25']:.3f}..{values['q75']:.3f}"
            as_zero = values.get("n_undefined_as_zero")
            stats.add_row(
                RUN_STATS.get(prefix, prefix),
                _number(values.get("mean")),
                _interval(values),
                _number(values.get("n")),
                "" if not as_zero else str(as_zero),
                spread,
            )
        blocks.append(_render(header, TERMINAL_WIDTH) + (_render(stats, TERMINAL_WIDTH) if stats.row_count else ""))
    return "\n".join(blocks)


def compact_paired_row(row: dict[str, Any]) -> dict[str, Any]:
    """One `compare` paired_scores row as the terminal shows it: the score, n (values counted as 0), both
    runs' means and B - A with its 95% interval, so the table fits TERMINAL_WIDTH."""

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    as_zero = row.get("n_undefined_as_zero") or 0
    return {
        "score": row["score"],
        "n": f"{row['n']}" + (f" ({as_zero} values as 0)" if as_zero else ""),
        "A": num(row.get("mean_a")),
        "B": num(row.get("mean_b")),
        "B - A [95% CI]": f"{num(row.get('mean_diff'))} [{num(row.get('lo'))}, {num(row.get('hi'))}]",
    }


def format_rows(rows: Sequence[dict[str, Any]], fmt: Format) -> str:
    """Render rows (dicts; columns in order of first appearance) as a terminal table, markdown, CSV or JSON.

    CSV and JSON keep every column at full precision (None as an empty cell / null). Terminal and markdown
    round floats and show each statistic group (`<x>_mean` with its `_n`, `_ci_lo`, `_ci_hi`, ...) as one
    cell, 'mean [ci_lo, ci_hi] n=N (k as 0)'; the terminal output fits TERMINAL_WIDTH columns, as a table
    when it can, else as one block per row.
    """
    if fmt == "json":
        return json.dumps(list(rows), indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=_columns(rows), restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()
    if fmt == "markdown":
        columns, cells, numeric = _collapsed(rows)
        lines = [
            "| " + " | ".join(columns) + " |",
            "|" + "|".join("---:" if c in numeric else "---" for c in columns) + "|",
        ]
        lines += ["| " + " | ".join(cell[c].replace("|", "\\|") for c in columns) + " |" for cell in cells]
        return "\n".join(lines) + "\n"
    if fmt == "terminal":
        return _terminal(rows) if rows else "\n"
    raise ValueError(f"format_rows fmt: found {fmt!r}; expected 'terminal', 'markdown', 'csv' or 'json'")
