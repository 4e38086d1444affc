"""A static feature browser: one folder holding `index.html`, which opens from disk with no server.

The page is `browser_template.html` (markup, CSS and script, package data) with the features embedded
as JSON in a `<script type="application/json">` block. No external resource is referenced: no fonts,
no CDN scripts, no images; charts are inline SVG built by the page's script.

Safety of corpus text (tokens and explanations can hold anything, `<script>` included):
- in the JSON block every `<`, `>` and `&` is written as a \\u escape, so no `</script>` or `<!--`
  can end or alter the block;
- the script puts text into the page only through text nodes and attribute values, never HTML parsing;
- a Content-Security-Policy allows only the page's own script (by its sha256), so even markup that got
  into the DOM by mistake could not run an inline handler or load anything.

Routing: `index.html#feature-123` opens feature 123; `#` (or no hash) the searchable list.
"""

import base64
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

from autointerp.errors import InputError, expected
from autointerp.export.common import (
    check_unique_features,
    clean_columns,
    reliability_rows,
    score_columns,
    score_details,
)
from autointerp.records import FeatureReport
from autointerp.scoring import COLUMNS

FILE_NAME = "index.html"
TEMPLATE = "browser_template.html"
DATA_SLOT = "__AUTOINTERP_DATA__"
CSP_SLOT = "__AUTOINTERP_CSP__"
SCRIPT_OPEN = '<script id="autointerp-app">'
ACTIVATION_DIGITS = 5  # significant digits kept for shading and tooltips


def embed_json(data: Any) -> str:
    """JSON text safe inside <script type="application/json">: no '<', '>' or '&' left unescaped.

    JSON only has these characters inside strings, where '\\u003c' etc. mean the same thing; U+2028 and
    U+2029 are escaped too, for readers that treat them as line ends.
    """
    try:
        text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError as error:
        raise InputError(expected("HTML export data", f"a non-finite number ({error})", "finite numbers")) from error
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text


def _round(value: float) -> float:
    return float(f"{value:.{ACTIVATION_DIGITS}g}")


def _common_name(values: set[str]) -> str:
    values = {v for v in values if v}
    return ", ".join(sorted(values))


def feature_data(report: FeatureReport) -> dict[str, Any]:
    """What the page needs about one feature."""
    details = score_details(report) or {}
    stats = report.stats
    explanation = report.explanation
    return {
        "feature": report.feature,
        "explanation": explanation.text if explanation is not None else None,
        "backend": explanation.backend if explanation is not None else None,
        "density": stats.density,
        "max_activation": stats.max_activation,
        "mean_active": stats.mean_active,
        "n_tokens": stats.n_tokens,
        "n_active": stats.n_active,
        "scores": score_columns(report),
        "undefined": details.get("undefined") or {},
        "group_correlations": details.get("group_correlations") or {},
        "controls": {name: clean_columns(columns) for name, columns in sorted(report.controls.items())},
        "reliability": reliability_rows(report),
        "histogram": {"edges": list(stats.histogram_edges), "counts": list(stats.histogram_counts)},
        "errors": list(report.errors),
        "windows": [
            {
                "tokens": list(window.tokens),
                "acts": [_round(a) for a in window.activations],
                "group": window.group,
                "interval": window.interval,
                "split": window.split,
            }
            for window in report.windows
        ],
    }


def browser_data(reports: list[FeatureReport], title: str | None = None) -> dict[str, Any]:
    """The JSON document embedded in the page."""
    return {
        "title": title,
        "model_name": _common_name({r.model_name for r in reports}),
        "sae_name": _common_name({r.sae_name for r in reports}),
        "run_ids": sorted({r.run_id for r in reports}),
        "columns": list(COLUMNS),
        "features": [feature_data(r) for r in sorted(reports, key=lambda r: r.feature)],
    }


def render_page(data: dict[str, Any]) -> str:
    """The template with the data embedded and the CSP naming the script's sha256."""
    template = resources.files("autointerp.export").joinpath(TEMPLATE).read_text(encoding="utf-8")
    start = template.index(SCRIPT_OPEN) + len(SCRIPT_OPEN)
    script = template[start : template.index("</script>", start)]
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    csp = (
        f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    if template.count(DATA_SLOT) != 1 or template.count(CSP_SLOT) != 1:
        raise RuntimeError(f"{TEMPLATE}: expected one {DATA_SLOT} and one {CSP_SLOT}")
    # CSP first: the data may contain the CSP slot's text, the CSP never contains the data slot's.
    return template.replace(CSP_SLOT, csp).replace(DATA_SLOT, embed_json(data))


def write_html(reports: list[FeatureReport], out_dir: Path, *, title: str | None = None) -> list[Path]:
    """Write out_dir/index.html (the whole browser); return [its path].

    Args:
        reports: one per feature; listed by feature index, sorted by correlation on the page.
        out_dir: the browser's folder, created if missing.
        title: page heading; default "autointerp feature browser".
    """
    check_unique_features(reports, "HTML")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / FILE_NAME
    path.write_text(render_page(browser_data(reports, title)), encoding="utf-8")
    return [path]
