"""One writer per run folder.

`autointerp run` and `autointerp sample` hold an OS lock (`fcntl.flock`) on `<run dir>/autointerp.lock` for as
long as they work on the folder; a second writer is refused at once with the holder's pid, host, start time and
command. The kernel drops the lock when its process ends, however it ends (kill -9, a crash, a lost SSH
session), so no stale lock is ever left to clean up: the file stays, but only an open lock counts. The file's
text (who holds it) is for the message only.

Readers (`show`, `table`, `export`, `compare`) never take the lock: SQLite's WAL journal lets them read a
consistent snapshot while the writer commits.

Re-entrant within a process (the pipeline's `run` holds it around `sample_stage`, which takes it too): flock
locks belong to open files, so a second open of the same file in the same process would refuse itself.
"""

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from autointerp.errors import StoreError, expected

LOCK_NAME = "autointerp.lock"

# resolved lock path -> [file descriptor, depth] of the locks this process holds
_HELD: dict[Path, list[int]] = {}


class RunFolderBusy(StoreError):
    """Another process is writing the run folder (exit status 3, like every refused run directory)."""


def owner_text() -> str:
    """What the lock file says about its holder: pid, host, start time (UTC) and command line."""
    return json.dumps(
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "command": " ".join(["autointerp", *sys.argv[1:]]) if sys.argv else "",
        }
    )


def describe_owner(text: str) -> str:
    """A phrase naming the holder from the lock file's text (which it may not have written yet)."""
    try:
        owner = json.loads(text)
        return f"pid {owner['pid']} on host {owner['host']}, since {owner['since']} ({owner['command']})"
    except (ValueError, KeyError, TypeError):
        return "a process that has not yet written its pid"


class RunLock:
    """`with RunLock(run_dir):` holds the folder's lock, creating the folder if needed; RunFolderBusy when
    another process holds it, StoreError when the folder cannot be written."""

    def __init__(self, run_dir: Path | str) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME

    def acquire(self) -> Self:
        key = self.path.resolve()
        if key in _HELD:
            _HELD[key][1] += 1
            return self
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            writable = os.access(self.run_dir, os.W_OK) or not self.run_dir.is_dir()
            found = f"{exc.strerror}" if writable else "a read-only directory"
            raise StoreError(
                expected(
                    f"run directory {self.run_dir}",
                    f"{found} (cannot create {LOCK_NAME}: {exc.strerror})",
                    "a writable directory",
                    "Readers (autointerp table, show, export) open a run read-only and work as it is.",
                )
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = describe_owner(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
            os.close(fd)
            raise RunFolderBusy(
                f"run directory {self.run_dir}: found it in use by another autointerp run or sample ({holder}); "
                "expected one writer per run directory. Wait for it to end, stop it, or choose another --run-dir. "
                "Reading it meanwhile works: autointerp show, table, export."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner_text().encode(), 0)
        _HELD[key] = [fd, 1]
        return self

    def release(self) -> None:
        key = self.path.resolve()
        held = _HELD.get(key)
        if held is None:
            return
        held[1] -= 1
        if held[1] == 0:
            del _HELD[key]
            try:
                os.ftruncate(held[0], 0)  # the next reader of the file sees no stale owner
            except OSError:
                pass
            os.close(held[0])  # closing the last descriptor releases the flock

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()


def holds(run_dir: Path | str) -> bool:
    """Whether this process holds the lock of `run_dir`."""
    return (Path(run_dir) / LOCK_NAME).resolve() in _HELD
