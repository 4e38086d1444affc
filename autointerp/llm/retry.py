"""When to try an LLM call again, and how long to wait first.

Backends translate their SDK's exceptions into two of ours, so the retry loop knows no SDK:
`TransientError` (try again: 408/409/429/5xx/529, timeouts, dropped connections, malformed bodies) and
`PermanentError` (do not: 400/401/403/404/413/422 and other 4xx). `sdk_errors_translated` is that
translation for the anthropic and openai SDKs, which share one exception hierarchy (both are generated
by Stainless); the SDK module is passed in, so nothing here imports an SDK. The wait before another try
is exactly what the server asked for in `retry-after-ms` / `retry-after` (capped), otherwise exponential
backoff with jitter.

Validating the *content* of an answer (a parseable explanation, the right number of predictions) is
the caller's job (autointerp.llm_calls).
"""

from __future__ import annotations

import email.utils
import json
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
)

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


def first_line(text: str, limit: int = 300) -> str:
    """The first line of an SDK's error text, cut to `limit` characters (the rest is request dumps)."""
    line = re.split(r"[\r\n]", text, maxsplit=1)[0]
    return line if len(line) <= limit else line[:limit] + "..."


@contextmanager
def sdk_errors_translated(sdk: ModuleType, describe_status: Callable[[Any], str]) -> Iterator[None]:
    """Around one SDK call: turn the failures of the `anthropic` or `openai` SDK (passed as `sdk`) into
    TransientError / PermanentError. `describe_status(exc)` words an `sdk.APIStatusError` (each SDK
    shapes its error body its own way). Other exceptions pass through unchanged.

    Raised `from None`: the SDK exception holds the request, headers (the API key) included.
    """
    try:
        yield
    except sdk.APIStatusError as exc:
        raise error_for_status(exc.status_code, describe_status(exc), exc.response.headers) from None
    except sdk.APIConnectionError as exc:  # includes APITimeoutError
        raise TransientError(f"{type(exc).__name__}: {first_line(str(exc))}") from None
    except sdk.APIResponseValidationError as exc:
        raise TransientError(f"malformed response: {first_line(str(exc))}") from None
    except json.JSONDecodeError as exc:  # a 200 whose body is not JSON
        raise TransientError(f"malformed response: {type(exc).__name__}: {first_line(str(exc))}") from None


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
