"""When to try an LLM call again, and how long to wait first.

Backends translate their SDK's exceptions into two of ours, so this module knows no SDK:
`TransientError` (try again: 408/409/429/5xx/529, timeouts, dropped connections, malformed bodies) and
`PermanentError` (do not: 400/401/403/404/413/422 and other 4xx). The wait before another try is exactly
what the server asked for in `retry-after-ms` / `retry-after` (capped), otherwise exponential backoff
with jitter.

Validating the *content* of an answer (a parseable explanation, the right number of predictions) is
the caller's job; `complete_validated` is a small helper for callers that want to re-ask on a bad answer.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
)

if TYPE_CHECKING:
    from autointerp.llm.base import LLMBackend, LLMRequest, LLMResponse
    from autointerp.records import Usage

RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


class TransientError(Exception):
    """A failure worth another try. `retry_after_s` is the server's requested wait, if it sent one."""

    def __init__(self, message: str, *, status: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


class PermanentError(Exception):
    """A failure that another identical request would repeat (bad request, bad key, unknown model)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def is_retryable_status(status: int) -> bool:
    """408, 409, 429, 529 and every 5xx are worth another try; other 4xx are the request's fault."""
    return status in RETRYABLE_STATUSES or 500 <= status < 600


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms` (milliseconds) or `retry-after` (seconds or an HTTP date).

    Returns None when neither header is present or parseable.
    """
    if not headers:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_for_status(status: int, message: str, headers: Mapping[str, str] | None = None) -> Exception:
    """The TransientError or PermanentError for an HTTP error status."""
    if is_retryable_status(status):
        return TransientError(message, status=status, retry_after_s=parse_retry_after(headers))
    return PermanentError(message, status=status)


@dataclass(frozen=True)
class RetryPolicy:
    """How often to try and how long to wait between tries (seconds)."""

    max_attempts: int = 6  # total tries, the first included
    initial_wait_s: float = 0.5  # first backoff; doubles each try, plus up to the same again in jitter
    max_wait_s: float = 30.0  # cap on the exponential backoff
    retry_after_cap_s: float = 60.0  # cap on a server-requested wait

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")

    def wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after_s", None)
        if retry_after is not None:
            return min(float(retry_after), self.retry_after_cap_s)
        # Exponential backoff with full-width jitter (written out: tenacity renamed its parameters).
        backoff = self.initial_wait_s * 2 ** (state.attempt_number - 1) + random.uniform(0, self.initial_wait_s)
        return min(backoff, self.max_wait_s)

    def attempts(self) -> AsyncRetrying:
        """`async for attempt in policy.attempts(): with attempt: ...` retries TransientError/TimeoutError."""
        return AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self.wait,
            retry=retry_if_exception_type((TransientError, TimeoutError)),
            reraise=True,
        )


T = TypeVar("T")


@dataclass
class Validated(Generic[T]):
    """A parsed answer and every response it took to get it (their usage adds up to the cost)."""

    value: T
    responses: list[LLMResponse]

    @property
    def usage(self) -> Usage:
        from autointerp.records import Usage

        total = Usage()
        for response in self.responses:
            total = total + response.usage
        return total


class InvalidAnswerError(Exception):
    """Every answer failed the caller's parser; `responses` keeps them (and their usage) for the record."""

    def __init__(self, message: str, responses: list[LLMResponse]) -> None:
        super().__init__(message)
        self.responses = responses


async def complete_validated(
    backend: LLMBackend,
    request: LLMRequest,
    parse: Callable[[LLMResponse], T],
    *,
    tries: int = 2,
    retry_temperature: float | None = None,
) -> Validated[T]:
    """Ask, parse; on a parse failure (`parse` raises ValueError) ask again, up to `tries` times.

    `retry_temperature` replaces the request's temperature on the re-asks (at temperature 0 the same
    request tends to get the same bad answer). LLMCallError from the backend propagates unchanged.
    """
    responses: list[LLMResponse] = []
    errors: list[str] = []
    for attempt in range(tries):
        current = request
        if attempt and retry_temperature is not None:
            current = request.model_copy(update={"temperature": retry_temperature})
        response = await backend.complete(current)
        responses.append(response)
        try:
            return Validated(parse(response), responses)
        except ValueError as exc:
            errors.append(str(exc))
    raise InvalidAnswerError(f"{tries} answer(s) from {backend.name} failed to parse: {errors[-1]}", responses)
