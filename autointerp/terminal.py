"""The terminal side of `autointerp.reporting`: notes printed on stdout, progress drawn as rich bars.

The command line makes one per command; a Python caller who wants the same output passes
`reporter=TerminalReporter()`. Nothing else in the package imports this module: library code reports
through the `Reporter` it is given and never talks to the terminal itself.
"""

from types import TracebackType
from typing import Self

from autointerp.reporting import Progress, Reporter


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


class TerminalReporter(Reporter):
    """Notes on stdout as plain lines (no markup, no wrapping), progress as rich bars."""

    def note(self, text: str) -> None:
        print(text)

    def progress(self) -> TerminalProgress:
        return TerminalProgress()
