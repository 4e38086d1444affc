"""The terminal side of `autointerp.reporting`: notes printed on stdout, progress drawn as rich bars on a terminal
and as plain periodic lines when stdout is a file or a pipe (nohup, CI logs), where bars would print nothing.

The command line makes one per command; a Python caller who wants the same output passes
`reporter=TerminalReporter()`. Nothing else in the package imports this module: library code reports
through the `Reporter` it is given and never talks to the terminal itself.
"""

import os
import sys
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self, TextIO

from autointerp.reporting import Progress, Reporter, use_reporter

# Seconds between plain progress lines; AUTOINTERP_PROGRESS_SECONDS overrides it (tests use a short one).
PLAIN_INTERVAL_S = 10.0
_PRINT_LOCK = threading.Lock()  # notes and the plain-progress ticker thread print whole lines, never interleaved


class TerminalProgress(Progress):
    """One rich progress display: a bar per task with done/total, a status line, elapsed and remaining time."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self._bars = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=False,  # the finished bars stay on screen as a record of the run
        )

    def __enter__(self) -> Self:
        self._bars.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._bars.__exit__(kind, error, traceback)

    def add_task(self, description: str, total: float) -> int:
        return self._bars.add_task(description, total=total, info="")

    def advance(self, task: int, amount: float = 1, info: str = "") -> None:
        from rich.progress import TaskID

        self._bars.update(TaskID(task), advance=amount, info=info)

    def set_total(self, task: int, total: float) -> None:
        from rich.progress import TaskID

        self._bars.update(TaskID(task), total=total)


@dataclass
class _Task:
    description: str
    total: float
    started: float = field(default_factory=time.monotonic)
    done: float = 0.0
    info: str = ""
    changed: bool = True  # something happened since its last line
    finished: bool = False  # its last line (at 100 %) is printed


def clock(seconds: float) -> str:
    """12 s -> '0:12', 3,725 s -> '1:02:05'."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def plain_line(task: _Task, now: float) -> str:
    """One progress line: what, done/total with percent, elapsed, the remaining time at the rate so far, status."""
    elapsed = now - task.started
    share = task.done / task.total if task.total else 1.0
    if task.done >= task.total:
        eta = "done"
    elif task.done > 0:
        eta = f"ETA {clock(elapsed * (task.total - task.done) / task.done)}"
    else:
        eta = "ETA unknown until the first unit is done"
    count = f"{task.done:,.0f}/{task.total:,.0f} ({share:.0%})"
    info = f"  {task.info}" if task.info else ""
    return f"[{time.strftime('%H:%M:%S')}] {task.description}: {count}  elapsed {clock(elapsed)}  {eta}{info}"


class PlainProgress(Progress):
    """Progress as plain lines, for a stdout that is not a terminal: a line when a task starts, then one per task
    every `interval` seconds (printed by a timer thread, so a long LLM call still shows the run is alive), and a
    last line when it completes."""

    def __init__(self, stream: TextIO | None = None, interval: float | None = None) -> None:
        self.stream = stream
        env = os.environ.get("AUTOINTERP_PROGRESS_SECONDS")
        self.interval = interval if interval is not None else float(env) if env else PLAIN_INTERVAL_S
        self.tasks: dict[int, _Task] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def _print(self, lines: list[str]) -> None:
        if lines:
            with _PRINT_LOCK:
                stream = self.stream or sys.stdout
                stream.write("".join(line + "\n" for line in lines))
                stream.flush()

    def __enter__(self) -> Self:
        self._ticker = threading.Thread(target=self._tick, name="autointerp-progress", daemon=True)
        self._ticker.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        now = time.monotonic()
        with self._lock:
            lines = [plain_line(t, now) for t in self.tasks.values() if not t.finished]
        self._print(lines)

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            with self._lock:  # every task still running, moved or not: a silent minute reads as a hang
                lines = [plain_line(t, now) for t in self.tasks.values() if not t.finished]
            self._print(lines)

    def add_task(self, description: str, total: float) -> int:
        with self._lock:
            key = len(self.tasks)
            self.tasks[key] = task = _Task(description, total, finished=total <= 0)  # nothing to do: done now
            line = plain_line(task, task.started)
        self._print([line])
        return key

    def advance(self, task: int, amount: float = 1, info: str = "") -> None:
        with self._lock:
            state = self.tasks[task]
            state.done += amount
            state.info = info or state.info
            line = None
            if state.done >= state.total and not state.finished:
                state.finished = True
                line = plain_line(state, time.monotonic())
        if line:
            self._print([line])

    def set_total(self, task: int, total: float) -> None:
        with self._lock:
            self.tasks[task].total = total


class TerminalReporter(Reporter):
    """Notes on stdout as plain lines (no markup, no wrapping); progress as rich bars on a terminal, as plain
    lines every few seconds otherwise. It makes itself the reporter that one-off work (a model converted on
    first use, autointerp.reporting.one_off) announces itself through."""

    def __init__(self, plain: bool | None = None) -> None:
        self.plain = not sys.stdout.isatty() if plain is None else plain
        use_reporter(self)

    def note(self, text: str) -> None:
        with _PRINT_LOCK:
            print(text, flush=True)

    def progress(self) -> Progress:
        return PlainProgress() if self.plain else TerminalProgress()
