"""Records <-> table rows: how each typed record (records.py, scoring.FeatureScores) lands in its table
and comes back. Pure functions: no connection, no SQL."""

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import metadata
from typing import TYPE_CHECKING, Any

from autointerp.records import CallRecord, Explanation, FeatureStats, Simulation, Usage, Window
from autointerp.scoring import FeatureScores
from autointerp.store.schema import DETECTION_COLUMNS
from autointerp.version import __version__

if TYPE_CHECKING:  # config imports the corpus module and with it torch, the scorers the LLM backends:
    # readers need none of them
    from autointerp.config import RunConfig
    from autointerp.scorers.detection import DetectionResult

VERSIONED_PACKAGES = ("autointerp", "torch", "transformer_lens", "anthropic", "openai")
# The columns a scores row carries besides FeatureScores.to_columns(); only the 'llm' row has values.
LIFT_COLUMNS = ("lift", "lift_other")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a score depends on (None if not installed); imports nothing."""
    versions: dict[str, str | None] = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = __version__ if name == "autointerp" else None
    return versions


# --------------------------------------------------------------------------------------------- runs


def run_row(
    run_id: str,
    name: str,
    config: "RunConfig",
    sae_fingerprint: str,
    corpus_fingerprint: str,
    versions: Mapping[str, str | None],
    training_run: str | None,
    step: int | None,
) -> dict[str, Any]:
    """A new run's row (status 'sampling'), its config, results key and versions as JSON."""
    created = now()
    return {
        "run_id": run_id,
        "name": name,
        "config_json": config.model_dump_json(),
        "results_key_json": json.dumps(config.results_key(), sort_keys=True),
        "versions_json": json.dumps(dict(versions)),
        "sae_fingerprint": sae_fingerprint,
        "corpus_fingerprint": corpus_fingerprint,
        "created_at": created,
        "updated_at": created,
        "status": "sampling",
        "training_run": training_run,
        "step": step,
    }


def decode_run(row: dict[str, Any]) -> dict[str, Any]:
    """A runs row with config, results_key and versions decoded (keys lose `_json`)."""
    out = {k: v for k, v in row.items() if not k.endswith("_json")}
    for key in ("config", "results_key", "versions"):
        out[key] = json.loads(row[f"{key}_json"])
    return out


# --------------------------------------------------------------------------------------------- samples


def stats_row(run_id: str, stats: FeatureStats) -> dict[str, Any]:
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


def stats(row: Mapping[str, Any]) -> FeatureStats:
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


def window_row(run_id: str, feature: int, idx: int, w: Window) -> dict[str, Any]:
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


def window(row: Mapping[str, Any]) -> Window:
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


# --------------------------------------------------------------------------------------------- LLM stages


def _usage(row: Mapping[str, Any]) -> Usage:
    return Usage(**{k: row[k] or 0 for k in Usage.model_fields if k in row})


def explanation_row(run_id: str, expl: Explanation, source: str) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "feature": expl.feature,
        "source": source,
        "text": expl.text,
        "raw_completion": expl.raw_completion,
        "backend": expl.backend,
        "prompt_hash": expl.prompt_hash,
        **expl.usage.model_dump(),
        "cost_usd": expl.cost_usd,
        "created_at": now(),
    }


def explanation(row: Mapping[str, Any]) -> Explanation:
    return Explanation(
        feature=row["feature"],
        text=row["text"],
        raw_completion=row["raw_completion"],
        backend=row["backend"],
        prompt_hash=row["prompt_hash"],
        usage=_usage(row),
        cost_usd=row["cost_usd"],
    )


def simulation_row(run_id: str, sim: Simulation) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "feature": sim.feature,
        "explanation_source": sim.explanation_source,
        "backend": sim.backend,
        "mode": sim.mode,
        "predictions_json": json.dumps(sim.predictions),
        **sim.usage.model_dump(),
        "cost_usd": sim.cost_usd,
    }


def score_row(
    run_id: str,
    feature: int,
    source: str,
    scores: FeatureScores,
    lifts: Mapping[str, float | None],
    settings_hash: str | None = None,
) -> dict[str, Any]:
    """One scores row: the scalar columns, the lift columns (None where `lifts` lacks them), the JSON and the
    hash of the settings that made it (None: not recorded)."""
    return {
        "run_id": run_id,
        "feature": feature,
        "explanation_source": source,
        **scores.to_columns(),
        **{name: lifts.get(name) for name in LIFT_COLUMNS},
        "json": scores.to_json(),
        "settings_hash": settings_hash,
    }


def detection_row(run_id: str, result: "DetectionResult", settings_hash: str | None = None) -> dict[str, Any]:
    """One detection_scores row: the result's scalar columns, its settings hash and the result as JSON
    without its calls (they go to llm_calls)."""
    columns = result.columns()
    unknown = set(columns) - {"scorer", "explanation_source", "backend", *DETECTION_COLUMNS}
    if unknown:  # a column added to the scorer but not to the schema would be lost silently
        raise ValueError(f"detection row: found columns {sorted(unknown)}; expected those of DETECTION_COLUMNS")
    return {
        "run_id": run_id,
        "feature": result.feature,
        "explanation_source": result.explanation_source,
        "backend": result.backend,
        **{name: columns.get(name) for name in DETECTION_COLUMNS},
        "settings_hash": settings_hash,
        "json": result.model_dump_json(exclude={"calls"}),
    }


def settings_row(run_id: str, digest: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "settings_hash": digest,
        "settings_json": json.dumps(settings, sort_keys=True),
        "created_at": now(),
    }


def call_row(run_id: str, feature: int, stage: str | None, call: CallRecord) -> dict[str, Any]:
    """One llm_calls row, under `stage` (a best-of-n explanation's judging simulations count as 'explain'),
    or under the call's own `stage` when None (a scored feature's 'simulate' and 'detect' calls)."""
    return {
        "stage": stage or call.stage,
        "status": "ok" if call.ok else "error",
        "created_at": now(),
        "backend": call.backend,
        "model": call.model,
        "attempts": call.attempts,
        "latency_s": call.latency_s,
        "input_tokens": call.usage.input_tokens,
        "cached_input_tokens": call.usage.cached_input_tokens,
        "cache_write_tokens": call.usage.cache_write_tokens,
        "output_tokens": call.usage.output_tokens,
        "cost_usd": call.cost_usd,
        "error": call.error,
        "run_id": run_id,
        "feature": feature,
    }
