"""Tests for autointerp/store/ on real SQLite files in tmp_path, with hand-made records."""

import json
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers_windows import make_window

from autointerp.config import LLMConfig, RunConfig
from autointerp.errors import StoreError
from autointerp.records import CallRecord, Explanation, FeatureSample, FeatureStats, Simulation, Usage, Window
from autointerp.run_summary import run_summary
from autointerp.scoring import FeatureScores, lift, score_feature
from autointerp.settings_hash import settings_hash
from autointerp.store import DB_NAME, SCHEMA_VERSION, VIEWS, RunStore

RUN = "run-1"


# --------------------------------------------------------------------------------------------- helpers


def store_window(feature: int, idx: int, group: str, split: str, peak: float, interval: int | None = None) -> Window:
    """Four tokens peaking at `peak` on the second; context, start and token ids follow feature and idx."""
    return make_window(
        ["a", f"tok{idx}", " the", "\t"],
        [0.0, peak, peak / 2, 0.0],
        feature=feature,
        context_id=100 * feature + idx,
        start=idx,
        token_ids=[feature, idx, 7, 8],
        group=group,
        interval=interval,
        split=split,
    )


def make_sample(feature: int, n_active: int = 10, n_tokens: int = 1000) -> FeatureSample:
    windows = [
        store_window(feature, 0, "top", "explain", 4.0),
        store_window(feature, 1, "top", "score", 3.0),
        store_window(feature, 2, "interval", "score", 1.5, interval=0),
        store_window(feature, 3, "random", "score", 0.0),
    ]
    stats = FeatureStats(
        feature=feature,
        n_tokens=n_tokens,
        n_active=n_active,
        max_activation=4.0,
        mean_active=1.25,
        histogram_edges=[0.0, 2.0, 4.0],
        histogram_counts=[6, 4],
    )
    return FeatureSample(stats=stats, windows=windows)


def scoring_windows(sample: FeatureSample) -> list[Window]:
    return sample.split("score")


def make_predictions(sample: FeatureSample, noise: float, seed: int = 0) -> list[list[float]]:
    """Predictions on 0..10: the true activations rescaled, plus uniform noise of the given size."""
    rng = np.random.default_rng(seed)
    max_act = sample.stats.max_activation
    return [
        np.clip(np.array(w.activations) / max_act * 10 + rng.uniform(-noise, noise, len(w.activations)), 0, 10).tolist()
        for w in scoring_windows(sample)
    ]


def make_scores(sample: FeatureSample, predictions: list[list[float]]) -> FeatureScores:
    windows = scoring_windows(sample)
    return score_feature(
        [w.activations for w in windows],
        predictions,
        [w.group for w in windows],
        [w.interval for w in windows],
        sample.stats.max_activation,
    )


def make_explanation(feature: int, text: str = "the letter a", cost: float = 0.01) -> Explanation:
    return Explanation(
        feature=feature,
        text=text,
        raw_completion=f"Explanation: {text}",
        backend="anthropic:claude-test",
        prompt_hash="abc123",
        usage=Usage(input_tokens=100, cached_input_tokens=50, cache_write_tokens=10, output_tokens=20),
        cost_usd=cost,
    )


def call(cost: float | None = 0.01, *, feature: int = 0, ok: bool = True, error: str | None = None) -> CallRecord:
    """One LLM call's record (the store files it under the feature and stage it is saved with)."""
    return CallRecord(
        stage="explain", feature=feature, backend="anthropic", model="claude-test", prompt_hash="p", ok=ok,
        error=error, attempts=1, latency_s=0.5, usage=Usage(input_tokens=100, output_tokens=20), cost_usd=cost,
    )  # fmt: skip


def score_all(
    store: RunStore, sample: FeatureSample, run_id: str = RUN, noise: float = 0.5
) -> dict[str, FeatureScores]:
    """Save LLM, baseline and other-feature simulations, their scores and lifts for one feature."""
    feature = sample.feature
    preds = {
        "llm": make_predictions(sample, noise, seed=feature),
        "baseline": make_predictions(sample, 3.0, seed=feature + 1),
        f"other:{feature + 1}": make_predictions(sample, 5.0, seed=feature + 2),
    }
    sims = [
        Simulation(feature=feature, explanation_source=src, backend="b", mode="sampled", predictions=p, cost_usd=0.02)
        for src, p in preds.items()
    ]
    scores = {src: make_scores(sample, p) for src, p in preds.items()}
    lifts = {
        "lift": lift(scores["llm"].correlation, scores["baseline"].correlation),
        "lift_other": lift(scores["llm"].correlation, scores[f"other:{feature + 1}"].correlation),
    }
    store.save_scored(run_id, feature, sims, scores, lifts=lifts, calls=[call(0.02)])
    return scores


def new_store(tmp_path: Path, run_id: str = RUN, **run_kwargs) -> RunStore:
    store = RunStore.open(tmp_path, create=True)
    store.create_run(
        run_id,
        "demo-run",
        RunConfig(sae="/saes/demo-sae"),
        "sae-fp",
        "corpus-fp",
        {"autointerp": "0.1.0"},
        **run_kwargs,
    )
    return store


def count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# --------------------------------------------------------------------------------------------- round trips


def test_samples_explanations_and_reports_round_trip(tmp_path):
    samples = [make_sample(f) for f in (3, 1, 7)]
    with new_store(tmp_path) as store:
        store.save_samples(RUN, samples)
        store.save_explanation(RUN, make_explanation(1), calls=[call()])
        store.save_explanation(RUN, make_explanation(1, "top tokens: tok1", cost=0.0), source="baseline")
        scores = score_all(store, samples[1])

    with RunStore.open(tmp_path, create=False) as store:
        assert store.readonly
        assert store.load_samples(RUN) == sorted(samples, key=lambda s: s.feature)
        assert store.load_explanations(RUN) == {1: make_explanation(1)}
        assert store.load_explanations(RUN, "baseline")[1].text == "top tokens: tok1"
        simulated = store.db.execute("SELECT explanation_source FROM simulations WHERE feature = 1").fetchall()
        assert sorted(source for (source,) in simulated) == ["baseline", "llm", "other:2"]
        run = store.get_run(RUN)
        assert RunConfig.model_validate(run["config"]) == RunConfig(sae="/saes/demo-sae")
        assert run["versions"] == {"autointerp": "0.1.0"} and run["status"] == "sampling"
        reports = {r.feature: r for r in store.load_reports(RUN)}

    assert sorted(reports) == [1, 3, 7]
    report = reports[1]
    assert report.windows == samples[1].windows and report.stats == samples[1].stats
    assert report.explanation == make_explanation(1)
    assert report.sae_name == "demo-sae"
    assert report.scores["correlation"] == pytest.approx(scores["llm"].correlation)
    assert report.scores["lift"] == pytest.approx(scores["llm"].correlation - scores["baseline"].correlation)
    assert report.scores["lift_other"] == pytest.approx(scores["llm"].correlation - scores["other:2"].correlation)
    assert FeatureScores.model_validate_json(report.scores["json"]) == scores["llm"]
    assert set(report.controls) == {"baseline", "other"}
    assert report.controls["other"]["explanation_source"] == "other:2"
    assert reports[3].explanation is None and reports[3].scores is None


def test_wal_and_foreign_keys(tmp_path):
    with new_store(tmp_path) as store:
        assert store.db.journal_mode == "wal"
        with pytest.raises(sqlite3.IntegrityError):  # a run id never created
            store.save_samples("no-such-run", [make_sample(0)])


def test_resave_replaces_rows(tmp_path):
    sample = make_sample(5)
    with new_store(tmp_path) as store:
        for _ in range(2):
            store.save_samples(RUN, [sample])
            store.save_explanation(RUN, make_explanation(5))
            score_all(store, sample)
        path = store.path
    tables = ("features", "examples", "explanations", "simulations", "scores", "feature_status")
    assert [count(path, t) for t in tables] == [1, 4, 1, 3, 3, 1]
    assert count(path, "llm_calls") == 2  # calls are a ledger: each real call is one row

    fewer = FeatureSample(stats=sample.stats, windows=sample.windows[:2])
    with RunStore.open(tmp_path, create=True) as store:
        store.save_samples(RUN, [fewer])
        store.save_scored(RUN, 5, [], {"llm": make_scores(sample, make_predictions(sample, 0.5))})
        assert store.load_samples(RUN) == [fewer]
    assert count(path, "examples") == 2
    assert count(path, "scores") == 1  # controls scored before but not now are gone


def test_a_stage_result_lands_whole_or_not_at_all(tmp_path, monkeypatch):
    sample = make_sample(4)
    with new_store(tmp_path) as store:
        store.save_samples(RUN, [sample])
        store.save_explanation(RUN, make_explanation(4))

        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(store, "_set_stage", interrupted)  # dies after the rows, before the status
        with pytest.raises(KeyboardInterrupt):
            score_all(store, sample)
        monkeypatch.undo()
        assert store.pending_features(RUN, "scored") == [4]
        path = store.path
    assert [count(path, t) for t in ("simulations", "scores", "llm_calls")] == [0, 0, 0]


def test_create_run_twice_is_refused(tmp_path):
    with new_store(tmp_path) as store:
        with pytest.raises(StoreError, match="already exists"):
            store.create_run(RUN, "again", RunConfig(sae="x"), "sae-fp", "corpus-fp", {})
        assert [r["name"] for r in store.list_runs()] == ["demo-run"]


def test_runs_status_latest_and_training_steps(tmp_path):
    with new_store(tmp_path, training_run="tr", step=100) as store:
        store.create_run("run-2", "demo-run", RunConfig(sae="s"), "sae-fp", "c", {}, training_run="tr", step=200)
        store.set_run_status(RUN, "done")
        assert store.get_run(RUN)["status"] == "done"
        assert store.latest_run_id() == "run-2"
        assert [(r["run_id"], r["step"]) for r in store.list_runs()] == [(RUN, 100), ("run-2", 200)]
        with pytest.raises(ValueError, match="run status"):
            store.set_run_status(RUN, "finished")


def test_score_columns_are_read_by_name_and_only_real_columns_pass(tmp_path):
    samples = [make_sample(f) for f in (2, 5)]
    with new_store(tmp_path) as store:
        store.save_samples(RUN, samples)
        scores = {s.feature: score_all(store, s) for s in samples}
        rows = store.llm_score_rows(RUN, ["correlation", "lift"])
        assert sorted((r["correlation"], r["lift"]) for r in rows) == pytest.approx(
            sorted((s["llm"].correlation, s["llm"].correlation - s["baseline"].correlation) for s in scores.values())
        )
        assert store.feature_scores(RUN, "auroc") == pytest.approx({f: s["llm"].auroc for f, s in scores.items()})
        for bad in ("correlation; DROP TABLE runs", "nope"):
            with pytest.raises(ValueError, match="expected a scores column"):
                store.llm_score_rows(RUN, ["correlation", bad])
        with pytest.raises(ValueError, match="save_scored lifts"):
            store.save_scored(RUN, 2, [], {"llm": scores[2]["llm"]}, lifts={"lift_baseline": 0.1})


# --------------------------------------------------------------------------------------------- progress


def test_pending_failure_and_resolution(tmp_path):
    samples = [make_sample(f) for f in range(4)]
    with new_store(tmp_path) as store:
        store.save_samples(RUN, samples)
        assert store.pending_features(RUN, "explained") == [0, 1, 2, 3]
        for f in (0, 1, 2):
            store.save_explanation(RUN, make_explanation(f))
        score_all(store, samples[0])
        store.record_failure(
            RUN,
            1,
            "simulate",
            "simulator answered 3 values for 4 tokens",
            calls=[call(0.03, ok=False, error="bad length")],
        )
        store.record_failure(RUN, 3, "explain", "HTTP 529 overloaded")

        assert store.pending_features(RUN, "explained") == []
        assert store.pending_features(RUN, "scored") == [2]  # failed features are not pending
        assert store.failed_features(RUN) == {1: "simulate", 3: "explain"}
        reports = {r.feature: r for r in store.load_reports(RUN)}
        assert reports[1].errors == ["simulate: simulator answered 3 values for 4 tokens"]
        assert reports[1].scores is None  # a failure is never a score
        summary = run_summary(store, RUN)
        assert (summary["scored"], summary["failed"], summary["sampled"]) == (1, 2, 4)

        store.resolve_failures(RUN, [1, 3])
        assert store.failed_features(RUN) == {}
        assert store.pending_features(RUN, "explained") == [3]  # never explained: explain again
        assert store.pending_features(RUN, "scored") == [1, 2, 3]  # 1 keeps its explanation
        assert all(not r.errors for r in store.load_reports(RUN))
        path = store.path
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT feature, resolved FROM errors ORDER BY feature").fetchall() == [
            (1, 1),
            (3, 1),
        ]
        assert conn.execute(
            "SELECT status, error FROM llm_calls WHERE feature = 1 AND stage = 'simulate'"
        ).fetchall() == [("error", "bad length")]


# --------------------------------------------------------------------------------------------- views

FEATURE_SCORES_COLUMNS = [
    "run_id", "feature", "density", "max_activation", "n_active", "status", "explanation", "explainer",
    "correlation", "correlation_reason", "lift", "lift_other", "permutation_z", "permutation_p", "spearman",
    "abs_dev_explained", "auroc", "balanced_accuracy", "ece", "binarity", "settings_hash", "error", "cost_usd",
]  # fmt: skip
RUN_COSTS_COLUMNS = [
    "run_id", "name", "status", "training_run", "step", "created_at", "updated_at", "sampled", "pending",
    "scored", "failed", "llm_calls", "failed_calls", "input_tokens", "cached_input_tokens", "cache_write_tokens",
    "output_tokens", "cost_usd", "unpriced_calls",
]  # fmt: skip


def view(path: Path, name: str) -> tuple[list[str], list[dict]]:
    """A view's columns and rows, read as an outside tool would: plain sqlite3, read-only."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        cursor = conn.execute(f"SELECT * FROM {name} ORDER BY 1, 2")
        columns = [d[0] for d in cursor.description]
        return columns, [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def test_views_give_one_row_per_feature_and_per_run(tmp_path):
    samples = [make_sample(f, n_active=10 * (f + 1)) for f in range(4)]
    with new_store(tmp_path) as store:
        store.save_samples(RUN, samples)
        for f in (0, 1, 2):
            store.save_explanation(RUN, make_explanation(f, text=f"words {f}"), calls=[call(0.01)])
        store.save_explanation(RUN, make_explanation(0, "top tokens: a", cost=0.0), source="baseline")
        scores = score_all(store, samples[0])
        only_llm = make_scores(samples[2], make_predictions(samples[2], 1.0))
        sim = Simulation(feature=2, explanation_source="llm", backend="b", mode="sampled", predictions=[[0.0]])
        store.save_scored(RUN, 2, [sim], {"llm": only_llm}, calls=[call(0.02), call(0.03, ok=False, error="x")])
        store.record_failure(RUN, 1, "simulate", "3 values for 4 tokens", calls=[call(0.04, ok=False, error="x")])
        store.create_run("run-2", "second", RunConfig(sae="s"), "sae-fp", "c", {}, training_run="tr", step=5)
        summary = run_summary(store, RUN)
        path = store.path

    columns, rows = view(path, "feature_scores")
    assert columns == FEATURE_SCORES_COLUMNS
    assert [(r["run_id"], r["feature"], r["status"]) for r in rows] == [
        (RUN, 0, "scored"), (RUN, 1, "failed"), (RUN, 2, "scored"), (RUN, 3, "sampled"),
    ]  # fmt: skip
    first, failed, no_controls, pending = rows
    assert first["density"] == pytest.approx(samples[0].stats.density) and first["n_active"] == 10
    assert (first["explanation"], first["explainer"]) == ("words 0", "anthropic:claude-test")
    llm = scores["llm"]
    assert [first[k] for k in ("correlation", "spearman", "auroc", "ece", "binarity")] == pytest.approx(
        [llm.correlation, llm.spearman, llm.auroc, llm.ece, llm.binarity]
    )
    assert first["lift"] == pytest.approx(llm.correlation - scores["baseline"].correlation)
    assert first["lift_other"] == pytest.approx(llm.correlation - scores["other:1"].correlation)
    assert first["error"] is None and first["cost_usd"] == pytest.approx(0.01 + 0.02)
    assert failed["error"] == "simulate: 3 values for 4 tokens" and failed["correlation"] is None
    assert failed["cost_usd"] == pytest.approx(0.01 + 0.04)
    assert no_controls["correlation"] == pytest.approx(only_llm.correlation)
    assert no_controls["lift"] is None and no_controls["lift_other"] is None
    assert pending["explanation"] is None and pending["cost_usd"] == 0.0

    columns, rows = view(path, "run_costs")
    assert columns == RUN_COSTS_COLUMNS
    run, second = rows
    assert [run[k] for k in ("name", "sampled", "pending", "scored", "failed", "llm_calls", "failed_calls")] == [
        "demo-run", 4, 1, 2, 1, 7, 2,
    ]  # fmt: skip
    for key in ("llm_calls", "cost_usd", "input_tokens", "cached_input_tokens", "output_tokens", "sampled"):
        assert run[key] == pytest.approx(summary[key]), key
    assert run["cost_usd"] == pytest.approx(3 * 0.01 + 0.02 + 0.02 + 0.03 + 0.04) and run["unpriced_calls"] == 0
    assert (second["name"], second["training_run"], second["step"]) == ("second", "tr", 5)
    assert [second[k] for k in ("sampled", "scored", "llm_calls", "input_tokens", "cost_usd")] == [0, 0, 0, 0, 0.0]


def test_views_keep_the_reason_of_an_undefined_correlation_the_settings_and_unknown_prices(tmp_path):
    samples = [make_sample(f) for f in range(2)]
    with new_store(tmp_path) as store:
        store.save_samples(RUN, samples)
        constant = [[0.0] * 4 for _ in scoring_windows(samples[0])]
        sim = Simulation(feature=0, explanation_source="llm", backend="b", mode="sampled", predictions=constant)
        settings = {"sampler": {"seed": 0}, "prompts": {}}
        store.save_scored(RUN, 0, [sim], {"llm": make_scores(samples[0], constant)}, settings=settings)
        store.save_scored(
            RUN, 1, [], {"llm": make_scores(samples[1], make_predictions(samples[1], 0.5))}, calls=[call(None)]
        )
        path = store.path
    _, rows = view(path, "feature_scores")
    constant_row, unpriced_row = rows
    assert constant_row["correlation"] is None and constant_row["correlation_reason"] == "constant prediction"
    assert constant_row["settings_hash"] == settings_hash(settings) and unpriced_row["settings_hash"] is None
    assert unpriced_row["correlation_reason"] is None and unpriced_row["cost_usd"] is None  # unknown, not $0
    assert constant_row["cost_usd"] == 0.0  # no call at all costs nothing
    _, (run,) = view(path, "run_costs")
    assert run["cost_usd"] is None and run["unpriced_calls"] == 1 and run["llm_calls"] == 1


def test_pandas_reads_the_views(tmp_path):
    pandas = pytest.importorskip("pandas")
    with new_store(tmp_path) as store:
        store.save_samples(RUN, [make_sample(f) for f in range(3)])
        path = store.path
    with sqlite3.connect(path) as conn:  # the README's one-liner
        frame = pandas.read_sql("SELECT * FROM feature_scores", conn)
    assert list(frame.columns) == FEATURE_SCORES_COLUMNS and list(frame["feature"]) == [0, 1, 2]


def test_a_file_without_views_reads_and_gets_them_when_opened_for_writing(tmp_path):
    with new_store(tmp_path) as store:
        store.save_samples(RUN, [make_sample(0)])
        path = store.path
    with sqlite3.connect(path) as conn:  # as written before the views existed, or with an outdated one
        conn.execute("DROP VIEW feature_scores")
        conn.execute("DROP VIEW run_costs")
        conn.execute("CREATE VIEW run_costs AS SELECT run_id FROM runs")
    with RunStore.open(tmp_path, create=False) as store:
        assert [r.feature for r in store.load_reports(RUN)] == [0]
        assert run_summary(store, RUN)["sampled"] == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name FROM sqlite_master WHERE type = 'view'").fetchall() == [("run_costs",)]
    RunStore.open(tmp_path, create=True).close()

    def schema() -> tuple[int, dict[str, str]]:
        with sqlite3.connect(path) as conn:
            version = conn.execute("PRAGMA schema_version").fetchone()[0]
            return version, dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'view'").fetchall())

    version, views = schema()
    assert views == {name: f"CREATE VIEW {name} AS {select}" for name, select in VIEWS.items()}
    assert view(path, "run_costs")[0] == RUN_COSTS_COLUMNS
    RunStore.open(tmp_path, create=True).close()
    assert schema()[0] == version  # views already current are left alone


# --------------------------------------------------------------------------------------------- schema versions

V1_DUMP = Path(__file__).parent / "data" / "store_v1.sql"
NEW_SCORE_COLUMNS = [
    "abs_dev_explained_centred", "n_calibration_tokens", "detection_threshold_rule", "n_permutations",
    "permutation_mean", "permutation_std", "permutation_z", "permutation_p", "settings_hash",
]  # fmt: skip


def write_v1(run_dir: Path) -> Path:
    """The run database that autointerp wrote at schema version 1 (tests/data/store_v1.sql, made by running
    that version's RunStore): features 0-2; 0 scored with both controls, 1 with a constant prediction."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / DB_NAME
    with sqlite3.connect(path) as conn:
        conn.executescript(V1_DUMP.read_text())
    conn.close()
    return path


def columns_of(path: Path, table: str) -> list[str]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def test_a_version_1_file_is_read_as_it_is_and_upgraded_when_opened_for_writing(tmp_path):
    path = write_v1(tmp_path)
    assert SCHEMA_VERSION == 2
    assert not set(NEW_SCORE_COLUMNS) & set(columns_of(path, "scores"))
    before = path.read_bytes()

    with RunStore.open(tmp_path, create=False) as store:  # read-only: read as it is, never upgraded
        rows = store.llm_score_rows("v1-run", ["correlation", "permutation_z", "settings_hash"])
        read_only_summary = run_summary(store, "v1-run")
        reports = {r.feature: r for r in store.load_reports("v1-run")}
        assert store.run_settings("v1-run") == {} and store.settings_hash_counts("v1-run") == {None: 2}
    assert path.read_bytes() == before
    assert sorted(r["correlation"] is None for r in rows) == [False, True]  # feature 1: constant prediction
    assert all(r["permutation_z"] is None and r["settings_hash"] is None for r in rows)
    assert set(reports[0].controls) == {"baseline", "other"} and reports[2].scores is None
    old = FeatureScores.model_validate_json(reports[0].scores["json"])  # older JSON loads with defaults
    assert old.n_permutations == 0 and old.correlation == pytest.approx(reports[0].scores["correlation"])
    assert read_only_summary["correlation_n"] == 2 and read_only_summary["correlation_n_undefined_as_zero"] == 1
    assert read_only_summary["null_p05_n"] == 0  # the null was never computed in version 1

    with RunStore.open(tmp_path, create=True) as store:  # for writing: upgraded in place
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert run_summary(store, "v1-run") == read_only_summary  # old rows read the same
        sample = store.load_samples("v1-run")[2]
        preds = make_predictions(sample, 0.5)
        sim = Simulation(feature=2, explanation_source="llm", backend="b", mode="sampled", predictions=preds)
        store.save_scored("v1-run", 2, [sim], {"llm": make_scores(sample, preds)}, settings={"k": 1})
        assert store.settings_hash_counts("v1-run") == {None: 2, settings_hash({"k": 1}): 1}
    assert set(NEW_SCORE_COLUMNS) <= set(columns_of(path, "scores"))
    tables = {name for (name,) in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
    assert {"settings", "detection_scores"} <= tables
    _, rows = view(path, "feature_scores")  # the views are made and read the upgraded file
    assert [(r["feature"], r["correlation_reason"]) for r in rows] == [(0, None), (1, "constant prediction"), (2, None)]
    with RunStore.open(tmp_path, create=False) as store:
        assert store.feature_scores("v1-run", "n_permutations") == {0: None, 1: None, 2: 0}


def test_settings_are_stored_once_per_run_and_every_score_row_carries_their_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-settings-secret")
    settings = {"explainer": "openai:gpt@http://x?key=sk-settings-secret", "sampler": {"seed": 3}}
    samples = [make_sample(f) for f in (0, 1)]
    with new_store(tmp_path) as store:
        store.save_samples(RUN, samples)
        for sample in samples:
            preds = make_predictions(sample, 0.5)
            scored = {"llm": make_scores(sample, preds), "baseline": make_scores(sample, preds)}
            store.save_scored(RUN, sample.feature, [], scored, settings=settings)
        digest = settings_hash(settings)
        assert store.settings_hash_counts(RUN) == {digest: 2}
        stored = store.run_settings(RUN)
        path = store.path
    assert list(stored) == [digest] and stored[digest]["sampler"] == {"seed": 3}
    assert "sk-settings-secret" not in stored[digest]["explainer"]  # redacted like every text written
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT DISTINCT settings_hash FROM scores").fetchall() == [(digest,)]
        assert conn.execute("SELECT count(*) FROM settings").fetchone() == (1,)


def test_call_totals_say_when_a_price_is_unknown(tmp_path):
    with new_store(tmp_path) as store:
        store.save_samples(RUN, [make_sample(0)])
        store.save_explanation(RUN, make_explanation(0), calls=[call(0.01), call(0.02)])
        assert store.call_totals(RUN)["cost_usd"] == pytest.approx(0.03)
        assert store.call_totals(RUN)["unpriced_calls"] == 0
        store.record_failure(RUN, 0, "simulate", "x", calls=[call(None)])
        totals = store.call_totals(RUN)
    assert totals["cost_usd"] is None and totals["unpriced_calls"] == 1 and totals["llm_calls"] == 3


# --------------------------------------------------------------------------------------------- refusals


def test_newer_schema_is_refused(tmp_path):
    new_store(tmp_path).close()
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 98}")
    for create in (False, True):
        with pytest.raises(
            StoreError, match=rf"schema version {SCHEMA_VERSION + 98}.*version {SCHEMA_VERSION} or older"
        ):
            RunStore.open(tmp_path, create=create)


@pytest.mark.parametrize("content", [b"this is not a database\n" * 50, b"SQLite format 3\x00" + bytes(range(256)) * 20])
def test_corrupt_file_is_refused_untouched(tmp_path, content):
    path = tmp_path / DB_NAME
    path.write_bytes(content)
    for create in (False, True):
        with pytest.raises(StoreError, match=str(path)):
            RunStore.open(tmp_path, create=create)
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == [DB_NAME]


def test_foreign_sqlite_and_missing_files_are_refused(tmp_path):
    with pytest.raises(StoreError, match="no such file"):
        RunStore.open(tmp_path / "nothing", create=False)
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        conn.execute("CREATE TABLE birds (name TEXT)")
    with pytest.raises(StoreError, match="birds"):
        RunStore.open(tmp_path, create=True)


# Run in a child process so that, under root, it can drop the power to ignore file permissions.
READ_ONLY_CHECK = """
import sys
from pathlib import Path
from autointerp.errors import StoreError
from autointerp.store import RunStore
run_dir = Path(sys.argv[1])
try:
    RunStore.open(run_dir, create=True)
except StoreError as exc:
    print("refused:", exc)
with RunStore.open(run_dir, create=False) as store:
    print("read:", store.latest_run_id())
"""


@pytest.mark.parametrize("read_only", ["directory", "file"])
def test_read_only_directory_or_file_is_refused_for_writing_and_read(tmp_path, read_only):
    new_store(tmp_path).close()
    command = [sys.executable, "-c", READ_ONLY_CHECK, str(tmp_path)]
    if os.geteuid() == 0:
        capsh = shutil.which("capsh")
        if capsh is None:
            pytest.skip("root ignores file permissions and capsh is missing to drop that power")
        command = [
            capsh,
            "--drop=cap_dac_override,cap_dac_read_search,cap_fowner",
            "--",
            "-c",
            shlex.join(command),
        ]
    target = tmp_path if read_only == "directory" else tmp_path / DB_NAME
    before = (tmp_path / DB_NAME).read_bytes()
    target.chmod(0o500 if read_only == "directory" else 0o400)
    try:
        result = subprocess.run(
            command, check=False, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[1]
        )
    finally:
        target.chmod(0o700 if read_only == "directory" else 0o600)
    assert result.returncode == 0, result.stderr
    assert f"read-only {read_only}" in result.stdout and f"read: {RUN}" in result.stdout
    assert (tmp_path / DB_NAME).read_bytes() == before


def test_read_only_disk_is_refused_for_writing_and_read_for_reading(tmp_path, monkeypatch):
    with new_store(tmp_path) as store:
        store.save_samples(RUN, [make_sample(2)])
    before = (tmp_path / DB_NAME).read_bytes()
    # What os.access answers on a read-only mount (root included: EROFS).
    monkeypatch.setattr(os, "access", lambda path, mode: not mode & os.W_OK)
    with pytest.raises(StoreError, match="read-only"):
        RunStore.open(tmp_path, create=True)
    with RunStore.open(tmp_path, create=False) as store:  # opened immutable: no -shm is needed
        assert [s.feature for s in store.load_samples(RUN)] == [2]
    assert (tmp_path / DB_NAME).read_bytes() == before


def test_writing_through_a_read_only_store_is_refused(tmp_path):
    new_store(tmp_path).close()
    with RunStore.open(tmp_path, create=False) as store, pytest.raises(StoreError, match="opened read-only"):
        store.save_samples(RUN, [make_sample(0)])


# --------------------------------------------------------------------------------------------- secrets


def test_secrets_from_the_environment_are_never_written(tmp_path, monkeypatch):
    secret = "sk-test-secret"
    monkeypatch.setenv("ANTHROPIC_API_KEY", secret)
    sample = make_sample(0)
    with RunStore.open(tmp_path, create=True) as store:
        # The secret reaches every kind of text column: a config value, an LLM answer, an error message.
        config = RunConfig(sae="demo", llm=LLMConfig(explainer=f"anthropic:claude?key={secret}"))
        store.create_run(RUN, "run", config, "sae-fp", "corpus-fp")
        store.save_samples(RUN, [sample, make_sample(1)])
        expl = make_explanation(0).model_copy(update={"raw_completion": f"my key is {secret}"})
        store.save_explanation(RUN, expl, calls=[call()])
        store.save_explanation(RUN, make_explanation(0), source="baseline")
        score_all(store, sample)
        store.record_failure(
            RUN, 1, "explain", f"401: bad key {secret}", calls=[call(0.0, ok=False, error=f"key {secret}")]
        )
        store.set_run_status(RUN, "done")
        assert store.load_explanations(RUN)[0].raw_completion == "my key is [redacted]"
        assert store.load_reports(RUN)[1].errors == ["explain: 401: bad key [redacted]"]
    files = list(tmp_path.iterdir())
    assert files and all(secret.encode() not in p.read_bytes() for p in files)


# --------------------------------------------------------------------------------------------- detection


def test_detection_columns_are_the_scorers():
    from autointerp.scorers.detection import COLUMNS
    from autointerp.store.schema import DETECTION_COLUMNS

    assert tuple(DETECTION_COLUMNS) == COLUMNS


def judged(sample: FeatureSample, source: str = "llm"):
    import asyncio

    from autointerp.baseline import baseline_explanation
    from autointerp.llm import make_backend
    from autointerp.scorers import ScoringItem, make_scorer

    text = baseline_explanation(sample.split("explain"), sample.stats.max_activation, "floor")
    scorer = make_scorer("detection", make_backend("baseline"), RunConfig(sae="demo"))
    return asyncio.run(scorer.score(ScoringItem(sample=sample, explanation=text, source=source)))


def test_detection_rows_land_with_the_simulation_in_one_transaction_and_read_back(tmp_path):
    sample = make_sample(2)
    preds = make_predictions(sample, 0.5)
    sim = Simulation(feature=2, explanation_source="llm", backend="b", mode="sampled", predictions=preds)
    detections = [judged(sample), judged(sample, "baseline")]
    detect_call = call(0.01).model_copy(update={"stage": "detect"})
    with new_store(tmp_path) as store:
        store.save_samples(RUN, [sample])
        store.save_scored(
            RUN, 2, [sim], {"llm": make_scores(sample, preds)}, calls=[call(0.02), detect_call],
            settings={"scorer": "simulation"}, detections=detections, detection_settings={"scorer": "detection"},
            errors=[("detect", "one prompt failed")],
        )  # fmt: skip
        report = store.load_reports(RUN)[0]
        assert set(report.detection) == {"llm", "baseline"}
        row = report.detection["llm"]
        assert row["balanced_accuracy"] == detections[0].metrics.balanced_accuracy and row["mode"] == "baseline"
        assert row["settings_hash"] == settings_hash({"scorer": "detection"})
        assert row["n_windows"] == 3 and row["yes_rate_top"] == detections[0].yes_rates["top"]
        assert json.loads(row["json"])["said_yes"] == detections[0].said_yes and "calls" not in json.loads(row["json"])
        assert report.errors == ["detect: one prompt failed"] and store.stage_counts(RUN) == {"scored": 1}
        stages = store.db.execute("SELECT stage FROM llm_calls ORDER BY id").fetchall()
        assert stages == [("explain",), ("detect",)]  # each call under its own stage
        # saved again without detection: the old rows go
        store.save_scored(RUN, 2, [sim], {"llm": make_scores(sample, preds)})
        assert store.detection_rows(RUN, ["recall"]) == {}
        with pytest.raises(ValueError, match="detection_rows column"):
            store.detection_rows(RUN, ["recall; DROP TABLE runs"])
        with pytest.raises(ValueError, match="results of features"):
            store.save_scored(RUN, 3, [], {}, detections=[judged(sample)])
