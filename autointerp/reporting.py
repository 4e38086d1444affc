"""How the stages tell a user what they are doing without talking to the terminal themselves.

Library code (the orchestration, the LLM stages, the Python API) takes a `Reporter` and calls
`note(text)` for a sentence worth reading and `progress()` for counted tasks. This default one logs
the notes (logger `autointerp.reporting`, level INFO) and shows no progress, so a training loop that
calls `score_checkpoint` prints nothing. The command line passes `autointerp.terminal.TerminalReporter`,
which prints the notes and draws progress bars; a caller of the Python API may pass it too.

Slow work done once and cached (a model converted on first use) happens deep below any code that holds a
reporter; it announces itself with `one_off(...)`, which notes through the reporter made current with
`use_reporter` (the terminal's one makes itself current) and otherwise logs.
"""

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
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

    def set_total(self, task: int, total: float) -> None:
        """`task` turned out to have `total` units (known once some of the work is done, e.g. a corpus's length)."""


def token_rate(progress: Progress, task, suffix: str = "") -> Callable[[int, float], None]:
    """The sampler's progress callback: (tokens just done, seconds since the pass began) -> advance `task`
    with the running tokens per second in its info (`suffix` after it, e.g. ' on rank 0')."""
    done = 0

    def advance(n: int, seconds: float) -> None:
        nonlocal done
        done += n
        progress.advance(task, n, info=f"{done / max(seconds, 1e-9):,.0f} tok/s{suffix}")

    return advance


class Reporter:
    """Notes go to the log, progress nowhere. Subclass it to show them (see the module docstring)."""

    def note(self, text: str) -> None:
        """One finished sentence for the user (what was decided, what was skipped, what was stored)."""
        log.info(text)

    def progress(self) -> Progress:
        """A new progress display, to be used as a context manager around the work it counts."""
        return Progress()


_CURRENT: ContextVar[Reporter | None] = ContextVar("autointerp_reporter", default=None)


def use_reporter(reporter: Reporter | None) -> None:
    """Make `reporter` the one `one_off` notes through, in this context and the threads and tasks it starts."""
    _CURRENT.set(reporter)


@contextlib.contextmanager
def one_off(what: str, expect: str = "") -> Iterator[None]:
    """Announce slow work as it starts and say how long it took, so a first run is not silent for a minute.
    `what` says what is done ("Converting SmolLM2-135M from GGUF for TransformerLens"), `expect` how long it
    usually takes and why it happens only once. Notes through the current reporter (`use_reporter`), else logs."""
    reporter = _CURRENT.get()
    say = reporter.note if reporter is not None else log.info
    say(f"{what} ({expect}) ..." if expect else f"{what} ...")
    started = time.monotonic()
    yield
    say(f"{what}: done in {time.monotonic() - started:.0f} s.")
