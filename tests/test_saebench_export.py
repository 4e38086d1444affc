"""The saebench format, loaded with SAEBench's own output classes (`sae-bench` 0.6.0,
`sae_bench/evals/autointerp/eval_output.py`; installed with --no-deps, see the README)."""

import json
import math
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from helpers_export import make_context
from helpers_reports import make_report, make_reports

# Installed by the README's first command (`pip install --no-deps sae-bench==0.6.0`); a missing package
# fails this file rather than skipping it.
from sae_bench.evals.autointerp.eval_output import AutoInterpEvalOutput

from autointerp.errors import InputError
from autointerp.export import export
from autointerp.records import FeatureReport


def load(path: Path) -> tuple[dict[str, Any], AutoInterpEvalOutput]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return data, AutoInterpEvalOutput(**data)


def same_as_loaded(data: dict[str, Any], loaded: AutoInterpEvalOutput) -> None:
    """Every field we wrote comes back from SAEBench's classes unchanged: none was dropped or coerced."""
    back = asdict(loaded)
    # SAEBench's config fills n_latents from override_latents after loading (its __post_init__).
    assert back["eval_config"].pop("n_latents") == len(data["eval_config"]["override_latents"])
    assert data["eval_config"].pop("n_latents") is None
    std_back = back["eval_result_metrics"]["autointerp"].pop("autointerp_std_dev")
    std = data["eval_result_metrics"]["autointerp"].pop("autointerp_std_dev")
    assert std_back == std or (math.isnan(std_back) and math.isnan(std))
    assert back == data


def with_detection(report: FeatureReport, labels: list[bool], said_yes: list[bool], balanced: float) -> FeatureReport:
    verdicts = json.dumps({"labels": labels, "said_yes": said_yes})
    row = {"explanation_source": "llm", "balanced_accuracy": balanced, "n_positive": sum(labels), "json": verdicts}
    report.detection = {"llm": row, "baseline": {**row, "explanation_source": "baseline", "balanced_accuracy": 0.5}}
    return report


def test_simulation_scores_load_with_saebench_classes(tmp_path: Path) -> None:
    reports = make_reports(12)
    (path,) = export("saebench", reports, tmp_path, context=make_context())
    assert path.name == "8-res-demo_custom_sae_eval_results.json"  # SAEBench's get_results_filepath
    data, loaded = load(path)
    assert loaded.eval_type_id == "autointerp"
    metrics = loaded.eval_result_metrics.autointerp
    # Features 8 failed to explain; the rest have the simulation's balanced accuracy.
    values = [r.scores["balanced_accuracy"] for r in reports if r.scores and r.scores["balanced_accuracy"] is not None]
    assert len(values) == 11
    assert metrics.autointerp_score == pytest.approx(statistics.fmean(values))
    assert metrics.autointerp_std_dev == pytest.approx(statistics.stdev(values))
    ours = data["eval_result_unstructured"]["autointerp"]
    assert (ours["scorer"], ours["metric"], ours["n_scored"], ours["n_failed_or_unscored"]) == (
        "simulation",
        "balanced_accuracy",
        11,
        1,
    )
    assert ours["control_baseline_n"] == 11
    latents = data["eval_result_unstructured"]["latents"]
    assert latents["8"]["score"] is None and latents["8"]["errors"]
    assert latents["0"]["explanation"] == reports[0].explanation.text and latents["0"]["latent"] == 0
    assert loaded.eval_config.override_latents == list(range(12))
    assert loaded.eval_config.model_name == "HuggingFaceTB/SmolLM2-135M"
    assert (loaded.eval_config.dataset_name, loaded.eval_config.llm_context_size) == ("shakespeare", 128)
    assert loaded.eval_config.n_iw_sampled_ex_for_scoring == 0 and loaded.eval_config.n_top_ex_for_scoring == 5
    assert loaded.sae_cfg_dict == make_context().sae_cfg and loaded.sae_lens_version is None
    assert loaded.sae_bench_commit_hash.startswith("autointerp-0.1.0")
    same_as_loaded(data, loaded)
    # The same run exported twice gives the same file (stable id, the run's own time).
    first = path.read_text()
    export("saebench", reports, tmp_path, context=make_context())
    assert path.read_text() == first


def test_detection_scores_and_saebench_accuracy(tmp_path: Path) -> None:
    a = with_detection(make_report(1), [True, True, False, False], [True, False, False, False], 0.75)
    b = with_detection(make_report(2), [True, False, False, False, False], [True, True, False, False, False], 0.875)
    c = make_report(3)  # scored by simulation only: no detection row, so left out of a detection export
    context = make_context()
    (path,) = export("saebench", [a, b, c], tmp_path / "bal", context=context, sae_release="my/sae", sae_id="l0-40")
    assert path.name == "my_sae_l0-40_eval_results.json"
    data, loaded = load(path)
    assert loaded.eval_result_metrics.autointerp.autointerp_score == pytest.approx((0.75 + 0.875) / 2)
    assert (loaded.sae_lens_release_id, loaded.sae_lens_id) == ("my/sae", "l0-40")
    ours = data["eval_result_unstructured"]["autointerp"]
    assert (ours["scorer"], ours["n_scored"], ours["n_failed_or_unscored"]) == ("detection", 2, 1)
    assert ours["control_baseline_mean"] == 0.5
    same_as_loaded(data, loaded)

    # SAEBench's own figure: the share of windows judged right (3/4 and 4/5).
    (path,) = export("saebench", [a, b, c], tmp_path / "acc", context=context, metric="accuracy")
    data, loaded = load(path)
    assert loaded.eval_result_metrics.autointerp.autointerp_score == pytest.approx((3 / 4 + 4 / 5) / 2)
    assert loaded.eval_result_metrics.autointerp.autointerp_std_dev == pytest.approx(statistics.stdev([0.75, 0.8]))
    same_as_loaded(data, loaded)

    # Asking for simulation on the same reports takes the simulation rows instead.
    (path,) = export("saebench", [a, b, c], tmp_path / "sim", context=context, scorer="simulation")
    data, _ = load(path)
    assert data["eval_result_unstructured"]["autointerp"]["n_scored"] == 3


def test_one_feature_has_no_spread(tmp_path: Path) -> None:
    (path,) = export("saebench", [make_report(1)], tmp_path, context=make_context())
    data, loaded = load(path)
    assert math.isnan(loaded.eval_result_metrics.autointerp.autointerp_std_dev)  # as SAEBench writes it


def test_refusals(tmp_path: Path) -> None:
    reports = make_reports(3)
    with pytest.raises(InputError, match="no run context"):
        export("saebench", reports, tmp_path)
    with pytest.raises(InputError, match="no detection scores"):
        export("saebench", reports, tmp_path, context=make_context(), scorer="detection")
    with pytest.raises(InputError, match="metric 'accuracy'"):
        export("saebench", reports, tmp_path, context=make_context(), metric="accuracy")
    with pytest.raises(InputError, match="metric"):
        export("saebench", reports, tmp_path, context=make_context(), metric="f1")
    with pytest.raises(InputError, match="no feature with a defined score"):
        export("saebench", [make_report(8, explained=False)], tmp_path, context=make_context())
