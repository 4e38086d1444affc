"""Tests for autointerp/store/ on real SQLite files in tmp_path, with hand-made records."""

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


def call(cost: float = 0.01, *, feature: int = 0, ok: bool = True, error: str | None = None) -> CallRecord:
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
    "correlation", "lift", "lift_other", "spearman", "abs_dev_explained", "auroc", "balanced_accuracy", "ece",
    "binarity", "error", "cost_usd",
]  # fmt: skip
RUN_COSTS_COLUMNS = [
    "run_id", "name", "status", "training_run", "step", "created_at", "updated_at", "sampled", "pending",
    "scored", "failed", "llm_calls", "failed_calls", "input_tokens", "cached_input_tokens", "cache_write_tokens",
    "output_tokens", "cost_usd",
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
    assert run["cost_usd"] == pytest.approx(3 * 0.01 + 0.02 + 0.02 + 0.03 + 0.04)
    assert (second["name"], second["training_run"], second["step"]) == ("second", "tr", 5)
    assert [second[k] for k in ("sampled", "scored", "llm_calls", "input_tokens", "cost_usd")] == [0, 0, 0, 0, 0.0]


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
