"""One writer per run folder (autointerp.run_lock): a second `run`/`sample` is refused at once naming the
holder, a killed holder leaves no lock behind, and readers work while a writer holds the folder."""

import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autointerp.cli import main
from autointerp.errors import EXIT_OK, EXIT_STORE
from autointerp.run_lock import LOCK_NAME, RunFolderBusy, RunLock, holds

DEMO = "--sae demo --n-tokens 2048 --n-features 2 --explainer baseline --simulator baseline".split()
HOLDER = (
    "import sys, time\n"
    "from autointerp.run_lock import RunLock\n"
    "RunLock(sys.argv[1]).acquire()\n"
    "print('held', flush=True)\n"
    "time.sleep(600)\n"
)


def hold_in_another_process(run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def autointerp(*argv: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(
        [sys.executable, "-m", "autointerp.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_the_lock_is_exclusive_across_processes_and_dies_with_its_holder(tmp_path, capsys):
    run_dir = tmp_path / "run"
    holder = hold_in_another_process(run_dir)
    try:
        with pytest.raises(RunFolderBusy) as refused:
            RunLock(run_dir).acquire()
        message = str(refused.value)
        assert f"pid {holder.pid}" in message and socket.gethostname() in message and "UTC" in message
        started = time.monotonic()
        code = main(["run", *DEMO, "--run-dir", str(run_dir)])
        err = capsys.readouterr().err
        assert code == EXIT_STORE and f"pid {holder.pid}" in err and "Traceback" not in err
        assert time.monotonic() - started < 60
        assert not (run_dir / "autointerp.sqlite").exists()  # refused before the store was opened
    finally:
        holder.kill()  # SIGKILL: no chance to release anything
        holder.wait()
    with RunLock(run_dir):  # the kernel dropped the killed holder's lock
        assert holds(run_dir)
        with RunLock(run_dir):  # re-entrant in one process (run() holds it around sample_stage)
            pass
        assert holds(run_dir)
    assert not holds(run_dir)
    assert (run_dir / LOCK_NAME).read_text() == ""  # no stale owner left for the next message


@pytest.mark.slow
def test_a_second_run_on_one_folder_is_refused_at_once_and_readers_work_meanwhile(tmp_path, capsys):
    run_dir = tmp_path / "run"
    first = autointerp("run", *DEMO, "--run-dir", str(run_dir))
    try:
        deadline = time.monotonic() + 300
        while f'"pid": {first.pid}' not in _text(run_dir / LOCK_NAME):
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.2)
        started = time.monotonic()
        second = autointerp("run", *DEMO, "--run-dir", str(run_dir))
        _, err = second.communicate(timeout=120)
        seconds = time.monotonic() - started
        assert first.poll() is None, "the first run ended before the second was refused: no overlap was tested"
        assert second.returncode == EXIT_STORE, err
        assert f"pid {first.pid} on host {socket.gethostname()}" in err and "Traceback" not in err
        assert seconds < 60, seconds  # refused after its own start-up, not after sampling
        out, err = first.communicate(timeout=600)
        assert first.returncode == EXIT_OK, err
    finally:
        first.kill()
        first.wait()
    with sqlite3.connect(f"file:{run_dir / 'autointerp.sqlite'}?mode=ro", uri=True) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (1,)  # one run, sampled once

    holder = hold_in_another_process(run_dir)  # a writer holds the folder: readers take no lock
    try:
        assert main(["table", str(run_dir), "--format", "csv"]) == EXIT_OK
        assert main(["compare", str(run_dir), str(run_dir), "--format", "json"]) == EXIT_OK
        assert main(["export", str(run_dir), "--format", "jsonl", "--out", str(tmp_path / "jsonl")]) == EXIT_OK
        with sqlite3.connect(f"file:{run_dir / 'autointerp.sqlite'}?mode=ro", uri=True) as conn:
            feature = conn.execute("SELECT min(feature) FROM features").fetchone()[0]
        assert main(["show", str(run_dir), str(feature)]) == EXIT_OK
        assert main(["sample", *DEMO, "--run-dir", str(run_dir)]) == EXIT_STORE  # writers do
    finally:
        holder.kill()
        holder.wait()
    capsys.readouterr()


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""
