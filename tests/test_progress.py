"""Progress a person can read: plain periodic lines when stdout is not a terminal (a real `autointerp run` whose
stdout is a pipe), scoring counted in judgements with a remaining time, and one-off work announced as it happens."""

import io
import os
import re
import subprocess
import sys
import time

from loopback_llm import start_loopback
from test_interrupts import KEY, N_FEATURES, prepared_run
from test_run import llm_answers

from autointerp.reporting import Reporter, one_off, use_reporter
from autointerp.terminal import PlainProgress, TerminalReporter, clock

LINE = re.compile(
    r"^\[\d\d:\d\d:\d\d\] (?P<what>[^:]+): (?P<done>[\d,]+)/(?P<total>[\d,]+) \((?P<pct>\d+)%\)  "
    r"elapsed (?P<elapsed>[\d:]+)  (?P<eta>ETA [\d:]+|ETA unknown until the first unit is done|done)"
)


def test_plain_progress_prints_a_line_at_start_then_every_interval_then_at_the_end():
    out = io.StringIO()
    with PlainProgress(stream=out, interval=0.2) as progress:
        task = progress.add_task("scoring", total=4)
        progress.advance(task, 1, info="calls 1")
        time.sleep(0.5)  # two ticks while nothing moves: the run is alive, the ETA says how long is left
        progress.advance(task, 3, info="calls 4")
    lines = [LINE.match(line) for line in out.getvalue().splitlines()]
    assert all(lines), out.getvalue()
    assert lines[0]["done"] == "0" and lines[0]["eta"].startswith("ETA unknown")
    ticks = [m for m in lines if m["done"] == "1"]
    assert len(ticks) >= 2 and all(re.fullmatch(r"ETA \d+:\d\d", m["eta"]) for m in ticks)
    assert "calls 1" in out.getvalue()
    assert lines[-1]["done"] == "4" and lines[-1]["eta"] == "done" and lines[-1]["pct"] == "100"
    assert sum(m["eta"] == "done" for m in lines) == 1  # the finished task is not repeated at exit


def test_clock_reads_like_a_stopwatch():
    assert (clock(12), clock(75), clock(3725)) == ("0:12", "1:15", "1:02:05")


def test_one_off_work_is_announced_through_the_current_reporter(capsys):
    reporter = TerminalReporter(plain=True)  # makes itself current
    with one_off("Converting a model", "once, ~25 s"):
        print("working")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Converting a model (once, ~25 s) ..." and out[1] == "working"
    assert re.fullmatch(r"Converting a model: done in \d+ s\.", out[2])
    assert isinstance(reporter.progress(), PlainProgress)
    use_reporter(Reporter())  # a library reporter logs instead of printing
    with one_off("Quiet work"):
        pass
    assert capsys.readouterr().out == ""
    use_reporter(None)


def test_a_run_whose_stdout_is_a_pipe_prints_periodic_progress_lines(tmp_path):
    run_dir, argv = prepared_run(tmp_path)
    with start_loopback(responder=llm_answers, latency_s=0.1) as server:
        llm = ["--explainer", f"anthropic:claude-test@{server.url}", "--max-in-flight", "1"]
        proc = subprocess.run(
            [sys.executable, "-m", "autointerp.cli", "run", *argv, *llm],
            env={**os.environ, **KEY, "HF_HUB_OFFLINE": "1", "AUTOINTERP_PROGRESS_SECONDS": "1"},
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert proc.returncode == 0, proc.stderr
    lines = [m for m in map(LINE.match, proc.stdout.splitlines()) if m]
    scoring = [m for m in lines if m["what"].startswith("scoring")]
    assert [m for m in lines if m["what"] == "explaining"], proc.stdout
    assert "judgements" in scoring[0]["what"]
    # 12 features x 2 scorers x 3 explanations (own + 2 controls): counted per judgement, not per feature
    assert {m["total"] for m in scoring} == {str(N_FEATURES * 6)}
    done = [int(m["done"]) for m in scoring]
    assert done == sorted(done) and done[0] == 0 and done[-1] == N_FEATURES * 6
    assert any(0 < d < N_FEATURES * 6 for d in done), proc.stdout  # lines while it ran, not only start and end
    assert any(re.fullmatch(r"ETA \d+:\d\d", m["eta"]) for m in scoring)
    assert re.search(r"calls \d+", proc.stdout)


def test_a_task_with_nothing_to_do_is_done_at_once_and_printed_once():
    out = io.StringIO()
    with PlainProgress(stream=out, interval=0.05) as progress:
        progress.add_task("explaining", total=0)  # a resumed run whose features are all explained
        time.sleep(0.2)
    assert out.getvalue().count("explaining") == 1 and "0/0 (100%)  elapsed 0:00  done" in out.getvalue()
