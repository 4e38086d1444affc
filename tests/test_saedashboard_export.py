"""The saedashboard format, loaded with the `sae-dashboard` package's own data classes (0.8.0,
`sae_dashboard/neuronpedia/neuronpedia_dashboard.py`; installed with --no-deps, see the README), and
checked for every key Neuronpedia's converter reads (helpers_export)."""

import json
from pathlib import Path

import pytest
from helpers_export import (
    SAEDASHBOARD_CONVERTER_ACTIVATION_KEYS,
    SAEDASHBOARD_CONVERTER_BATCH_KEYS,
    SAEDASHBOARD_CONVERTER_FEATURE_KEYS,
    make_context,
)
from helpers_reports import hostile_report, make_report, make_reports

# Installed by the README's first command (`pip install --no-deps sae-dashboard==0.8.0`); a missing
# package fails this file rather than skipping it.
from sae_dashboard.neuronpedia import neuronpedia_dashboard as dashboard

from autointerp.errors import InputError
from autointerp.export import export
from autointerp.records import TokenLogit


def load_batches(paths: list[Path]) -> list[dict]:
    return [json.loads(path.read_text(encoding="utf-8")) for path in paths]


def test_batches_load_with_sae_dashboard_classes(tmp_path: Path) -> None:
    reports = make_reports(20) + [hostile_report()]
    reports[3].top_logits = [TokenLogit(token=" dog", value=2.0), TokenLogit(token=" cat", value=1.5)]
    reports[3].bottom_logits = [TokenLogit(token=" car", value=-1.0)]
    for report in reports:
        report.sae_name = "demo"
    context = make_context()
    paths = export("saedashboard", reports, tmp_path, context=context, batch_size=8)
    assert [p.name for p in paths] == ["batch-0.json", "batch-1.json", "batch-2.json"]
    features = {}
    for data in load_batches(paths):
        batch = dashboard.NeuronpediaDashboardBatch(**data)  # a TypeError on any key it does not know
        assert batch.to_dict() == data  # and every key it writes is there, with our values
        assert (batch.model_id, batch.layer, batch.sae_set, batch.sae_id_suffix) == ("smollm2-135m", 8, "demo", None)
        assert SAEDASHBOARD_CONVERTER_BATCH_KEYS <= set(data)
        for feature in data["features"]:
            assert SAEDASHBOARD_CONVERTER_FEATURE_KEYS <= set(feature)
            for act in feature["activations"]:
                assert SAEDASHBOARD_CONVERTER_ACTIVATION_KEYS <= set(act)
            features[feature["feature_index"]] = feature
    assert sorted(features) == sorted(r.feature for r in reports)

    report, feature = reports[2], features[2]
    fired = [w for w in report.windows if w.group in ("top", "interval") and w.max_activation > 0]
    assert len(feature["activations"]) == len(fired)  # no random or non-activating windows
    tops = [a for a in feature["activations"] if a["bin_min"] == -1]
    assert len(tops) == sum(w.group == "top" for w in fired)
    assert feature["activations"][: len(tops)] == tops  # top first, as SAEDashboard orders them
    assert {(a["bin_max"], a["bin_contains"]) for a in tops} == {(report.stats.max_activation, -1)}
    intervals = feature["activations"][len(tops) :]
    assert [a["bin_max"] for a in intervals] == sorted((a["bin_max"] for a in intervals), reverse=True)
    assert all(0 <= a["bin_contains"] <= 1 and a["bin_min"] < a["bin_max"] for a in intervals)
    for act in feature["activations"]:
        assert act["values"][act["qualifying_token_index"]] == max(act["values"])
    stats = report.stats
    assert feature["frac_nonzero"] == stats.density
    assert feature["freq_hist_data_bar_heights"] == stats.histogram_counts
    edges = stats.histogram_edges
    assert feature["freq_hist_data_bar_values"] == [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    # 200,000 tokens seen, 127 per 128-token context after BOS.
    assert (feature["n_prompts_total"], feature["n_tokens_in_prompt"], feature["dataset"]) == (1575, 128, "shakespeare")
    assert (features[3]["pos_str"], features[3]["pos_values"]) == ([" dog", " cat"], [2.0, 1.5])
    assert (features[3]["neg_str"], features[3]["neg_values"]) == ([" car"], [-1.0])
    assert feature["pos_str"] == [] and feature["neuron_alignment_indices"] == []


def test_names_and_suffix(tmp_path: Path) -> None:
    reports = make_reports(2)
    paths = export("saedashboard", reports, tmp_path, model_id="gpt2-small", source="6-res-jb__l0-40")
    (data,) = load_batches(paths)
    batch = dashboard.NeuronpediaDashboardBatch(**data)
    assert (batch.model_id, batch.layer, batch.sae_set, batch.sae_id_suffix) == ("gpt2-small", 6, "res-jb", "l0-40")
    with pytest.raises(InputError, match="layer number"):
        export("saedashboard", reports, tmp_path, source="e-res-sm")  # SAEDashboard's layer is an int
    # A smaller export removes the batch files it no longer writes (the converter reads every batch-*).
    export("saedashboard", make_reports(300), tmp_path)
    export("saedashboard", reports, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batch-0.json"]


def test_feature_that_never_fired_has_no_activations(tmp_path: Path) -> None:
    quiet = make_report(4, windows=False)
    (data,) = load_batches(export("saedashboard", [quiet], tmp_path))
    (feature,) = dashboard.NeuronpediaDashboardBatch(**data).features
    assert feature.activations == [] and feature.feature_index == 4
