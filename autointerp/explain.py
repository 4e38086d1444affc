"""Explain one feature: show the explainer LLM the feature's explanation-split windows, read back a
short explanation.

The request is `system` (prompts/explain_system.md) + `prefix` (three worked features from
prompts/explain_fewshot.json, as user/assistant turns) + one user turn with this feature's windows.
System and prefix are byte-identical for every feature, so providers serve them from their prompt
cache. Each window is one token per line, `token<TAB>level`, the level being the raw activation
quantised to 0..10 against the feature's max (`scoring.quantise`, rule from the run config); tokens are
escaped so each stays on one line (autointerp.prompts.escape_token).

The answer is one line, "Explanation: <short phrase>"; `parse_explanation` reads it robustly and an
unreadable answer is asked again with the problem stated (at most `EXPLAIN_ATTEMPTS` answers in all).
A feature whose explanation fails raises `ExplanationFailure`, which carries the calls made so their
cost is still recorded; the caller records the failure, never a score.

The baseline backend (autointerp.llm.baseline) makes no call: its explanation is the feature's top
tokens. `best_of > 1` draws several explanations and keeps the one whose simulation on a held-out slice
of the explanation windows correlates best with the truth.

This module also holds what explain and simulate share: `CallRecord` (one LLM call, for the record),
`LLMStageFailure` and `ask_until_valid` (ask, validate, re-ask with the error).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field

from autointerp.config import RunConfig
from autointerp.llm.base import LLMBackend, LLMCallError, LLMRequest, LLMResponse, Message
from autointerp.llm.baseline import BaselineBackend, baseline_explanation, baseline_input_hash
from autointerp.prompts import excerpts_block, explain_fewshot, load_text, render_file, token_lines
from autointerp.records import Explanation, FeatureSample, Usage, Window
from autointerp.scoring import QuantiseRule, pearson, quantise

log = logging.getLogger(__name__)

EXPLANATION_PREFIX = "Explanation:"  # the answer format the prompt asks for and the parser looks for
MAX_EXPLANATION_CHARS = 200
EXPLAIN_ATTEMPTS = 3  # answers asked for per explanation: the first and two re-asks after a bad answer
BEST_OF_TEMPERATURE = 1.0  # candidates of best-of-n must differ; at temperature 0 they would not
BEST_OF_HOLDOUT_EVERY = 4  # best-of-n holds out every 4th explanation window (by max activation) to judge

T = TypeVar("T")


# --------------------------------------------------------------------------------------------------
# What explain and simulate share


class CallRecord(BaseModel):
    """One LLM call (or a refused/failed one) made for a feature: what it cost and what came back."""

    stage: Literal["explain", "simulate"]
    feature: int
    backend: str = Field(description="backend spec, e.g. 'anthropic:claude-haiku-5-5', 'local'")
    prompt_hash: str = Field(description="sha256 of the request JSON (LLMRequest.prompt_hash)")
    ok: bool = Field(description="True if the answer was used; False for an unreadable answer or a failed call")
    response_text: str | None = Field(default=None, description="the raw answer; None if the call failed")
    error: str | None = Field(default=None, description="why the answer was not used, or why the call failed")
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    latency_s: float = Field(default=0.0, description="seconds of the successful HTTP attempt")
    attempts: int = Field(default=1, description="HTTP tries of this call (transient errors retried)")
    model: str | None = Field(default=None, description="model name the server reported")
    detail: dict[str, Any] = Field(default_factory=dict, description="stage specifics: mode, shuffle order, candidate")


class LLMStageFailure(Exception):
    """A feature's explain or simulate step failed for good. `calls` lists the calls it made (their cost
    counts even so). Record it as the feature's error, never as a score."""

    stage = "llm"

    def __init__(self, message: str, calls: Sequence[CallRecord] = ()) -> None:
        super().__init__(message)
        self.calls = list(calls)


class ExplanationFailure(LLMStageFailure):
    stage = "explain"


def record_call(
    stage: Literal["explain", "simulate"],
    feature: int,
    backend: LLMBackend,
    request: LLMRequest,
    response: LLMResponse,
    *,
    error: str | None = None,
    detail: dict[str, Any] | None = None,
) -> CallRecord:
    return CallRecord(
        stage=stage,
        feature=feature,
        backend=backend.name,
        prompt_hash=request.prompt_hash(),
        ok=error is None,
        response_text=response.text,
        error=error,
        usage=response.usage,
        cost_usd=backend.cost(response.usage),
        latency_s=response.latency_s,
        attempts=response.attempts,
        model=response.model,
        detail=dict(detail or {}),
    )


def failed_call(
    stage: Literal["explain", "simulate"],
    feature: int,
    backend: LLMBackend,
    request: LLMRequest,
    exc: LLMCallError,
    detail: dict[str, Any] | None = None,
) -> CallRecord:
    return CallRecord(
        stage=stage,
        feature=feature,
        backend=backend.name,
        prompt_hash=request.prompt_hash(),
        ok=False,
        error=str(exc),
        attempts=exc.attempts,
        detail=dict(detail or {}),
    )


def total_usage(calls: Sequence[CallRecord]) -> tuple[Usage, float]:
    usage = Usage()
    for call in calls:
        usage = usage + call.usage
    return usage, sum(call.cost_usd for call in calls)


async def ask_until_valid(
    backend: LLMBackend,
    request: LLMRequest,
    parse: Callable[[LLMResponse], T],
    *,
    stage: Literal["explain", "simulate"],
    feature: int,
    retry_template: str,
    failure: type[LLMStageFailure],
    max_answers: int,
    detail: dict[str, Any] | None = None,
) -> tuple[T, LLMResponse, list[CallRecord]]:
    """Ask; if `parse` raises ValueError, show the model its answer and the error and ask again.

    Returns the parsed value, the response it came from and a record of every call. Raises `failure`
    (with the records) after `max_answers` unusable answers or when a call fails (LLMCallError).
    """
    calls: list[CallRecord] = []
    current = request
    for _ in range(max_answers):
        try:
            response = await backend.complete(current)
        except LLMCallError as exc:
            calls.append(failed_call(stage, feature, backend, current, exc, detail))
            raise failure(f"{stage}: feature {feature}: {exc}", calls) from exc
        try:
            value = parse(response)
        except ValueError as exc:
            calls.append(record_call(stage, feature, backend, current, response, error=str(exc), detail=detail))
            answer = (current.assistant_prefill or "") + response.text
            current = current.model_copy(
                update={
                    "messages": (
                        *current.messages,
                        Message(role="assistant", content=answer.strip() or "(empty answer)"),
                        Message(role="user", content=render_file(retry_template, error=str(exc))),
                    )
                }
            )
            continue
        calls.append(record_call(stage, feature, backend, current, response, detail=detail))
        return value, response, calls
    last = calls[-1].error
    raise failure(
        f"{stage}: feature {feature}: {max_answers} answer(s) from {backend.name} could not be read; last: {last}",
        calls,
    )


# --------------------------------------------------------------------------------------------------
# The prompt


def excerpt_lines(window: Window, max_activation: float, rule: QuantiseRule) -> str:
    """One window as `token<TAB>level` lines, levels 0..10 against the feature's max (raw scale)."""
    levels = quantise(window.activations, max_activation, rule).tolist()
    return token_lines(window.tokens, levels)


@cache
def explain_shared_prefix() -> tuple[str, tuple[Message, ...]]:
    """System prompt and few-shot turns: the same bytes for every feature (cacheable)."""
    prefix: list[Message] = []
    for example in explain_fewshot():
        blocks = [token_lines(excerpt.tokens, excerpt.levels) for excerpt in example.excerpts]
        prefix.append(Message(role="user", content=render_file("explain_user.md", excerpts=excerpts_block(blocks))))
        prefix.append(Message(role="assistant", content=f"{EXPLANATION_PREFIX} {example.explanation}"))
    return load_text("explain_system.md"), tuple(prefix)


def build_explain_request(
    sample_windows: Sequence[Window],
    max_activation: float,
    rule: QuantiseRule,
    *,
    max_tokens: int = 120,
    temperature: float = 0.0,
) -> LLMRequest:
    """The explainer request for one feature's explanation windows (in the given order).

    max_activation: the feature's max, raw scale; every level is quantised against it.
    """
    if not sample_windows:
        raise ValueError("build_explain_request: found no windows; expected at least one explanation window")
    system, prefix = explain_shared_prefix()
    blocks = [excerpt_lines(window, max_activation, rule) for window in sample_windows]
    user = render_file("explain_user.md", excerpts=excerpts_block(blocks))
    return LLMRequest(
        system=system,
        prefix=prefix,
        messages=(Message(role="user", content=user),),
        max_tokens=max_tokens,
        temperature=temperature,
    )


def explain_prompt_hash(request: LLMRequest, rule: QuantiseRule) -> str:
    """sha256 of the request JSON plus the quantisation rule (two rules can give the same levels)."""
    return hashlib.sha256(f"{request.model_dump_json()}\nquantise_rule={rule}".encode()).hexdigest()


# --------------------------------------------------------------------------------------------------
# Reading the answer

_THINK = re.compile(r"<think(?:ing)?>.*?</think(?:ing)?>", re.DOTALL | re.IGNORECASE)
_LABELLED = re.compile(r"^[\W_]*explanation[\s*_]*[:：]\s*(.*)$", re.IGNORECASE)
_BULLET = re.compile(r"^(?:[-*•>#]+|\d+[.)])\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'“])")
_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "`": "`"}


def _clean(text: str) -> str:
    text = text.replace("**", "").replace("__", "").replace("`", "")
    text = _BULLET.sub("", text.strip())
    text = " ".join(text.split())
    for _ in range(2):  # "'...'" inside "\"...\"" happens
        if len(text) >= 2 and text[0] in _QUOTES and text[-1] == _QUOTES[text[0]] and text[0] not in text[1:-1]:
            text = text[1:-1].strip()
    return text


def parse_explanation(text: str) -> str:
    """The explanation in an answer: the text after "Explanation:" (else the first line), without
    markdown, bullets or wrapping quotes, its first sentence only, at most MAX_EXPLANATION_CHARS.

    Raises ValueError for an answer with nothing usable in it.
    """
    body = _THINK.sub("", text)
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    if not lines:
        raise ValueError("the answer was empty")
    chosen: str | None = None
    for i, line in enumerate(lines):
        match = _LABELLED.match(line)
        if match:
            rest = _clean(match.group(1))
            chosen = rest if rest else (_clean(lines[i + 1]) if i + 1 < len(lines) else "")
            break
    if chosen is None:
        chosen = _clean(lines[0])
    chosen = _SENTENCE_END.split(chosen, maxsplit=1)[0].strip()
    if len(chosen) > MAX_EXPLANATION_CHARS:
        cut = chosen[:MAX_EXPLANATION_CHARS]
        chosen = cut[: cut.rfind(" ")] if " " in cut else cut
    chosen = chosen.rstrip(" .;:,").strip()
    if not chosen:
        raise ValueError(f'no explanation found in the answer; expected one line "{EXPLANATION_PREFIX} <pattern>"')
    return chosen


# --------------------------------------------------------------------------------------------------
# One feature


def feature_max(sample: FeatureSample, windows: Sequence[Window]) -> float:
    """The max every level is quantised against: the feature's max over the corpus (raw scale), or the
    windows' own max when the stats carry none."""
    stat = sample.stats.max_activation
    return stat if stat > 0 else max((w.max_activation for w in windows), default=0.0)


async def explain_feature(
    backend: LLMBackend,
    sample: FeatureSample,
    cfg: RunConfig,
    *,
    simulator: LLMBackend | None = None,
) -> tuple[Explanation, list[CallRecord]]:
    """Explain one feature from its explanation-split windows.

    cfg: the run config (llm.explainer_max_tokens, llm.best_of, scoring.quantise_rule).
    simulator: judges the candidates when cfg.llm.best_of > 1 (default: `backend` itself).
    Raises ExplanationFailure (with the calls made) when no usable explanation comes back.
    """
    feature = sample.feature
    windows = sample.split("explain")
    if not windows:
        raise ExplanationFailure(f"explain: feature {feature} has no explanation windows; nothing to explain")
    max_act = feature_max(sample, windows)
    if max_act <= 0 or all(w.max_activation <= 0 for w in windows):
        raise ExplanationFailure(
            f"explain: feature {feature} fires on no token of its {len(windows)} explanation windows; "
            "nothing to explain"
        )
    rule = cfg.scoring.quantise_rule
    if isinstance(backend, BaselineBackend):
        text = baseline_explanation(windows, max_act, rule)
        explanation = Explanation(
            feature=feature,
            text=text,
            raw_completion=text,
            backend=backend.name,
            prompt_hash=baseline_input_hash(windows, max_act, rule),
        )
        return explanation, []
    if cfg.llm.best_of > 1:
        return await _explain_best_of(backend, simulator or backend, sample, windows, max_act, cfg)

    shown = windows[: getattr(backend, "max_explain_windows", None) or len(windows)]  # top windows come first
    request = build_explain_request(shown, max_act, rule, max_tokens=cfg.llm.explainer_max_tokens)
    prefill = getattr(backend, "explanation_prefill", None)  # a backend's own start of the answer, if any
    if prefill:
        request = request.model_copy(update={"assistant_prefill": prefill, "stop": ("\n",)})
    text, response, calls = await ask_until_valid(
        backend,
        request,
        lambda r: parse_explanation((prefill or "") + r.text),
        stage="explain",
        feature=feature,
        retry_template="explain_retry.md",
        failure=ExplanationFailure,
        max_answers=EXPLAIN_ATTEMPTS,
    )
    usage, cost = total_usage(calls)
    explanation = Explanation(
        feature=feature,
        text=text,
        raw_completion=(prefill or "") + response.text,
        backend=backend.name,
        prompt_hash=explain_prompt_hash(request, rule),
        usage=usage,
        cost_usd=cost,
    )
    return explanation, calls


def best_of_split(windows: Sequence[Window]) -> tuple[list[Window], list[Window]]:
    """(shown, held out) for best-of-n: windows ranked by max activation, every BEST_OF_HOLDOUT_EVERY-th
    from the second on is held out, so the strongest window is always shown and both keep a spread."""
    ranked = sorted(range(len(windows)), key=lambda i: -windows[i].max_activation)
    held = set(ranked[1::BEST_OF_HOLDOUT_EVERY])
    shown = [w for i, w in enumerate(windows) if i not in held]
    return shown, [w for i, w in enumerate(windows) if i in held]


async def _explain_best_of(
    backend: LLMBackend,
    simulator: LLMBackend,
    sample: FeatureSample,
    windows: list[Window],
    max_act: float,
    cfg: RunConfig,
) -> tuple[Explanation, list[CallRecord]]:
    from autointerp.simulate import SimulationFailure, simulate_feature

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
