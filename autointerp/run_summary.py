"""A run's summary row: feature counts, statistics of its scores over features, and its LLM usage.

The store gives the raw rows (score columns of each feature's LLM explanation, features per status,
summed LLM calls); the statistics are computed here, with `scoring.summarise`. Returned by
`autointerp run` and `score_checkpoint`, and the source of every run table row (`autointerp.tables`).
"""

from typing import Any

from autointerp.scoring import summarise
from autointerp.store import RunStore

# Scores whose mean over features the summary reports as `<name>_mean`, after the correlation statistics.
MEAN_COLUMNS = ("lift", "lift_other", "auroc", "ece", "binarity")


def run_summary(store: RunStore, run_id: str) -> dict[str, Any]:
    """Counts, correlation n/mean/median/q25/q75, means of lift, lift_other, auroc, ece and binarity
    (scoring.summarise over the features' 'llm' scores), and LLM cost (USD) and tokens summed over every
    recorded call. Raises StoreError when the database has no such run."""
    run = store.require_run(run_id)
    llm = store.llm_score_rows(run_id, ("correlation", *MEAN_COLUMNS))
    stages = store.stage_counts(run_id)
    usage = store.call_totals(run_id)
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
        **{f"{m}_mean": summarise([r[m] for r in llm])["mean"] for m in MEAN_COLUMNS},
        **usage,
    }
