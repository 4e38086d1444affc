"""A real run (the demo SAE, baseline explainer) exported through the command line in every format, each
file checked with the other side's own classes or rules: the run's SAE gives the names (hook layer 8),
the run config the SAEBench settings, and flags reach the exporters (or are refused for another format)."""

import json
from pathlib import Path

import pytest
from helpers_export import validate_neuronpedia_batch
from sae_bench.evals.autointerp.eval_output import AutoInterpEvalOutput
from sae_dashboard.neuronpedia.neuronpedia_dashboard import NeuronpediaDashboardBatch

from autointerp.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("demo") / "run"
    argv = ["run", "--sae", "demo", "--explainer", "baseline", "--n-features", "3", "--n-tokens", "3000"]
    assert main([*argv, "--run-dir", str(run_dir)]) == 0
    return run_dir


def export(run_dir: Path, fmt: str, out: Path, *flags: str) -> list[Path]:
    assert main(["export", str(run_dir), "--format", fmt, "--out", str(out), *flags]) == 0
    return sorted(out.iterdir())


def test_every_format_from_a_real_run(demo_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    paths = export(demo_run, "neuronpedia", tmp_path / "np")
    side = json.loads((tmp_path / "np" / "scores.json").read_text())
    batches = [json.loads(p.read_text()) for p in paths if p.name.startswith("batch-")]
    assert batches and side["namesFrom"].startswith("model name, layer 8 of hook blocks.8.hook_resid_post")
    for body in batches:
        validate_neuronpedia_batch(body)
        assert (body["modelId"], body["source"]) == ("smollm2-135m", "8-demo")
        # A baseline run has no explanation to upload: its text is the control.
        assert all(feature["explanations"] == [] for feature in body["features"])
        # The logits the run stored at sampling (W_dec @ W_U, 10 a side), highest / lowest first.
        for feature in body["features"]:
            top, bottom = [x["value"] for x in feature["topLogits"]], [x["value"] for x in feature["bottomLogits"]]
            assert len(top) == len(bottom) == 10 and top == sorted(top, reverse=True) and bottom == sorted(bottom)
            assert top[-1] > bottom[-1]
    assert {f["explanationBackend"] for f in side["features"].values()} == {"baseline"}
    assert all(f["scores"] is not None for f in side["features"].values())

    paths = export(demo_run, "neuronpedia", tmp_path / "np2", "--np-source", "8-res-mine", "--np-model-id", "m")
    body = json.loads(paths[0].read_text())
    assert (body["modelId"], body["source"]) == ("m", "8-res-mine")

    (path,) = export(demo_run, "saedashboard", tmp_path / "dash", "--np-set-name", "res-demo")
    data = json.loads(path.read_text())
    batch = NeuronpediaDashboardBatch(**data)
    assert batch.to_dict() == data and (batch.layer, batch.sae_set) == (8, "res-demo")
    assert {f["n_tokens_in_prompt"] for f in data["features"]} == {128}  # the demo SAE's context_size
    logits = {f["feature_index"]: (f["pos_str"], f["neg_values"]) for f in data["features"]}
    assert all(len(pos) == len(neg) == 10 and neg == sorted(neg) for pos, neg in logits.values())

    (path,) = export(demo_run, "saebench", tmp_path / "bench", "--saebench-release", "smollm2-demo")
    assert path.name == "smollm2-demo_custom_sae_eval_results.json"
    data = json.loads(path.read_text())
    loaded = AutoInterpEvalOutput(**data)
    assert loaded.eval_config.total_tokens == 3000 and loaded.eval_config.model_name == "smollm2-135m"
    assert loaded.sae_cfg_dict["metadata"]["hook_name"] == "blocks.8.hook_resid_post"
    assert len(loaded.eval_config.override_latents) == 3

    (path,) = export(demo_run, "jsonl", tmp_path / "jsonl")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 3 and all(r["scores"] is not None and r["controls"] for r in records)
    for record in records:  # the same tokens in every format
        assert [t["token"] for t in record["top_logits"]] == logits[record["feature"]][0]
    capsys.readouterr()


def test_a_flag_of_another_format_is_refused(demo_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["export", str(demo_run), "--format", "saebench", "--out", str(tmp_path), "--np-source", "8-x"])
    assert code != 0
    assert "--np-source" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
