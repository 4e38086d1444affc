"""One small interface to every LLM: a frozen request in, a response with usage out.

`LLMBackend.complete` adds what every backend needs around its own `_call`: a limit on requests in
flight, optional requests/minute and tokens/minute limits, a per-attempt timeout and retries with
backoff (autointerp.llm.retry). A call that still fails raises `LLMCallError`, whose message never
contains an API key; callers record it as the feature's error (never as a score of 0).

State bound to an event loop (the SDK's HTTP client, the semaphore, the rate limiters) is kept per
loop, so one backend object can serve several `asyncio.run` calls in a row.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import logging
import os
import re
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from autointerp.llm.caching import PrefixReport, prefix_key, prefix_report
from autointerp.llm.models import ModelInfo, Provider, find_price, model_info
from autointerp.llm.pricing import Price
from autointerp.llm.retry import PermanentError, RetryPolicy, TransientError, is_retryable_status
from autointerp.records import Usage

logger = logging.getLogger("autointerp.llm")

# Environment variables whose values must never appear in an error message.
SECRET_ENV_VARS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "OPENAI_API_KEY")


class BackendSpec(BaseModel, frozen=True):
    """A parsed backend spec string (autointerp.llm.spec.parse_backend_spec): `kind[:model][@base_url]`."""

    kind: str
    model: str | None = None
    base_url: str | None = None

    def __str__(self) -> str:
        text = self.kind if self.model is None else f"{self.kind}:{self.model}"
        return text if self.base_url is None else f"{text}@{self.base_url}"


class Message(BaseModel, frozen=True):
    role: Literal["user", "assistant"]
    content: str


class LLMRequest(BaseModel, frozen=True):
    """Everything one call needs; nothing is shared or mutated between requests.

    The prompt is `system`, then `prefix`, then `messages`. Keep `system` + `prefix` byte-identical across
    features so providers can serve them from their prompt cache.
    """

    system: str = Field(description="system prompt; first part of the cacheable prefix")
    prefix: tuple[Message, ...] = Field(default=(), description="few-shot turns shared by every feature (cacheable)")
    messages: tuple[Message, ...] = Field(min_length=1, description="the per-feature turns; the last is the user's")
    max_tokens: int = Field(
        default=512,
        ge=1,
        description="cap on the answer's tokens; a model that cannot stop thinking gets its table's thinking "
        "budget on top (autointerp.llm.models)",
    )
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    logprobs: bool = Field(
        default=False, description="ask for per-token logprobs; ignored where supports_logprobs is False"
    )
    top_logprobs: int = Field(default=0, ge=0, le=20, description="alternatives per token when logprobs is set")
    prompt_logprobs: int = Field(
        default=0,
        ge=0,
        le=20,
        description="alternatives per PROMPT token (teacher-forced scoring: vLLM's prompt_logprobs); 0: none. "
        "Only backends with supports_prompt_logprobs send it",
    )
    stop: tuple[str, ...] | None = Field(default=None, description="stop sequences")
    assistant_prefill: str | None = Field(
        default=None, description="start of the assistant's answer; the response text is what follows it"
    )

    @field_validator("messages")
    @classmethod
    def _ends_with_user(cls, messages: tuple[Message, ...]) -> tuple[Message, ...]:
        if messages[-1].role != "user":
            raise ValueError("the last message must be the user's (use assistant_prefill to start the answer)")
        return messages

    def prompt_hash(self) -> str:
        """sha256 of the whole request as sent to the backend (prompt and parameters)."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()

    def approx_input_tokens(self) -> int:
        """Rough input size (4 characters a token) for the tokens/minute limiter; not for billing."""
        chars = len(self.system) + sum(len(m.content) for m in (*self.prefix, *self.messages))
        return (chars + len(self.assistant_prefill or "")) // 4 + 1


class TokenLogprob(BaseModel):
    token: str
    logprob: float = Field(description="natural log of the chosen token's probability")
    top: dict[str, float] = Field(default_factory=dict, description="top alternatives: token -> logprob")


class LLMResponse(BaseModel):
    text: str = Field(description="the generated text (after assistant_prefill, which is not repeated)")
    logprobs: list[TokenLogprob] | None = Field(
        default=None, description="one per generated token, if asked and supported"
    )
    usage: Usage
    latency_s: float = Field(default=0.0, description="seconds of the successful attempt")
    model: str = Field(description="model name reported by the server")
    finish_reason: str | None = Field(
        default=None,
        description="'stop' (natural end or stop sequence), 'length' (max_tokens), or the provider's own word",
    )
    attempts: int = Field(default=1, description="tries it took, the successful one included")
    prompt_logprobs: list[TokenLogprob | None] | None = Field(
        default=None,
        description="one per prompt token when prompt_logprobs was asked and given (None where the server has "
        "none, e.g. the first token)",
    )
    via_batch: bool = Field(default=False, description="came from a provider's batch API (billed at its discount)")


_KEY_PATTERNS = (
    re.compile(r"\b(sk-[A-Za-z0-9][A-Za-z0-9_\-]{6,})"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{6,}"),
    re.compile(r"(?i)(x-api-key['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]+"),
)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Remove API keys: every given secret, plus anything shaped like a key or an auth header."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    text = _KEY_PATTERNS[0].sub("[redacted]", text)
    for pattern in _KEY_PATTERNS[1:]:
        text = pattern.sub(lambda m: m.group(1) + "[redacted]", text)
    return text


def env_secrets(env: dict[str, str] | os._Environ[str] | None = None) -> list[str]:
    env = os.environ if env is None else env
    return [env[name] for name in SECRET_ENV_VARS if env.get(name)]


class LLMCallError(Exception):
    """An LLM call failed for good: retries exhausted, or an error that retrying cannot fix.

    `status` is the HTTP status (None for timeouts, dropped connections, malformed answers, refusals to
    send); `attempts` counts the tries made. The message is redacted of API keys.
    """

    def __init__(self, backend: str, status: int | None, message: str, attempts: int, secrets: Iterable[str] = ()):
        self.backend = backend
        self.status = status
        self.attempts = attempts
        self.message = redact(message, secrets)
        super().__init__(self.backend, self.status, self.message, self.attempts)

    @property
    def retryable(self) -> bool:
        """True if the last failure was transient (a later run may succeed)."""
        return self.status is None or is_retryable_status(self.status)

    def __str__(self) -> str:
        status = f"HTTP {self.status}" if self.status is not None else "no HTTP status"
        return f"{self.backend}: {self.message} ({status}, after {self.attempts} attempt(s))"

    def __repr__(self) -> str:
        return (
            f"LLMCallError(backend={self.backend!r}, status={self.status!r}, "
            f"message={self.message!r}, attempts={self.attempts})"
        )


@dataclass(frozen=True)
class BackendOptions:
    """Knobs every backend takes (see autointerp.llm.spec.make_backend)."""

    max_in_flight: int = 8
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None  # all tokens of a call: input, cached, cache writes, output
    timeout_s: float = 120.0  # per attempt
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    prices: dict[str, Price] = field(default_factory=dict)  # user overrides, USD per million tokens
    api_key: str | None = field(default=None, repr=False)  # None: the SDK's own environment variable

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {self.max_in_flight}")
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 or None, got {value}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")


class TokenBucket:
    """Async token bucket: `rate_per_minute` units per minute, one second's worth of burst.

    A request larger than the burst still goes through once the bucket is full; the level then goes
    negative and later callers wait until it is paid back, so the long-run rate holds.
    """

    def __init__(self, rate_per_minute: float) -> None:
        self.rate_per_s = rate_per_minute / 60.0
        self.capacity = max(1.0, self.rate_per_s)
        self.level = self.capacity
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self._stamp) * self.rate_per_s)
        self._stamp = now

    async def acquire(self, amount: float = 1.0) -> None:
        async with self._lock:
            while True:
                self._refill()
                need = min(amount, self.capacity)
                if self.level >= need:
                    self.level -= amount
                    return
                # Short naps: a refund (adjust) from a finished call may shorten the wait.
                await asyncio.sleep(min(0.25, (need - self.level) / self.rate_per_s))

    def adjust(self, amount: float) -> None:
        """Charge (positive) or refund (negative) units after the fact, e.g. actual vs estimated tokens."""
        self._refill()
        self.level = min(self.capacity, self.level - amount)


@dataclass
class _LoopState:
    semaphore: asyncio.Semaphore
    requests: TokenBucket | None
    tokens: TokenBucket | None
    client: Any = None
    closer: AsyncGenerator[None, None] | None = None


async def _close_at_loop_end(client: Any) -> AsyncGenerator[None, None]:
    """Parked at `yield` for the life of the loop. `asyncio.run` ends by closing every open async
    generator (loop.shutdown_asyncgens) while the loop still runs, which closes the client cleanly;
    otherwise the SDK would try to close its connections later, on a loop that no longer exists."""
    try:
        yield
    finally:
        await client.close()


class LLMBackend(ABC):
    """Base class: subclasses set the capability flags and implement `_call` (and `_make_client`).

    `provider` ("anthropic", "openai") ties a backend to the model table (autointerp.llm.models): its
    `info` then holds the model's rules and price. `bills` is False for backends that run on this machine
    (their calls cost nothing); a billed model with no price has cost None ("unknown"), never $0.
    """

    supports_logprobs: bool = False
    supports_prefill: bool = True
    supports_prompt_logprobs: bool = False
    provider: Provider | None = None
    bills: bool = True

    def __init__(self, name: str, model: str, options: BackendOptions | None = None) -> None:
        self.name = name
        self.model = model
        self.options = options or BackendOptions()
        self.max_in_flight = self.options.max_in_flight
        self.retry = self.options.retry
        self.prices = dict(self.options.prices)
        self.info: ModelInfo | None = model_info(model, self.provider) if self.provider else None
        # shortest prefix the server caches (tokens); None: no provider cache to speak of
        self.min_cache_tokens: int | None = self.info.min_cache_tokens if self.info is not None else None
        self.total_usage = Usage()
        self._cost_total = 0.0
        self._unpriced_calls = 0
        self.n_calls = 0
        self.n_failed = 0
        self._secrets = [s for s in (self.options.api_key, *env_secrets()) if s]
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()
        self._prefixes_seen: dict[str, PrefixReport] = {}  # shared-prefix hash -> its report
        # Sentences for the user about how this model will be used (a fallback mode, a prefix too short to
        # cache): logged until `report_to` names where they go (the run's Reporter).
        self.startup_notes: list[str] = []
        self._note: Callable[[str], None] = logger.warning
        if self.provider is not None:
            self._warn_about_model()

    def _warn_about_model(self) -> None:
        if not self.price_known:
            logger.warning(
                "%s: the model table (autointerp/llm/models.toml) has no price for %r and none was given: its "
                'cost shows as unknown. Give one with --prices FILE ({%r: {"input": ..., "output": ...}}, '
                "USD per million tokens; 0 for a free self-hosted server).",
                self.name,
                self.model,
                self.model,
            )
        shutdown = self.info.shutdown if self.info is not None else None
        if shutdown is not None:
            days = (shutdown - datetime.date.today()).days
            if days <= 0:
                logger.warning(
                    "%s: %s was shut down on %s (provider's deprecation page).", self.name, self.model, shutdown
                )
            elif days <= 60:
                logger.warning("%s: %s shuts down on %s, in %d days.", self.name, self.model, shutdown, days)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, max_in_flight={self.max_in_flight})"

    # ------------------------------------------------------------------ subclass hooks
    @abstractmethod
    async def _call(self, request: LLMRequest) -> LLMResponse:
        """One attempt. Raise retry.TransientError / PermanentError (not SDK exceptions) on failure."""

    def _make_client(self) -> Any:
        """A fresh SDK client for the running event loop (None for backends without one)."""
        return None

    # ------------------------------------------------------------------ per-loop state
    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            opts = self.options
            state = _LoopState(
                semaphore=asyncio.Semaphore(opts.max_in_flight),
                requests=TokenBucket(opts.requests_per_minute) if opts.requests_per_minute else None,
                tokens=TokenBucket(opts.tokens_per_minute) if opts.tokens_per_minute else None,
                client=self._make_client(),
            )
            self._loops[loop] = state
        return state

    @property
    def client(self) -> Any:
        """The SDK client for the running loop."""
        return self._state().client

    async def aclose(self) -> None:
        """Close the running loop's HTTP client (optional; idle clients die with their loop)."""
        loop = asyncio.get_running_loop()
        state = self._loops.pop(loop, None)
        if state is not None and state.closer is not None:
            await state.closer.aclose()  # runs its `finally`: closes the client
        elif state is not None and state.client is not None and hasattr(state.client, "close"):
            await state.client.close()

    def report_to(self, note: Callable[[str], None]) -> None:
        """Send this backend's notes to `note` (e.g. a run's `Reporter.note`) instead of the log, starting with
        the ones made when it was built (`startup_notes`)."""
        self._note = note
        for text in self.startup_notes:
            note(text)

    # ------------------------------------------------------------------ the call
    def check_prefix(self, request: LLMRequest) -> PrefixReport | None:
        """The request's shared prefix against the model's minimum cacheable length (None: the model has
        no provider cache). The first time a prefix below the minimum is seen, says so (see `report_to`)."""
        if self.min_cache_tokens is None:
            return None
        key = prefix_key(request)
        report = self._prefixes_seen.get(key)
        if report is None:
            report = prefix_report(request, self.model, self.min_cache_tokens)
            self._prefixes_seen[key] = report
            if not report.cacheable and (request.system or request.prefix):
                self._note(
                    f"{self.name}: {report.message()}, so the provider will not cache it and every request pays "
                    "the full input price."
                )
        return report

    async def complete(self, request: LLMRequest) -> LLMResponse:
        """Send one request, with limits and retries; LLMCallError if it cannot succeed."""
        self.check_prefix(request)
        if request.assistant_prefill is not None and not self.supports_prefill:
            self.n_failed += 1
            raise LLMCallError(
                self.name,
                None,
                f"model {self.model!r} rejects an assistant prefill; send the request without "
                "assistant_prefill (ask for the format in the prompt)",
                0,
            )
        state = self._state()
        if state.client is not None and state.closer is None and hasattr(state.client, "close"):
            state.closer = _close_at_loop_end(state.client)
            await anext(state.closer)
        estimate = request.approx_input_tokens() + request.max_tokens
        attempts = 0
        # The slot is held through backoff waits too: under a 429 storm, waiting requests must not let
        # new ones in.
        async with state.semaphore:
            try:
                async for attempt in self.retry.attempts():
                    with attempt:
                        attempts = attempt.retry_state.attempt_number
                        if state.requests is not None:
                            await state.requests.acquire(1)
                        if state.tokens is not None:
                            await state.tokens.acquire(estimate)
                        started = time.monotonic()
                        async with asyncio.timeout(self.options.timeout_s):
                            response = await self._call(request)
                        latency = time.monotonic() - started
            except (TransientError, PermanentError, TimeoutError) as exc:
                self.n_failed += 1
                # `from None`: the SDK exception holds the request, headers and key included.
                raise self._call_error(exc, attempts) from None
        usage = response.usage
        if state.tokens is not None:
            used = usage.input_tokens + usage.cached_input_tokens + usage.cache_write_tokens + usage.output_tokens
            state.tokens.adjust(used - estimate)
        self.account(usage)
        return response.model_copy(update={"latency_s": latency, "attempts": attempts})

    def account(self, usage: Usage, *, batch: bool = False) -> None:
        """Add one answered call to the running totals (`complete` does this; batch ingestion calls it)."""
        self.n_calls += 1
        self.total_usage = self.total_usage + usage
        cost = self.cost(usage, batch=batch)
        if cost is None:
            self._unpriced_calls += 1
        else:
            self._cost_total += cost

    async def complete_all(self, requests: Sequence[LLMRequest]) -> list[LLMResponse | LLMCallError]:
        """Run many requests concurrently (bounded by max_in_flight); failures come back in place."""
        return await complete_each(self.complete, requests)

    def _call_error(self, exc: BaseException, attempts: int) -> LLMCallError:
        status = getattr(exc, "status", None)
        if isinstance(exc, TimeoutError):
            message = f"no answer within {self.options.timeout_s:g} s"
        else:
            message = str(exc) or type(exc).__name__
        return LLMCallError(self.name, status, message, attempts, self._secrets)

    # ------------------------------------------------------------------ money
    @property
    def price(self) -> Price | None:
        return find_price(self.model, self.prices)

    @property
    def price_known(self) -> bool:
        return not self.bills or self.price is not None

    def cost(self, usage: Usage, *, batch: bool = False) -> float | None:
        """USD for one call's `usage` (`batch`: through the provider's batch API, at its discount).
        None when the model's price is unknown (never 0.0 for a billed model); 0.0 for a backend that does
        not bill."""
        if not self.bills:
            return 0.0
        price = self.price
        return price.cost(usage, batch=batch) if price is not None else None

    @property
    def total_cost_usd(self) -> float | None:
        """USD of every answered call so far; None once any of them had no price."""
        return None if self._unpriced_calls else self._cost_total


async def complete_each(
    complete: Callable[[LLMRequest], Awaitable[LLMResponse]], requests: Sequence[LLMRequest]
) -> list[LLMResponse | LLMCallError]:
    """`complete` on every request concurrently; an LLMCallError comes back in its request's place."""

    async def one(request: LLMRequest) -> LLMResponse | LLMCallError:
        try:
            return await complete(request)
        except LLMCallError as exc:
            return exc

    return list(await asyncio.gather(*(one(r) for r in requests)))
