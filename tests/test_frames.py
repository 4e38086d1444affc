"""`autointerp.load(run_dir)`: the run database as pandas DataFrames, one row per stored row."""

import sqlite3
import sys

import pytest
import torch
from helpers_sae import make_sae

import autointerp
from autointerp.api import score_checkpoint
from autointerp.store import RunStore


@pytest.fixture(scope="module")
def two_checkpoints(tiny_model, tmp_path_factory):
    db = tmp_path_factory.mktemp("frames") / "db"
    tokens = torch.randint(3, 300, (32, 40), generator=torch.Generator().manual_seed(0))
    tokens[:, 0] = 1
    for step, n in ((0, 3), (100, 4)):
        sae = make_sae("standard", d_in=16, d_sae=32, hook_name="blocks.1.hook_resid_post", seed=step)
        score_checkpoint(sae, tiny_model, tokens, db=db, training_run="tr", step=step, n_features=n)
    return db


def test_load_gives_one_frame_per_table_with_the_stored_rows(two_checkpoints):
    frames = autointerp.load(two_checkpoints)
    with sqlite3.connect(two_checkpoints / "autointerp.sqlite") as db:
        counts = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("features", "scores", "runs")}
        logits = db.execute("SELECT count(*) FROM feature_logits").fetchone()[0]
    assert len(frames.features) == counts["features"] == 7  # 3 + 4 sampled features
    assert len(frames.scores) == counts["scores"] and set(frames.scores.explanation_source.str[:5]) >= {"llm"}
    assert len(frames.runs) == 2 and sorted(frames.runs.step) == [0, 100]
    assert len(frames.logits) == logits == 7 * 20
    assert "json" not in frames.scores.columns and "json" not in frames.detection.columns
    assert {"input_tokens", "cost_usd", "latency_s"} <= set(frames.calls.columns)  # baseline: no calls, same columns
    # The features frame agrees with the store's own reader, feature by feature.
    with RunStore.open(two_checkpoints, create=False) as store:
        for run in store.list_runs():
            for report in store.load_reports(run["run_id"]):
                row = frames.features[
                    (frames.features.run_id == run["run_id"]) & (frames.features.feature == report.feature)
                ].iloc[0]
                assert row.explanation == report.explanation.text
                assert row.max_activation == pytest.approx(report.stats.max_activation)


def test_load_one_run(two_checkpoints):
    with RunStore.open(two_checkpoints, create=False) as store:
        run_id = next(r["run_id"] for r in store.list_runs() if r["step"] == 100)
    frames = autointerp.load(two_checkpoints, run_id=run_id)
    assert set(frames.features.run_id) == {run_id} and len(frames.features) == 4
    with pytest.raises(Exception, match="no-such-run"):
        autointerp.load(two_checkpoints, run_id="no-such-run")


def test_without_pandas_the_error_says_how_to_get_it(two_checkpoints, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # what `import pandas` meets when it is not installed
    with pytest.raises(ImportError, match=r"autointerp\[frames\]"):
        autointerp.load(two_checkpoints)
