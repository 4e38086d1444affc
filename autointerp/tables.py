"""Readers across runs: a summary row per run, a breakdown by firing density, an A/B comparison, and
one formatter for all of them (terminal, markdown, CSV, JSON).

Every reader opens run databases read-only. Correlation means Pearson r of the LLM explanation's
simulation (scoring.pearson, pooled over tokens); undefined values are left out of every mean and
`correlation_n` says how many were defined.
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

from autointerp.errors import StoreError, expected
from autointerp.run_summary import run_summary
from autointerp.scoring import bootstrap_paired_diff, summarise
from autointerp.store import RunStore

Format = Literal["terminal", "markdown", "csv", "json"]

# The run_summary() keys a run table shows, in order, after the run's name (and training_run, step).
RUN_COLUMNS = (
    "scored", "failed", "correlation_n", "correlation_mean", "correlation_median", "correlation_q25",
    "correlation_q75", "lift_mean", "lift_other_mean", "auroc_mean", "ece_mean", "binarity_mean", "cost_usd",
)  # fmt: skip
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
    return {
        "run": summary["name"],
        "training_run": summary["training_run"],
        "step": summary["step"],
        **{key: summary[key] for key in RUN_COLUMNS},
    }


def run_table(run_dirs: Iterable[Path]) -> list[dict[str, Any]]:
    """One row per run in each directory's database (a training loop's checkpoints are one row each).

    Columns: run (name), training_run and step (only when some run has them), then RUN_COLUMNS:
    features scored and failed, correlation n / mean / median / q25 / q75, mean lift over the baseline
    explanation and over another feature's explanation, mean detection AUROC, mean ECE (0..10 levels),
    mean binarity (0..1) and LLM cost (USD).
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
    """Per log10-density bucket (DENSITY_BUCKETS): features sampled, features scored, and the mean and
    median correlation of the scored ones (n = correlation_n). run_id None -> the latest run."""
    with RunStore.open(run_dir, create=False) as store:
        run_id = _resolve_run(store, run_id)
        densities = store.feature_densities(run_id)
        correlations = store.feature_scores(run_id, "correlation")
    rows = []
    for label, lo, hi in DENSITY_BUCKETS:
        members = [f for f, d in densities.items() if lo <= d < hi]
        scored = [correlations[f] for f in members if f in correlations]
        stats = summarise(scored)
        rows.append(
            {
                "density": label,
                "features": len(members),
                "scored": len(scored),
                "correlation_n": stats["n"],
                "correlation_mean": stats["mean"],
                "correlation_median": stats["median"],
            }
        )
    return rows


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
        paired: when same_sae, over the features both scored with a defined correlation:
            {n, mean_diff, lo, hi} with mean_diff = mean(B - A) and (lo, hi) its 95% paired
            bootstrap interval (scoring.bootstrap_paired_diff, n_boot resamples, seed); else None;
        unpaired: when not same_sae, {mean_a, mean_b, diff = mean_b - mean_a}; else None;
        note: one sentence saying which comparison was made and why.
    """
    sides = []
    for run_dir, run_id in ((a, run_a), (b, run_b)):
        with RunStore.open(run_dir, create=False) as store:
            run_id = _resolve_run(store, run_id)
            summary = run_summary(store, run_id)
            sides.append((summary, store.feature_scores(run_id, "correlation")))
    (sum_a, corr_a), (sum_b, corr_b) = sides
    runs = [{"dir": str(d), **_summary_row(s)} for d, s in ((a, sum_a), (b, sum_b))]
    same_sae = bool(sum_a["sae_fingerprint"]) and sum_a["sae_fingerprint"] == sum_b["sae_fingerprint"]
    result: dict[str, Any] = {"runs": runs, "same_sae": same_sae, "paired": None, "unpaired": None}
    if same_sae:
        shared = sorted(f for f in corr_a.keys() & corr_b.keys() if corr_a[f] is not None and corr_b[f] is not None)
        diff = bootstrap_paired_diff([corr_b[f] for f in shared], [corr_a[f] for f in shared], n_boot=n_boot, seed=seed)
        result["paired"] = {"n": len(shared), "mean_diff": diff.mean_diff, "lo": diff.lo, "hi": diff.hi}
        result["note"] = (
            f"Same SAE: correlation B - A paired over the {len(shared)} features both runs scored, "
            f"with a 95% bootstrap interval ({n_boot} resamples)."
        )
    else:
        mean_a, mean_b = sum_a["correlation_mean"], sum_b["correlation_mean"]
        result["unpaired"] = {
            "mean_a": mean_a,
            "mean_b": mean_b,
            "diff": None if mean_a is None or mean_b is None else mean_b - mean_a,
        }
        result["note"] = (
            "Different SAEs (fingerprints differ): feature indices do not name the same features, "
            "so only the means of each run are compared, unpaired."
        )
    return result


# ---------------------------------------------------------------------------------------------------
# Formatting


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


def _cell(column: str, value: Any) -> str:
    """Human formatting: floats to 3 decimals (USD to 4), None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if column.endswith("usd") else f"{value:.3f}"
    return str(value)


def format_rows(rows: Sequence[dict[str, Any]], fmt: Format) -> str:
    """Render rows (dicts; columns in order of first appearance) as a terminal table, markdown, CSV or JSON.

    CSV and JSON keep full precision (None as an empty cell / null); terminal and markdown round floats.
    """
    columns = _columns(rows)
    if fmt == "json":
        return json.dumps(list(rows), indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()
    numeric = {c for c in columns if all(isinstance(r.get(c), int | float | None) for r in rows)}
    if fmt == "markdown":
        lines = [
            "| " + " | ".join(columns) + " |",
            "|" + "|".join("---:" if c in numeric else "---" for c in columns) + "|",
        ]
        lines += ["| " + " | ".join(_cell(c, r.get(c)).replace("|", "\\|") for c in columns) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    if fmt == "terminal":
        table = Table(show_edge=False)
        for column in columns:
            table.add_column(column, justify="right" if column in numeric else "left")
        for row in rows:
            table.add_row(*(_cell(c, row.get(c)) for c in columns))
        buffer = io.StringIO()
        # A wide virtual console: the table takes its natural width instead of wrapping at 80 columns.
        Console(file=buffer, width=1000, color_system=None, force_terminal=False).print(table)
        return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"
    raise ValueError(f"format_rows fmt: found {fmt!r}; expected 'terminal', 'markdown', 'csv' or 'json'")
