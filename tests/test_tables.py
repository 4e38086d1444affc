"""Tests for autointerp/tables.py: run tables, density breakdown, A/B comparison and formats."""

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from test_store import call, make_predictions, make_sample, make_scores

from autointerp.config import RunConfig
from autointerp.records import Simulation
from autointerp.store import RunStore
from autointerp.tables import compare_runs, density_breakdown, format_rows, run_table


def write_run(
    run_dir: Path,
    correlations: dict[int, float | None],
    *,
    run_id: str = "run",
    name: str | None = None,
    sae: str = "sae-fp",
    densities: dict[int, float] | None = None,
    failed: tuple[int, ...] = (),
    step: int | None = None,
) -> None:
    """A run whose LLM correlation of each feature is planted (other scores come from score_feature)."""
    densities = densities or {}
    features = sorted({*correlations, *failed})
    samples = [make_sample(f, n_active=round(densities.get(f, 0.01) * 100_000), n_tokens=100_000) for f in features]
    with RunStore.open(run_dir, create=True) as store:
        store.create_run(
            run_id,
            name or run_id,
            RunConfig(sae="demo"),
            sae,
            "corpus-fp",
            {},
            training_run="tr" if step else None,
            step=step,
        )
        store.save_samples(run_id, samples)
        for sample in samples:
            f = sample.feature
            if f in failed:
                store.record_failure(run_id, f, "explain", "timeout", calls=[call(0.5, ok=False, error="timeout")])
                continue
            preds = make_predictions(sample, 1.0, seed=f)
            scores = make_scores(sample, preds).model_copy(update={"correlation": correlations[f]})
            sim = Simulation(feature=f, explanation_source="llm", backend="b", mode="sampled", predictions=preds)
            store.save_scored(run_id, f, [sim], {"llm": scores}, calls=[call(0.25)])


def test_run_table_one_row_per_run(tmp_path):
    write_run(tmp_path / "a", {0: 0.2, 1: 0.4, 2: None}, name="alpha", failed=(3,))
    write_run(tmp_path / "b", {0: 0.5}, name="beta")
    rows = run_table([tmp_path / "a", tmp_path / "b"])
    assert [r["run"] for r in rows] == ["alpha", "beta"]
    alpha = rows[0]
    assert "step" not in alpha
    assert (alpha["scored"], alpha["failed"], alpha["correlation_n"]) == (
        3,
        1,
        2,
    )  # None is left out of means
    assert alpha["correlation_mean"] == pytest.approx(0.3)
    assert (alpha["correlation_q25"], alpha["correlation_q75"]) == pytest.approx((0.25, 0.35))
    assert alpha["lift_mean"] is None  # no baseline control was scored
    assert alpha["cost_usd"] == pytest.approx(3 * 0.25 + 0.5)


def test_run_table_has_a_row_per_training_step(tmp_path):
    write_run(tmp_path, {0: 0.1}, run_id="step-100", step=100)
    with RunStore.open(tmp_path, create=True) as store:
        store.create_run("step-200", "step-200", RunConfig(sae="demo"), "sae-fp", "c", {}, training_run="tr", step=200)
    rows = run_table([tmp_path])
    assert [(r["training_run"], r["step"], r["scored"]) for r in rows] == [("tr", 100, 1), ("tr", 200, 0)]


def test_density_breakdown(tmp_path):
    densities = {0: 0.0, 1: 5e-5, 2: 5e-4, 3: 2e-3, 4: 5e-3, 5: 0.2}
    write_run(tmp_path, {0: 0.1, 1: 0.3, 2: 0.5, 3: 0.6, 4: 0.8}, densities=densities, failed=(5,))
    rows = density_breakdown(tmp_path)
    assert [(r["density"], r["features"], r["scored"]) for r in rows] == [
        ("<1e-4", 2, 2), ("1e-4..1e-3", 1, 1), ("1e-3..1e-2", 2, 2), (">=1e-2", 1, 0),
    ]  # fmt: skip
    assert [r["correlation_mean"] for r in rows] == pytest.approx([0.2, 0.5, 0.7, None])


def test_compare_same_sae_is_paired_and_ci_holds_the_planted_difference(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.uniform(0.1, 0.7, 40)
    noise = rng.normal(0, 0.05, 40)
    noise -= noise.mean()  # the planted mean difference is exactly 0.1
    write_run(tmp_path / "a", {f: float(base[f]) for f in range(40)} | {40: 0.9}, failed=(41,))
    write_run(tmp_path / "b", {f: float(base[f] + 0.1 + noise[f]) for f in range(40)} | {41: 0.0})
    result = compare_runs(tmp_path / "a", tmp_path / "b", n_boot=1000, seed=0)
    paired = result["paired"]
    assert result["same_sae"] and result["unpaired"] is None
    assert paired["n"] == 40  # feature 40 only in A, 41 failed in A
    assert paired["mean_diff"] == pytest.approx(0.1)
    assert 0 < paired["lo"] < 0.1 < paired["hi"] < 0.2
    assert [r["dir"] for r in result["runs"]] == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert "paired over the 40 features" in result["note"]


def test_compare_different_saes_is_unpaired(tmp_path):
    write_run(tmp_path / "a", {0: 0.2, 1: 0.4}, sae="sae-1")
    write_run(tmp_path / "b", {0: 0.6}, sae="sae-2")
    result = compare_runs(tmp_path / "a", tmp_path / "b")
    assert not result["same_sae"] and result["paired"] is None
    assert result["unpaired"] == pytest.approx({"mean_a": 0.3, "mean_b": 0.6, "diff": 0.3})
    assert "Different SAEs" in result["note"]


ROWS = [
    {"run": "alpha", "scored": 3, "correlation_mean": 0.123456, "lift_mean": None, "cost_usd": 0.25},
    {"run": "be|ta", "scored": 0, "correlation_mean": None, "lift_mean": -0.5, "cost_usd": 0.0},
]


def test_format_csv_and_json_parse_back():
    parsed = list(csv.DictReader(io.StringIO(format_rows(ROWS, "csv"))))
    assert [r["run"] for r in parsed] == ["alpha", "be|ta"]
    assert parsed[0]["correlation_mean"] == "0.123456" and parsed[0]["lift_mean"] == ""
    assert json.loads(format_rows(ROWS, "json")) == ROWS


def test_format_markdown_and_terminal():
    lines = format_rows(ROWS, "markdown").splitlines()
    assert lines[0] == "| run | scored | correlation_mean | lift_mean | cost_usd |"
    assert lines[1] == "|---|---:|---:|---:|---:|"
    assert lines[2] == "| alpha | 3 | 0.123 | - | 0.2500 |"
    assert lines[3] == "| be\\|ta | 0 | - | -0.500 | 0.0000 |"
    terminal = format_rows(ROWS, "terminal")
    assert "correlation_mean" in terminal.splitlines()[0] and "0.123" in terminal and "be|ta" in terminal
    with pytest.raises(ValueError, match="fmt"):
        format_rows(ROWS, "html")


def test_format_reads_a_real_run_table(tmp_path):
    write_run(tmp_path, {0: 0.2, 1: 0.4}, name="alpha")
    rows = run_table([tmp_path])
    assert json.loads(format_rows(rows, "json"))[0]["correlation_mean"] == pytest.approx(0.3)
    assert next(csv.DictReader(io.StringIO(format_rows(rows, "csv"))))["run"] == "alpha"
