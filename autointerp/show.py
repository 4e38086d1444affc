"""Terminal views, built as rich renderables for the CLI to print: one feature of a run (`autointerp
show`) and the end-of-run summary table. Nothing here writes to the terminal."""

import json
from pathlib import Path

from rich.console import RenderableType
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


def feature_view(report: FeatureReport, n_windows: int = 8) -> list[RenderableType]:
    """What `autointerp show` prints for one feature, one renderable per `Console.print` (plain strings
    are printed with rich's markup and highlighting)."""
    from rich.rule import Rule

    stats = report.stats
    view: list[RenderableType] = [Rule(f"feature {report.feature}  (run {report.run_id})")]
    view.append(
        f"density {stats.density:.2e}  max {stats.max_activation:.3g}  "
        f"mean when active {_fmt(stats.mean_active)}  tokens seen {stats.n_tokens:,}"
    )
    if report.explanation:
        view.append(Text(f"explanation: {report.explanation.text}", style="bold"))
        cost = report.explanation.cost_usd
        view.append(f"  by {report.explanation.backend}, cost {'unknown' if cost is None else f'${cost:.4f}'}")
    for error in report.errors:
        view.append(Text(f"failed: {error}", style="red"))
    if report.scores:
        view += score_views(report)
    if report.detection:
        view += detection_views(report)
    if report.redraws:
        view += redraw_views(report)
    if report.scores:
        details = json.loads(report.scores["json"]).get("details", {}) if report.scores.get("json") else {}
        reliability = details.get("reliability") or []
        if reliability:
            calib = Table("predicted level", "count", "mean true level", title="calibration (reliability table)")
            for row in reliability:
                if row["count"]:
                    calib.add_row(str(row["level"]), str(row["count"]), _fmt(row["mean_true_q"], 2))
            view.append(calib)
    top = [w for w in report.windows if w.group == "top"][:n_windows]
    if top:
        view.append(f"top windows (shade = activation / {stats.max_activation:.3g}):")
        for window in top:
            label = Text(f"[{window.split} ctx {window.context_id}, peak {window.max_activation:.3g}] ")
            view.append(Text.assemble(label, " ", shaded_window(window, stats.max_activation)))
    return view


SHOWN_METRICS = (
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
)


def _undefined(row: dict) -> dict[str, str]:
    return json.loads(row["json"]).get("undefined", {}) if row.get("json") else {}


def _score(row: dict, metric: str, reasons: dict[str, str]) -> str:
    value = row.get(metric)
    if value is None and metric in reasons:
        return f"undefined ({reasons[metric]})"
    return _fmt(value)


def _lift(score: dict, control: dict, score_reasons: dict[str, str], control_reasons: dict[str, str]) -> str:
    """Correlation lift over a control; when a side is undefined, why, and the value run means count."""
    a, c = score.get("correlation"), control.get("correlation")
    if a is not None and c is not None:
        return _fmt(a - c)
    why = "; ".join(
        f"{side} {reasons.get('correlation', 'not computed')}"
        for side, value, reasons in (("score", a, score_reasons), ("control", c, control_reasons))
        if value is None
    )
    return f"undefined ({why}); {(a or 0.0) - (c or 0.0):.3f} in run means"


def score_views(report: FeatureReport) -> list[RenderableType]:
    """The scores of one feature: each metric for its LLM explanation and each control explanation (an
    undefined one with its reason), the lifts, the permutation null with its spread, and the scores per
    activation bin (details["by_bin"])."""
    scores, controls = report.scores or {}, report.controls
    names = {k: f"control: {c.get('explanation_source', k)}" for k, c in controls.items()}
    table = Table("metric", "llm explanation", *names.values(), title="scores")
    reasons = {"llm": _undefined(scores)} | {k: _undefined(c) for k, c in controls.items()}
    for metric in SHOWN_METRICS:
        cells = [_score(c, metric, reasons[k]) for k, c in controls.items()]
        table.add_row(metric, _score(scores, metric, reasons["llm"]), *cells)
    for key, label in (("baseline", "lift over baseline (correlation)"), ("other", "lift over other's (correlation)")):
        if key in controls:
            table.add_row(label, _lift(scores, controls[key], reasons["llm"], reasons[key]))
    if scores.get("permutation_mean") is not None:
        null = f"{scores['permutation_mean']:.3f} ± {scores['permutation_std']:.3f}"
        table.add_row(f"permutation null r (mean ± std, {scores.get('n_permutations')} draws)", null)
        z_and_p = f"{_fmt(scores.get('permutation_z'), 1)} / {_fmt(scores.get('permutation_p'))}"
        table.add_row("  z / p of the correlation", z_and_p)
    elif "permutation_mean" in reasons["llm"]:
        table.add_row("permutation null", f"undefined ({reasons['llm']['permutation_mean']})")
    view: list[RenderableType] = [table]
    by_bin = json.loads(scores["json"]).get("details", {}).get("by_bin") if scores.get("json") else None
    if by_bin:
        bins = Table(
            "bin", "windows", "true max", "predicted max", "detected", "correlation", title="by activation bin (0..10)"
        )
        for row in by_bin:
            corr = _fmt(row["correlation"]) if row["correlation"] is not None else f"- ({row['correlation_reason']})"
            bins.add_row(
                row["bin"],
                str(row["n_windows"]),
                _fmt(row["mean_true_max"], 1),
                _fmt(row["mean_pred_max"], 1),
                _fmt(row["detected"], 2),
                corr,
            )
        view.append(bins)
    return view


DETECTION_METRICS = ("balanced_accuracy", "precision", "recall", "f1", "auroc")
DETECTION_GROUPS = ("top", "interval", "random", "nonactivating", "hard_negative")


def detection_views(report: FeatureReport) -> list[RenderableType]:
    """The detection scores of one feature: each metric for the LLM explanation and each control (truth: the
    feature fired in the window), the lift over the baseline, and per window group the share judged yes
    (recall on top/interval windows, false-positive rate on nonactivating/hard-negative ones)."""
    rows = report.detection
    order = sorted(rows, key=lambda k: (k != "llm", k))
    names = ["llm explanation" if k == "llm" else f"control: {rows[k].get('explanation_source', k)}" for k in order]
    llm = rows.get("llm", {})
    mode = f"{llm.get('mode')}, {llm.get('n_windows')} windows ({llm.get('n_positive')} fired)" if llm else ""
    table = Table("metric", *names, title=f"detection ({mode})" if mode else "detection")
    for metric in DETECTION_METRICS:
        table.add_row(metric, *(_fmt(rows[k].get(metric)) for k in order))
    if "llm" in rows and "baseline" in rows:
        for metric in ("balanced_accuracy", "auroc"):
            a, c = rows["llm"].get(metric), rows["baseline"].get(metric)
            table.add_row(f"lift over baseline ({metric})", _fmt(None if a is None or c is None else a - c))
    for group in DETECTION_GROUPS:
        cells = [rows[k].get(f"yes_rate_{group}") for k in order]
        if any(c is not None for c in cells):
            table.add_row(f"yes rate: {group}", *("-" if c is None else f"{c:.2f}" for c in cells))
    return [table]


def redraw_views(report: FeatureReport) -> list[RenderableType]:
    """The feature's scores on fresh window draws (autointerp.redraws): one row per draw, the run's own
    first, and the standard deviation over them (undefined correlation counted as 0, as in run means)."""
    from autointerp.scoring.redraw_spread import SPREAD_SCORES, per_feature_spread

    own_corr = (report.scores or {}).get("correlation")
    own_ba = report.detection.get("llm", {}).get("balanced_accuracy")
    own_auroc = report.detection.get("llm", {}).get("auroc")
    draws: dict[int, dict] = {0: {"seed": "run's", "correlation": own_corr, "balanced_accuracy": own_ba}}
    draws[0]["detection_auroc"] = own_auroc
    for row in report.redraws:
        draw = draws.setdefault(row["redraw"], {"seed": str(row["sampler_seed"])})
        if row["scorer"] == "simulation":
            draw |= {"correlation": row["correlation"], "windows": row["n_windows"], "dropped": row["n_dropped"]}
        else:
            draw |= {k: row[k] for k in ("balanced_accuracy", "detection_auroc")}
            draw.setdefault("windows", row["n_windows"])
            draw.setdefault("dropped", row["n_dropped"])
    table = Table(
        "draw", "sampler seed", "windows (dropped)", "correlation", "detection bal. acc.", "detection AUROC",
        title="fresh window draws (windows the explainer saw are dropped)",
    )  # fmt: skip
    for k, d in sorted(draws.items()):
        windows = "" if k == 0 else f"{d.get('windows')} ({d.get('dropped')})"
        cells = (_fmt(d.get(c)) for c in ("correlation", "balanced_accuracy", "detection_auroc"))
        table.add_row("run" if k == 0 else str(k), d["seed"], windows, *cells)
    spreads = []
    for _, column, as_zero in SPREAD_SCORES.values():
        key = "balanced_accuracy" if column == "balanced_accuracy" else column
        std, n = per_feature_spread([d.get(key) for d in draws.values() if key in d], as_zero)
        spreads.append(f"{_fmt(std)} (n={n})")
    table.add_row("std", "", "", *spreads)
    return [table]


def load_feature_report(run_dir: Path, feature: int) -> FeatureReport:
    """One feature's report from the latest run in `run_dir`; InputError naming the run's features if absent."""
    from autointerp.store import RunStore

    store = RunStore.open(run_dir, create=False)
    run_id = store.latest_run_id()
    if run_id is None:
        raise InputError(expected(f"Run directory {run_dir}", "no run", "a directory written by `autointerp run`"))
    reports = {r.feature: r for r in store.load_reports(run_id)}
    if feature not in reports:
        known = ", ".join(map(str, sorted(reports)[:20]))
        raise InputError(expected(f"Feature {feature}", f"not in run {run_id}", f"one of its features: {known}"))
    return reports[feature].model_copy(update={"redraws": store.redraw_rows(run_id, feature)})


def _mean_cell(summary: dict, prefix: str) -> str:
    """'mean [lo, hi]  n=N (k as 0)' of one run_summary statistic."""
    mean = summary.get(f"{prefix}_mean")
    if mean is None:
        return f"undefined (n={summary.get(f'{prefix}_n', 0)})"
    lo, hi = summary.get(f"{prefix}_ci_lo"), summary.get(f"{prefix}_ci_hi")
    text = f"{mean:.3f}" + ("" if lo is None else f" [{lo:.3f}, {hi:.3f}]") + f"  n={summary.get(f'{prefix}_n')}"
    as_zero = summary.get(f"{prefix}_n_undefined_as_zero")
    return text + (f" ({as_zero} undefined as 0)" if as_zero else "")


def summary_table(summary: dict) -> Table:
    """The end-of-run table of `autointerp run`, from `run_summary`'s dict: each headline score with its
    95% CI and n, the controls' own scores and the lifts over them, the permutation null, usage."""
    table = Table("", "mean [95% CI]  n", title=f"run {summary.get('run_id')} ({summary.get('status')})")
    table.add_row("features scored / failed", f"{summary.get('scored')} / {summary.get('failed')}")
    if summary.get("partly_scored"):
        missing = summary.get("partly_scored_missing") or {}
        listed = ", ".join(f"{f} ({'+'.join(names)})" for f, names in list(missing.items())[:6])
        table.add_row("  partly scored (a scorer failed)", f"{summary['partly_scored']}: {listed}; --retry-failed")
    for prefix, label in (
        ("correlation", "correlation"),
        ("baseline_correlation", "  baseline explanation's"),
        ("lift", "  lift over baseline explanation"),
        ("other_correlation", "  another feature's explanation's"),
        ("lift_other", "  lift over another feature's explanation"),
        ("null_correlation", "  permutation null's mean r"),
        ("null_z", "  z over permutation null"),
        ("null_p05", "  share with p < 0.05 (permutation)"),
        ("bootstrap_std", "  window-bootstrap std (resampled windows)"),
        ("redraw_std_correlation", "  fresh-draw std (per feature, --redraws)"),
        ("auroc", "simulation AUROC (window max)"),
        ("auroc_lift", "  lift over baseline explanation"),
        ("auroc_lift_other", "  lift over another feature's explanation"),
        ("balanced_accuracy", "balanced accuracy"),
        ("detection_balanced_accuracy", "detection: balanced accuracy"),
        ("detection_balanced_accuracy_lift", "  lift over baseline explanation"),
        ("redraw_std_detection_balanced_accuracy", "  fresh-draw std (per feature, --redraws)"),
        ("detection_precision", "detection: precision"),
        ("detection_recall", "detection: recall"),
        ("detection_auroc", "detection: AUROC from P(yes)"),
        ("detection_auroc_lift", "  lift over baseline explanation"),
        ("ece", "ECE (calibration set)"),
        ("binarity", "binarity (calibration set)"),
    ):
        if prefix == "null_p05":  # a share over the features the null covers, not a mean
            share = summary.get("null_p05_share")
            table.add_row(label, "not computed" if share is None else f"{share:.3f}  n={summary.get('null_p05_n')}")
        elif prefix.startswith("redraw_std") and not summary.get(f"{prefix}_n"):
            continue  # no redraws in this run
        else:
            table.add_row(label, _mean_cell(summary, prefix))
    table.add_row("LLM calls", _fmt(summary.get("llm_calls")))
    table.add_row(
        "tokens in / cached / out",
        f"{summary.get('input_tokens', 0):,} / {summary.get('cached_input_tokens', 0):,} / "
        f"{summary.get('output_tokens', 0):,}",
    )
    cost, unpriced = summary.get("cost_usd"), summary.get("unpriced_calls") or 0
    table.add_row("cost (USD)", f"unknown ({unpriced} calls of unknown price)" if cost is None else f"{cost:.4f}")
    if summary.get("settings_hash"):
        table.add_row("settings hash", summary["settings_hash"])
    if summary.get("redraw_draws"):
        table.add_row("draws per redrawn feature", f"{summary['redraw_draws']} (the run's + fresh ones)")
    if summary.get("notes"):
        table.caption = "\n".join(summary["notes"])  # what these scores can and cannot show
        table.caption_justify = "left"
    return table
