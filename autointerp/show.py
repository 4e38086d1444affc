"""Terminal views: one feature of a run (`autointerp show`) and the end-of-run summary table."""

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from autointerp.errors import InputError, expected
from autointerp.records import FeatureReport, Window


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "undefined"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def shaded_window(window: Window, max_activation: float) -> Text:
    """Tokens on a background whose intensity follows activation / feature max (0..1)."""
    text = Text()
    for token, act in zip(window.tokens, window.activations):
        level = 0.0 if max_activation <= 0 else max(0.0, min(1.0, act / max_activation))
        shown = token.replace("\n", "↵").replace("\t", "⇥")
        if level > 0:
            green = int(255 - 155 * level)
            text.append(shown, style=f"black on rgb({green},255,{green})")
        else:
            text.append(shown)
    return text


def feature_view(report: FeatureReport, console: Console, n_windows: int = 8) -> None:
    stats = report.stats
    console.rule(f"feature {report.feature}  (run {report.run_id})")
    console.print(
        f"density {stats.density:.2e}  max {stats.max_activation:.3g}  "
        f"mean when active {_fmt(stats.mean_active)}  tokens seen {stats.n_tokens:,}"
    )
    if report.explanation:
        console.print(Text(f"explanation: {report.explanation.text}", style="bold"))
        console.print(f"  by {report.explanation.backend}, cost ${report.explanation.cost_usd:.4f}")
    for error in report.errors:
        console.print(Text(f"failed: {error}", style="red"))
    if report.scores:
        table = Table("metric", "llm explanation", *[f"control: {k}" for k in report.controls], title="scores")
        for metric in (
            "correlation",
            "spearman",
            "r2_centred",
            "abs_dev_explained",
            "auroc",
            "balanced_accuracy",
            "slope",
            "intercept",
            "ece",
            "binarity",
        ):
            table.add_row(
                metric, _fmt(report.scores.get(metric)), *[_fmt(c.get(metric)) for c in report.controls.values()]
            )
        table.add_row("lift over baseline", _fmt(report.scores.get("lift")))
        console.print(table)
        details = json.loads(report.scores["json"]).get("details", {}) if report.scores.get("json") else {}
        reliability = details.get("reliability") or []
        if reliability:
            calib = Table("predicted level", "count", "mean true level", title="calibration (reliability table)")
            for row in reliability:
                if row["count"]:
                    calib.add_row(str(row["level"]), str(row["count"]), _fmt(row["mean_true_q"], 2))
            console.print(calib)
    top = [w for w in report.windows if w.group == "top"][:n_windows]
    if top:
        console.print(f"top windows (shade = activation / {stats.max_activation:.3g}):")
        for window in top:
            console.print(
                Text(f"[{window.split} ctx {window.context_id}, peak {window.max_activation:.3g}] "),
                shaded_window(window, stats.max_activation),
            )


def show_feature(run_dir: Path, feature: int, console: Console | None = None) -> None:
    from autointerp.store import RunStore

    store = RunStore.open(run_dir, create=False)
    run_id = store.latest_run_id()
    if run_id is None:
        raise InputError(expected(f"Run directory {run_dir}", "no run", "a directory written by `autointerp run`"))
    reports = {r.feature: r for r in store.load_reports(run_id)}
    if feature not in reports:
        known = ", ".join(map(str, sorted(reports)[:20]))
        raise InputError(expected(f"Feature {feature}", f"not in run {run_id}", f"one of its features: {known}"))
    feature_view(reports[feature], console or Console())


def print_summary(summary: dict, console: Console | None = None) -> None:
    console = console or Console()
    table = Table("", "value", title=f"run {summary.get('run_id')} ({summary.get('status')})")
    rows = [
        ("features scored", summary.get("scored")),
        ("features failed", summary.get("failed")),
        ("correlation mean", summary.get("correlation_mean")),
        ("correlation median", summary.get("correlation_median")),
        ("mean lift over baseline explanation", summary.get("lift_mean")),
        ("mean lift over another feature's explanation", summary.get("lift_other_mean")),
        ("detection AUROC (mean)", summary.get("auroc_mean")),
        ("ECE (mean)", summary.get("ece_mean")),
        ("binarity (mean)", summary.get("binarity_mean")),
        ("LLM calls", summary.get("llm_calls")),
        (
            "tokens in / cached / out",
            f"{summary.get('input_tokens', 0):,} / {summary.get('cached_input_tokens', 0):,} / "
            f"{summary.get('output_tokens', 0):,}",
        ),
        ("cost (USD)", f"{summary.get('cost_usd', 0.0):.4f}"),
    ]
    for name, value in rows:
        table.add_row(name, _fmt(value))
    console.print(table)
