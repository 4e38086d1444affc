"""Tests for autointerp/export: registry and options, the Neuronpedia upload batch (against the route's
rules and through Neuronpedia's own Python client), activation bins, JSONL and HTML.

SAEDashboard and SAEBench are checked with their own packages' classes in test_saedashboard_export.py and
test_saebench_export.py; a real run exported through the CLI in test_export_run.py.
"""

import base64
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers_export import make_context, validate_neuronpedia_batch
from helpers_reports import (
    BACKEND,
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
from autointerp.records import Explanation, FeatureReport, TokenLogit
from autointerp.scoring import COLUMNS

README = Path(__file__).resolve().parents[1] / "README.md"
ACTIVATING = ("top", "interval")


def read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def validate_jsonl_record(record: Any) -> None:
    assert {
        "run_id",
        "feature",
        "explanation",
        "scores",
        "score_details",
        "controls",
        "detection",
        "top_logits",
        "bottom_logits",
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


def baseline_explained(report: FeatureReport) -> FeatureReport:
    """The report as a run with `--explainer baseline` stores it: the top-tokens control as its explanation."""
    assert report.explanation is not None
    report.explanation = Explanation(
        feature=report.feature,
        text="[baseline] top tokens: dog, cat",
        raw_completion="",
        backend="baseline",
        prompt_hash="0" * 64,
    )
    return report


# ---------------------------------------------------------------------------------------------------
# Registry and export()


def test_registry_names_and_options() -> None:
    assert list(EXPORTERS) == ["html", "jsonl", "neuronpedia", "saebench", "saedashboard"]
    assert exporter_options("neuronpedia") == [
        "model_id",
        "source",
        "set_name",
        "explanation_type",
        "explanation_model",
        "batch_size",
    ]
    assert exporter_options("saebench") == ["scorer", "metric", "sae_release", "sae_id"]
    assert exporter_options("html") == ["title"]
    with pytest.raises(InputError, match="Unknown exporter 'csv'"):
        export("csv", [], "unused")


def test_unknown_option_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="titel"):
        export("html", make_reports(2), tmp_path, titel="x")
    with pytest.raises(InputError, match="found scorer; expected no options"):
        export("jsonl", make_reports(2), tmp_path, scorer="x")
    # The run context goes only to the exporters that take one; the others run without it.
    assert export("jsonl", make_reports(2), tmp_path, context=make_context()) == [tmp_path / "features.jsonl"]


def test_duplicate_feature_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="feature 3 twice"):
        export("jsonl", [make_report(3), make_report(3)], tmp_path)


# ---------------------------------------------------------------------------------------------------
# Neuronpedia: the route's rules


def test_neuronpedia_splits_300_features_into_batches_of_128(tmp_path: Path) -> None:
    reports = make_reports(300)
    paths = export("neuronpedia", reports, tmp_path)
    assert [p.name for p in paths] == ["batch-000.json", "batch-001.json", "batch-002.json", "scores.json"]
    sizes, indexes = [], []
    for path in paths[:-1]:
        body = read(path)
        validate_neuronpedia_batch(body)
        assert body["modelId"] == "smollm2-135m" and body["source"] == "8-res-demo"
        sizes.append(len(body["features"]))
        indexes += [f["index"] for f in body["features"]]
    assert sizes == [128, 128, 44]
    assert indexes == list(range(300))

    side = read(paths[-1])
    assert side["columns"] == list(COLUMNS)
    assert side["batches"] == ["batch-000.json", "batch-001.json", "batch-002.json"]
    assert len(side["features"]) == 300 and side["skipped"] == []
    assert set(side["features"]["0"]["scores"]) == set(COLUMNS)
    assert set(side["features"]["0"]["controls"]["baseline"]) == set(COLUMNS)
    assert side["features"]["0"]["explanationBackend"] == BACKEND
    failed = side["features"]["8"]  # every 9th report failed to explain
    assert failed["scores"] is None and failed["errors"] and failed["errors"][0].startswith("explain:")

    # A smaller export into the same folder removes the batches it no longer writes.
    export("neuronpedia", reports[:10], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batch-000.json", "scores.json"]


def test_neuronpedia_only_real_activating_windows(tmp_path: Path) -> None:
    reports = make_reports(9)
    body = read(export("neuronpedia", reports, tmp_path)[0])
    validate_neuronpedia_batch(body)
    for entry, report in zip(body["features"], reports, strict=True):
        wanted = [w for w in report.windows if w.group in ACTIVATING and w.max_activation > 0]
        # helpers_reports: 5 top + 6 interval windows fire; 2 random (one fires), 2 non-activating do not.
        assert len(wanted) == 11 and len(entry["activations"]) == len(wanted)
        assert [a["tokens"] for a in entry["activations"]] == [w.tokens for w in wanted]
        assert all(max(a["values"]) > 0 for a in entry["activations"])
        assert all(a["quantileFraction"] is not None for a in entry["activations"])


def test_neuronpedia_skips_control_explanations(tmp_path: Path) -> None:
    reports = make_reports(3)
    baseline_explained(reports[1])
    paths = export("neuronpedia", reports, tmp_path)
    body = read(paths[0])
    validate_neuronpedia_batch(body)
    explanations = {f["index"]: f["explanations"] for f in body["features"]}
    assert explanations[1] == []  # the control's text is never uploaded as an explanation
    assert [e["text"] for e in explanations[0]] == [reports[0].explanation.text]
    assert read(paths[-1])["features"]["1"]["explanationBackend"] == "baseline"


def test_neuronpedia_feature_without_firing_window_is_skipped(tmp_path: Path) -> None:
    quiet = make_report(4)
    quiet.windows = [w for w in quiet.windows if w.group not in ACTIVATING]
    paths = export("neuronpedia", [quiet, make_report(5)], tmp_path)
    body = read(paths[0])
    validate_neuronpedia_batch(body)
    assert [f["index"] for f in body["features"]] == [5]
    assert [s["index"] for s in read(paths[-1])["skipped"]] == [4]


def test_neuronpedia_explanation_limits_and_names(tmp_path: Path) -> None:
    reports = edge_reports(900) + [make_report(8, explained=False)]
    paths = export("neuronpedia", reports, tmp_path)
    body = read(paths[0])
    validate_neuronpedia_batch(body)
    by_index = {f["index"]: f for f in body["features"]}
    long_text = by_index[900]["explanations"][0]["text"]
    assert utf16_len(long_text) == 512 and long_text.endswith("…") and long_text.startswith("xxx")
    emoji = by_index[901]["explanations"][0]["text"]
    assert utf16_len(emoji) <= 512 and emoji.endswith("…") and set(emoji[:-1]) == {"\U0001f600"}
    assert by_index[902]["explanations"] == []  # blank text is left out, not sent as ""
    assert by_index[8]["explanations"] == [] and by_index[8]["activations"]
    # Our backend names are not Neuronpedia's registered names: null unless given.
    assert by_index[900]["explanations"][0]["methodName"] is None
    assert by_index[900]["explanations"][0]["modelName"] is None
    assert 903 not in by_index  # no windows: the endpoint needs at least one activation
    side = read(paths[-1])
    assert [s["index"] for s in side["skipped"]] == [903]

    named = read(
        export(
            "neuronpedia",
            reports,
            tmp_path,
            explanation_type="OAI_Token-Act-Pair",
            explanation_model="Claude-4-5-Haiku",
        )[0]
    )
    first = next(f for f in named["features"] if f["index"] == 900)["explanations"][0]
    assert (first["methodName"], first["modelName"]) == ("oai_token-act-pair", "claude-4-5-haiku")


def test_clip_explanation() -> None:
    assert clip_explanation("  short  ") == "short"
    assert clip_explanation(" \n\t") is None
    assert clip_explanation("y" * 512) == "y" * 512
    assert clip_explanation("y" * 513) == "y" * 511 + "…"
    clipped = clip_explanation("a" + "\U0001f600" * 300)
    # "a" + 255 emoji = 511 units, + "…" = 512; an emoji is never split into half a surrogate pair
    assert clipped == "a" + "\U0001f600" * 255 + "…" and utf16_len(clipped) == 512


def test_neuronpedia_bins_from_windows(tmp_path: Path) -> None:
    report = make_report(4)
    acts = read(export("neuronpedia", [report], tmp_path)[0])["features"][0]["activations"]
    windows = [w for w in report.windows if w.group in ACTIVATING and w.max_activation > 0]
    for act, window in zip(acts, windows, strict=True):
        assert act["tokens"] == window.tokens and act["values"] == window.activations
    top = [a for a, w in zip(acts, windows, strict=True) if w.group == "top"]
    assert {a["quantileMax"] for a in top} == {report.stats.max_activation}
    assert {a["quantileMin"] for a in top} == {min(w.max_activation for w in windows if w.group == "top")}


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
        make_window(["", " x"], [0.0, 1.0], feature=5, context_id=2, token_ids=[1, 2], group="interval", interval=0),
    ]
    body = read(export("neuronpedia", [report], tmp_path)[0])
    validate_neuronpedia_batch(body)
    long_act, short_act = body["features"][0]["activations"]
    assert len(long_act["tokens"]) == 1024 and " PEAK" in long_act["tokens"]
    assert long_act["values"][long_act["tokens"].index(" PEAK")] == report.stats.max_activation
    assert short_act["tokens"] == ["\ufffd", " x"]


def test_neuronpedia_logits_when_the_report_has_them(tmp_path: Path) -> None:
    with_logits, without = make_report(1), make_report(2)
    with_logits.top_logits = [TokenLogit(token=f" up{i}", value=30.0 - i) for i in range(25)]
    with_logits.bottom_logits = [TokenLogit(token="", value=-3.0), TokenLogit(token=" down", value=-2.0)]
    body = read(export("neuronpedia", [with_logits, without], tmp_path)[0])
    validate_neuronpedia_batch(body)
    first, second = body["features"]
    assert first["topLogits"] == [{"token": f" up{i}", "value": 30.0 - i} for i in range(20)]
    assert first["bottomLogits"] == [{"token": "\ufffd", "value": -3.0}, {"token": " down", "value": -2.0}]
    assert "topLogits" not in second and "bottomLogits" not in second


# ---------------------------------------------------------------------------------------------------
# Neuronpedia: model id and source


def names(tmp_path: Path, reports: list[FeatureReport], **kwargs: Any) -> tuple[str, str]:
    body = read(export("neuronpedia", reports, tmp_path, **kwargs)[0])
    return body["modelId"], body["source"]


def test_neuronpedia_names_from_saelens_neuronpedia_id(tmp_path: Path) -> None:
    reports = make_reports(2)
    cfg = {"architecture": "standard", "metadata": {"neuronpedia_id": "gpt2-small/6-res-jb"}}
    assert names(tmp_path, reports, context=make_context(sae_cfg=cfg)) == ("gpt2-small", "6-res-jb")
    old_layout = {"architecture": "standard", "neuronpedia_id": "gemma-2-2b/20-gemmascope-res-16k"}
    assert names(tmp_path, reports, context=make_context(sae_cfg=old_layout)) == ("gemma-2-2b", "20-gemmascope-res-16k")
    # Options win over the cfg; a set name gives the source with the hook's layer.
    both = {"context": make_context(sae_cfg=cfg)}
    assert names(tmp_path, reports, model_id="My-Model", **both) == ("my-model", "6-res-jb")
    assert names(tmp_path, reports, set_name="mine-res", **both) == ("gpt2-small", "8-mine-res")
    assert names(tmp_path, reports, source="3-RES-x", **both) == ("gpt2-small", "3-res-x")


def test_neuronpedia_names_from_the_hook(tmp_path: Path) -> None:
    reports = make_reports(2)
    for report in reports:
        report.sae_name = "My SAE.v2"
    context = make_context()
    assert names(tmp_path, reports, context=context) == ("smollm2-135m", "8-my-sae-v2")
    assert names(tmp_path, reports, context=context, set_name="demo-res") == ("smollm2-135m", "8-demo-res")
    # No layer in the hook and no source in the SAE name: the user must name the source.
    embed = make_context(hook_name="hook_embed")
    with pytest.raises(InputError, match=r"Neuronpedia source: found none.*--np-source"):
        export("neuronpedia", reports, tmp_path, context=embed)
    with pytest.raises(InputError, match="Neuronpedia source: found 'demo'"):
        export("neuronpedia", reports, tmp_path, context=embed, source="demo")  # the route needs <layer>-<set>


def test_neuronpedia_names_from_reports(tmp_path: Path) -> None:
    reports = make_reports(3)
    assert names(tmp_path, reports) == ("smollm2-135m", "8-res-demo")
    assert names(tmp_path, reports, model_id="GPT2-Small", source="6-res-JB") == ("gpt2-small", "6-res-jb")
    reports[1].model_name = "other/model"
    with pytest.raises(InputError, match=r"model_name.*model_id"):
        export("neuronpedia", reports, tmp_path)
    for report in reports:
        report.model_name = ""
    with pytest.raises(InputError, match="Neuronpedia model id: found none"):
        export("neuronpedia", reports, tmp_path)
    assert MODEL_NAME.endswith("SmolLM2-135M")
    with pytest.raises(InputError, match="no reports"):
        export("neuronpedia", [], tmp_path)


# ---------------------------------------------------------------------------------------------------
# Neuronpedia: the README's upload code, with Neuronpedia's own client, against a loopback server


class UploadServer(ThreadingHTTPServer):
    """Answers POST /api/feature/upload-batch as the route does: 400 with the broken rule, else 200."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), UploadHandler)
        self.bodies: list[dict[str, Any]] = []
        self.keys: list[str | None] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api"


class UploadHandler(BaseHTTPRequestHandler):
    server: UploadServer

    def do_POST(self) -> None:  # noqa: N802 (the http.server name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.keys.append(self.headers.get("X-Api-Key"))
        if self.path != "/api/feature/upload-batch":
            status, answer = 404, {"error": f"no route {self.path}"}
        else:
            try:
                validate_neuronpedia_batch(body)
                self.server.bodies.append(body)
                status, answer = 200, {"message": f"{len(body['features'])} features created."}
            except AssertionError as error:
                status, answer = 400, {"error": f"validation: {error}"}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def upload_server() -> Iterator[UploadServer]:
    server = UploadServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def readme_upload_code() -> str:
    text = README.read_text(encoding="utf-8")
    found = re.search(r"<!-- neuronpedia-upload -->\n```python\n(.*?)```", text, re.DOTALL)
    assert found, "README: the upload example follows the <!-- neuronpedia-upload --> marker"
    return found.group(1)


def test_readme_upload_code_sends_our_batches(
    tmp_path: Path, upload_server: UploadServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from neuronpedia.requests.base_request import NPRequest

    reports = make_reports(140) + edge_reports(900)
    reports[0].top_logits = [TokenLogit(token=" dog", value=2.5)]
    reports[0].bottom_logits = [TokenLogit(token=" car", value=-1.5)]
    paths = export("neuronpedia", reports, tmp_path / "np", explanation_type="np_max-act")
    batches = [read(p) for p in paths[:-1]]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEURONPEDIA_API_KEY", "test-key")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setattr(NPRequest, "BASE_URL", upload_server.url)
    exec(compile(readme_upload_code(), "README.md:neuronpedia-upload", "exec"), {})

    assert len(upload_server.bodies) == len(batches) == 2 and set(upload_server.keys) == {"test-key"}
    for sent, ours in zip(upload_server.bodies, batches, strict=True):
        # The client sends null logits where a feature has none; everything else arrives as we wrote it.
        for feature in sent["features"]:
            for side in ("topLogits", "bottomLogits"):
                if feature[side] is None:
                    del feature[side]
        assert sent == ours
    assert upload_server.bodies[0]["features"][0]["topLogits"] == [{"token": " dog", "value": 2.5}]


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
# JSONL: where the scores travel


def test_jsonl(tmp_path: Path) -> None:
    reports = make_reports(12) + [hostile_report()]
    reports[0].detection = {"llm": {"balanced_accuracy": 0.75, "json": "{}", "explanation_source": "llm"}}
    reports[0].top_logits = [TokenLogit(token=" dog", value=2.5)]
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
    assert by_feature[0]["scores"]["correlation"] == reports[0].scores["correlation"]
    assert by_feature[0]["detection"] == {"llm": {"balanced_accuracy": 0.75, "explanation_source": "llm"}}
    assert by_feature[0]["top_logits"] == [{"token": " dog", "value": 2.5}] and by_feature[0]["bottom_logits"] is None
    assert by_feature[1]["detection"] == {}


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
