"""The run database's schema: tables, views and the schema version, and how they are created and checked.

Tables hold what the stages wrote (one row per run, feature, window, explanation, simulation, score, LLM
call, error and feature status); views join them into what a reader of the file wants first (one row per
feature with its explanation and headline scores, one row per run with its costs) for sqlite-utils,
Datasette or `pandas.read_sql`. The package's own readers use the tables only, so a file written before
the views existed reads the same.
"""

from pathlib import Path
from typing import Literal, get_args

import sqlite_utils

from autointerp import __version__
from autointerp.errors import StoreError, expected
from autointerp.scoring import COLUMNS, FeatureScores

DB_NAME = "autointerp.sqlite"
# PRAGMA user_version. Views are not part of it: they are (re)created on every open for writing and
# no reader depends on them, so adding or changing one needs no new version.
SCHEMA_VERSION = 1
RunStatus = Literal["sampling", "scoring", "done", "interrupted"]
FeatureStage = Literal["sampled", "explained", "scored", "failed"]
# Progress order of a feature; "failed" sits outside it until resolve_failures() puts it back.
STAGES: tuple[FeatureStage, ...] = ("sampled", "explained", "scored")

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
TABLES: dict[str, tuple[dict[str, type], str | tuple[str, ...], tuple[tuple[str, ...], ...]]] = {
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

# view -> its SELECT. Documented in README.md ("The database"); tests/test_store.py pins the columns.
VIEWS: dict[str, str] = {
    # One row per sampled feature of every run: its firing statistics, status, LLM explanation, headline
    # scores of that explanation (lift and lift_other NULL where no control was scored), its latest open
    # error ('stage: message', as FeatureReport.errors) and the USD its LLM calls cost.
    "feature_scores": """SELECT
    f.run_id, f.feature, f.density, f.max_activation, f.n_active, st.stage AS status,
    e.text AS explanation, e.backend AS explainer,
    s.correlation, s.lift, s.lift_other, s.spearman, s.abs_dev_explained, s.auroc, s.balanced_accuracy,
    s.ece, s.binarity,
    (SELECT er.stage || ': ' || er.message FROM errors er
     WHERE er.run_id = f.run_id AND er.feature = f.feature AND er.resolved = 0
     ORDER BY er.id DESC LIMIT 1) AS error,
    (SELECT total(c.cost_usd) FROM llm_calls c WHERE c.run_id = f.run_id AND c.feature = f.feature) AS cost_usd
FROM features f
LEFT JOIN feature_status st ON st.run_id = f.run_id AND st.feature = f.feature
LEFT JOIN explanations e ON e.run_id = f.run_id AND e.feature = f.feature AND e.source = 'llm'
LEFT JOIN scores s ON s.run_id = f.run_id AND s.feature = f.feature AND s.explanation_source = 'llm'""",
    # One row per run: features by status (sampled = all of them; pending = not yet scored nor failed),
    # and every recorded LLM call summed (calls, failed calls, tokens, USD).
    "run_costs": """SELECT
    r.run_id, r.name, r.status, r.training_run, r.step, r.created_at, r.updated_at,
    coalesce(fs.sampled, 0) AS sampled, coalesce(fs.pending, 0) AS pending,
    coalesce(fs.scored, 0) AS scored, coalesce(fs.failed, 0) AS failed,
    coalesce(c.llm_calls, 0) AS llm_calls, coalesce(c.failed_calls, 0) AS failed_calls,
    coalesce(c.input_tokens, 0) AS input_tokens, coalesce(c.cached_input_tokens, 0) AS cached_input_tokens,
    coalesce(c.cache_write_tokens, 0) AS cache_write_tokens, coalesce(c.output_tokens, 0) AS output_tokens,
    coalesce(c.cost_usd, 0.0) AS cost_usd
FROM runs r
LEFT JOIN (
    SELECT run_id, count(*) AS sampled, sum(stage IN ('sampled', 'explained')) AS pending,
           sum(stage = 'scored') AS scored, sum(stage = 'failed') AS failed
    FROM feature_status GROUP BY run_id
) fs ON fs.run_id = r.run_id
LEFT JOIN (
    SELECT run_id, count(*) AS llm_calls, sum(status = 'error') AS failed_calls,
           sum(input_tokens) AS input_tokens, sum(cached_input_tokens) AS cached_input_tokens,
           sum(cache_write_tokens) AS cache_write_tokens, sum(output_tokens) AS output_tokens,
           total(cost_usd) AS cost_usd
    FROM llm_calls GROUP BY run_id
) c ON c.run_id = r.run_id""",
}


def check_schema(db: sqlite_utils.Database, path: Path, readonly: bool) -> None:
    """Refuse a database this code cannot read: a newer schema, or an SQLite file that is not a run database."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = set(db.table_names())
    if version > SCHEMA_VERSION:
        raise StoreError(
            expected(
                f"run database {path}",
                f"schema version {version}",
                f"version {SCHEMA_VERSION} or older, the newest this autointerp ({__version__}) reads",
                "It was written by a newer autointerp; upgrade to read it.",
            )
        )
    if version == 0 and (tables or readonly):
        found = f"tables {sorted(tables)} and no schema version" if tables else "an empty database"
        raise StoreError(expected(f"run database {path}", found, "an autointerp run database"))
    if 0 < version < SCHEMA_VERSION:  # the place for migrations once there is more than one version
        raise StoreError(expected(f"run database {path}", f"schema version {version}", f"{SCHEMA_VERSION}"))


def create_schema(db: sqlite_utils.Database) -> None:
    """Create whatever tables, indexes and views are missing (WAL journal), and replace a view whose
    definition changed; a database already up to date is left as it is."""
    db.enable_wal()
    with db.atomic():
        for name, (columns, pk, indexes) in TABLES.items():
            table = db.table(name)
            table.create(
                columns,
                pk=pk,
                not_null=(pk,) if isinstance(pk, str) else pk,
                foreign_keys=None if name == "runs" else _RUN_FK,
                if_not_exists=True,
            )
            for index in indexes:
                table.create_index(index, if_not_exists=True)
        for name, select in VIEWS.items():
            create = f"CREATE VIEW {name} AS {select}"
            found = db.execute("SELECT sql FROM sqlite_master WHERE type = 'view' AND name = ?", [name]).fetchone()
            if found is not None and found[0] != create:
                db.execute(f"DROP VIEW {name}")
            # IF NOT EXISTS: another writer opening the same file at the same moment may have made it.
            db.execute(create.replace("CREATE VIEW", "CREATE VIEW IF NOT EXISTS", 1))
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
