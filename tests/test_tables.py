"""Tests for autointerp/tables.py: run tables, density breakdown, A/B comparison and formats."""

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from test_store import call, make_predictions, make_sample, make_scores

from autointerp.config import RunConfig, SamplerConfig
from autointerp.records import Simulation
from autointerp.settings_hash import settings_hash
from autointerp.store import RunStore
from autointerp.tables import (
    TERMINAL_WIDTH,
    compact_paired_row,
    compare_runs,
    density_breakdown,
    format_rows,
    run_table,
)


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
    settings: dict | None = None,
    config: RunConfig | None = None,
) -> None:
    """A run whose LLM correlation of each feature is planted (other scores come from score_feature)."""
    densities = densities or {}
    features = sorted({*correlations, *failed})
    samples = [make_sample(f, n_active=round(densities.get(f, 0.01) * 100_000), n_tokens=100_000) for f in features]
    with RunStore.open(run_dir, create=True) as store:
        store.create_run(
            run_id,
            name or run_id,
            config or RunConfig(sae="demo"),
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
            store.save_scored(run_id, f, [sim], {"llm": scores}, calls=[call(0.25)], settings=settings)


def test_run_table_one_row_per_run(tmp_path):
    write_run(tmp_path / "a", {0: 0.2, 1: 0.4, 2: None}, name="alpha", failed=(3,))
    write_run(tmp_path / "b", {0: 0.5}, name="beta")
    rows = run_table([tmp_path / "a", tmp_path / "b"])
    assert [r["run"] for r in rows] == ["alpha", "beta"]
    alpha = rows[0]
    assert "step" not in alpha
    assert (alpha["scored"], alpha["failed"], alpha["correlation_n"], alpha["correlation_n_undefined_as_zero"]) == (
        3,
        1,
        3,
        1,
    )  # the undefined correlation counts as 0, and says so
    assert alpha["correlation_mean"] == pytest.approx(0.2)
    assert (alpha["correlation_q25"], alpha["correlation_q75"]) == pytest.approx((0.1, 0.3))
    assert alpha["correlation_ci_lo"] <= 0.2 <= alpha["correlation_ci_hi"]
    assert alpha["lift_mean"] is None and alpha["lift_n"] == 0  # no baseline control was scored
    assert alpha["cost_usd"] == pytest.approx(3 * 0.25 + 0.5) and alpha["unpriced_calls"] == 0
    assert alpha["settings_hash"] is None


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
    assert [r["correlation_n"] for r in rows] == [2, 1, 2, 0]
    assert rows[0]["correlation_ci_lo"] == pytest.approx(0.1) and rows[0]["correlation_ci_hi"] == pytest.approx(0.3)


def test_density_breakdown_counts_undefined_as_zero(tmp_path):
    write_run(tmp_path, {0: 0.6, 1: None}, densities={0: 0.0, 1: 0.0})
    (first, *_) = density_breakdown(tmp_path)
    assert (first["correlation_n"], first["correlation_n_undefined_as_zero"]) == (2, 1)
    assert first["correlation_mean"] == pytest.approx(0.3)


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
    assert (paired["only_a"], paired["only_b"]) == (1, 1)  # 40 scored only by A, 41 only by B
    assert "paired over the 40 features" in result["note"]


def test_compare_counts_an_undefined_correlation_of_a_shared_feature_as_zero(tmp_path):
    write_run(tmp_path / "a", {0: 0.4, 1: 0.2, 2: 0.3})
    write_run(tmp_path / "b", {0: 0.5, 1: None, 2: 0.3})
    paired = compare_runs(tmp_path / "a", tmp_path / "b", n_boot=200)["paired"]
    assert (paired["n"], paired["n_undefined_as_zero"]) == (3, 1)
    assert paired["mean_diff"] == pytest.approx((0.1 - 0.2 + 0.0) / 3)


def test_compare_says_which_settings_differ(tmp_path):
    settings = {"sampler": {"seed": 0, "n_tokens": 4000}, "prompts": {"simulate_user.md": "a" * 64}}
    changed = {"sampler": {"seed": 0, "n_tokens": 8000}, "prompts": {"simulate_user.md": "b" * 64}}
    write_run(tmp_path / "a", {0: 0.4}, settings=settings)
    write_run(tmp_path / "b", {0: 0.5}, settings=settings)
    write_run(tmp_path / "c", {0: 0.5}, settings=changed)
    same = compare_runs(tmp_path / "a", tmp_path / "b", n_boot=10)
    assert same["same_settings"] and same["settings_differences"] == []
    assert f"Same settings (hash {settings_hash(settings)})" in same["note"]
    differ = compare_runs(tmp_path / "a", tmp_path / "c", n_boot=10)
    assert not differ["same_settings"]
    assert differ["settings_differences"] == [
        {"setting": "prompts.simulate_user.md", "a": "a" * 64, "b": "b" * 64},
        {"setting": "sampler.n_tokens", "a": 4000, "b": 8000},
    ]
    assert "Settings differ" in differ["note"] and "sampler.n_tokens: 4000 vs 8000" in differ["note"]
    assert settings_hash(settings) in differ["note"] and settings_hash(changed) in differ["note"]


def test_compare_falls_back_to_the_stored_configs_when_settings_were_not_recorded(tmp_path):
    write_run(tmp_path / "a", {0: 0.4}, config=RunConfig(sae="demo", sampler=SamplerConfig(n_tokens=4000)))
    write_run(tmp_path / "b", {0: 0.4}, config=RunConfig(sae="demo", sampler=SamplerConfig(n_tokens=9000)))
    write_run(
        tmp_path / "c", {0: 0.4}, config=RunConfig(sae="demo", sampler=SamplerConfig(n_tokens=4000, batch_size=2))
    )
    differ = compare_runs(tmp_path / "a", tmp_path / "b", n_boot=10)
    assert differ["settings_differences"] == [{"setting": "sampler.n_tokens", "a": 4000, "b": 9000}]
    same = compare_runs(tmp_path / "a", tmp_path / "c", n_boot=10)  # batch size changes no score
    assert same["same_settings"] and "Prompts were not recorded" in same["note"]


def test_compare_different_saes_is_unpaired(tmp_path):
    write_run(tmp_path / "a", {0: 0.2, 1: 0.4}, sae="sae-1")
    write_run(tmp_path / "b", {0: 0.6}, sae="sae-2")
    result = compare_runs(tmp_path / "a", tmp_path / "b")
    assert not result["same_sae"] and result["paired"] is None
    assert result["unpaired"] == pytest.approx({"n_a": 2, "mean_a": 0.3, "n_b": 1, "mean_b": 0.6, "diff": 0.3})
    assert "Different SAEs" in result["note"]


def words(line: str) -> list[str]:
    """A terminal table line's words, without the table's rules."""
    return [w for w in line.split() if w not in ("┃", "│")]


ROWS = [
    {
        "run": "alpha", "scored": 3, "correlation_n": 3, "correlation_n_undefined_as_zero": 1,
        "correlation_mean": 0.123456, "correlation_ci_lo": 0.1, "correlation_ci_hi": 0.2, "lift_mean": None,
        "cost_usd": 0.25,
    },
    {
        "run": "be|ta", "scored": 0, "correlation_n": 0, "correlation_n_undefined_as_zero": 0,
        "correlation_mean": None, "correlation_ci_lo": None, "correlation_ci_hi": None, "lift_mean": -0.5,
        "cost_usd": None,
    },
]  # fmt: skip


def test_format_csv_and_json_parse_back():
    parsed = list(csv.DictReader(io.StringIO(format_rows(ROWS, "csv"))))
    assert [r["run"] for r in parsed] == ["alpha", "be|ta"]
    assert parsed[0]["correlation_mean"] == "0.123456" and parsed[0]["lift_mean"] == ""
    assert json.loads(format_rows(ROWS, "json")) == ROWS


def test_format_markdown_and_terminal_put_each_statistic_in_one_cell():
    lines = format_rows(ROWS, "markdown").splitlines()
    assert lines[0] == "| run | scored | correlation | lift | cost_usd |"
    assert lines[1] == "|---|---:|---:|---:|---:|"
    assert lines[2] == "| alpha | 3 | 0.123 [0.100, 0.200] n=3 (1 as 0) | - | 0.2500 |"
    assert lines[3] == "| be\\|ta | 0 | - n=0 | -0.500 | unknown |"  # a cost of unknown price is not $0
    terminal = format_rows(ROWS, "terminal").splitlines()
    assert words(terminal[0]) == ["run", "scored", "correlation", "lift", "cost_usd"]
    assert "0.123 [0.100, 0.200] n=3 (1 as 0)" in terminal[2] and "be|ta" in terminal[3]
    with pytest.raises(ValueError, match="fmt"):
        format_rows(ROWS, "html")


def test_format_reads_a_real_run_table(tmp_path):
    write_run(tmp_path, {0: 0.2, 1: 0.4}, name="alpha")
    rows = run_table([tmp_path])
    assert json.loads(format_rows(rows, "json"))[0]["correlation_mean"] == pytest.approx(0.3)
    parsed = next(csv.DictReader(io.StringIO(format_rows(rows, "csv"))))
    assert parsed["run"] == "alpha" and parsed["correlation_n"] == "2" and "correlation_ci_lo" in parsed


def test_terminal_run_table_fits_100_columns_and_shows_n_and_intervals(tmp_path):
    write_run(tmp_path / "a", {0: 0.2, 1: 0.4, 2: None}, name="alpha-run-with-a-long-name", failed=(3,))
    write_run(tmp_path / "b", {0: 0.5}, name="beta", step=200)
    rows = run_table([tmp_path / "a", tmp_path / "b"])
    text = format_rows(rows, "terminal")
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= TERMINAL_WIDTH
    correlation = [words(line) for line in lines if words(line)[:1] == ["correlation"]]
    assert len(correlation) == 2  # one block per run
    alpha = rows[0]
    ci = f"[{alpha['correlation_ci_lo']:.3f}, {alpha['correlation_ci_hi']:.3f}]"
    assert correlation[0][1] == "0.200" and ci == " ".join(correlation[0][2:4])
    assert correlation[0][4:6] == ["3", "1"]  # n, and how many of them were undefined, as 0
    assert "alpha-run-with-a-long-name" in text and "lift over baseline" in text and "z over permutation" in text
    spread = [words(line) for line in lines if words(line)[:2] == ["window-bootstrap", "std"]]
    assert len(spread) == 2 and spread[0][4] == f"{alpha['bootstrap_std_mean']:.3f}"  # next to the correlation
    markdown = format_rows(rows, "markdown").splitlines()
    assert f"0.200 {ci} n=3 (1 as 0)" in markdown[2]


def test_a_table_that_fits_stays_a_table_with_statistics_in_one_cell(tmp_path):
    write_run(tmp_path, {0: 0.1, 1: 0.3}, densities={0: 0.0, 1: 0.0})
    text = format_rows(density_breakdown(tmp_path), "terminal")
    lines = text.splitlines()
    assert words(lines[0]) == ["density", "features", "scored", "correlation"]
    assert max(len(line) for line in lines) <= TERMINAL_WIDTH
    assert "0.200 [0.100, 0.300] n=2" in lines[2]


def write_detection_run(run_dir: Path, llm_says: str, sae: str = "sae-fp") -> None:
    """Six features with simulation scores (LLM, baseline, other) and detection verdicts: the LLM's judge
    says yes exactly where the feature fired ('right') or everywhere ('all'); the baseline's says no."""
    from test_store import score_all

    from autointerp.llm.spec import make_backend
    from autointerp.scorers import ScoringItem
    from autointerp.scorers.detection import detection_result
    from autointerp.store import rows as store_rows

    backend = make_backend("baseline")
    samples = [make_sample(f) for f in range(6)]
    with RunStore.open(run_dir, create=True) as store:
        store.create_run("run", "run", RunConfig(sae="demo"), sae, "corpus-fp", {})
        store.save_samples("run", samples)
        for sample in samples:
            score_all(store, sample, run_id="run", noise=0.5 if llm_says == "right" else 4.0)
            results = []
            for source in ("llm", "baseline"):
                item = ScoringItem(sample=sample, explanation="x", source=source)
                labels = [w.max_activation > 0 for w in item.windows]
                yes = [True] * len(labels) if llm_says == "all" else labels
                yes = yes if source == "llm" else [False] * len(labels)
                order = list(range(len(labels)))
                results.append(detection_result(item, backend, "sampled", 10, order, yes, None, []))
            store._put("detection_scores", (store_rows.detection_row("run", d) for d in results))


def test_compare_pairs_every_headline_score_with_n_and_a_settings_flag(tmp_path):
    write_detection_run(tmp_path / "a", "right")
    write_detection_run(tmp_path / "b", "all")
    result = compare_runs(tmp_path / "a", tmp_path / "b", n_boot=200)
    by_score = {row["score"]: row for row in result["paired_scores"]}
    assert {"correlation", "lift", "lift_other", "auroc", "auroc_lift"} <= by_score.keys()
    assert {"detection_balanced_accuracy", "detection_balanced_accuracy_lift"} <= by_score.keys()
    detection = by_score["detection_balanced_accuracy"]
    # A's judge is right on every window (1.0), B's says yes to all (0.5); the baseline says no (0.5).
    assert (detection["n"], detection["mean_a"], detection["mean_b"]) == (6, 1.0, 0.5)
    assert detection["mean_diff"] == pytest.approx(-0.5)
    assert by_score["detection_balanced_accuracy_lift"]["mean_diff"] == pytest.approx(-0.5)
    assert by_score["lift"]["n"] == 6 and by_score["lift"]["mean_diff"] < 0  # noisier simulation in B
    assert "detection_auroc" not in by_score  # sampled verdicts: no AUROC on either side
    assert all(row["same_settings"] for row in result["paired_scores"])
    assert result["paired"] == by_score["correlation"]


def test_compare_cli_prints_every_paired_score(tmp_path, capsys):
    from autointerp.cli import main

    write_detection_run(tmp_path / "a", "right")
    write_detection_run(tmp_path / "b", "all")
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--format", "csv"]) == 0
    printed = capsys.readouterr().out
    assert "detection_balanced_accuracy_lift" in printed and "auroc_lift_other" in printed


def test_compare_terminal_table_of_paired_scores_fits_100_columns(tmp_path):
    write_run(tmp_path / "a", {f: 0.1 * f for f in range(6)} | {6: None})
    write_run(tmp_path / "b", {f: 0.1 * f + 0.05 for f in range(7)})
    result = compare_runs(tmp_path / "a", tmp_path / "b", n_boot=200, seed=0)
    text = format_rows([compact_paired_row(r) for r in result["paired_scores"]], "terminal")
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= TERMINAL_WIDTH
    assert "B - A [95% CI]" in lines[0]  # a table, not the one-block-per-row fallback
    row = next(words(line) for line in lines if words(line)[:1] == ["correlation"])
    paired = result["paired_scores"][0]
    assert row[1] == str(paired["n"]) and f"{paired['mean_diff']:.3f}" in row
