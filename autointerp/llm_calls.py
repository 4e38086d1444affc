"""LLM calls for a stage: ask until the answer is valid, record every call, its usage and any failure.

Shared by every stage that asks an LLM (explain, simulate, and the scorers to come), so it lives below
them: a stage imports this module, never another stage. What a call cost is kept as a `CallRecord`
(autointerp.records); a feature whose step fails for good raises an `LLMStageFailure` carrying the
records of the calls it made, so their cost is stored even though the feature gets no score.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from autointerp.llm.base import LLMBackend, LLMCallError, LLMRequest, LLMResponse, Message
from autointerp.prompts import render_file
from autointerp.records import CallRecord, Stage, Usage

T = TypeVar("T")


class LLMStageFailure(Exception):
    """A feature's explain or simulate step failed for good. `calls` lists the calls it made (their cost
    counts even so). Record it as the feature's error, never as a score."""

    stage = "llm"

    def __init__(self, message: str, calls: Sequence[CallRecord] = ()) -> None:
        super().__init__(message)
        self.calls = list(calls)


def record_call(
    stage: Stage,
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
        cost_usd=backend.cost(response.usage, batch=response.via_batch),
        latency_s=response.latency_s,
        attempts=response.attempts,
        model=response.model,
        detail=dict(detail or {}),
    )


def failed_call(
    stage: Stage,
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


def total_usage(calls: Sequence[CallRecord]) -> tuple[Usage, float | None]:
    """Summed usage and USD; the USD is None if any call's price is unknown (an unknown is never 0)."""
    usage = Usage()
    for call in calls:
        usage = usage + call.usage
    costs = [call.cost_usd for call in calls]
    return usage, None if any(c is None for c in costs) else sum(c for c in costs if c is not None)


async def ask_until_valid(
    backend: LLMBackend,
    request: LLMRequest,
    parse: Callable[[LLMResponse], T],
    *,
    stage: Stage,
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
