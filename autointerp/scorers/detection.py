"""Detection: the judge sees an explanation and a batch of held-out windows and says which ones match.

A window's truth is whether the feature fired in it (max raw activation > 0): the top and interval
windows (activation quantiles) are positives; nonactivating windows, hard negatives (the feature's top
tokens where it does not fire) and random windows with no activation are negatives. The windows are
shown in a seeded shuffle (run seed, feature), cut into prompts of `windows_per_prompt`; every
explanation of a feature (its own and the controls) is judged on the same batches.

Modes, chosen from the backend:
- "baseline" (the baseline backend, no LLM): a window matches when it holds one of the baseline
  explanation's tokens; its score for AUROC is the highest listed level among them / 10.
- "forced" (a backend with `score_yes_no`, e.g. the local model): the answer is teacher-forced and
  P(yes) read at every yes/no slot; a window matches when P(yes) >= 0.5.
- "tokens" (a backend with `judge_tokens` and no `score_yes_no`: the local model): every token of a window is
  judged from the explanation alone, context-free (autointerp.llm.local_judge: P(match) from the ratio of two
  likelihoods); P(yes) of a window = its highest token P(match), a yes when >= 0.5. One call for all
  windows, no prompt of windows: it says whether the explanation names the tokens a feature fires on, not
  whether the window as a whole matches.
- "logprob" (supports_logprobs, e.g. OpenAI-compatible servers): the judge writes the answer with
  top_logprobs; the verdict is the word it wrote, P(yes) comes from the alternatives at that word.
- "sampled" (e.g. Anthropic): the answer text only; binary metrics, no AUROC.
An unreadable answer is asked again with the error shown (DETECTION_ATTEMPTS answers in all); then the
feature gets a DetectionFailure with the calls made, recorded as its error, never as a score.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Sequence
from typing import Any, Literal, Protocol, cast, runtime_checkable

from pydantic import Field

from autointerp.baseline import parse_baseline
from autointerp.config import RunConfig
from autointerp.llm.base import LLMBackend, LLMCallError, LLMRequest, LLMResponse
from autointerp.llm.baseline import BaselineBackend
from autointerp.llm_calls import LLMStageFailure, ask_until_valid, failed_call, record_call
from autointerp.records import CallRecord, Window
from autointerp.scorers.base import SCORERS, Scorer, ScorerResult, ScoringItem, with_calls
from autointerp.scorers.detection_prompt import (
    answer_slot_prefixes,
    build_detection_request,
    parse_answer_logprobs,
    parse_answers,
    yes_probability,
)
from autointerp.scoring import DetectionScores, detection_scores
from autointerp.simulate import TokenJudge

DetectionMode = Literal["baseline", "forced", "tokens", "logprob", "sampled"]

# Windows judged per prompt: ScoringConfig.detection_windows_per_prompt, 10 by default. 20 score windows of 32
# tokens in 2 calls: ~3,400 input tokens (~2,500 of them the shared, cacheable prefix: six worked examples) and
# ~80 output, against ~4,450 input for a sampled simulation of the same windows and ~2,750 output for a logprob
# one (cl100k counts, docs/benchmarks.md; more per prompt saves little once cached).
DETECTION_ATTEMPTS = 3  # answers asked for per prompt: the first and two re-asks after a bad answer
GROUPS = ("top", "interval", "random", "nonactivating", "hard_negative")
METRICS = ("balanced_accuracy", "precision", "recall", "f1", "auroc")
# The scalar columns DetectionResult.columns() returns besides the base ones (a store can create its table from this).
COLUMNS = (
    "mode",
    "windows_per_prompt",
    "n_windows",
    "n_positive",
    "n_negative",
    "n_said_yes",
    *METRICS,
    *(f"yes_rate_{g}" for g in GROUPS),
)


class DetectionFailure(LLMStageFailure):
    stage = "detect"


@runtime_checkable
class YesNoScorer(Protocol):
    """A backend that reads yes/no at every slot of a teacher-forced answer (the local model).

    `slot_prefixes[i]` is the answer text before slot i (after slot i-1's word); the word in a slot is
    " yes" or " no". A slot's reading must not depend on the words put in earlier slots. The response
    has one TokenLogprob per slot whose `top` maps "yes" and "no" to log-probabilities (any
    normalisation), plus the call's usage. LLMCallError when the request cannot be scored.
    """

    async def score_yes_no(self, request: LLMRequest, slot_prefixes: Sequence[str]) -> LLMResponse: ...


# --------------------------------------------------------------------------------------------------
# Pure parts: layout and the baseline judge (the metrics are autointerp.scoring.detection_scores)


def detection_order(n: int, seed: int, feature: int) -> list[int]:
    """order[k] = index (in the caller's list) of the window shown k-th. Seeded by run seed and feature
    only, so every explanation of a feature, and every run with the same seed, sees the same batches."""
    order = list(range(n))
    random.Random(f"detect:{seed}:{feature}").shuffle(order)
    return order


def prompt_batches(order: Sequence[int], per_prompt: int) -> list[list[int]]:
    """`order` cut into the fewest prompts of at most `per_prompt` windows, sizes differing by at most
    one (20 windows at 8 a prompt: three of 6 or 7, not 8, 8, 4)."""
    if per_prompt < 1:
        raise ValueError(f"prompt_batches: found per_prompt={per_prompt}; expected at least 1")
    n_prompts = -(-len(order) // per_prompt)
    bounds = [round(k * len(order) / n_prompts) for k in range(n_prompts + 1)] if n_prompts else [0]
    return [list(order[a:b]) for a, b in zip(bounds, bounds[1:])]


def token_match_probability(top: dict[str, float]) -> float:
    """P(match) of one token from a TokenJudge reading: 1 - P(level '0') after normalising the levels'
    probabilities (the local judge gives {'0': log(1 - p), '10': log p}). ValueError without level '0'."""
    if "0" not in top:
        raise ValueError(f"a token reading without level '0' ({sorted(top)})")
    weights = {level: math.exp(logp) for level, logp in top.items()}
    total = sum(weights.values())
    if not total > 0:
        raise ValueError(f"a token reading with no probability mass ({top})")
    return 1.0 - weights["0"] / total


def baseline_detection(explanation_text: str, windows: Sequence[Window]) -> tuple[list[bool], list[float]]:
    """Verdict and score per window for a baseline explanation: yes when the window holds a listed token;
    the score is the highest listed level present / 10 (0 when none). ValueError for other text."""
    levels = dict(parse_baseline(explanation_text))
    scores = [max((levels.get(t, 0) for t in w.tokens), default=0) / 10.0 for w in windows]
    return [s > 0 for s in scores], scores


# --------------------------------------------------------------------------------------------------
# The result


class DetectionResult(ScorerResult):
    """One explanation judged on one feature's held-out windows. Per-window lists follow the sampler
    order of the score split (the order of `FeatureSample.split("score")`)."""

    scorer: Literal["detection"] = "detection"
    mode: DetectionMode
    windows_per_prompt: int = Field(
        description="most windows shown in one prompt; 0 for the baseline and per-token judging (no prompt)"
    )
    shown_order: list[int] = Field(description="window indices in the order shown (prompts cut in this order)")
    groups: list[str] = Field(description="each window's sampler group")
    intervals: list[int | None] = Field(description="interval index for group 'interval', else None")
    labels: list[bool] = Field(description="the feature fired in the window (max raw activation > 0)")
    said_yes: list[bool] = Field(description="the judge's verdict: the explanation matches the window")
    p_yes: list[float] | None = Field(description="P(yes) in 0..1 (baseline: highest listed level / 10); None if none")
    metrics: DetectionScores = Field(description="balanced accuracy, precision, recall, F1, AUROC (autointerp.scoring)")
    yes_rates: dict[str, float | None] = Field(
        description="per group, share of its windows judged yes: recall for top/interval, false-positive "
        "rate for nonactivating/hard_negative; None where the group has no window"
    )

    def columns(self) -> dict[str, Any]:
        return {
            **super().columns(),
            "mode": self.mode,
            "windows_per_prompt": self.windows_per_prompt,
            "n_windows": len(self.labels),
            "n_positive": self.metrics.n_pos,
            "n_negative": self.metrics.n_neg,
            "n_said_yes": self.metrics.n_yes,
            **{name: getattr(self.metrics, name) for name in METRICS},
            **{f"yes_rate_{g}": self.yes_rates.get(g) for g in GROUPS},
        }


def detection_result(
    item: ScoringItem,
    backend: LLMBackend,
    mode: DetectionMode,
    per_prompt: int,
    order: list[int],
    said_yes: list[bool],
    p_yes: list[float] | None,
    calls: Sequence[CallRecord],
) -> DetectionResult:
    windows = item.windows
    labels = [w.max_activation > 0 for w in windows]
    metrics = detection_scores(labels, said_yes, p_yes)
    yes_rates: dict[str, float | None] = {}
    for group in GROUPS:
        members = [yes for w, yes in zip(windows, said_yes, strict=True) if w.group == group]
        yes_rates[group] = sum(members) / len(members) if members else None
    return DetectionResult(
        feature=item.feature,
        explanation_source=item.source,
        backend=backend.name,
        mode=mode,
        windows_per_prompt=per_prompt,
        shown_order=order,
        groups=[w.group for w in windows],
        intervals=[w.interval for w in windows],
        labels=labels,
        said_yes=said_yes,
        p_yes=p_yes,
        metrics=metrics,
        yes_rates=yes_rates,
        **with_calls(calls),
    )


# --------------------------------------------------------------------------------------------------
# The scorer


def detection_mode(backend: LLMBackend) -> DetectionMode:
    if isinstance(backend, BaselineBackend):
        return "baseline"
    if isinstance(backend, YesNoScorer):
        return "forced"
    if isinstance(backend, TokenJudge):
        return "tokens"
    return "logprob" if backend.supports_logprobs else "sampled"


Verdicts = tuple[list[bool], list[float] | None, list[CallRecord]]


@SCORERS.register("detection")
class DetectionScorer(Scorer):
    name = "detection"

    def __init__(self, backend: LLMBackend, cfg: RunConfig, windows_per_prompt: int | None = None) -> None:
        """windows_per_prompt None -> the run's `scoring.detection_windows_per_prompt`."""
        super().__init__(backend, cfg)
        if windows_per_prompt is None:
            windows_per_prompt = cfg.scoring.detection_windows_per_prompt
        if windows_per_prompt < 1:
            raise ValueError(f"DetectionScorer: found windows_per_prompt={windows_per_prompt}; expected >= 1")
        self.windows_per_prompt = windows_per_prompt

    async def score(self, item: ScoringItem) -> DetectionResult:
        windows, feature = item.windows, item.feature
        if not windows or any(not w.tokens for w in windows):
            raise DetectionFailure(
                f"detect: feature {feature}: found no windows or an empty window; expected windows to judge"
            )
        mode = detection_mode(self.backend)
        per_prompt = self.windows_per_prompt
        if mode == "baseline":
            try:
                said_yes, scores = baseline_detection(item.explanation, windows)
            except ValueError as exc:
                raise DetectionFailure(
                    f"detect: feature {feature}: the baseline judge reads only baseline explanations: {exc}"
                ) from None
            order = list(range(len(windows)))
            return detection_result(item, self.backend, mode, 0, order, said_yes, scores, [])
        if not " ".join(item.explanation.split()):
            raise DetectionFailure(f"detect: feature {feature}: the explanation is empty; nothing to judge")
        if mode == "tokens":
            said_yes, p_yes, calls = await self._tokens(item)
            return detection_result(item, self.backend, mode, 0, list(range(len(windows))), said_yes, p_yes, calls)

        order = detection_order(len(windows), self.cfg.sampler.seed, feature)
        batches = prompt_batches(order, per_prompt)

        async def judged(b: int, batch: list[int]) -> Verdicts | DetectionFailure:
            try:
                return await self._judge(item, mode, [windows[i] for i in batch], {"batch": b, "shown": batch})
            except DetectionFailure as exc:
                return exc

        results = await asyncio.gather(*(judged(b, batch) for b, batch in enumerate(batches)))
        calls = [c for r in results for c in (r.calls if isinstance(r, DetectionFailure) else r[2])]
        failures = [r for r in results if isinstance(r, DetectionFailure)]
        if failures:
            raise DetectionFailure(f"{failures[0]} ({len(failures)} of {len(batches)} prompts failed)", calls)
        said_yes = [False] * len(windows)
        p_yes: list[float] | None = None if mode == "sampled" else [0.0] * len(windows)
        for batch, (verdicts, probabilities, _) in zip(batches, cast(list[Verdicts], results), strict=True):
            for k, index in enumerate(batch):
                said_yes[index] = verdicts[k]
                if p_yes is not None and probabilities is not None:
                    p_yes[index] = probabilities[k]
        return detection_result(item, self.backend, mode, per_prompt, order, said_yes, p_yes, calls)

    async def _judge(self, item: ScoringItem, mode: DetectionMode, shown: list[Window], where: dict) -> Verdicts:
        """Verdicts (and P(yes) where the mode gives it) for one prompt's windows, in the order shown."""
        feature, n = item.feature, len(shown)
        detail = {"mode": mode, "source": item.source, **where}
        request = build_detection_request(item.explanation, [w.tokens for w in shown], logprobs=mode == "logprob")
        if mode == "forced":
            return await self._forced(request, n, feature, detail)

        def parse(response: LLMResponse) -> tuple[list[bool], list[float] | None]:
            """(verdicts, P(yes) from the answer's logprobs in logprob mode, else None)."""
            if mode == "logprob":
                return parse_answer_logprobs(response, n)
            return parse_answers(response.text, n), None

        (said, p), _, calls = await ask_until_valid(
            self.backend,
            request,
            parse,
            stage="detect",
            feature=feature,
            retry_template="detect_retry.md",
            failure=DetectionFailure,
            max_answers=DETECTION_ATTEMPTS,
            detail=detail,
        )
        return said, p, calls

    async def _tokens(self, item: ScoringItem) -> Verdicts:
        """Per-token, context-free judging (TokenJudge): P(yes) of a window = max over its tokens of
        P(match) = 1 - P(level 0) of the token's level distribution; one call for every window."""
        feature, windows = item.feature, item.windows
        token_lists = [list(w.tokens) for w in windows]
        detail = {"mode": "tokens", "source": item.source, "judge": "per-token, context-free: no prompt sent"}
        request = build_detection_request(item.explanation, token_lists, logprobs=False)  # recorded, not sent
        try:
            response = await cast(TokenJudge, self.backend).judge_tokens(item.explanation, token_lists)
        except LLMCallError as exc:
            call = failed_call("detect", feature, self.backend, request, exc, detail)
            raise DetectionFailure(f"detect: feature {feature}: {exc}", [call]) from exc
        try:
            flat = [token_match_probability(slot.top) for slot in response.logprobs or []]
            n_tokens = sum(len(t) for t in token_lists)
            if len(flat) != n_tokens:
                raise ValueError(f"{self.backend.name} returned {len(flat)} token readings for {n_tokens} tokens")
        except ValueError as exc:
            call = record_call("detect", feature, self.backend, request, response, error=str(exc), detail=detail)
            raise DetectionFailure(f"detect: feature {feature}: {exc}", [call]) from None
        it = iter(flat)
        p_yes = [max(next(it) for _ in tokens) for tokens in token_lists]
        call = record_call("detect", feature, self.backend, request, response, detail=detail)
        return [p >= 0.5 for p in p_yes], p_yes, [call]

    async def _forced(self, request: LLMRequest, n: int, feature: int, detail: dict) -> Verdicts:
        """Teacher-forced yes/no: one call, nothing generated, so no re-asks."""
        scorer = cast(YesNoScorer, self.backend)  # detection_mode checked isinstance(backend, YesNoScorer)
        try:
            response = await scorer.score_yes_no(request, answer_slot_prefixes(n))
        except LLMCallError as exc:
            call = failed_call("detect", feature, self.backend, request, exc, detail)
            raise DetectionFailure(f"detect: feature {feature}: {exc}", [call]) from exc
        try:
            p = [yes_probability(slot.top) for slot in response.logprobs or []]
            if len(p) != n:
                raise ValueError(f"{self.backend.name} returned {len(p)} yes/no readings for {n} windows")
        except ValueError as exc:
            call = record_call("detect", feature, self.backend, request, response, error=str(exc), detail=detail)
            raise DetectionFailure(f"detect: feature {feature}: {exc}", [call]) from None
        call = record_call("detect", feature, self.backend, request, response, detail=detail)
        return [q >= 0.5 for q in p], p, [call]
