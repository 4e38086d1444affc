"""Ctrl-C during the LLM stages of a real `autointerp run` (a subprocess, a real SQLite file, the real Anthropic SDK
talking to a loopback server): the run exits within seconds, marks itself interrupted, keeps every finished
judgement of the features still in flight, and the resumed run asks the LLM only for what was not kept.

The run folder is prepared without the subject model: a small SAE on disk, a run created with the config the same
command line builds, and samples stored, so `autointerp run` skips sampling and goes straight to the LLM stages.
"""

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers_sae import write_sae
from loopback_llm import start_loopback
from test_run import llm_answers
from test_store import make_sample

from autointerp.cli import build_config, parser
from autointerp.pipeline import with_model_name
from autointerp.sae import load_sae, sae_fingerprint
from autointerp.store import RunStore

N_FEATURES = 12
KEY = {"ANTHROPIC_API_KEY": "sk-ant-test-interrupt-0000"}


def prepared_run(root: Path) -> tuple[Path, list[str]]:
    """A run folder holding samples of N_FEATURES features; the argv that resumes it (LLM flags come later)."""
    sae = write_sae(
        root, "jumprelu", d_in=576, d_sae=64, hook_name="blocks.3.hook_resid_post", model_name="smollm2-135m"
    )
    run_dir = root / "run"
    argv = ["--sae", str(sae), "--run-dir", str(run_dir), "--features", f"0-{N_FEATURES - 1}"]
    cfg = with_model_name(build_config(parser().parse_args(["run", *argv])))  # as `autointerp run` stores it
    with RunStore.open(run_dir, create=True) as store:
        store.create_run("run-1", "run", cfg, sae_fingerprint(load_sae(str(sae))), "corpus-fp")
        store.save_samples("run-1", [make_sample(f) for f in range(N_FEATURES)])
    return run_dir, argv


def cli(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "autointerp.cli", "run", *argv],
        env={**os.environ, **KEY, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stderr_until(proc: subprocess.Popen, marker: str) -> tuple[str, float]:
    """The process's stderr read up to the line holding `marker`, and the seconds that took."""
    started, lines = time.monotonic(), []
    for line in proc.stderr:
        lines.append(line)
        if marker in line:
            break
    return "".join(lines), time.monotonic() - started


def count(run_dir: Path, sql: str) -> int:
    with sqlite3.connect(f"file:{run_dir / 'autointerp.sqlite'}?mode=ro", uri=True) as conn:
        try:
            return conn.execute(sql).fetchone()[0]
        except sqlite3.OperationalError:  # a table this version of the code never made
            return 0


def test_ctrl_c_keeps_finished_judgements_and_the_resumed_run_does_not_ask_again(tmp_path):
    run_dir, argv = prepared_run(tmp_path)
    whole_dir = tmp_path / "whole"
    shutil.copytree(run_dir, whole_dir)
    with start_loopback(responder=llm_answers) as server:
        llm = ["--explainer", f"anthropic:claude-test@{server.url}", "--max-in-flight", "1"]

        # uninterrupted, on a copy: how many requests the whole LLM stage takes
        whole = cli([a if a != str(run_dir) else str(whole_dir) for a in argv] + llm)
        out, err = whole.communicate(timeout=300)
        assert whole.returncode == 0, err
        needed = server.count
        assert needed == count(whole_dir, "SELECT count(*) FROM llm_calls")  # one call per request, no faults

        # interrupted once some scorer results of a feature still in flight are stored
        server.reset()
        server.latency_s = 0.15
        proc = cli(argv + llm)
        deadline = time.time() + 240
        while proc.poll() is None and time.time() < deadline:
            if count(run_dir, "SELECT count(*) FROM scorer_results") >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be interrupted: " + proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        err, said_s = stderr_until(proc, "autointerp: interrupted")
        out, rest = proc.communicate(timeout=120)
        err += rest
        assert proc.returncode == 130, err
        # The run's own part ends within seconds (the process then tears torch down, itself seconds on a busy CPU).
        assert said_s < 5, f"took {said_s:.1f} s to stop after Ctrl-C"
        note = re.search(r"Interrupted while scoring: .*", out)
        assert note, out
        assert "run the same command again" in err and "finished work is stored" not in err

        kept_calls = count(run_dir, "SELECT count(*) FROM llm_calls")
        in_flight_kept = count(
            run_dir,
            "SELECT count(*) FROM llm_calls c JOIN feature_status s USING (run_id, feature) "
            "WHERE s.stage != 'scored' AND c.stage IN ('simulate', 'detect')",
        )
        assert in_flight_kept > 0  # judgements of features not yet scored survived the interrupt
        assert count(run_dir, "SELECT count(*) FROM runs WHERE status = 'interrupted'") == 1
        assert count(run_dir, "SELECT count(*) FROM feature_status WHERE stage = 'scored'") < N_FEATURES

        # resumed: only what was not kept is asked for
        server.reset()
        server.latency_s = 0.0
        proc = cli(argv + llm)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert server.count == needed - kept_calls
    assert count(run_dir, "SELECT count(*) FROM feature_status WHERE stage = 'scored'") == N_FEATURES
    assert count(run_dir, "SELECT count(*) FROM scorer_results") == 0  # final rows written, partial ones gone
    assert count(run_dir, "SELECT count(*) FROM llm_calls") == needed  # the ledger holds every call exactly once
    scores = "SELECT feature, explanation_source, round(correlation, 9) FROM scores ORDER BY 1, 2"
    with (
        sqlite3.connect(run_dir / "autointerp.sqlite") as a,
        sqlite3.connect(whole_dir / "autointerp.sqlite") as b,
    ):
        assert a.execute(scores).fetchall() == b.execute(scores).fetchall()
        detections = "SELECT feature, explanation_source, n_said_yes FROM detection_scores ORDER BY 1, 2"
        assert a.execute(detections).fetchall() == b.execute(detections).fetchall()


@pytest.mark.parametrize("stage", ["explaining"])
def test_the_interrupt_note_counts_what_was_kept(stage):
    from autointerp.interpret import Tally, interrupted_note

    tally = Tally()
    tally.explained, tally.done, tally.kept, tally.calls = 4, 1, 3, 9
    text = interrupted_note(stage, tally)
    assert text.startswith(f"Interrupted while {stage}: 4 explanation(s) and 1 fully scored feature(s)")
    assert "3 finished judgement(s)" in text and "9 LLM call(s)" in text
    tally.kept = 0
    assert "judgement" not in interrupted_note(stage, tally)
