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

from autointerp.errors import StoreError, expected
from autointerp.scoring import COLUMNS, FeatureScores
from autointerp.version import __version__

DB_NAME = "autointerp.sqlite"
# PRAGMA user_version. Views are not part of it: they are (re)created on every open for writing and
# no reader depends on them, so adding or changing one needs no new version.
# 1: the first schema. 2: scores gained the FeatureScores columns added since (abs_dev_explained_centred,
#    the calibration-set count, detection_threshold_rule, the permutation null) and `settings_hash`; new
#    tables `settings` and `detection_scores`. A version-1 file is read as it is and upgraded when opened
#    for writing (MIGRATIONS).
SCHEMA_VERSION = 2
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


# The detection scorer's scalar columns (autointerp.scorers.detection.COLUMNS, pinned equal by
# tests/test_store.py; spelled out here so that readers of the store need not import the scorers, which pull
# in the LLM backends): what the judge saw, the binary metrics with truth = the feature fired in the window,
# AUROC from P(yes) (NULL when the judge gave no probabilities), and each group's share judged yes.
DETECTION_GROUPS = ("top", "interval", "random", "nonactivating", "hard_negative")
DETECTION_METRICS = ("balanced_accuracy", "precision", "recall", "f1", "auroc")
DETECTION_COLUMNS: dict[str, type] = {
    "mode": str, "windows_per_prompt": int, "n_windows": int, "n_positive": int, "n_negative": int,
    "n_said_yes": int, **dict.fromkeys(DETECTION_METRICS, float),
    **{f"yes_rate_{group}": float for group in DETECTION_GROUPS},
}  # fmt: skip

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
        # explanation's. Both only on the 'llm' row, NULL where the control was not scored or either
        # correlation is undefined (the reasons are in each row's json `undefined`). settings_hash: the
        # `settings` row of what made the score (autointerp.settings_hash).
        {
            "run_id": str, "feature": int, "explanation_source": str, **_score_types(),
            "lift": float, "lift_other": float, "json": str, "settings_hash": str,
        },
        ("run_id", "feature", "explanation_source"),
        (("run_id", "explanation_source"),),
    ),
    "detection_scores": (
        # One row per explanation judged by the detection scorer: the LLM's ('llm') and each control's, on
        # the same held-out windows as the simulation. json: the DetectionResult without its calls
        # (per-window verdicts, P(yes), groups, labels, the order shown).
        {
            "run_id": str, "feature": int, "explanation_source": str, "backend": str, **DETECTION_COLUMNS,
            "settings_hash": str, "json": str,
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
    # Fresh window draws of the control subset (autointerp.redraws): one row per feature, redraw k (1..N)
    # and scorer, the stored LLM explanation judged on windows sampled with seed sampler_seed; n_dropped:
    # scoring windows left out because the explainer was shown their context.
    "redraw_scores": (
        {
            "run_id": str, "feature": int, "redraw": int, "scorer": str, "sampler_seed": int, "n_windows": int,
            "n_dropped": int, "correlation": float, "auroc": float, "balanced_accuracy": float, "precision": float,
            "recall": float, "detection_auroc": float, "cost_usd": float, "created_at": str,
        },
        ("run_id", "feature", "redraw", "scorer"),
        (),
    ),
    # One finished scorer result of a feature not yet fully scored (autointerp.interpret), kept as it arrives so
    # an interrupted run does not ask the LLM again: the ScorerResult as JSON without its calls (those are in
    # llm_calls already), reused only for the same explanation text (explanation_sha) and settings_hash. The
    # feature's rows go once its final rows are written (kept when a scorer failed, for a retry to reuse).
    "scorer_results": (
        {
            "run_id": str, "feature": int, "scorer": str, "explanation_source": str, "explanation_sha": str,
            "settings_hash": str, "result_json": str, "created_at": str,
        },
        ("run_id", "feature", "scorer", "explanation_source"),
        (),
    ),
    # The settings behind each settings_hash of a run's score rows (autointerp.settings_hash.score_settings).
    "settings": (
        {"run_id": str, "settings_hash": str, "settings_json": str, "created_at": str},
        ("run_id", "settings_hash"),
        (),
    ),
    # The features a run chose to sample, written with its first stored pass: sampling is finished once each
    # has a `features` row (a multi-pass run stores pass by pass). No rows: a run sampled before this table.
    "sampling_plan": ({"run_id": str, "feature": int}, ("run_id", "feature"), ()),
    # Each sampled feature's decoder row through the unembedding (W_dec[f] @ W_U), its top and bottom tokens
    # (autointerp.logits, written at sampling while the model is loaded). side: 'top' or 'bottom'; rank 0 is
    # the largest (top) or most negative (bottom) value, in logit units.
    "feature_logits": (
        {"run_id": str, "feature": int, "side": str, "rank": int, "token_id": int, "token": str, "value": float},
        ("run_id", "feature", "side", "rank"),
        (),
    ),
    # Batch mode (autointerp.batch_ledger): one row per provider batch (batch_id NULL until the provider
    # returned it; state submitting / open / ingested) and one per request in it (the request as sent, then
    # its status, response or error).
    "batches": (
        {
            "run_id": str, "batch_key": str, "backend": str, "stage": str, "batch_id": str, "state": str,
            "n_requests": int, "submitted_at": str, "provider_status": str, "updated_at": str,
        },
        ("run_id", "batch_key"),
        (),
    ),
    "batch_requests": (
        {
            "run_id": str, "custom_id": str, "batch_key": str, "backend": str, "request_json": str, "status": str,
            "response_json": str, "error": str, "retryable": int, "cost_usd": float,
        },
        ("run_id", "custom_id"),
        (("run_id", "batch_key"),),
    ),
}  # fmt: skip

# view -> its SELECT. Documented in README.md ("The database"); tests/test_store.py pins the columns.
VIEWS: dict[str, str] = {
    # One row per sampled feature of every run: its firing statistics, status, LLM explanation, headline
    # scores of that explanation (correlation NULL with correlation_reason saying why, e.g. 'constant
    # prediction'; lift and lift_other NULL where no control was scored or a correlation is undefined),
    # the permutation null's z and p, the settings hash, its latest open error ('stage: message', as
    # FeatureReport.errors) and the USD its LLM calls cost (NULL when a call's price is unknown).
    "feature_scores": """SELECT
    f.run_id, f.feature, f.density, f.max_activation, f.n_active, st.stage AS status,
    e.text AS explanation, e.backend AS explainer,
    s.correlation, json_extract(s.json, '$.undefined.correlation') AS correlation_reason,
    s.lift, s.lift_other, s.permutation_z, s.permutation_p, s.spearman, s.abs_dev_explained, s.auroc,
    s.balanced_accuracy, s.ece, s.binarity, s.settings_hash,
    (SELECT er.stage || ': ' || er.message FROM errors er
     WHERE er.run_id = f.run_id AND er.feature = f.feature AND er.resolved = 0
     ORDER BY er.id DESC LIMIT 1) AS error,
    (SELECT CASE WHEN count(*) > count(c.cost_usd) THEN NULL ELSE total(c.cost_usd) END
     FROM llm_calls c WHERE c.run_id = f.run_id AND c.feature = f.feature) AS cost_usd
FROM features f
LEFT JOIN feature_status st ON st.run_id = f.run_id AND st.feature = f.feature
LEFT JOIN explanations e ON e.run_id = f.run_id AND e.feature = f.feature AND e.source = 'llm'
LEFT JOIN scores s ON s.run_id = f.run_id AND s.feature = f.feature AND s.explanation_source = 'llm'""",
    # One row per run: features by status (sampled = all of them; pending = not yet scored nor failed),
    # and every recorded LLM call summed (calls, failed calls, tokens, USD: NULL when some call's price is
    # unknown, unpriced_calls says how many).
    "run_costs": """SELECT
    r.run_id, r.name, r.status, r.training_run, r.step, r.created_at, r.updated_at,
    coalesce(fs.sampled, 0) AS sampled, coalesce(fs.pending, 0) AS pending,
    coalesce(fs.scored, 0) AS scored, coalesce(fs.failed, 0) AS failed,
    coalesce(c.llm_calls, 0) AS llm_calls, coalesce(c.failed_calls, 0) AS failed_calls,
    coalesce(c.input_tokens, 0) AS input_tokens, coalesce(c.cached_input_tokens, 0) AS cached_input_tokens,
    coalesce(c.cache_write_tokens, 0) AS cache_write_tokens, coalesce(c.output_tokens, 0) AS output_tokens,
    CASE WHEN coalesce(c.unpriced_calls, 0) > 0 THEN NULL ELSE coalesce(c.cost_usd, 0.0) END AS cost_usd,
    coalesce(c.unpriced_calls, 0) AS unpriced_calls
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
           total(cost_usd) AS cost_usd, sum(cost_usd IS NULL) AS unpriced_calls
    FROM llm_calls GROUP BY run_id
) c ON c.run_id = r.run_id""",
}


def schema_version(db: sqlite_utils.Database) -> int:
    return db.execute("PRAGMA user_version").fetchone()[0]


def check_schema(db: sqlite_utils.Database, path: Path, readonly: bool) -> None:
    """Refuse a database this code cannot read: a newer schema, or an SQLite file that is not a run database.

    An older version is fine: read-only it is read as it is (readers fill the columns it lacks with NULL),
    opened for writing it is upgraded by :func:`create_schema`."""
    version = schema_version(db)
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


def _add_missing_columns(db: sqlite_utils.Database, table: str) -> None:
    """Add the columns the current schema gives `table` and the file lacks (NULL in every existing row)."""
    present = set(db.table(table).columns_dict)
    for column, kind in TABLES[table][0].items():
        if column not in present:
            db.table(table).add_column(column, kind)


def _v1_to_v2(db: sqlite_utils.Database) -> None:
    # Old rows keep NULL in the new columns: their permutation null was never computed and their settings
    # were not recorded (comparisons fall back to the stored configs). The `settings` and `detection_scores`
    # tables are created with the others by create_schema (a version-2 file written before detection
    # existed gets its table the same way, on its next open for writing).
    _add_missing_columns(db, "scores")


# version -> the step that upgrades a file of that version to the next one.
MIGRATIONS = {1: _v1_to_v2}


def create_schema(db: sqlite_utils.Database) -> None:
    """Upgrade an older file (MIGRATIONS, in order), create whatever tables, indexes and views are missing
    (WAL journal) and replace a view whose definition changed, all in one transaction; a database already
    up to date is left as it is."""
    db.enable_wal()
    with db.atomic():
        version = schema_version(db)
        if version:  # 0: a new, empty file
            for step in range(version, SCHEMA_VERSION):
                MIGRATIONS[step](db)
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
