"""Exit statuses and the last screen of `autointerp run` (README, "Exit status"): 1 with grouped failure
reasons and the retry command when features failed, 0 with the next commands when none did, 3 for a full
disk (said as such, not as a damaged file)."""

import os
import shlex
import sqlite3
from pathlib import Path

import pytest
from loopback_llm import start_loopback

from autointerp.cli import main
from autointerp.config import RunConfig
from autointerp.errors import EXIT_FEATURES_FAILED, EXIT_INPUT, EXIT_OK, EXIT_STORE, DiskFull
from autointerp.store import RunStore

DEMO = ["--sae", "demo", "--n-tokens", "2048", "--n-features", "2"]


def command_after(out: str, marker: str) -> list[str]:
    """The argv of the `autointerp ...` line printed after the line containing `marker`."""
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if marker in line)
    words = shlex.split(lines[at + 1].split("#")[0])
    assert words[0] == "autointerp"
    return words[1:]


def stored_llm(run_dir: Path) -> dict:
    with RunStore.open(run_dir, create=False) as store:
        return store.get_run(store.latest_run_id())["config"]["llm"]


@pytest.mark.slow
def test_failed_features_exit_1_with_reasons_and_retry_then_a_good_run_exits_0(tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    argv = [*DEMO, "--run-dir", str(run_dir)]
    assert main(["sample", *argv]) == EXIT_OK
    assert stored_llm(run_dir)["explainer"] is None

    # a bad backend after sampling: refused before anything is stored, so it blocks nothing later
    assert main(["run", *argv, "--explainer", "nonsense:x"]) == EXIT_INPUT
    assert stored_llm(run_dir)["explainer"] is None
    capsys.readouterr()

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-secret-123456")
    with start_loopback(faults=["401"] * 1000) as server:  # every call refused, as with a revoked key
        spec = f"anthropic:claude-test@{server.url}"
        failing = ["run", *argv, "--explainer", spec, "--simulator", spec]
        assert main(failing) == EXIT_FEATURES_FAILED
        out = capsys.readouterr().out
        assert "2 feature(s) failed" in out
        reason = next(line for line in out.splitlines() if line.strip().startswith("2  explain:"))
        assert "401" in reason and "feature 1" not in reason, out  # one group of both features, with its reason
        retry = command_after(out, "retry only those features")
        assert retry == [*failing, "--retry-failed"]
        assert main(retry) == EXIT_FEATURES_FAILED  # the printed command runs (and fails again: same key)
        capsys.readouterr()
    assert stored_llm(run_dir)["explainer"] == spec

    # No LLM explanation is stored, so the explainer may change on resume (it used to be refused, exit 3).
    fixed = ["run", *argv, "--explainer", "baseline", "--simulator", "baseline", "--retry-failed"]
    assert main(fixed) == EXIT_OK
    out = capsys.readouterr().out
    assert stored_llm(run_dir)["explainer"] == "baseline"
    assert "feature(s) failed" not in out
    show = command_after(out, "Next:")
    assert show[:2] == ["show", str(run_dir)]
    assert main(show) == EXIT_OK
    export = command_after(out, "autointerp show")
    assert export[:2] == ["export", str(run_dir)] and "html" in export
    assert main(export) == EXIT_OK and (run_dir / "html").is_dir()
    capsys.readouterr()

    # A full disk under an export says so (ENOSPC from /dev/full), with the store's exit status.
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    out_dir = tmp_path / "jsonl"
    out_dir.mkdir()
    for name in ("explanations.jsonl", "features.jsonl", "scores.jsonl"):
        os.symlink("/dev/full", out_dir / name)
    code = main(["export", str(run_dir), "--format", "jsonl", "--out", str(out_dir)])
    err = capsys.readouterr().err
    assert code == EXIT_STORE and "the disk is full" in err and "Traceback" not in err, err


def test_a_full_database_reads_as_a_full_disk_not_a_damaged_file(tmp_path):
    """SQLite's own SQLITE_FULL ("database or disk is full"), made real by capping the file's page count."""
    with RunStore.open(tmp_path, create=True) as store:
        pages = store.db.execute("PRAGMA page_count").fetchone()[0]
        store.db.execute(f"PRAGMA max_page_count = {pages}")
        config = RunConfig(sae="demo", model="x" * 20_000)  # more than the free pages hold
        with pytest.raises(DiskFull) as full:
            store.create_run("r1", "demo", config, "sae", "corpus")
    message = str(full.value)
    assert "disk is full" in message and "damaged" in message and "unusable" not in message
    assert full.value.exit_code == EXIT_STORE
    with sqlite3.connect(tmp_path / "autointerp.sqlite") as conn:  # the file is fine and still opens
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (0,)
