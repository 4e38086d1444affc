"""Tests for autointerp/redraws.py: fresh window draws, their storage and the spread readers give."""

import sqlite3

import pytest
from test_store import make_sample, store_window

from autointerp.redraws import SEED_STEP, held_out, redraw_seed
from autointerp.scoring.redraw_spread import per_feature_spread, redraw_spread


def test_held_out_drops_windows_from_contexts_the_explainer_saw():
    original = make_sample(3)  # explain window: context 300
    seen = store_window(3, 0, "top", "score", 3.5)  # the same context 300, now in the score split
    fresh = store_window(3, 9, "top", "score", 2.0)
    explain = store_window(3, 8, "top", "explain", 4.0)
    redrawn = original.model_copy(update={"windows": [seen, fresh, explain]})
    sample, dropped = held_out(redrawn, original)
    assert [w.context_id for w in sample.split("score")] == [309] and dropped == 1
    assert sample.stats == original.stats  # quantisation against the same max


def test_redraw_seeds_differ_from_the_run_and_from_each_other():
    assert [redraw_seed(5, k) for k in (1, 2)] == [5 + SEED_STEP, 5 + 2 * SEED_STEP]


def test_per_feature_spread_counts_undefined_as_zero_only_for_correlation_type():
    assert per_feature_spread([0.4, None, 0.2], as_zero=True) == (pytest.approx(0.2), 3)
    assert per_feature_spread([0.4, None, 0.2], as_zero=False) == (pytest.approx(0.1414213562), 2)
    assert per_feature_spread([0.4], as_zero=False) == (None, 1)


def test_redraw_spread_joins_the_runs_own_value_with_its_redraws():
    own = {"correlation": {1: 0.5, 2: 0.1}, "detection_balanced_accuracy": {1: 0.9}}
    rows = [
        {"feature": 1, "scorer": "simulation", "correlation": 0.3},
        {"feature": 1, "scorer": "simulation", "correlation": 0.7},
        {"feature": 1, "scorer": "detection", "balanced_accuracy": 0.7, "detection_auroc": None},
    ]
    spread = redraw_spread(own, rows)
    assert spread["correlation"] == {1: (pytest.approx(0.2), 3)}  # feature 2 was not redrawn
    assert spread["detection_balanced_accuracy"][1] == (pytest.approx(0.1414213562), 2)
    assert spread["detection_auroc"][1] == (None, 0)


@pytest.mark.slow
def test_redraws_end_to_end_store_rows_summary_table_and_show(tmp_path, capsys):
    from autointerp.cli import main
    from autointerp.tables import run_table

    run_dir = tmp_path / "r"
    argv = ["--sae", "demo", "--n-tokens", "3000", "--n-features", "3", "--run-dir", str(run_dir)]
    argv += ["--explainer", "baseline", "--simulator", "baseline", "--redraws", "2"]
    assert main(["run", *argv]) == 0
    out = capsys.readouterr().out
    assert "fresh-draw std" in out and "draws per redrawn feature" in out and "3 (the run's" in out
    with sqlite3.connect(run_dir / "autointerp.sqlite") as conn:
        rows = conn.execute("SELECT feature, redraw, scorer, sampler_seed, n_windows FROM redraw_scores").fetchall()
        explained = {f for (f,) in conn.execute("SELECT feature FROM explanations WHERE source = 'llm'")}
    assert {(r[1], r[3]) for r in rows} == {(1, SEED_STEP), (2, 2 * SEED_STEP)}
    assert {r[0] for r in rows} == explained and {r[2] for r in rows} == {"simulation", "detection"}
    assert all(n >= 1 for *_, n in rows)
    (row,) = run_table([run_dir])
    assert row["redraw_std_correlation_n"] == 3 and row["redraw_std_correlation_mean"] is not None
    feature = min(explained)
    assert main(["show", str(run_dir), str(feature)]) == 0
    shown_text = capsys.readouterr().out
    assert "fresh window draws" in shown_text and str(SEED_STEP) in shown_text
    # a second run of the same command redraws nothing (resumable) and keeps the rows
    assert main(["run", *argv]) == 0
    with sqlite3.connect(run_dir / "autointerp.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM redraw_scores").fetchone()[0] == len(rows)
