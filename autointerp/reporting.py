"""How the stages tell a user what they are doing without talking to the terminal themselves.

Library code (the orchestration, the LLM stages, the Python API) takes a `Reporter` and calls
`note(text)` for a sentence worth reading and `progress()` for counted tasks. This default one logs
the notes (logger `autointerp.reporting`, level INFO) and shows no progress, so a training loop that
calls `score_checkpoint` prints nothing. The command line passes `autointerp.terminal.TerminalReporter`,
which prints the notes and draws progress bars; a caller of the Python API may pass it too.
"""

import logging
from types import TracebackType
from typing import Self

log = logging.getLogger(__name__)


class Progress:
    """Counted tasks, shown (by subclasses) while the `with` block lasts; this one shows nothing.

    Tasks are added inside the block: `task = progress.add_task("explaining", total=n)`, then
    `progress.advance(task, 1, info="...")` as work finishes (`info` is a short status line).
    """

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        return None

    def add_task(self, description: str, total: float) -> int:
        """A new task of `total` units (features, tokens); returns its id for `advance`."""
        return 0

    def advance(self, task: int, amount: float = 1, info: str = "") -> None:
        """`amount` more units of `task` are done; `info` replaces its status line."""


class Reporter:
    """Notes go to the log, progress nowhere. Subclass it to show them (see the module docstring)."""

    def note(self, text: str) -> None:
        """One finished sentence for the user (what was decided, what was skipped, what was stored)."""
        log.info(text)

    def progress(self) -> Progress:
        """A new progress display, to be used as a context manager around the work it counts."""
        return Progress()
