"""One SQLite database per run directory, written through sqlite-utils.

The file is `<run_dir>/autointerp.sqlite`: WAL journal, foreign keys on, schema version in
`PRAGMA user_version`. One database may hold several runs (a training loop adds one per checkpoint,
tagged `training_run` and `step`); every row carries its `run_id`. Values of secret-looking environment
variables (names containing KEY, TOKEN, SECRET or PASSWORD) are replaced by "[redacted]" in every text
written.

`RunStore.open(run_dir, create=True)` reads and writes (creating the file if missing);
`create=False` opens read-only (a `mode=ro` URI), which also works on a read-only disk.

Where things are:
    schema.py      tables, views, schema version; creating and checking them
    connection.py  opening (header, permissions, read-only), SQLite errors -> StoreError, row helpers
    rows.py        records <-> rows (pure)
    queries.py     readers: runs, progress, records, raw score/usage rows for summaries
    writes.py      writers: runs, stage results, failures
"""

from autointerp.store.rows import package_versions
from autointerp.store.schema import DB_NAME, SCHEMA_VERSION, STAGES, VIEWS, FeatureStage, RunStatus
from autointerp.store.writes import StoreWrites

__all__ = [
    "DB_NAME",
    "SCHEMA_VERSION",
    "STAGES",
    "VIEWS",
    "FeatureStage",
    "RunStatus",
    "RunStore",
    "package_versions",
]


class RunStore(StoreWrites):
    """A run directory's database. Open with :meth:`open`; use as a context manager to close it.

    One class built as a chain, each link in its own file and each typed against the one below:
    StoreConnection (connection.py) <- StoreQueries (queries.py) <- StoreWrites (writes.py) <- RunStore.
    A chain rather than mixins because writes need reads (resolve_failures reads the failed features)
    and both need the connection; callers keep one object that reads and, opened for it, writes.
    """
