"""Spread from fresh draws: a subset of features scored again on windows drawn with other sampler seeds.

A run's score of a feature rests on one draw of its scoring windows. `scoring.redraws` (`--redraws N`)
samples the control subset's features again N times, each time with sampler seed `seed + k * SEED_STEP`
(k = 1..N): the sampler's draws are hashes of (seed, feature, context), so another seed gives other windows
of the same corpus, and only these features are encoded. Each draw's scoring windows are judged from the
feature's stored LLM explanation by every scorer the run used, and stored in `redraw_scores`; readers give
the per-feature standard deviation over the run's own draw and these (scoring.redraw_spread).

Held-out stays held out: another seed also splits contexts differently between explanation and scoring,
so a redraw's scoring windows from contexts the explainer was shown (the run's explanation windows) are
dropped, and counted (`n_dropped`). Costs: N passes over the corpus (model forward to the SAE's hook) for
the subset only, and N scorings per feature and scorer (LLM calls; none with the baseline backend).
"""

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from autointerp.config import RunConfig
from autointerp.records import FeatureSample
from autointerp.reporting import Reporter

SEED_STEP = 1_000_003  # a prime step: redraw seeds never meet the seeds of neighbouring runs (seed + 1, ...)
# Scores kept per redraw, by scorer: the columns of `redraw_scores` they fill.
SIMULATION_SCORES = ("correlation", "auroc")
DETECTION_SCORES = ("balanced_accuracy", "precision", "recall", "auroc")


def redraw_seed(seed: int, k: int) -> int:
    """The sampler seed of redraw k (1-based) of a run with sampler seed `seed`."""
    return seed + k * SEED_STEP


def redraw_features(explained: Sequence[int], cfg: RunConfig) -> list[int]:
    """The features redrawn: the control subset (interpret.control_partners), which depends on (seed,
    feature) only, so two runs sharing a feature redraw it in both or neither."""
    from autointerp.interpret import control_partners

    return sorted(control_partners(sorted(explained), cfg.scoring.controls_share, cfg.selection.seed))


def held_out(redrawn: FeatureSample, original: FeatureSample) -> tuple[FeatureSample, int]:
    """The redraw's scoring windows minus those from contexts the explainer was shown, as a sample with
    the original statistics (the same corpus: max activation and quantisation unchanged); and how many
    were dropped."""
    shown = {w.context_id for w in original.split("explain")}
    scoring = redrawn.split("score")
    kept = [w for w in scoring if w.context_id not in shown]
    return FeatureSample(stats=original.stats, windows=kept), len(scoring) - len(kept)


def redraw_row(result: Any, redraw: int, seed: int, n_dropped: int) -> dict[str, Any]:
    """The `redraw_scores` columns of one scorer's result on one redraw (SimulationResult or DetectionResult)."""
    row: dict[str, Any] = {
        "feature": result.feature,
        "redraw": redraw,
        "scorer": result.scorer,
        "sampler_seed": seed,
        "n_dropped": n_dropped,
        "cost_usd": result.cost_usd,
    }
    if result.scorer == "simulation":
        scores = result.scores
        return row | {"n_windows": scores.n_windows, "correlation": scores.correlation, "auroc": scores.auroc}
    metrics = result.metrics
    return row | {
        "n_windows": len(result.labels),
        **{name: getattr(metrics, name) for name in ("balanced_accuracy", "precision", "recall")},
        "detection_auroc": metrics.auroc,
    }


async def score_redraw(
    samples: Mapping[int, FeatureSample],
    explanations: Mapping[int, str],
    cfg: RunConfig,
    scorers: Sequence[str],
    simulator,
) -> list[Any]:
    """Every scorer's result on every (feature -> held-out redraw sample), concurrently; a scorer that fails
    on a feature leaves no result for it (the draw is spread, not a score, so it is not an error row)."""
    from autointerp.llm_calls import LLMStageFailure
    from autointerp.scorers import ScoringItem, make_scorer

    judges = [make_scorer(name, simulator, cfg) for name in scorers]

    async def one(judge, feature: int):
        item = ScoringItem(sample=samples[feature], explanation=explanations[feature], source="llm")
        try:
            return await judge.score(item)
        except LLMStageFailure:
            return None

    found = await asyncio.gather(*(one(j, f) for f in samples if samples[f].split("score") for j in judges))
    return [r for r in found if r is not None]


def redraw_stage(store, run_id: str, cfg: RunConfig, reporter: Reporter | None = None) -> int:
    """Run `cfg.scoring.redraws` fresh draws for the run's control subset and store them (`redraw_scores`);
    draws already stored are kept (resumable). Returns the number of rows written."""
    from autointerp.inputs import load_inputs
    from autointerp.interpret import resolve_backends
    from autointerp.sampler import sample_features

    reporter = reporter or Reporter()
    explanations = {f: e.text for f, e in store.load_explanations(run_id).items()}
    features = redraw_features(list(explanations), cfg)
    done = {(r["feature"], r["redraw"]) for r in store.redraw_rows(run_id)}
    todo = [k for k in range(1, cfg.scoring.redraws + 1) if any((f, k) not in done for f in features)]
    if not features or not todo:
        return 0
    originals = {s.feature: s for s in store.load_samples(run_id) if s.feature in features}
    _, simulator, _, _ = resolve_backends(cfg)
    scorers = list(cfg.scoring.scorers or ["simulation"])
    inputs = load_inputs(cfg)
    written = 0
    for k in todo:
        seed = redraw_seed(cfg.sampler.seed, k)
        redraw_cfg = cfg.model_copy(update={"sampler": cfg.sampler.model_copy(update={"seed": seed})})
        reporter.note(f"Redraw {k}/{cfg.scoring.redraws}: sampling {len(features)} features with seed {seed}.")
        drawn = sample_features(
            inputs.model,
            inputs.sae,
            inputs.contexts,  # streamed: each redraw reads the corpus again
            features,
            redraw_cfg.sampler,
            inputs.special_ids,
            inputs.first_position,
        )
        kept = {s.feature: held_out(s, originals[s.feature]) for s in drawn}
        samples = {f: sample for f, (sample, _) in kept.items()}
        results = asyncio.run(score_redraw(samples, explanations, redraw_cfg, scorers, simulator))
        rows = [redraw_row(r, k, seed, kept[r.feature][1]) for r in results]
        store.save_redraws(run_id, rows, calls=[c for r in results for c in r.calls])
        written += len(rows)
    return written
