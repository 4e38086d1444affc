"""Exporters: FeatureReports -> files for feature browsers and other tools. They never read the database.

Each exporter is `(reports, out_dir, **options) -> list[Path]` and is registered by name in EXPORTERS:

- "neuronpedia":  upload-batch JSON files (<= 128 features each) + scores.json
                  options: model_id, source, set_name, explanation_type, explanation_model, batch_size
- "saedashboard": SAEDashboard batch files batch-0.json, ...; options: model_id, source, set_name, batch_size
- "saebench":     SAEBench autointerp eval_results JSON; options: scorer, metric, sae_release, sae_id
- "jsonl":        features.jsonl, one object per feature (explanation, scores, controls, detection)
- "html":         index.html, a self-contained static browser; option: title

Exporters that need more of the run than its reports (the SAE's hook and cfg.json, the run config) take
a `context` (autointerp.export.context.ExportContext); `export_run` builds it from the run's store.

Each writes into `out_dir` (created if missing) under fixed file names and leaves other files alone,
so give each format its own folder.
"""

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autointerp.errors import InputError, expected
from autointerp.export.context import ExportContext, run_context
from autointerp.export.html import write_html
from autointerp.export.jsonl import write_jsonl
from autointerp.export.neuronpedia import write_neuronpedia
from autointerp.export.saebench import write_saebench
from autointerp.export.saedashboard import write_saedashboard
from autointerp.logits import FeatureLogits, load_feature_logits
from autointerp.records import FeatureReport, TokenLogit
from autointerp.registry import Registry

Exporter = Callable[..., list[Path]]
CONTEXT_OPTION = "context"  # passed by export() itself, not a user option

EXPORTERS: Registry[Exporter] = Registry("exporter")
EXPORTERS.register("neuronpedia")(write_neuronpedia)
EXPORTERS.register("saedashboard")(write_saedashboard)
EXPORTERS.register("saebench")(write_saebench)
EXPORTERS.register("jsonl")(write_jsonl)
EXPORTERS.register("html")(write_html)


def _keyword_options(kind: str) -> list[str]:
    signature = inspect.signature(EXPORTERS.get(kind))
    return [p.name for p in signature.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]


def exporter_options(kind: str) -> list[str]:
    """The keyword options a user may pass to exporter `kind`."""
    return [name for name in _keyword_options(kind) if name != CONTEXT_OPTION]


def export(
    kind: str,
    reports: list[FeatureReport],
    out_dir: str | Path,
    context: ExportContext | None = None,
    **options: Any,
) -> list[Path]:
    """Write `reports` in format `kind` into `out_dir`; return the paths written.

    `context` goes to the exporters that take one. Options that are None are left to the exporter's
    defaults. Raises InputError for an unknown kind or an option the exporter does not take (never
    ignored).
    """
    exporter = EXPORTERS.get(kind)
    accepted = exporter_options(kind)
    options = {name: value for name, value in options.items() if value is not None}
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InputError(
            expected(
                f"export {kind!r} options",
                ", ".join(unknown),
                ", ".join(accepted) if accepted else "no options",
            )
        )
    if CONTEXT_OPTION in _keyword_options(kind):
        options[CONTEXT_OPTION] = context
    return exporter(list(reports), Path(out_dir), **options)


def with_logits(reports: list[FeatureReport], logits: dict[int, FeatureLogits]) -> list[FeatureReport]:
    """`reports` with the top/bottom logits the run stored at sampling (autointerp.logits); a feature
    without stored logits keeps None, which exporters read as "the run has none"."""
    out = []
    for report in reports:
        item = logits.get(report.feature)
        if item is not None:
            top = [TokenLogit(token=token, value=value) for _, token, value in item.top]
            bottom = [TokenLogit(token=token, value=value) for _, token, value in item.bottom]
            report = report.model_copy(update={"top_logits": top, "bottom_logits": bottom})
        out.append(report)
    return out


def export_run(
    run_dir: str | Path, kind: str, out_dir: str | Path, run_id: str | None = None, **options: Any
) -> list[Path]:
    """Export run `run_id` (default: the latest) of the run directory `run_dir` in format `kind`."""
    from autointerp.store import RunStore

    with RunStore.open(Path(run_dir), create=False) as store:
        run_id = run_id or store.latest_run_id()
        if run_id is None:
            raise InputError(expected(f"run directory {run_dir}", "no run in its database", "a finished run"))
        reports = with_logits(store.load_reports(run_id), load_feature_logits(store, run_id))
        context = run_context(store, run_id)
    return export(kind, reports, out_dir, context=context, **options)


__all__ = ["EXPORTERS", "ExportContext", "Exporter", "export", "export_run", "exporter_options", "run_context"]
