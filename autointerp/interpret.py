"""The LLM stages of a run: explain every sampled feature, then score it with every configured scorer,
concurrently across features up to each backend's in-flight limit. Every feature's result is committed on
its own, so an interrupted run resumes with the features still pending; a failure is recorded, never scored.

Scorers (`scoring.scorers`, autointerp.scorers): simulation (predict every token's activation, correlate)
and detection (say which windows match); each judges the LLM explanation and every control on the same
held-out windows. A scorer that fails on the LLM explanation records an error with its stage ('simulate',
'detect') and the others' results are kept: a feature counts as scored when any scorer succeeded.

Controls (on `scoring.controls_share` of the features, chosen with the seed): the same scoring windows
judged from (a) the baseline explanation (top tokens, no LLM) and (b) another feature's LLM explanation.
`lift` = correlation - baseline-control correlation; `lift_other` likewise (detection's lifts are computed
by the readers from its rows). A third control needs no LLM call: every simulation is also scored against
`scoring.n_permutations` shufflings of its windows (scoring.permutation_null). Every score row carries the
hash of the settings that made it (autointerp.settings_hash), one per scorer.
"""

import asyncio
import hashlib
from collections.abc import Mapping, Sequence

from autointerp.best_of import explain_best_of
from autointerp.config import RunConfig
from autointerp.explain import explain_feature
from autointerp.llm.base import LLMBackend
from autointerp.llm.spec import default_backend_spec, make_backend, parse_backend_spec
from autointerp.llm_calls import LLMStageFailure
from autointerp.records import CallRecord, Explanation
from autointerp.reporting import Reporter
from autointerp.run_summary import run_summary
from autointerp.scorers import ScorerResult, ScoringItem, make_scorer
from autointerp.scorers.detection import DetectionResult
from autointerp.scorers.simulation import SimulationResult
from autointerp.scoring import FeatureScores, lift
from autointerp.settings_hash import prompt_digests, score_settings, settings_hash

SCORERS_IN_ORDER = ("simulation", "detection")
# Each scorer's result type, to read back a result kept in `scorer_results` (the store stores JSON, knows no types).
RESULT_TYPES: dict[str, type[ScorerResult]] = {"simulation": SimulationResult, "detection": DetectionResult}
# Features scored at once, per request the simulator may have in flight: enough to keep it busy while a
# feature waits on its controls, few enough that an interrupt leaves little half-scored work.
FEATURES_PER_SLOT = 2


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


def default_scorers(simulator_spec: str) -> list[str]:
    """The scorers a run uses when none are configured (ScoringConfig.scorers says why): simulation and
    detection, except on a local model with neither a teacher-forced yes/no reading (`score_yes_no`) nor
    per-token judging (`judge_tokens`, detection mode "tokens")."""
    if parse_backend_spec(simulator_spec).kind != "local":
        return list(SCORERS_IN_ORDER)
    from autointerp.llm.local_backend import LocalBackend  # light: llama.cpp loads on first use

    offline = hasattr(LocalBackend, "score_yes_no") or hasattr(LocalBackend, "judge_tokens")
    return list(SCORERS_IN_ORDER) if offline else ["simulation"]


def settle_scorers(cfg: RunConfig) -> RunConfig:
    """`cfg` with `scoring.scorers` resolved (default_scorers of its simulator) when left open, so the stored
    config and the settings hash say which scorers ran."""
    if cfg.scoring.scorers is not None:
        return cfg
    _, simulator_spec, _ = backend_specs(cfg)
    scoring = cfg.scoring.model_copy(update={"scorers": default_scorers(simulator_spec)})
    return cfg.model_copy(update={"scoring": scoring})


def run_settings(cfg: RunConfig, corpus_fingerprint: str, scorer: str = "simulation") -> dict:
    """The settings behind this run's scores of one scorer (settings_hash.score_settings), with the explainer
    and simulator the run actually uses (a server address left out: the same model served elsewhere)."""
    explainer_spec, simulator_spec, _ = backend_specs(cfg)
    key = cfg.results_key()
    key["llm"] |= {"explainer": explainer_spec.split("@http")[0], "simulator": simulator_spec.split("@http")[0]}
    return score_settings(key, corpus_fingerprint, prompt_digests(), scorer)


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
    """The features (`share` of them) that get controls -> the feature whose explanation is their 'other'
    control (the next one, cyclically; None when there is no other feature).

    Whether a feature gets controls is a function of (seed, feature) only, so a feature shared by two runs
    with different feature sets gets controls in both or in neither. The 'other' partner necessarily
    depends on which features the run explained."""
    ordered = sorted(features)
    chosen = [f for f in ordered if _unit_hash(seed, f) < share]
    return {f: ordered[(ordered.index(f) + 1) % len(ordered)] if len(ordered) > 1 else None for f in chosen}


def _unit_hash(seed: int, feature: int) -> float:
    """A uniform number in [0, 1) from (seed, feature) alone."""
    digest = hashlib.sha256(f"controls:{seed}:{feature}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def explanation_sha(text: str) -> str:
    """The digest a kept scorer result carries of the explanation it judged (reused only for the same text)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def judgements_planned(
    names: Sequence[str], feature: int, partners: Mapping[int, int | None], has_baseline: bool
) -> int:
    """Scorer results a feature needs: every scorer on its own explanation and on each of its controls."""
    sources = 1
    if feature in partners:
        sources += int(has_baseline) + int(partners[feature] is not None)
    return len(names) * sources


class Tally:
    """Running totals for the progress line. A call of unknown price (cost_usd None) is counted apart, never
    as $0: the line then shows the priced part as a lower bound and how many calls are unpriced. `calls` counts
    the LLM calls made in this process; `kept` the scorer results stored as they arrived, `reused` those read
    back from an interrupted run instead of asking again."""

    def __init__(self) -> None:
        self.done = self.failed = self.tokens = self.unpriced = 0
        self.calls = self.kept = self.reused = self.explained = 0
        self.cost = 0.0

    def add(self, calls: Sequence[CallRecord]) -> None:
        self.calls += len(calls)
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
        return f"failed {self.failed}  calls {self.calls:,}  tokens {self.tokens:,}  {cost}"


async def interpret_run(
    store,
    run_id: str,
    cfg: RunConfig,
    retry_failed: bool = False,
    reporter: Reporter | None = None,
    backends: tuple[LLMBackend, LLMBackend, LLMBackend, str] | None = None,
) -> dict:
    """`backends`: (explainer, simulator, baseline, note) to use instead of resolve_backends(cfg)'s; batch
    mode (autointerp.batch_run.run_batched, which callers choose when cfg.llm.batch is set) passes stand-ins that
    answer from stored batch results."""
    settled = settle_scorers(cfg)
    if settled is not cfg:  # e.g. a run started through the Python API: store which scorers ran
        cfg = settled
        store.update_run_config(run_id, cfg)
    explainer, simulator, baseline, note = backends or resolve_backends(cfg)
    names = [name for name in SCORERS_IN_ORDER if name in (cfg.scoring.scorers or ())]
    scorers = {name: make_scorer(name, simulator, cfg) for name in names}
    reporter = reporter or Reporter()
    reporter.note(f"LLM stages: {note}; scorers: {', '.join(names)}.")
    for backend in {id(b): b for b in (explainer, simulator)}.values():
        backend.report_to(reporter.note)  # a fallback mode, a prompt prefix too short for the provider's cache
    if retry_failed:
        # partly scored features too (a scorer failed): the retry redoes them, reusing finished results
        store.resolve_failures(run_id, [*store.failed_features(run_id), *store.partly_scored_features(run_id)])
    samples = {s.feature: s for s in store.load_samples(run_id)}
    fingerprint = store.require_run(run_id)["corpus_fingerprint"]
    settings = {name: run_settings(cfg, fingerprint, name) for name in names}
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
            tally.explained += 1
        except LLMStageFailure as failure:
            tally.add(failure.calls)
            tally.failed += 1
            store.record_failure(run_id, feature, "explain", str(failure), calls=failure.calls)
        progress.advance(task, 1, info=tally.line())

    kept = store.load_scorer_results(run_id)  # finished results of features an interrupted run left half-scored
    digests = {name: settings_hash(settings[name]) for name in names}

    async def judged(name: str, item: ScoringItem, task) -> ScorerResult | LLMStageFailure:
        """One scorer on one explanation: a result kept from an earlier, interrupted run when it judged the same
        text with the same settings, else a new judgement, stored at once (with its calls, which the result then
        drops so the feature's final rows do not record them twice). A failure carries its calls."""
        sha = explanation_sha(item.explanation)
        row = kept.get((item.feature, name, item.source))
        if row is not None and row["explanation_sha"] == sha and row["settings_hash"] == digests[name]:
            tally.reused += 1
            progress.advance(task, 1, info=tally.line())
            return RESULT_TYPES[name].model_validate_json(row["result_json"])
        try:
            result = await scorers[name].score(item)
        except LLMStageFailure as failure:
            tally.add(failure.calls)
            progress.advance(task, 1, info=tally.line())
            return failure
        tally.add(result.calls)
        if result.calls:  # a no-LLM judgement (the baseline) is cheaper to redo than to store
            store.save_scorer_result(
                run_id,
                item.feature,
                name,
                item.source,
                explanation_sha=sha,
                settings_hash=digests[name],
                result_json=result.model_dump_json(exclude={"calls"}),
                calls=result.calls,
            )
            tally.kept += 1
        progress.advance(task, 1, info=tally.line())
        return result.model_copy(update={"calls": []})

    async def score_one(
        feature: int,
        explanations: dict[int, Explanation],
        controls: dict[int, Explanation],
        partners: dict[int, int | None],
        task,
    ) -> None:
        sample = samples[feature]
        calls: list[CallRecord] = []  # of failed judgements only: finished ones are stored as they arrive
        results: dict[str, dict[str, ScorerResult]] = {name: {} for name in names}
        failures: list[tuple[str, str]] = []  # (stage, message) of each scorer that failed on the LLM explanation
        planned = judgements_planned(names, feature, partners, feature in controls)
        item = ScoringItem(sample=sample, explanation=explanations[feature].text, source="llm")
        for name, outcome in zip(names, await asyncio.gather(*(judged(n, item, task) for n in names)), strict=True):
            calls += outcome.calls
            if isinstance(outcome, LLMStageFailure):
                failures.append((outcome.stage, str(outcome)))
            else:
                results[name]["llm"] = outcome
        if len(failures) == len(names):
            (stage, message), *more = failures
            store.record_failure(run_id, feature, stage, message, calls=calls, more=more, own_call_stages=True)
            tally.failed += 1
            progress.advance(task, planned - len(names), info=tally.line())  # its controls are not judged
            return
        jobs: list[ScoringItem] = []  # controls, judged by every scorer that judged the LLM explanation
        if feature in partners:
            other = partners[feature]
            if feature in controls:
                jobs.append(ScoringItem(sample=sample, explanation=controls[feature].text, source="baseline"))
            if other is not None and other in explanations:
                jobs.append(ScoringItem(sample=sample, explanation=explanations[other].text, source=f"other:{other}"))
        pairs = [(name, job) for job in jobs for name in names if "llm" in results[name]]
        outcomes = await asyncio.gather(*(judged(n, j, task) for n, j in pairs))
        for (name, job), outcome in zip(pairs, outcomes, strict=True):
            calls += outcome.calls  # a failed control leaves the feature's own scores intact
            if not isinstance(outcome, LLMStageFailure):
                results[name][job.source] = outcome
        simulated = [r for r in results.get("simulation", {}).values() if isinstance(r, SimulationResult)]
        detected = [r for r in results.get("detection", {}).values() if isinstance(r, DetectionResult)]
        scores = {r.explanation_source: r.scores for r in simulated}
        store.save_scored(
            run_id,
            feature,
            [r.simulation for r in simulated],
            scores,
            lifts=control_lifts(scores),
            calls=calls,
            settings=settings["simulation"] if simulated else None,
            detections=detected,
            detection_settings=settings["detection"] if detected else None,
            errors=failures,
        )
        tally.done += 1
        progress.advance(task, planned - len(names) - len(pairs), info=tally.line())  # controls not judged, if any

    limit = asyncio.Semaphore(FEATURES_PER_SLOT * max(1, simulator.max_in_flight))

    async def bounded(feature: int, *args) -> None:
        async with limit:  # features start in order; a new one only when one in flight is stored
            await score_one(feature, *args)

    stage = "explaining"
    try:
        with progress:
            pending = store.pending_features(run_id, "explained")
            task = progress.add_task("explaining", total=len(pending))
            await asyncio.gather(*(explain_one(f, task) for f in pending))
            stage = "scoring"
            explanations = store.load_explanations(run_id)
            controls = store.load_explanations(run_id, "baseline")
            partners = control_partners(sorted(explanations), cfg.scoring.controls_share, cfg.selection.seed)
            pending = [f for f in store.pending_features(run_id, "scored") if f in explanations]
            total = sum(judgements_planned(names, f, partners, f in controls) for f in pending)
            task = progress.add_task(f"scoring ({' + '.join(names)}; judgements)", total=total)
            await asyncio.gather(*(bounded(f, explanations, controls, partners, task) for f in pending))
    except (asyncio.CancelledError, KeyboardInterrupt):
        store.set_run_status(run_id, "interrupted")
        reporter.note(interrupted_note(stage, tally))
        raise
    store.set_run_status(run_id, "done")
    return run_summary(store, run_id)


def interrupted_note(stage: str, tally: Tally) -> str:
    """What an interrupted LLM stage kept, counted, for the user (the calls in flight are lost)."""
    kept = f"{tally.explained} explanation(s) and {tally.done} fully scored feature(s) stored in this session"
    if tally.kept:
        kept += f", plus {tally.kept} finished judgement(s) of features still in flight (not asked again on resume)"
    return f"Interrupted while {stage}: {kept}; {tally.calls} LLM call(s) made, those in flight are lost."
