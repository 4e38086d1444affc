"""Exporters: FeatureReports -> files for feature browsers and other tools. They never read the database.

Each exporter is `(reports, out_dir, **options) -> list[Path]` and is registered by name in EXPORTERS:

- "neuronpedia":  upload-batch JSON files (<= 128 features each) + scores.json
                  options: model_id, source, method_name, batch_size
- "saedashboard": saedashboard.json
- "jsonl":        features.jsonl, one object per feature
- "html":         index.html, a self-contained static browser; option: title

Each writes into `out_dir` (created if missing) under fixed file names and leaves other files alone,
so give each format its own folder.
"""

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autointerp.errors import InputError, expected
from autointerp.export.html import write_html
from autointerp.export.jsonl import write_jsonl
from autointerp.export.neuronpedia import write_neuronpedia
from autointerp.export.saedashboard import write_saedashboard
from autointerp.records import FeatureReport
from autointerp.registry import Registry

Exporter = Callable[..., list[Path]]

EXPORTERS: Registry[Exporter] = Registry("exporter")
EXPORTERS.register("neuronpedia")(write_neuronpedia)
EXPORTERS.register("saedashboard")(write_saedashboard)
EXPORTERS.register("jsonl")(write_jsonl)
EXPORTERS.register("html")(write_html)


def exporter_options(kind: str) -> list[str]:
    """The keyword options exporter `kind` accepts."""
    signature = inspect.signature(EXPORTERS.get(kind))
    return [p.name for p in signature.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]


def export(kind: str, reports: list[FeatureReport], out_dir: str | Path, **options: Any) -> list[Path]:
    """Write `reports` in format `kind` into `out_dir`; return the paths written.

    Raises InputError for an unknown kind or an option the exporter does not take (never ignored).
    """
    exporter = EXPORTERS.get(kind)
    accepted = exporter_options(kind)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InputError(
            expected(
                f"export {kind!r} options",
                ", ".join(unknown),
                ", ".join(accepted) if accepted else "no options",
            )
        )
    return exporter(list(reports), Path(out_dir), **options)


__all__ = ["EXPORTERS", "Exporter", "export", "exporter_options"]
