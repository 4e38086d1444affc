"""Opening a run database: header and permission checks, read-write or read-only connections, SQLite
errors a user can meet turned into StoreErrors that name the file, and the few row helpers every reader
and writer uses (select, insert-or-replace, redaction of secrets)."""

import functools
import os
import re
import shutil
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar

import sqlite_utils

from autointerp.errors import StoreError, disk_full, expected
from autointerp.store.schema import DB_NAME, check_schema, create_schema

_SQLITE_MAGIC = b"SQLite format 3\x00"
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.IGNORECASE)

P = ParamSpec("P")
T = TypeVar("T")


def _secret_values() -> list[str]:
    """Values of environment variables whose name looks secret, long enough not to hit ordinary words."""
    return [v for name, v in os.environ.items() if _SECRET_NAME.search(name) and len(v) >= 8]


def user_error(path: Path, exc: sqlite3.DatabaseError) -> Exception:
    """The StoreError a user should see for `exc` on the database at `path`, or `exc` itself for our bugs."""
    message = str(exc)
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.InterfaceError):
        return exc  # our bug or the caller's (e.g. a run id never created): keep the traceback
    if "readonly" in message or "read-only" in message:
        return StoreError(f"run database {path}: cannot write ({message}); the file or its directory is read-only.")
    if "locked" in message or "busy" in message:
        return StoreError(f"run database {path}: {message}; another process is writing it. Try again when it ends.")
    # SQLITE_FULL reads "database or disk is full"; a full disk met while writing the WAL can surface as a
    # plain "disk I/O error", so that one is told apart by the free space left.
    if "disk is full" in message or ("disk I/O" in message and _nearly_full(path)):
        return disk_full(f"run database {path}", message)
    if "disk I/O" in message:
        return StoreError(
            f"run database {path}: reading or writing it failed ({message}); expected a working disk. The file "
            "itself may be intact: check the disk (dmesg, df) and run the same command again."
        )
    if any(s in message for s in ("not a database", "malformed", "unable to open")):
        return StoreError(
            expected(f"run database {path}", f"an unusable file ({message})", "a readable autointerp SQLite database")
        )
    return exc


def _nearly_full(path: Path) -> bool:
    """Whether the filesystem holding `path` has (almost) no space left for SQLite's pages and WAL."""
    try:
        return shutil.disk_usage(path.parent).free < 4 * 2**20
    except OSError:
        return False


def guarded(method: Callable[P, T]) -> Callable[P, T]:
    """Turn SQLite errors a user can meet (corrupt, read-only, locked) into a StoreError naming the file."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(*args, **kwargs)
        except sqlite3.DatabaseError as exc:
            store = args[0]
            assert isinstance(store, StoreConnection)
            error = user_error(store.path, exc)
            if error is exc:
                raise
            raise error from exc

    return wrapper


class StoreConnection:
    """An open run database and the row helpers its readers and writers share."""

    def __init__(self, conn: sqlite3.Connection, path: Path, readonly: bool) -> None:
        self.path = path
        self.readonly = readonly
        self.db = sqlite_utils.Database(conn, execute_plugins=False)
        self._secrets = _secret_values()

    @classmethod
    def open(cls, run_dir: Path, *, create: bool) -> Self:
        """Open `run_dir/autointerp.sqlite`.

        create=True: read-write; the directory and database are created if missing (and missing tables,
        indexes and views added). create=False: read-only; the database must exist. Raises StoreError
        (naming the file, never changing it) when the file is not an SQLite database or is corrupt, was
        written by a newer schema, or when writing was asked of a read-only directory or file.
        """
        run_dir = Path(run_dir)
        path = run_dir / DB_NAME
        if path.exists():
            _check_header(path, create)
        elif not create:
            raise StoreError(
                expected(f"run database {path}", "no such file", "a run directory written by `autointerp run`")
            )
        conn = _connect_writable(run_dir, path) if create else _connect_readonly(run_dir, path)
        store = cls(conn, path, readonly=not create)
        try:
            check_schema(store.db, path, store.readonly)
            if create:
                create_schema(store.db)
            store.db.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as exc:
            conn.close()
            error = user_error(path, exc)
            if error is exc:
                raise
            raise error from exc
        except BaseException:
            conn.close()
            raise
        return store

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _writing(self) -> None:
        if self.readonly:
            raise StoreError(f"run database {self.path}: opened read-only; open with create=True to write.")

    def _redact(self, row: dict[str, Any]) -> dict[str, Any]:
        """The row with every secret value found in the environment replaced by '[redacted]'."""
        if not self._secrets:
            return row
        clean = dict(row)
        for key, value in row.items():
            if isinstance(value, str):
                for secret in self._secrets:
                    value = value.replace(secret, "[redacted]")
                clean[key] = value
        return clean

    def _put(self, table: str, rows: Iterable[dict[str, Any]], *, replace: bool = True) -> None:
        """Insert rows (redacted), by default replacing any with the same primary key (the caller holds
        the transaction)."""
        self.db.table(table).insert_all((self._redact(r) for r in rows), replace=replace)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return list(self.db.query(sql, params))


def _check_header(path: Path, create: bool) -> None:
    """Refuse, without touching it, a file that is not SQLite (an empty file is a new database)."""
    try:
        with path.open("rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise StoreError(f"run database {path}: cannot read it ({exc.strerror}).") from None
    if head == _SQLITE_MAGIC or (not head and create):
        return
    found = "an empty file" if not head else f"a file that is not SQLite (it starts {head[:8]!r})"
    raise StoreError(
        expected(
            f"run database {path}",
            found,
            "an autointerp SQLite database",
            "Move it aside or choose another run directory.",
        )
    )


def _connect_writable(run_dir: Path, path: Path) -> sqlite3.Connection:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"run directory {run_dir}: cannot create it ({exc.strerror}); expected a writable location."
        ) from None
    # The directory must be writable too: SQLite creates the -wal and -shm files next to the database.
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise StoreError(
            expected(
                f"run directory {run_dir}",
                "a read-only directory",
                f"a writable one (SQLite writes {DB_NAME} and its -wal and -shm files there)",
            )
        )
    if path.exists() and not os.access(path, os.W_OK):
        raise StoreError(
            expected(
                f"run database {path}",
                "a read-only file",
                "write permission to add to it",
                "Readers (autointerp table, show, export) open it read-only and work as it is.",
            )
        )
    return sqlite3.connect(path, timeout=30)


def _connect_readonly(run_dir: Path, path: Path) -> sqlite3.Connection:
    # A WAL database needs its -shm file; on a read-only directory where none is left (the last writer
    # checkpointed and removed it) SQLite can only open it as immutable, which is exact because no
    # -wal file holds unmerged pages then.
    immutable = not os.access(run_dir, os.W_OK) and not path.with_name(DB_NAME + "-wal").exists()
    uri = path.resolve().as_uri() + ("?mode=ro&immutable=1" if immutable else "?mode=ro")
    return sqlite3.connect(uri, uri=True, timeout=30)
