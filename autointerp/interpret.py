"""The LLM stages of a run: explain every sampled feature, then simulate and score it, concurrently
across features up to each backend's in-flight limit. Every feature's result is committed on its own,
so an interrupted run resumes with the features still pending; a failure is recorded, never scored.

Controls (on `scoring.controls_share` of the features, chosen with the seed): the same scoring windows
simulated from (a) the baseline explanation (top tokens, no LLM) and (b) another feature's LLM
explanation. `lift` = correlation - baseline-control correlation; `lift_other` likewise. A third control
needs no LLM call: every simulation is also scored against `scoring.n_permutations` shufflings of its
windows (scoring.permutation_null). Every score row carries the hash of the settings that made it
(autointerp.settings_hash).
"""

import asyncio
import random
from collections.abc import Mapping, Sequence

from autointerp.best_of import explain_best_of
from autointerp.config import RunConfig
from autointerp.explain import explain_feature
from autointerp.llm.base import LLMBackend
from autointerp.llm.spec import default_backend_spec, make_backend
from autointerp.llm_calls import LLMStageFailure
from autointerp.records import CallRecord, Explanation, FeatureSample, Simulation
from autointerp.reporting import Reporter
from autointerp.run_summary import run_summary
from autointerp.scoring import FeatureScores, lift, score_feature
from autointerp.settings_hash import prompt_digests, score_settings
from autointerp.simulate import simulate_feature


def backend_specs(cfg: RunConfig) -> tuple[str, str, str]:
    """(explainer spec, simulator spec, why that explainer): the configured ones, else the default."""
    explainer_spec, why = (cfg.llm.explainer, "as configured") if cfg.llm.explainer else default_backend_spec()
    return explainer_spec, cfg.llm.simulator or explainer_spec, why


def resolve_backends(cfg: RunConfig) -> tuple[LLMBackend, LLMBackend, LLMBackend, str]:
    """(explainer, simulator, baseline, a sentence saying which backends and why)."""
    explainer_spec, simulator_spec, why = backend_specs(cfg)
    options = dict(
        max_in_flight=cfg.llm.max_in_flight,
        requests_per_minute=cfg.llm.requests_per_minute,
        tokens_per_minute=cfg.llm.tokens_per_minute,
        prices=cfg.llm.prices_file,
    )
    explainer = make_backend(explainer_spec, **options)
    simulator = explainer if simulator_spec == explainer_spec else make_backend(simulator_spec, **options)
    baseline = make_backend("baseline")
    note = f"explainer {explainer.name}, simulator {simulator.name} ({why})"
    if "baseline" in (explainer_spec, simulator_spec):
        note += "; 'baseline' is the no-LLM control (top tokens), not an LLM"
    return explainer, simulator, baseline, note


def score_simulation(sample: FeatureSample, simulation: Simulation, cfg: RunConfig) -> FeatureScores:
    """Every score of one simulation of the feature's scoring windows, its permutation null included.

    The detection threshold follows the simulation's mode (ScoringConfig.threshold_for: the balanced split
    for logprob expected values, 0.5 for integer answers, unless one is configured); the null is seeded by
    (sampler seed, feature), so a feature's null is the same whatever other features the run holds.
    """
    windows = sample.split("score")
    return score_feature(
        [w.activations for w in windows],
        simulation.predictions,
        [w.group for w in windows],
        [w.interval for w in windows],
        sample.stats.max_activation,
        rule=cfg.scoring.quantise_rule,
        detection_threshold=cfg.scoring.threshold_for(simulation.mode),
        n_permutations=cfg.scoring.n_permutations,
        seed=cfg.sampler.seed,
        feature=sample.feature,
    )


def run_settings(cfg: RunConfig, corpus_fingerprint: str) -> dict:
    """The settings behind this run's simulation scores (settings_hash.score_settings), with the explainer
    and simulator the run actually uses (a server address left out: the same model served elsewhere)."""
    explainer_spec, simulator_spec, _ = backend_specs(cfg)
    key = cfg.results_key()
    key["llm"] |= {"explainer": explainer_spec.split("@http")[0], "simulator": simulator_spec.split("@http")[0]}
    return score_settings(key, corpus_fingerprint, prompt_digests(), "simulation")


def control_lifts(scores: Mapping[str, FeatureScores]) -> dict[str, float | None]:
    """The scores row's lift columns: the 'llm' correlation minus the 'baseline' control's (lift) and minus
    the first 'other:<feature>' control's (lift_other); None where that control was not scored."""
    llm = scores.get("llm")
    others = [s for source, s in scores.items() if source.startswith("other:")]
    return {
        "lift": lift(llm.correlation, scores["baseline"].correlation) if llm and "baseline" in scores else None,
        "lift_other": lift(llm.correlation, others[0].correlation) if llm and others else None,
    }


def control_partners(features: list[int], share: float, seed: int) -> dict[int, int | None]:
    """The features (`share` of them, seeded) that get controls -> the feature whose explanation is their
    'other' control (the next one, cyclically; None when there is no other feature)."""
    rng = random.Random(seed)
    ordered = sorted(features)
    chosen = [f for f in ordered if rng.random() < share]
    return {
        f: ordered[(i + 1) % len(ordered)] if len(ordered) > 1 else None
        for i, f in ((ordered.index(f), f) for f in chosen)
    }


class Tally:
    """Running totals for the progress line. A call of unknown price (cost_usd None) is counted apart, never
    as $0: the line then shows the priced part as a lower bound and how many calls are unpriced."""

    def __init__(self) -> None:
        self.done = self.failed = self.tokens = self.unpriced = 0
        self.cost = 0.0

    def add(self, calls: Sequence[CallRecord]) -> None:
        for c in calls:
            self.tokens += c.usage.input_tokens + c.usage.cached_input_tokens + c.usage.output_tokens
            if c.cost_usd is None:
                self.unpriced += 1
            else:
                self.cost += c.cost_usd

    @property
    def cost_usd(self) -> float | None:
        """USD of every call so far; None once a call's price is unknown."""
        return None if self.unpriced else self.cost

    def line(self) -> str:
        cost = f"${self.cost:.4f}" if not self.unpriced else f">= ${self.cost:.4f} ({self.unpriced} calls unpriced)"
        return f"failed {self.failed}  tokens {self.tokens:,}  {cost}"


async def interpret_run(
    store, run_id: str, cfg: RunConfig, retry_failed: bool = False, reporter: Reporter | None = None
) -> dict:
    explainer, simulator, baseline, note = resolve_backends(cfg)
    reporter = reporter or Reporter()
    reporter.note(f"LLM stages: {note}.")
    if retry_failed:
        store.resolve_failures(run_id, list(store.failed_features(run_id)))
    samples = {s.feature: s for s in store.load_samples(run_id)}
    settings = run_settings(cfg, store.require_run(run_id)["corpus_fingerprint"])
    store.set_run_status(run_id, "scoring")
    tally = Tally()
    progress = reporter.progress()

    async def explain_one(feature: int, task) -> None:
        sample = samples[feature]
        try:
            control, _ = await explain_feature(baseline, sample, cfg)
            store.save_explanation(run_id, control, "baseline")
            if cfg.llm.best_of > 1:  # candidates judged by the simulator on held-out explanation windows
                explanation, calls = await explain_best_of(explainer, sample, cfg, simulator=simulator)
            else:
                explanation, calls = await explain_feature(explainer, sample, cfg)
            tally.add(calls)
            store.save_explanation(run_id, explanation, "llm", calls=calls)
        except LLMStageFailure as failure:
            tally.add(failure.calls)
            tally.failed += 1
            store.record_failure(run_id, feature, "explain", str(failure), calls=failure.calls)
        progress.advance(task, 1, info=tally.line())

    async def score_one(
        feature: int,
        explanations: dict[int, Explanation],
        controls: dict[int, Explanation],
        partners: dict[int, int | None],
        task,
    ) -> None:
        sample = samples[feature]
        windows = sample.split("score")
        calls: list[CallRecord] = []
        try:
            simulation, made = await simulate_feature(
                simulator, explanations[feature].text, windows, feature, "llm", cfg
            )
            calls += made
            simulations = [simulation]
            if feature in partners:
                other = partners[feature]
                jobs = []
                if feature in controls:
                    jobs.append((controls[feature].text, "baseline"))
                if other is not None and other in explanations:
                    jobs.append((explanations[other].text, f"other:{other}"))
                for text, source in jobs:
                    try:
                        control_sim, made = await simulate_feature(simulator, text, windows, feature, source, cfg)
                        calls += made
                        simulations.append(control_sim)
                    except LLMStageFailure as failure:  # a failed control leaves the feature's own score intact
                        calls += failure.calls
            scores = {s.explanation_source: score_simulation(sample, s, cfg) for s in simulations}
            store.save_scored(
                run_id, feature, simulations, scores, lifts=control_lifts(scores), calls=calls, settings=settings
            )
            tally.done += 1
        except LLMStageFailure as failure:
            calls += failure.calls
            tally.failed += 1
            store.record_failure(run_id, feature, "simulate", str(failure), calls=calls)
        tally.add(calls)
        progress.advance(task, 1, info=tally.line())

    with progress:
        pending = store.pending_features(run_id, "explained")
        task = progress.add_task("explaining", total=len(pending))
        await asyncio.gather(*(explain_one(f, task) for f in pending))
        explanations = store.load_explanations(run_id)
        controls = store.load_explanations(run_id, "baseline")
        partners = control_partners(sorted(explanations), cfg.scoring.controls_share, cfg.selection.seed)
        pending = [f for f in store.pending_features(run_id, "scored") if f in explanations]
        task = progress.add_task("simulating + scoring", total=len(pending))
        await asyncio.gather(*(score_one(f, explanations, controls, partners, task) for f in pending))
    store.set_run_status(run_id, "done")
    return run_summary(store, run_id)
