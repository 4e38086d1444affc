"""`autointerp run` end to end on a real model, SQLite file and LLM SDKs: kill/resume, faults, bad input.

One sampling pass (session fixture) feeds every test: each copies the stored samples into its own run
directory, so the LLM stages run for real without loading the model again.
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

from autointerp.cli import main
from autointerp.run_summary import run_summary
from autointerp.store import RunStore

pytestmark = pytest.mark.slow
N_FEATURES = 120


@pytest.fixture(scope="session")
def sampled(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    sae = write_sae(
        root,
        "jumprelu",
        d_in=576,
        d_sae=256,
        hook_name="blocks.3.hook_resid_post",
        model_name="smollm2-135m",
        context_size=64,
    )
    run_dir = root / "sampled"
    argv = ["--sae", str(sae), "--n-tokens", "4000", "--n-features", str(N_FEATURES), "--run-dir", str(run_dir)]
    assert main(["sample", *argv]) == 0
    return sae, run_dir, argv


def copy_run(sampled, target: Path) -> list[str]:
    sae, run_dir, argv = sampled
    shutil.copytree(run_dir, target)
    return [a if a != str(run_dir) else str(target) for a in argv]


def cli(*argv, env=None, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "autointerp.cli", *argv],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def rows(run_dir: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(f"file:{run_dir / 'autointerp.sqlite'}?mode=ro", uri=True) as conn:
        return conn.execute(sql).fetchall()


SCORES = "SELECT feature, explanation_source, correlation, auroc, ece, binarity, lift FROM scores ORDER BY 1, 2"


def test_sigkill_mid_llm_stage_then_resume_matches_an_uninterrupted_run(sampled, tmp_path):
    baseline = ["--explainer", "baseline", "--simulator", "baseline"]
    whole = copy_run(sampled, tmp_path / "whole")
    proc = cli("run", *whole, *baseline)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()

    killed = copy_run(sampled, tmp_path / "killed")
    proc = cli("run", *killed, *baseline)
    scored_at_kill = 0
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        scored_at_kill = rows(tmp_path / "killed", "SELECT count(*) FROM feature_status WHERE stage = 'scored'")[0][0]
        if scored_at_kill:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed mid-way"
    assert 0 < scored_at_kill < N_FEATURES

    proc = cli("run", *killed, *baseline)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert "skipping sampling" in proc.stdout.read()
    final = rows(tmp_path / "killed", SCORES)
    assert final == rows(tmp_path / "whole", SCORES)
    assert len(final) == len(set((f, s) for f, s, *_ in final))  # no duplicate rows
    assert {f for f, *_ in final} == {f for (f,) in rows(tmp_path / "whole", "SELECT feature FROM features")}


def llm_answers(kind: str, body: dict) -> str:
    system = str(body.get("system", ""))
    if "Explanation:" in system:
        return "Explanation: words about kings and lords"
    if "You judge whether" in system:  # detection: one yes/no line per excerpt of the last message
        last = body["messages"][-1]["content"]
        text = last if isinstance(last, str) else "".join(part.get("text", "") for part in last)
        n = len(re.findall(r"^Excerpt \d+:", text, flags=re.M))
        return "\n".join(f"{i + 1}: {'yes' if i % 2 else 'no'}" for i in range(n))
    return "Activations: 1:2=5, 2:1=10"


def test_faults_are_recorded_per_feature_and_retry_failed_completes_them(sampled, tmp_path):
    argv = copy_run(sampled, tmp_path / "faults")
    with start_loopback(responder=llm_answers) as server:
        spec = f"anthropic:claude-test@{server.url}"
        env = {"ANTHROPIC_API_KEY": "sk-ant-test-secret-123456"}
        server.reset(faults=["400"] * 5 + ["ok", "503", "ok", "500", "429:retry-after=0"] * 4)
        proc = cli("run", *argv, "--explainer", spec, "--max-in-flight", "4", env=env)
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 1, err  # some features failed (README, "Exit status")
        assert "5 feature(s) failed" in out and "--retry-failed" in out
        failed = rows(tmp_path / "faults", "SELECT feature, stage, message FROM errors WHERE resolved = 0")
        assert len(failed) == 5 and all("400" in message for *_, message in failed)
        scored = rows(tmp_path / "faults", "SELECT count(DISTINCT feature) FROM scores")[0][0]
        assert scored == N_FEATURES - 5
        detected = rows(tmp_path / "faults", "SELECT count(DISTINCT feature) FROM detection_scores")[0][0]
        assert detected == N_FEATURES - 5  # both scorers ran by default on an API backend
        stages = {s for (s,) in rows(tmp_path / "faults", "SELECT DISTINCT stage FROM llm_calls")}
        assert stages == {"explain", "simulate", "detect"}

        server.reset(faults=[])
        proc = cli("run", *argv, "--explainer", spec, "--max-in-flight", "4", "--retry-failed", env=env)
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    assert rows(tmp_path / "faults", "SELECT count(*) FROM errors WHERE resolved = 0") == [(0,)]
    assert rows(tmp_path / "faults", "SELECT count(DISTINCT feature) FROM scores")[0][0] == N_FEATURES
    database = b"".join(p.read_bytes() for p in (tmp_path / "faults").iterdir())
    assert b"sk-ant-test-secret" not in database


def test_a_run_directory_from_another_sae_is_refused(sampled, tmp_path, capsys):
    argv = copy_run(sampled, tmp_path / "other")
    other_sae = write_sae(
        tmp_path / "sae2",
        "jumprelu",
        d_in=576,
        d_sae=256,
        hook_name="blocks.3.hook_resid_post",
        model_name="smollm2-135m",
        context_size=64,
        seed=7,
    )
    argv[argv.index("--sae") + 1] = str(other_sae)
    before = (tmp_path / "other" / "autointerp.sqlite").read_bytes()
    code = main(["run", *argv, "--explainer", "baseline", "--simulator", "baseline"])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert "other settings" in err and "sae" in err
    assert (tmp_path / "other" / "autointerp.sqlite").read_bytes() == before


def test_changed_result_settings_are_refused_on_resume(sampled, tmp_path, capsys):
    argv = copy_run(sampled, tmp_path / "changed")
    code = main(["run", *argv, "--window-size", "16", "--explainer", "baseline", "--simulator", "baseline"])
    err = capsys.readouterr().err
    assert code != 0 and "sampler.window_size: stored 32, now 16" in err


def test_corrupt_database_is_refused_and_left_as_it_was(sampled, tmp_path, capsys):
    argv = copy_run(sampled, tmp_path / "corrupt")
    db = tmp_path / "corrupt" / "autointerp.sqlite"
    db.write_bytes(b"this is not a database" * 100)
    code = main(["run", *argv, "--explainer", "baseline", "--simulator", "baseline"])
    err = capsys.readouterr().err
    assert code != 0 and "autointerp.sqlite" in err and "Traceback" not in err
    assert db.read_bytes() == b"this is not a database" * 100


def test_read_only_run_directory_gives_a_clear_error_and_keeps_the_data(sampled, tmp_path):
    if not shutil.which("capsh"):
        pytest.skip("capsh (libcap2-bin) is needed to drop root's override of file permissions")
    argv = copy_run(sampled, tmp_path / "readonly")
    run_dir = tmp_path / "readonly"
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    os.chmod(run_dir, 0o555)
    for p in run_dir.iterdir():
        os.chmod(p, 0o444)
    try:
        command = " ".join(
            [sys.executable, "-m", "autointerp.cli", "run", *argv, "--explainer", "baseline", "--simulator", "baseline"]
        )
        proc = subprocess.run(
            ["capsh", "--drop=cap_dac_override,cap_dac_read_search", "--", "-c", command],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        os.chmod(run_dir, 0o755)
    assert proc.returncode != 0
    assert "read-only" in proc.stderr.lower() or "not writable" in proc.stderr.lower(), proc.stderr
    assert "Traceback" not in proc.stderr
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_show_and_table_read_a_finished_run(sampled, tmp_path, capsys):
    argv = copy_run(sampled, tmp_path / "done")
    assert main(["run", *argv, "--explainer", "baseline", "--simulator", "baseline"]) == 0
    capsys.readouterr()
    feature = rows(tmp_path / "done", "SELECT min(feature) FROM features")[0][0]
    assert main(["show", str(tmp_path / "done"), str(feature)]) == 0
    out = capsys.readouterr().out
    assert f"feature {feature}" in out and "[baseline] top tokens" in out and "calibration" in out
    assert main(["table", str(tmp_path / "done"), "--format", "csv"]) == 0
    assert "correlation_mean" in capsys.readouterr().out
    with RunStore.open(tmp_path / "done", create=False) as store:
        assert run_summary(store, store.latest_run_id())["scored"] == N_FEATURES
    assert main(["compare", str(tmp_path / "done"), str(tmp_path / "done")]) == 0
    out = capsys.readouterr().out
    assert "Same SAE" in out and "B - A [95% CI]" in out
    for kind in ("neuronpedia", "saedashboard", "jsonl", "html"):
        assert main(["export", str(tmp_path / "done"), "--format", kind, "--out", str(tmp_path / kind)]) == 0
        assert any((tmp_path / kind).iterdir())
