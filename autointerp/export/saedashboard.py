"""SAEDashboard batch JSON: the files SAEDashboard's Neuronpedia runner writes, for Neuronpedia's importer.

Followed, line by line: the data classes `NeuronpediaDashboardBatch`, `NeuronpediaDashboardFeature` and
`NeuronpediaDashboardActivation` in `sae_dashboard/neuronpedia/neuronpedia_dashboard.py` of the
`sae-dashboard` package 0.8.0 (a batch file is their `to_dict()`, and loads back with `Batch(**json)`;
tests/test_export.py does exactly that), and the keys Neuronpedia's converter reads from such a file
(`utils/neuronpedia-utils/neuronpedia_utils/convert-saedashboard-to-neuronpedia-export.py` in
hijohnnylin/neuronpedia at commit ebb8426f, 2026-08-20).

Files `batch-0.json`, `batch-1.json`, ... (SAEDashboard's own names; <= batch_size features each):

    {"model_id": str, "layer": int, "sae_set": str, "sae_id_suffix": str | None,
     "features": [{"feature_index": int,
                   "frac_nonzero": float 0..1,            # density over non-special tokens
                   "freq_hist_data_bar_values": [float],  # activation histogram: bin centres, raw scale
                   "freq_hist_data_bar_heights": [int],   #   and counts of active tokens
                   "pos_str": [str], "pos_values": [float], "neg_str": [str], "neg_values": [float],
                                                          # top / bottom logits; [] until the run stores them
                   "n_prompts_total": int, "n_tokens_in_prompt": int, "dataset": str,
                   "activations": [{"bin_min": float, "bin_max": float, "bin_contains": float,
                                    "tokens": [str], "values": [float], "qualifying_token_index": int}],
                   ... every other key of NeuronpediaDashboardFeature, empty: neuron alignment,
                   correlated neurons and features, logit histogram, decoder weight distribution, vector}]}

model_id / layer / sae_set come from the same names as the Neuronpedia upload (autointerp.export.naming):
source `<layer>-<sae_set>[__<sae_id_suffix>]`. Activations are the windows that show the feature firing
(top and interval groups, max > 0), top first. As SAEDashboard writes them, top windows carry
bin_min = -1, bin_max = the feature's max and bin_contains = -1 (Neuronpedia's page labels a group "Top"
by bin_min == -1); interval windows carry their bin (autointerp.export.common) and the share of active
tokens in it. qualifying_token_index is the window's highest token (the sampler keeps the peak's
position in the window only implicitly). Explanations and scores are not part of this format: see the
neuronpedia and jsonl formats.
"""

import math
from pathlib import Path
from typing import Any

from autointerp.errors import InputError, expected
from autointerp.export.common import activation_bins, bin_key, check_unique_features, write_json
from autointerp.export.context import ExportContext
from autointerp.export.naming import resolve_target
from autointerp.export.neuronpedia import activating_windows
from autointerp.records import FeatureReport, Window

DEFAULT_BATCH_SIZE = 128
TOP_SENTINEL = -1.0  # SAEDashboard's bin_min and bin_contains for the top-activations group
# Keys of NeuronpediaDashboardFeature this run has nothing for; written empty, as the class defaults them.
EMPTY_LISTS = (
    "neuron_alignment_indices",
    "neuron_alignment_values",
    "neuron_alignment_l1",
    "correlated_neurons_indices",
    "correlated_neurons_l1",
    "correlated_neurons_pearson",
    "correlated_features_indices",
    "correlated_features_l1",
    "correlated_features_pearson",
    "logits_hist_data_bar_heights",
    "logits_hist_data_bar_values",
    "decoder_weights_dist",
    "vector",
)


def _activation(window: Window, bin_min: float, bin_max: float, bin_contains: float) -> dict[str, Any]:
    values = [float(v) for v in window.activations]
    return {
        "bin_min": bin_min,
        "bin_max": bin_max,
        "bin_contains": bin_contains,
        "tokens": list(window.tokens),
        "values": values,
        "qualifying_token_index": max(range(len(values)), key=values.__getitem__),
    }


def _activations(report: FeatureReport) -> list[dict[str, Any]]:
    bins = activation_bins(report)
    feature_max = bins[("top", None)].bin_max if ("top", None) in bins else report.stats.max_activation
    # Top first, then intervals from the highest down; within a group by peak, highest first.
    ordered = sorted(
        activating_windows(report),
        key=lambda w: (w.group != "top", -(w.interval or 0), -w.max_activation),
    )
    out = []
    for window in ordered:
        if window.group == "top":
            out.append(_activation(window, TOP_SENTINEL, feature_max, TOP_SENTINEL))
        else:
            b = bins[bin_key(window)]
            out.append(_activation(window, b.bin_min, b.bin_max, b.bin_contains if b.bin_contains is not None else 0.0))
    return out


def _prompts_total(reports: list[FeatureReport], context: ExportContext | None) -> int:
    """Contexts the sampler streamed: tokens seen over the tokens each context contributes (BOS excluded)."""
    if context is None:
        return 0
    seen = max((report.stats.n_tokens for report in reports), default=0)
    per_context = max(1, context.context_size - (1 if context.prepend_bos else 0))
    return math.ceil(seen / per_context)


def feature_dashboard(
    report: FeatureReport, n_prompts_total: int = 0, n_tokens_in_prompt: int = 0, dataset: str = ""
) -> dict[str, Any]:
    """The NeuronpediaDashboardFeature dict of one feature (the shape in the module doc)."""
    stats = report.stats
    edges, counts = stats.histogram_edges, stats.histogram_counts
    centres = [(lo + hi) / 2 for lo, hi in zip(edges[:-1], edges[1:])] if len(edges) == len(counts) + 1 else []
    top, bottom = report.top_logits or [], report.bottom_logits or []
    return {
        "feature_index": report.feature,
        **{key: [] for key in EMPTY_LISTS},
        "neg_str": [logit.token for logit in bottom],
        "neg_values": [logit.value for logit in bottom],
        "pos_str": [logit.token for logit in top],
        "pos_values": [logit.value for logit in top],
        "frac_nonzero": min(1.0, max(0.0, stats.density)),
        "freq_hist_data_bar_values": centres,
        "freq_hist_data_bar_heights": list(counts) if centres else [],
        "n_prompts_total": n_prompts_total,
        "n_tokens_in_prompt": n_tokens_in_prompt,
        "dataset": dataset,
        "activations": _activations(report),
    }


def write_saedashboard(
    reports: list[FeatureReport],
    out_dir: Path,
    *,
    model_id: str | None = None,
    source: str | None = None,
    set_name: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    context: ExportContext | None = None,
) -> list[Path]:
    """Write batch-0.json, batch-1.json, ... (features sorted by index) into out_dir; return their paths.

    Older `batch-N.json` files beyond the new count are removed, as Neuronpedia's converter reads every
    `batch-*` file in the folder. Options as for the neuronpedia format (autointerp.export.naming);
    `context` gives the hook, context size and corpus name.
    """
    if batch_size < 1:
        raise InputError(expected("SAEDashboard export batch_size", str(batch_size), ">= 1"))
    if not reports:
        raise InputError(expected("SAEDashboard export", "no reports", "at least one feature"))
    check_unique_features(reports, "SAEDashboard")
    target = resolve_target(reports, context, model_id=model_id, source=source, set_name=set_name)
    if target.layer is None:
        raise InputError(
            expected(
                "SAEDashboard export: the source's layer",
                repr(target.source),
                "a source starting with a layer number ('<layer>-<set>'): SAEDashboard's `layer` is an int",
            )
        )
    n_tokens_in_prompt = context.context_size if context is not None else 0
    dataset = context.corpus_name if context is not None else ""
    n_prompts_total = _prompts_total(reports, context)
    features = [
        feature_dashboard(report, n_prompts_total, n_tokens_in_prompt, dataset)
        for report in sorted(reports, key=lambda r: r.feature)
    ]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, start in enumerate(range(0, len(features), batch_size)):
        batch = {
            "model_id": target.model_id,
            "layer": target.layer,
            "sae_set": target.set_name,
            "sae_id_suffix": target.suffix,
            "features": features[start : start + batch_size],
        }
        paths.append(write_json(out_dir / f"batch-{number}.json", batch))
    for old in out_dir.glob("batch-*.json"):
        stem = old.stem.removeprefix("batch-")
        if stem.isdigit() and int(stem) >= len(paths):
            old.unlink()
    return paths
