"""One SQLite database per run directory, written through sqlite-utils.

The file is `<run_dir>/autointerp.sqlite`: WAL journal, foreign keys on, schema version in
`PRAGMA user_version`. One database may hold several runs (a training loop adds one per checkpoint,
tagged `training_run` and `step`); every row carries its `run_id`.

Each feature's stage result is committed in one transaction together with the feature's status, so an
interrupted run loses only the work in flight. Writes replace rows on their primary key: redoing work
never duplicates a row. Values of secret-looking environment variables (names containing KEY, TOKEN,
SECRET or PASSWORD) are replaced by "[redacted]" in every text written.

`RunStore.open(run_dir, create=True)` reads and writes (creating the file if missing);
`create=False` opens read-only (a `mode=ro` URI), which also works on a read-only disk.
"""

import functools
import json
import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, Self, TypeVar, get_args

import sqlite_utils

from autointerp import __version__
from autointerp.errors import StoreError, expected
from autointerp.records import (
    Explanation,
    FeatureReport,
    FeatureSample,
    FeatureStats,
    Simulation,
    Usage,
    Window,
)
from autointerp.scoring import COLUMNS, FeatureScores, lift, summarise

if TYPE_CHECKING:  # config imports the corpus module and with it torch: readers need neither
    from autointerp.config import RunConfig

DB_NAME = "autointerp.sqlite"
SCHEMA_VERSION = 1
RunStatus = Literal["sampling", "scoring", "done", "interrupted"]
FeatureStage = Literal["sampled", "explained", "simulated", "scored", "failed"]
# Progress order of a feature; "failed" sits outside it until resolve_failures() puts it back.
STAGES: tuple[FeatureStage, ...] = ("sampled", "explained", "simulated", "scored")
# Keys a call record (the `calls` argument of the save methods) may carry; run_id and feature come
# from the method. `stage` defaults to the method's stage, `status` to "ok".
CALL_FIELDS = (
    "stage", "backend", "model", "status", "attempts", "latency_s", "input_tokens", "cached_input_tokens",
    "cache_write_tokens", "output_tokens", "cost_usd", "error", "created_at",
)  # fmt: skip
VERSIONED_PACKAGES = ("autointerp", "torch", "transformer_lens", "anthropic", "openai")

_SQLITE_MAGIC = b"SQLite format 3\x00"
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.IGNORECASE)
_RUN_FK = [("run_id", "runs", "run_id")]


def _score_types() -> dict[str, type]:
    fields = FeatureScores.model_fields
    types: dict[str, type] = {}
    for name in COLUMNS:
        annotation = fields[name].annotation if name in fields else float  # correlation_<group>
        types[name] = int if annotation is int else float if float in (annotation, *get_args(annotation)) else str
    return types


# table -> (columns, primary key, indexes). Every table but `runs` has run_id with a foreign key to
# runs(run_id). A primary key starting (run_id, feature) doubles as the (run_id, feature) index.
_TABLES: dict[str, tuple[dict[str, type], str | tuple[str, ...], tuple[tuple[str, ...], ...]]] = {
    "runs": (
        {
            "run_id": str, "name": str, "config_json": str, "results_key_json": str, "versions_json": str,
            "sae_fingerprint": str, "corpus_fingerprint": str, "created_at": str, "updated_at": str,
            "status": str, "training_run": str, "step": int,
        },
        "run_id",
        (("training_run", "step"), ("created_at",)),
    ),
    "features": (
        {
            "run_id": str, "feature": int, "n_tokens": int, "n_active": int, "density": float,
            "max_activation": float, "mean_active": float, "histogram_json": str,
        },
        ("run_id", "feature"),
        (("run_id", "density"),),
    ),
    "examples": (
        {
            "run_id": str, "feature": int, "idx": int, "context_id": int, "start": int, "split": str,
            "grp": str, "interval": int, "token_ids_json": str, "tokens_json": str, "activations_json": str,
        },
        ("run_id", "feature", "idx"),
        (),
    ),
    "explanations": (
        {
            "run_id": str, "feature": int, "source": str, "text": str, "raw_completion": str, "backend": str,
            "prompt_hash": str, "input_tokens": int, "cached_input_tokens": int, "cache_write_tokens": int,
            "output_tokens": int, "cost_usd": float, "created_at": str,
        },
        ("run_id", "feature", "source"),
        (),
    ),
    "simulations": (
        {
            "run_id": str, "feature": int, "explanation_source": str, "backend": str, "mode": str,
            "predictions_json": str, "input_tokens": int, "cached_input_tokens": int,
            "cache_write_tokens": int, "output_tokens": int, "cost_usd": float,
        },
        ("run_id", "feature", "explanation_source"),
        (),
    ),
    "scores": (
        # lift: correlation minus the baseline explanation's; lift_other: minus another feature's
        # explanation's. Both only on the 'llm' row, None where the control was not scored.
        {
            "run_id": str, "feature": int, "explanation_source": str, **_score_types(),
            "lift": float, "lift_other": float, "json": str,
        },
        ("run_id", "feature", "explanation_source"),
        (("run_id", "explanation_source"),),
    ),
    "llm_calls": (
        {
            "id": int, "run_id": str, "feature": int, "stage": str, "backend": str, "model": str,
            "status": str, "attempts": int, "latency_s": float, "input_tokens": int,
            "cached_input_tokens": int, "cache_write_tokens": int, "output_tokens": int, "cost_usd": float,
            "error": str, "created_at": str,
        },
        "id",
        (("run_id", "feature"), ("run_id", "stage")),
    ),
    "errors": (
        {
            "id": int, "run_id": str, "feature": int, "stage": str, "message": str, "created_at": str,
            "resolved": int,
        },
        "id",
        (("run_id", "feature"), ("run_id", "resolved")),
    ),
    "feature_status": (
        {"run_id": str, "feature": int, "stage": str, "updated_at": str},
        ("run_id", "feature"),
        (("run_id", "stage"),),
    ),
}  # fmt: skip

P = ParamSpec("P")
T = TypeVar("T")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _secret_values() -> list[str]:
    """Values of environment variables whose name looks secret, long enough not to hit ordinary words."""
    return [v for name, v in os.environ.items() if _SECRET_NAME.search(name) and len(v) >= 8]


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a score depends on (None if not installed); imports nothing."""
    versions: dict[str, str | None] = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = __version__ if name == "autointerp" else None
    return versions


def _guarded(method: Callable[P, T]) -> Callable[P, T]:
    """Turn SQLite errors a user can meet (corrupt, read-only, locked) into a StoreError naming the file."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(*args, **kwargs)
        except sqlite3.DatabaseError as exc:
            store = args[0]
            assert isinstance(store, RunStore)
            error = store._user_error(exc)
            if error is exc:
                raise
            raise error from exc

    return wrapper


class RunStore:
    """A run directory's database. Open with :meth:`open`; use as a context manager to close it."""

    def __init__(self, conn: sqlite3.Connection, path: Path, readonly: bool) -> None:
        self.path = path
        self.readonly = readonly
        self.db = sqlite_utils.Database(conn, execute_plugins=False)
        self._secrets = _secret_values()

    # ------------------------------------------------------------------------------------ opening

    @classmethod
    def open(cls, run_dir: Path, *, create: bool) -> "RunStore":
        """Open `run_dir/autointerp.sqlite`.

        create=True: read-write; the directory and database are created if missing. create=False:
        read-only; the database must exist. Raises StoreError (naming the file, never changing it) when
        the file is not an SQLite database or is corrupt, was written by a newer schema, or when writing
        was asked of a read-only directory or file.
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
            store._check_schema()
            if create:
                store._create_schema()
            store.db.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as exc:
            conn.close()
            error = store._user_error(exc)
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

    def _check_schema(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        tables = set(self.db.table_names())
        if version > SCHEMA_VERSION:
            raise StoreError(
                expected(
                    f"run database {self.path}",
                    f"schema version {version}",
                    f"version {SCHEMA_VERSION} or older, the newest this autointerp ({__version__}) reads",
                    "It was written by a newer autointerp; upgrade to read it.",
                )
            )
        if version == 0 and (tables or self.readonly):
            found = f"tables {sorted(tables)} and no schema version" if tables else "an empty database"
            raise StoreError(expected(f"run database {self.path}", found, "an autointerp run database"))
        if 0 < version < SCHEMA_VERSION:  # the place for migrations once there is more than one version
            raise StoreError(expected(f"run database {self.path}", f"schema version {version}", f"{SCHEMA_VERSION}"))

    def _create_schema(self) -> None:
        self.db.enable_wal()
        with self.db.atomic():
            for name, (columns, pk, indexes) in _TABLES.items():
                table = self.db.table(name)
                table.create(
                    columns,
                    pk=pk,
                    not_null=(pk,) if isinstance(pk, str) else pk,
                    foreign_keys=None if name == "runs" else _RUN_FK,
                    if_not_exists=True,
                )
                for index in indexes:
                    table.create_index(index, if_not_exists=True)
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _user_error(self, exc: sqlite3.DatabaseError) -> Exception:
        message = str(exc)
        if isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.InterfaceError):
            return exc  # our bug or the caller's (e.g. a run id never created): keep the traceback
        if "readonly" in message or "read-only" in message:
            return StoreError(
                f"run database {self.path}: cannot write ({message}); the file or its directory is read-only."
            )
        if "locked" in message or "busy" in message:
            return StoreError(
                f"run database {self.path}: {message}; another process is writing it. Try again when it ends."
            )
        if any(s in message for s in ("not a database", "malformed", "disk I/O", "unable to open", "disk is full")):
            return StoreError(
                expected(
                    f"run database {self.path}",
                    f"an unusable file ({message})",
                    "a readable autointerp SQLite database",
                )
            )
        return exc

    # ------------------------------------------------------------------------------------ helpers

    def _writing(self) -> None:
        if self.readonly:
            raise StoreError(f"run database {self.path}: opened read-only; open with create=True to write.")

    def _redact(self, row: dict[str, Any]) -> dict[str, Any]:
        if not self._secrets:
            return row
        clean = dict(row)
        for key, value in row.items():
            if isinstance(value, str):
                for secret in self._secrets:
                    value = value.replace(secret, "[redacted]")
                clean[key] = value
        return clean

    def _put(self, table: str, rows: Iterable[dict[str, Any]]) -> None:
        """Insert rows, replacing any with the same primary key (the caller holds the transaction)."""
        self.db.table(table).insert_all((self._redact(r) for r in rows), replace=True)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return list(self.db.query(sql, params))

    def _set_stage(self, run_id: str, features: Iterable[int], stage: FeatureStage) -> None:
        now = _now()
        self._put(
            "feature_status",
            ({"run_id": run_id, "feature": f, "stage": stage, "updated_at": now} for f in features),
        )

    def _touch(self, run_id: str) -> None:
        self.db.execute("UPDATE runs SET updated_at = ? WHERE run_id = ?", [_now(), run_id])

    def _put_calls(self, run_id: str, feature: int, stage: str, calls: Iterable[Mapping[str, Any]]) -> None:
        rows = []
        for call in calls:
            unknown = set(call) - set(CALL_FIELDS)
            if unknown:
                raise ValueError(f"call record: found keys {sorted(unknown)}; expected only {CALL_FIELDS}")
            rows.append(
                {
                    "stage": stage,
                    "status": "ok",
                    "created_at": _now(),
                    **call,
                    "run_id": run_id,
                    "feature": feature,
                }
            )
        self.db.table("llm_calls").insert_all(self._redact(r) for r in rows)

    # ------------------------------------------------------------------------------------ runs

    @_guarded
    def create_run(
        self,
        run_id: str,
        name: str,
        config: "RunConfig",
        sae_fingerprint: str,
        corpus_fingerprint: str,
        versions: Mapping[str, str | None] | None = None,
        *,
        training_run: str | None = None,
        step: int | None = None,
    ) -> None:
        """Record a new run with its full config (status 'sampling'). versions None -> package_versions().

        Raises StoreError if run_id already exists (resume it instead).
        """
        self._writing()
        if self.get_run(run_id) is not None:
            raise StoreError(f"run database {self.path}: run {run_id!r} already exists; resume it or pick another id.")
        now = _now()
        row = {
            "run_id": run_id,
            "name": name,
            "config_json": config.model_dump_json(),
            "results_key_json": json.dumps(config.results_key(), sort_keys=True),
            "versions_json": json.dumps(dict(package_versions() if versions is None else versions)),
            "sae_fingerprint": sae_fingerprint,
            "corpus_fingerprint": corpus_fingerprint,
            "created_at": now,
            "updated_at": now,
            "status": "sampling",
            "training_run": training_run,
            "step": step,
        }
        with self.db.atomic():
            self.db.table("runs").insert(self._redact(row))

    @_guarded
    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """The run's row with config, results_key and versions decoded (keys lose `_json`); None if absent."""
        rows = self._rows("SELECT * FROM runs WHERE run_id = ?", [run_id])
        return _decode_run(rows[0]) if rows else None

    def _require_run(self, run_id: str) -> dict[str, Any]:
        run = self.get_run(run_id)
        if run is None:
            raise StoreError(expected(f"run database {self.path}", f"no run {run_id!r}", "a run id it holds"))
        return run

    @_guarded
    def list_runs(self) -> list[dict[str, Any]]:
        """Every run in the database (decoded like get_run), ordered by training_run, step, created_at."""
        rows = self._rows("SELECT * FROM runs ORDER BY training_run, step, created_at, rowid")
        return [_decode_run(r) for r in rows]

    @_guarded
    def latest_run_id(self) -> str | None:
        rows = self._rows("SELECT run_id FROM runs ORDER BY created_at DESC, rowid DESC LIMIT 1")
        return rows[0]["run_id"] if rows else None

    def run_config(self, run_id: str) -> "RunConfig":
        from autointerp.config import RunConfig

        run = self._require_run(run_id)
        return RunConfig.model_validate(run["config"])

    def check_resume(self, run_id: str, config: "RunConfig", sae_fingerprint: str, corpus_fingerprint: str) -> None:
        """Raise StoreError unless the run was made with this SAE, corpus and result-changing settings."""
        run = self._require_run(run_id)
        problems = [
            f"{what} fingerprint {old} (now {new})"
            for what, old, new in (
                ("SAE", run["sae_fingerprint"], sae_fingerprint),
                ("corpus", run["corpus_fingerprint"], corpus_fingerprint),
            )
            if old != new
        ]
        now = _flat(config.results_key())
        problems += [
            f"{key} = {value!r} (now {now.get(key)!r})"
            for key, value in _flat(run["results_key"]).items()
            if now.get(key) != value
        ]
        if problems:
            raise StoreError(
                expected(
                    f"resuming run {run_id!r} in {self.path}",
                    "; ".join(problems),
                    "the settings it was started with",
                    "Start a new run (another run directory or name) to change them.",
                )
            )

    @_guarded
    def update_run_config(self, run_id: str, config: "RunConfig") -> None:
        """Store a config that settles what the stored one left open (e.g. the LLM backends chosen after
        `autointerp sample`). The caller checks that nothing already decided changes."""
        self._writing()
        with self.db.atomic():
            self.db.execute(
                "UPDATE runs SET config_json = ?, results_key_json = ?, updated_at = ? WHERE run_id = ?",
                [
                    self._redact({"c": config.model_dump_json()})["c"],
                    json.dumps(config.results_key(), sort_keys=True),
                    _now(),
                    run_id,
                ],
            )

    @_guarded
    def set_run_status(self, run_id: str, status: RunStatus) -> None:
        if status not in get_args(RunStatus):
            raise ValueError(f"run status: found {status!r}; expected one of {get_args(RunStatus)}")
        self._writing()
        with self.db.atomic():
            self.db.execute("UPDATE runs SET status = ?, updated_at = ? WHERE run_id = ?", [status, _now(), run_id])

    # ------------------------------------------------------------------------------------ stage results

    @_guarded
    def save_samples(self, run_id: str, samples: Sequence[FeatureSample]) -> None:
        """Stats and windows of every sampled feature, and status 'sampled', in one transaction.

        A feature saved again has its windows replaced (none of the old ones survive).
        """
        self._writing()
        features = [s.feature for s in samples]
        with self.db.atomic():
            self._put("features", (_stats_row(run_id, s.stats) for s in samples))
            self.db.conn.executemany(
                "DELETE FROM examples WHERE run_id = ? AND feature = ?", [(run_id, f) for f in features]
            )
            self._put(
                "examples",
                (_window_row(run_id, s.feature, i, w) for s in samples for i, w in enumerate(s.windows)),
            )
            self._set_stage(run_id, features, "sampled")
            self._touch(run_id)

    @_guarded
    def save_explanation(
        self, run_id: str, expl: Explanation, source: str = "llm", *, calls: Sequence[Mapping[str, Any]] = ()
    ) -> None:
        """An explanation (source 'llm' or 'baseline') and its calls; an 'llm' one sets status 'explained'."""
        self._writing()
        with self.db.atomic():
            self._put("explanations", [_explanation_row(run_id, expl, source)])
            self._put_calls(run_id, expl.feature, "explain", calls)
            if source == "llm":
                self._set_stage(run_id, [expl.feature], "explained")
            self._touch(run_id)

    @_guarded
    def save_scored(
        self,
        run_id: str,
        feature: int,
        simulations: Sequence[Simulation],
        scores: Mapping[str, FeatureScores],
        *,
        calls: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """Simulations, scores (keyed by explanation_source), lift and status 'scored' in one transaction.

        Replaces whatever the feature had before (a control scored earlier but not now is removed).
        """
        self._writing()
        stray = [s.feature for s in simulations if s.feature != feature]
        if stray:
            raise ValueError(
                f"save_scored feature {feature}: found simulations of features {stray}; expected only {feature}"
            )
        llm = scores.get("llm")
        others = [s for k, s in scores.items() if k.startswith("other:")]
        lifts = {
            "lift": lift(llm.correlation, scores["baseline"].correlation) if llm and "baseline" in scores else None,
            "lift_other": lift(llm.correlation, others[0].correlation) if llm and others else None,
        }
        with self.db.atomic():
            for table in ("simulations", "scores"):
                self.db.execute(f"DELETE FROM {table} WHERE run_id = ? AND feature = ?", [run_id, feature])
            self._put("simulations", (_simulation_row(run_id, s) for s in simulations))
            self._put(
                "scores",
                (
                    {
                        "run_id": run_id,
                        "feature": feature,
                        "explanation_source": source,
                        **s.to_columns(),
                        **(lifts if source == "llm" else {"lift": None, "lift_other": None}),
                        "json": s.to_json(),
                    }
                    for source, s in scores.items()
                ),
            )
            self._put_calls(run_id, feature, "simulate", calls)
            self._set_stage(run_id, [feature], "scored")
            self._touch(run_id)

    @_guarded
    def record_failure(
        self, run_id: str, feature: int, stage: str, message: str, *, calls: Sequence[Mapping[str, Any]] = ()
    ) -> None:
        """A feature's stage failed for good: an open error, its calls, status 'failed' (never a score)."""
        self._writing()
        with self.db.atomic():
            self.db.table("errors").insert(
                self._redact(
                    {
                        "run_id": run_id,
                        "feature": feature,
                        "stage": stage,
                        "message": message,
                        "created_at": _now(),
                        "resolved": 0,
                    }
                )
            )
            self._put_calls(run_id, feature, stage, ({"status": "error", **c} for c in calls))
            self._set_stage(run_id, [feature], "failed")
            self._touch(run_id)

    @_guarded
    def resolve_failures(self, run_id: str, features: Iterable[int]) -> None:
        """Mark the failed features' open errors resolved and put each back at its last completed stage
        ('explained' if it has an LLM explanation, else 'sampled') so pending_features() offers it again.
        For `--retry-failed`; a retry that fails again records a new error. Features not failed are left."""
        self._writing()
        failed = self.failed_features(run_id)
        features = [f for f in features if f in failed]
        explained = self.load_explanations(run_id).keys()
        with self.db.atomic():
            self.db.conn.executemany(
                "UPDATE errors SET resolved = 1 WHERE run_id = ? AND feature = ? AND resolved = 0",
                [(run_id, f) for f in features],
            )
            self._set_stage(run_id, [f for f in features if f in explained], "explained")
            self._set_stage(run_id, [f for f in features if f not in explained], "sampled")
            self._touch(run_id)

    # ------------------------------------------------------------------------------------ progress

    @_guarded
    def pending_features(self, run_id: str, stage: FeatureStage) -> list[int]:
        """Features not yet at `stage` ('explained', 'simulated' or 'scored'), failed excluded, ascending."""
        if stage not in STAGES[1:]:
            raise ValueError(f"pending_features stage: found {stage!r}; expected one of {STAGES[1:]}")
        before = STAGES[: STAGES.index(stage)]
        marks = ", ".join("?" * len(before))
        rows = self._rows(
            f"SELECT feature FROM feature_status WHERE run_id = ? AND stage IN ({marks}) ORDER BY feature",
            [run_id, *before],
        )
        return [r["feature"] for r in rows]

    @_guarded
    def failed_features(self, run_id: str) -> dict[int, str]:
        """Features whose status is 'failed' -> the stage of their latest open error."""
        rows = self._rows(
            """
            SELECT s.feature,
                   (SELECT e.stage FROM errors e
                    WHERE e.run_id = s.run_id AND e.feature = s.feature AND e.resolved = 0
                    ORDER BY e.id DESC LIMIT 1) AS stage
            FROM feature_status s WHERE s.run_id = ? AND s.stage = 'failed' ORDER BY s.feature
            """,
            [run_id],
        )
        return {r["feature"]: r["stage"] or "" for r in rows}

    # ------------------------------------------------------------------------------------ readers

    @_guarded
    def load_samples(self, run_id: str) -> list[FeatureSample]:
        """Every sampled feature's stats and windows (sampler order), by ascending feature."""
        windows = self._windows(run_id)
        return [
            FeatureSample(stats=_stats(r), windows=windows.get(r["feature"], []))
            for r in self._rows("SELECT * FROM features WHERE run_id = ? ORDER BY feature", [run_id])
        ]

    @_guarded
    def load_explanations(self, run_id: str, source: str = "llm") -> dict[int, Explanation]:
        rows = self._rows(
            "SELECT * FROM explanations WHERE run_id = ? AND source = ? ORDER BY feature", [run_id, source]
        )
        return {r["feature"]: _explanation(r) for r in rows}

    @_guarded
    def load_simulations(self, run_id: str, feature: int) -> dict[str, Simulation]:
        """The feature's simulations keyed by explanation_source."""
        rows = self._rows("SELECT * FROM simulations WHERE run_id = ? AND feature = ?", [run_id, feature])
        return {r["explanation_source"]: _simulation(r) for r in rows}

    @_guarded
    def load_reports(self, run_id: str) -> list[FeatureReport]:
        """One report per sampled feature (ascending): stats, windows, LLM explanation, scores, controls and
        open errors. `scores` holds the 'llm' row's columns, lift, lift_other and json; `controls` maps
        'baseline' / 'other' to their rows (with `explanation_source`, e.g. 'other:17')."""
        run = self._require_run(run_id)
        config = run["config"]
        windows = self._windows(run_id)
        explanations = self.load_explanations(run_id)
        scores: dict[int, dict[str, Any]] = {}
        controls: dict[int, dict[str, dict]] = {}
        for row in self._rows("SELECT * FROM scores WHERE run_id = ?", [run_id]):
            feature, source = row.pop("feature"), row.pop("explanation_source")
            del row["run_id"]
            if source == "llm":
                scores[feature] = row
            else:
                controls.setdefault(feature, {})[source.split(":")[0]] = {**row, "explanation_source": source}
        errors: dict[int, list[str]] = {}
        for row in self._rows("SELECT * FROM errors WHERE run_id = ? AND resolved = 0 ORDER BY id", [run_id]):
            errors.setdefault(row["feature"], []).append(f"{row['stage']}: {row['message']}")
        return [
            FeatureReport(
                run_id=run_id,
                feature=r["feature"],
                stats=_stats(r),
                windows=windows.get(r["feature"], []),
                explanation=explanations.get(r["feature"]),
                scores=scores.get(r["feature"]),
                controls=controls.get(r["feature"], {}),
                errors=errors.get(r["feature"], []),
                model_name=config.get("model") or "",
                sae_name=Path(config["sae"]).name or config["sae"],
            )
            for r in self._rows("SELECT * FROM features WHERE run_id = ? ORDER BY feature", [run_id])
        ]

    @_guarded
    def run_summary(self, run_id: str) -> dict[str, Any]:
        """Counts, correlation n/mean/median/q25/q75, means of lift, lift_other, auroc, ece and binarity
        (undefined values left out), and LLM cost (USD) and tokens summed over every recorded call."""
        run = self._require_run(run_id)
        llm = self._rows(
            "SELECT correlation, lift, lift_other, auroc, ece, binarity FROM scores "
            "WHERE run_id = ? AND explanation_source = 'llm'",
            [run_id],
        )
        stages = {
            r["stage"]: r["n"]
            for r in self._rows(
                "SELECT stage, count(*) AS n FROM feature_status WHERE run_id = ? GROUP BY stage", [run_id]
            )
        }
        usage = self._rows(
            "SELECT count(*) AS llm_calls, coalesce(sum(cost_usd), 0.0) AS cost_usd, "
            "coalesce(sum(input_tokens), 0) AS input_tokens, "
            "coalesce(sum(cached_input_tokens), 0) AS cached_input_tokens, "
            "coalesce(sum(cache_write_tokens), 0) AS cache_write_tokens, "
            "coalesce(sum(output_tokens), 0) AS output_tokens "
            "FROM llm_calls WHERE run_id = ?",
            [run_id],
        )[0]
        correlation = summarise([r["correlation"] for r in llm])
        return {
            "run_id": run_id,
            "name": run["name"],
            "status": run["status"],
            "training_run": run["training_run"],
            "step": run["step"],
            "sae_fingerprint": run["sae_fingerprint"],
            "sampled": sum(stages.values()),
            "scored": len(llm),
            "failed": stages.get("failed", 0),
            **{f"correlation_{k}": v for k, v in correlation.items()},
            **{
                f"{m}_mean": summarise([r[m] for r in llm])["mean"]
                for m in ("lift", "lift_other", "auroc", "ece", "binarity")
            },
            **usage,
        }

    @_guarded
    def feature_scores(self, run_id: str, column: str = "correlation") -> dict[int, float | None]:
        """feature -> one column of its 'llm' scores row (for paired comparisons and density breakdowns)."""
        if column not in _TABLES["scores"][0]:
            raise ValueError(f"feature_scores column: found {column!r}; expected a scores column such as 'correlation'")
        rows = self._rows(
            f"SELECT feature, {column} AS value FROM scores WHERE run_id = ? AND explanation_source = 'llm'",
            [run_id],
        )
        return {r["feature"]: r["value"] for r in rows}

    @_guarded
    def feature_densities(self, run_id: str) -> dict[int, float]:
        rows = self._rows("SELECT feature, density FROM features WHERE run_id = ?", [run_id])
        return {r["feature"]: r["density"] for r in rows}

    def _windows(self, run_id: str) -> dict[int, list[Window]]:
        windows: dict[int, list[Window]] = {}
        for r in self._rows("SELECT * FROM examples WHERE run_id = ? ORDER BY feature, idx", [run_id]):
            windows.setdefault(r["feature"], []).append(_window(r))
        return windows


# ---------------------------------------------------------------------------------------------------
# Opening


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


# ---------------------------------------------------------------------------------------------------
# Rows <-> records


def _flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _decode_run(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if not k.endswith("_json")}
    for key in ("config", "results_key", "versions"):
        out[key] = json.loads(row[f"{key}_json"])
    return out


def _usage_columns(usage: Usage) -> dict[str, int]:
    return usage.model_dump()


def _usage(row: Mapping[str, Any]) -> Usage:
    return Usage(**{k: row[k] or 0 for k in Usage.model_fields if k in row})


def _stats_row(run_id: str, stats: FeatureStats) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "feature": stats.feature,
        "n_tokens": stats.n_tokens,
        "n_active": stats.n_active,
        "density": stats.density,
        "max_activation": stats.max_activation,
        "mean_active": stats.mean_active,
        "histogram_json": json.dumps({"edges": stats.histogram_edges, "counts": stats.histogram_counts}),
    }


def _stats(row: Mapping[str, Any]) -> FeatureStats:
    histogram = json.loads(row["histogram_json"])
    return FeatureStats(
        feature=row["feature"],
        n_tokens=row["n_tokens"],
        n_active=row["n_active"],
        max_activation=row["max_activation"],
        mean_active=row["mean_active"],
        histogram_edges=histogram["edges"],
        histogram_counts=histogram["counts"],
    )


def _window_row(run_id: str, feature: int, idx: int, w: Window) -> dict[str, Any]:
    if w.feature != feature:
        raise ValueError(f"sample of feature {feature}: found a window of feature {w.feature}; expected {feature}")
    return {
        "run_id": run_id,
        "feature": feature,
        "idx": idx,
        "context_id": w.context_id,
        "start": w.start,
        "split": w.split,
        "grp": w.group,
        "interval": w.interval,
        "token_ids_json": json.dumps(w.token_ids),
        "tokens_json": json.dumps(w.tokens),
        "activations_json": json.dumps(w.activations),
    }


def _window(row: Mapping[str, Any]) -> Window:
    return Window(
        feature=row["feature"],
        context_id=row["context_id"],
        start=row["start"],
        token_ids=json.loads(row["token_ids_json"]),
        tokens=json.loads(row["tokens_json"]),
        activations=json.loads(row["activations_json"]),
        group=row["grp"],
        interval=row["interval"],
        split=row["split"],
    )


def _explanation_row(run_id: str, expl: Explanation, source: str) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "feature": expl.feature,
        "source": source,
        "text": expl.text,
        "raw_completion": expl.raw_completion,
        "backend": expl.backend,
        "prompt_hash": expl.prompt_hash,
        **_usage_columns(expl.usage),
        "cost_usd": expl.cost_usd,
        "created_at": _now(),
    }


def _explanation(row: Mapping[str, Any]) -> Explanation:
    return Explanation(
        feature=row["feature"],
        text=row["text"],
        raw_completion=row["raw_completion"],
        backend=row["backend"],
        prompt_hash=row["prompt_hash"],
        usage=_usage(row),
        cost_usd=row["cost_usd"],
    )


def _simulation_row(run_id: str, sim: Simulation) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "feature": sim.feature,
        "explanation_source": sim.explanation_source,
        "backend": sim.backend,
        "mode": sim.mode,
        "predictions_json": json.dumps(sim.predictions),
        **_usage_columns(sim.usage),
        "cost_usd": sim.cost_usd,
    }


def _simulation(row: Mapping[str, Any]) -> Simulation:
    return Simulation(
        feature=row["feature"],
        explanation_source=row["explanation_source"],
        backend=row["backend"],
        mode=row["mode"],
        predictions=json.loads(row["predictions_json"]),
        usage=_usage(row),
        cost_usd=row["cost_usd"],
    )
