"""Best-of-n explanations: draw several explanations of a feature and keep the one whose simulation,
on a held-out slice of its explanation windows, correlates best with the true activations.

It composes two stages (explain draws the candidates, simulate judges them), so it sits one floor
above both; neither stage imports it. The run calls it instead of `explain_feature` when
`cfg.llm.best_of > 1`. Every call made, candidates and judging simulations alike, is returned with
`detail["candidate"]` set, so the cost of choosing is recorded with the explanation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from autointerp.config import RunConfig
from autointerp.explain import (
    EXPLAIN_ATTEMPTS,
    ExplanationFailure,
    build_explain_request,
    explain_feature,
    explain_prompt_hash,
    explanation_windows,
    parse_explanation,
)
from autointerp.llm.base import LLMBackend, LLMResponse
from autointerp.llm.baseline import BaselineBackend
from autointerp.llm_calls import ask_until_valid, total_usage
from autointerp.records import CallRecord, Explanation, FeatureSample, Window
from autointerp.scoring import pearson
from autointerp.simulate import SimulationFailure, simulate_feature

log = logging.getLogger(__name__)

BEST_OF_TEMPERATURE = 1.0  # candidates of best-of-n must differ; at temperature 0 they would not
BEST_OF_HOLDOUT_EVERY = 4  # best-of-n holds out every 4th explanation window (by max activation) to judge


def best_of_split(windows: Sequence[Window]) -> tuple[list[Window], list[Window]]:
    """(shown, held out) for best-of-n: windows ranked by max activation, every BEST_OF_HOLDOUT_EVERY-th
    from the second on is held out, so the strongest window is always shown and both keep a spread."""
    ranked = sorted(range(len(windows)), key=lambda i: -windows[i].max_activation)
    held = set(ranked[1::BEST_OF_HOLDOUT_EVERY])
    shown = [w for i, w in enumerate(windows) if i not in held]
    return shown, [w for i, w in enumerate(windows) if i in held]


async def explain_best_of(
    backend: LLMBackend,
    sample: FeatureSample,
    cfg: RunConfig,
    *,
    simulator: LLMBackend | None = None,
) -> tuple[Explanation, list[CallRecord]]:
    """The best of `cfg.llm.best_of` explanations of one feature, judged by `simulator` (default:
    `backend` itself) on the held-out part of `best_of_split`.

    A best_of of 1 or less, or the baseline backend (it has one explanation only), is a plain
    `explain_feature`. Raises ExplanationFailure (with the calls made) when no candidate is usable.
    """
    if cfg.llm.best_of <= 1 or isinstance(backend, BaselineBackend):
        return await explain_feature(backend, sample, cfg)
    windows, max_act = explanation_windows(sample)
    simulator = simulator or backend
    feature, n, rule = sample.feature, cfg.llm.best_of, cfg.scoring.quantise_rule
    shown, held = best_of_split(windows)
    if not held or not any(w.max_activation > 0 for w in held):
        raise ExplanationFailure(
            f"explain: feature {feature}: best_of={n} needs a held-out slice of explanation windows where the "
            f"feature fires; found {len(held)} held-out of {len(windows)} windows, none firing. Use best_of=1 "
            "or sample more explanation windows"
        )
    request = build_explain_request(
        shown, max_act, rule, max_tokens=cfg.llm.explainer_max_tokens, temperature=BEST_OF_TEMPERATURE
    )

    async def candidate(k: int) -> tuple[str, LLMResponse, list[CallRecord]] | ExplanationFailure:
        try:
            return await ask_until_valid(
                backend,
                request,
                lambda r: parse_explanation(r.text),
                stage="explain",
                feature=feature,
                retry_template="explain_retry.md",
                failure=ExplanationFailure,
                max_answers=EXPLAIN_ATTEMPTS,
                detail={"candidate": k},
            )
        except ExplanationFailure as exc:
            return exc

    results = await asyncio.gather(*(candidate(k) for k in range(n)))
    calls: list[CallRecord] = []
    drawn: list[tuple[int, str, LLMResponse]] = []
    for k, result in enumerate(results):
        if isinstance(result, ExplanationFailure):
            calls += result.calls
        else:
            calls += result[2]
            drawn.append((k, result[0], result[1]))
    if not drawn:
        raise ExplanationFailure(f"explain: feature {feature}: none of {n} candidates was usable", calls)

    truth = [a for w in held for a in w.activations]
    best: tuple[float, int, str, LLMResponse] | None = None
    for k, text, response in drawn:
        try:
            simulation, sim_calls = await simulate_feature(simulator, text, held, feature, "llm", cfg)
        except SimulationFailure as exc:
            calls += exc.calls
            continue
        calls += [c.model_copy(update={"detail": {**c.detail, "candidate": k}}) for c in sim_calls]
        metric = pearson(truth, [p for row in simulation.predictions for p in row])
        score = metric.value if metric.value is not None else float("-inf")
        if best is None or score > best[0]:
            best = (score, k, text, response)
    if best is None:  # no candidate could be judged: keep the first drawn, say so in the log
        log.warning("feature %d: no best-of-%d candidate could be simulated; keeping the first", feature, n)
        k, text, response = drawn[0]
    else:
        _, k, text, response = best
    usage, cost = total_usage(calls)
    explanation = Explanation(
        feature=feature,
        text=text,
        raw_completion=response.text,
        backend=backend.name,
        prompt_hash=explain_prompt_hash(request, rule),
        usage=usage,
        cost_usd=cost,
    )
    return explanation, calls
