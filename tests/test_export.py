"""Tests for autointerp/export: every format checked against its field list by a validator written here."""

import base64
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from helpers_reports import (
    HOSTILE_EXPLANATION,
    HOSTILE_TOKENS,
    MODEL_NAME,
    edge_reports,
    hostile_report,
    make_report,
    make_reports,
)
from helpers_windows import make_window

from autointerp.errors import InputError
from autointerp.export import EXPORTERS, export, exporter_options
from autointerp.export.common import activation_bins, histogram_share
from autointerp.export.html import embed_json
from autointerp.export.neuronpedia import clip_explanation, utf16_len
from autointerp.records import FeatureReport
from autointerp.scoring import COLUMNS

GROUPS = {"top", "interval", "random", "nonactivating"}
SPLITS = {"explain", "score"}


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# ---------------------------------------------------------------------------------------------------
# Validators, one per format


def validate_neuronpedia_batch(body: Any) -> None:
    """The upload-batch endpoint's schema: modelId, source, 1..128 features with index, density,
    explanations (text 1..512 UTF-16 units), activations (>= 1; tokens/values 1..1024, same length)."""
    assert set(body) == {"modelId", "source", "features"}
    for key in ("modelId", "source"):
        assert isinstance(body[key], str) and body[key] and body[key] == body[key].lower()
    features = body["features"]
    assert isinstance(features, list) and 1 <= len(features) <= 128
    assert len({f["index"] for f in features}) == len(features), "indexes must be unique in a batch"
    for feature in features:
        assert set(feature) == {"index", "density", "explanations", "activations"}
        assert isinstance(feature["index"], int) and not isinstance(feature["index"], bool)
        assert 0 <= feature["index"] <= 10_000_000
        assert is_number(feature["density"]) and 0 <= feature["density"] <= 1
        assert isinstance(feature["explanations"], list)
        for explanation in feature["explanations"]:
            assert set(explanation) == {"text", "methodName", "modelName"}
            assert isinstance(explanation["text"], str) and 1 <= utf16_len(explanation["text"]) <= 512
            for key in ("methodName", "modelName"):
                value = explanation[key]
                assert value is None or (isinstance(value, str) and value == value.lower())
        activations = feature["activations"]
        assert isinstance(activations, list) and len(activations) >= 1
        for act in activations:
            assert set(act) == {"tokens", "values", "quantileMax", "quantileMin", "quantileFraction"}
            tokens, values = act["tokens"], act["values"]
            assert isinstance(tokens, list) and 1 <= len(tokens) <= 1024
            assert all(isinstance(t, str) and t for t in tokens), "tokens must be non-empty strings"
            assert isinstance(values, list) and len(values) == len(tokens)
            assert all(is_number(v) for v in values)
            for key in ("quantileMax", "quantileMin"):
                assert act[key] is None or (is_number(act[key]) and act[key] <= 99_999_999)
            assert act["quantileMin"] <= act["quantileMax"]
            fraction = act["quantileFraction"]
            assert fraction is None or (is_number(fraction) and 0 <= fraction <= 1)


def validate_saedashboard(doc: Any) -> None:
    assert set(doc) == {"features"} and isinstance(doc["features"], list)
    for feature in doc["features"]:
        assert {
            "feature_index",
            "frac_nonzero",
            "max_activation",
            "explanation",
            "scores",
            "activations",
            "histogram",
        } <= set(feature)
        assert isinstance(feature["feature_index"], int)
        assert is_number(feature["frac_nonzero"]) and 0 <= feature["frac_nonzero"] <= 1
        assert is_number(feature["max_activation"])
        assert feature["explanation"] is None or isinstance(feature["explanation"], str)
        assert feature["scores"] is None or set(feature["scores"]) == set(COLUMNS)
        for act in feature["activations"]:
            assert {"bin_min", "bin_max", "bin_contains", "tokens", "values", "group", "split"} <= set(act)
            assert is_number(act["bin_min"]) and is_number(act["bin_max"]) and act["bin_min"] <= act["bin_max"]
            assert act["bin_contains"] is None or 0 <= act["bin_contains"] <= 1
            assert all(isinstance(t, str) for t in act["tokens"])
            assert len(act["values"]) == len(act["tokens"]) and all(is_number(v) for v in act["values"])
            assert act["group"] in GROUPS and act["split"] in SPLITS
            assert max(act["values"]) <= act["bin_max"] + 1e-9 or act["group"] != "top"
        hist = feature["histogram"]
        assert {"bin_edges", "counts"} <= set(hist)
        assert len(hist["bin_edges"]) == len(hist["counts"]) + 1
        assert all(isinstance(c, int) and c >= 0 for c in hist["counts"])


def validate_jsonl_record(record: Any) -> None:
    assert {
        "run_id",
        "feature",
        "explanation",
        "scores",
        "score_details",
        "controls",
        "stats",
        "errors",
    } <= set(record)
    assert isinstance(record["feature"], int) and isinstance(record["run_id"], str)
    if record["explanation"] is not None:
        assert isinstance(record["explanation"]["text"], str) and isinstance(record["explanation"]["backend"], str)
    if record["scores"] is not None:
        assert set(record["scores"]) == set(COLUMNS)
        assert len(record["score_details"]["details"]["reliability"]) == 11
    stats = record["stats"]
    assert {
        "n_tokens",
        "n_active",
        "density",
        "max_activation",
        "histogram_edges",
        "histogram_counts",
    } <= set(stats)
    assert 0 <= stats["density"] <= 1
    assert all(isinstance(e, str) for e in record["errors"])


# ---------------------------------------------------------------------------------------------------
# Registry and export()


def test_registry_names_and_options() -> None:
    assert list(EXPORTERS) == ["html", "jsonl", "neuronpedia", "saedashboard"]
    assert exporter_options("neuronpedia") == ["model_id", "source", "method_name", "batch_size"]
    assert exporter_options("html") == ["title"]
    with pytest.raises(InputError, match="Unknown exporter 'csv'"):
        export("csv", [], "unused")


def test_unknown_option_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="titel"):
        export("html", make_reports(2), tmp_path, titel="x")


def test_duplicate_feature_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="feature 3 twice"):
        export("jsonl", [make_report(3), make_report(3)], tmp_path)


# ---------------------------------------------------------------------------------------------------
# Neuronpedia


def test_neuronpedia_splits_300_features_into_batches_of_128(tmp_path: Path) -> None:
    reports = make_reports(300)
    paths = export("neuronpedia", reports, tmp_path)
    assert [p.name for p in paths] == ["batch-000.json", "batch-001.json", "batch-002.json", "scores.json"]
    sizes, indexes = [], []
    for path in paths[:-1]:
        body = json.loads(path.read_text(encoding="utf-8"))
        validate_neuronpedia_batch(body)
        assert body["modelId"] == "smollm2-135m" and body["source"] == "8-res-demo"
        sizes.append(len(body["features"]))
        indexes += [f["index"] for f in body["features"]]
    assert sizes == [128, 128, 44]
    assert indexes == list(range(300))

    side = json.loads(paths[-1].read_text(encoding="utf-8"))
    assert side["columns"] == list(COLUMNS)
    assert side["batches"] == ["batch-000.json", "batch-001.json", "batch-002.json"]
    assert len(side["features"]) == 300 and side["skipped"] == []
    assert set(side["features"]["0"]["scores"]) == set(COLUMNS)
    assert set(side["features"]["0"]["controls"]["baseline"]) == set(COLUMNS)
    failed = side["features"]["8"]  # every 9th report failed to explain
    assert failed["scores"] is None and failed["errors"] and failed["errors"][0].startswith("explain:")

    # A smaller export into the same folder removes the batches it no longer writes.
    export("neuronpedia", reports[:10], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batch-000.json", "scores.json"]


def test_neuronpedia_explanation_limits_and_skips(tmp_path: Path) -> None:
    reports = edge_reports(900) + [make_report(8, explained=False)]
    paths = export("neuronpedia", reports, tmp_path, method_name="NP-Method")
    body = json.loads(paths[0].read_text(encoding="utf-8"))
    validate_neuronpedia_batch(body)
    by_index = {f["index"]: f for f in body["features"]}
    long_text = by_index[900]["explanations"][0]["text"]
    assert utf16_len(long_text) == 512 and long_text.endswith("…") and long_text.startswith("xxx")
    emoji = by_index[901]["explanations"][0]["text"]
    assert utf16_len(emoji) <= 512 and emoji.endswith("…") and set(emoji[:-1]) == {"\U0001f600"}
    assert by_index[902]["explanations"] == []  # blank text is left out, not sent as ""
    assert by_index[8]["explanations"] == [] and by_index[8]["activations"]
    assert by_index[900]["explanations"][0]["methodName"] == "np-method"
    assert by_index[900]["explanations"][0]["modelName"] == "claude-haiku-5-5"
    assert 903 not in by_index  # no windows: the endpoint needs at least one activation
    side = json.loads(paths[-1].read_text(encoding="utf-8"))
    assert side["skipped"] == [{"index": 903, "reason": "no example windows (the endpoint needs one)"}]


def test_clip_explanation() -> None:
    assert clip_explanation("  short  ") == "short"
    assert clip_explanation(" \n\t") is None
    assert clip_explanation("y" * 512) == "y" * 512
    assert clip_explanation("y" * 513) == "y" * 511 + "…"
    clipped = clip_explanation("a" + "\U0001f600" * 300)
    # "a" + 255 emoji = 511 units, + "…" = 512; an emoji is never split into half a surrogate pair
    assert clipped == "a" + "\U0001f600" * 255 + "…" and utf16_len(clipped) == 512


def test_neuronpedia_default_activation_from_windows(tmp_path: Path) -> None:
    report = make_report(4)
    body = json.loads(export("neuronpedia", [report], tmp_path)[0].read_text(encoding="utf-8"))
    acts = body["features"][0]["activations"]
    assert len(acts) == len(report.windows)
    for act, window in zip(acts, report.windows, strict=True):
        assert act["tokens"] == window.tokens and act["values"] == window.activations
    top = [a for a, w in zip(acts, report.windows, strict=True) if w.group == "top"]
    assert {a["quantileMax"] for a in top} == {report.stats.max_activation}
    assert {a["quantileMin"] for a in top} == {min(w.max_activation for w in report.windows if w.group == "top")}


def test_neuronpedia_cuts_long_windows_and_fills_empty_tokens(tmp_path: Path) -> None:
    report = make_report(5)
    n = 2000
    acts = [0.0] * n
    acts[1500] = report.stats.max_activation
    tokens = [f" t{i}" for i in range(n)]
    tokens[3] = ""
    tokens[1500] = " PEAK"
    report.windows = [
        make_window(tokens, acts, feature=5, context_id=1),
        make_window(["", " x"], [0.0, 1.0], feature=5, context_id=2, token_ids=[1, 2], group="random", split="score"),
    ]
    body = json.loads(export("neuronpedia", [report], tmp_path)[0].read_text(encoding="utf-8"))
    validate_neuronpedia_batch(body)
    long_act, short_act = body["features"][0]["activations"]
    assert len(long_act["tokens"]) == 1024 and " PEAK" in long_act["tokens"]
    assert long_act["values"][long_act["tokens"].index(" PEAK")] == report.stats.max_activation
    assert short_act["tokens"] == ["\ufffd", " x"]


def test_neuronpedia_names(tmp_path: Path) -> None:
    reports = make_reports(3)
    body = json.loads(export("neuronpedia", reports, tmp_path, model_id="GPT2-Small", source="6-res-JB")[0].read_text())
    assert (body["modelId"], body["source"]) == ("gpt2-small", "6-res-jb")
    reports[1].model_name = "other/model"
    with pytest.raises(InputError, match=r"model_name.*model_id="):
        export("neuronpedia", reports, tmp_path)
    for report in reports:
        report.model_name = ""
    with pytest.raises(InputError, match="no value"):
        export("neuronpedia", reports, tmp_path)
    assert MODEL_NAME.endswith("SmolLM2-135M")
    with pytest.raises(InputError, match="no reports"):
        export("neuronpedia", [], tmp_path)


# ---------------------------------------------------------------------------------------------------
# Bins


def test_bins_cover_the_active_range_once() -> None:
    report = make_report(7)
    bins = activation_bins(report)
    top = bins[("top", None)]
    intervals = [bins[("interval", k)] for k in range(3)]
    assert top.bin_max == report.stats.max_activation
    assert top.bin_min == min(w.max_activation for w in report.windows if w.group == "top")
    assert intervals[0].bin_min == 0.0
    edges = [b.bin_min for b in intervals] + [top.bin_min, top.bin_max]
    assert edges == sorted(edges)
    for lower, upper in zip(intervals, intervals[1:] + [top], strict=True):
        assert lower.bin_max == upper.bin_min
    shares = [b.bin_contains for b in [*intervals, top]]
    assert all(s is not None and 0 <= s <= 1 for s in shares)
    assert sum(shares) == pytest.approx(1.0)
    assert bins[("random", None)].bin_contains is None and bins[("nonactivating", None)].bin_max == 0.0


def test_histogram_share() -> None:
    edges, counts = [0.0, 1.0, 2.0, 4.0], [6, 2, 2]
    assert histogram_share(edges, counts, 0.0, 4.0) == 1.0
    assert histogram_share(edges, counts, 0.5, 1.0) == pytest.approx(0.3)  # half of the first bin
    assert histogram_share(edges, counts, 3.0, 4.0) == pytest.approx(0.1)
    assert histogram_share(edges, [0, 0, 0], 0.0, 4.0) is None
    assert histogram_share(edges, [1, 2], 0.0, 4.0) is None


# ---------------------------------------------------------------------------------------------------
# SAEDashboard and JSONL


def test_saedashboard(tmp_path: Path) -> None:
    reports = make_reports(20) + [hostile_report()]
    (path,) = export("saedashboard", reports, tmp_path)
    assert path.name == "saedashboard.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    validate_saedashboard(doc)
    features = {f["feature_index"]: f for f in doc["features"]}
    assert sorted(features) == sorted(r.feature for r in reports)
    one = features[2]
    tops = [a for a in one["activations"] if a["group"] == "top"]
    assert {a["bin_max"] for a in tops} == {one["max_activation"]}
    interval_bins = {
        (a["interval"], a["bin_min"], a["bin_max"]) for a in one["activations"] if a["group"] == "interval"
    }
    assert len(interval_bins) == 3  # each interval its own bin
    assert features[8]["explanation"] is None and features[8]["scores"] is None
    assert features[666]["activations"][0]["tokens"][: len(HOSTILE_TOKENS)] == list(HOSTILE_TOKENS)


def test_jsonl(tmp_path: Path) -> None:
    reports = make_reports(12) + [hostile_report()]
    (path,) = export("jsonl", reports, tmp_path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(reports)
    records = [json.loads(line) for line in lines]
    for record in records:
        validate_jsonl_record(record)
    assert [r["feature"] for r in records] == sorted(r.feature for r in reports)
    by_feature = {r["feature"]: r for r in records}
    assert by_feature[8]["explanation"] is None and by_feature[8]["errors"]
    assert by_feature[666]["explanation"]["text"] == HOSTILE_EXPLANATION
    assert by_feature[0]["controls"]["baseline"]["correlation"] is not None


# ---------------------------------------------------------------------------------------------------
# HTML

SVG_NAMESPACE = "http://www.w3.org/2000/svg"


def _data_block(page: str) -> str:
    match = re.search(r'<script type="application/json" id="autointerp-data">(.*?)</script>', page, re.DOTALL)
    assert match is not None
    return match.group(1)


def html_reports() -> list[FeatureReport]:
    return make_reports(30) + [hostile_report()] + edge_reports(900)


def test_html_is_one_self_contained_file(tmp_path: Path) -> None:
    out = tmp_path / "browser"
    paths = export("html", html_reports(), out, title="Demo SAE, layer 8")
    assert paths == [out / "index.html"]
    assert sorted(p.name for p in out.iterdir()) == ["index.html"]
    page = paths[0].read_text(encoding="utf-8")
    # No network reference: the only URL is the SVG namespace the script passes to createElementNS.
    assert set(re.findall(r"https?://[^\s\"'<>)]*", page)) == {SVG_NAMESPACE}
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page)
    assert "@import" not in page and "url(" not in page


def test_html_embedded_json_cannot_break_out(tmp_path: Path) -> None:
    (path,) = export("html", html_reports(), tmp_path)
    page = path.read_text(encoding="utf-8")
    block = _data_block(page)
    assert "<" not in block and ">" not in block and "&" not in block
    assert "<!--" not in page  # the template has no comments; hostile text must not add one
    assert page.count("</script>") == 2  # the data block and the app script, nothing from the data
    data = json.loads(block)
    hostile = next(f for f in data["features"] if f["feature"] == 666)
    assert hostile["explanation"] == HOSTILE_EXPLANATION
    assert hostile["windows"][0]["tokens"][: len(HOSTILE_TOKENS)] == list(HOSTILE_TOKENS)
    assert len(data["features"]) == len(html_reports())
    assert data["columns"] == list(COLUMNS)


def test_html_csp_allows_exactly_the_app_script(tmp_path: Path) -> None:
    (path,) = export("html", make_reports(3), tmp_path)
    page = path.read_text(encoding="utf-8")
    script = re.search(r'<script id="autointerp-app">(.*?)</script>', page, re.DOTALL).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page).group(1)
    assert f"script-src 'sha256-{digest}'" in csp and "default-src 'none'" in csp
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "document.write" not in script


def test_embed_json_escapes() -> None:
    text = embed_json({"a": "</script><!-- & \u2028"})
    assert text == '{"a":"\\u003c/script\\u003e\\u003c!-- \\u0026 \\u2028"}'
    assert json.loads(text) == {"a": "</script><!-- & \u2028"}
