"""Provider batch APIs (half price, answers within 24 hours) behind one small interface.

    batches = batch_client(backend)                 # InputError for a backend without a batch API
    batch_id = await batches.submit(items, key=...)  # items: (custom_id, LLMRequest); returns at once
    ... store batch_id and the custom ids, then, later or after a restart ...
    status = await batches.status(batch_id)          # BatchStatus: state, counts, done
    results = await batches.results(batch_id, expected=custom_ids)  # once status.done
    retry = [i for i in items if i[0] in {r.custom_id for r in results if r.retryable}]

Anthropic: Message Batches (`client.messages.batches.create / retrieve / results / cancel / list`), each
item's `params` the same JSON body as a live call. OpenAI: a JSONL file (`files.create`, purpose "batch")
of `{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}` lines, then `batches.create`
/ `retrieve`, and the output and error files read with `files.content`. The same calls reach SGLang,
which serves /v1/files and /v1/batches; vLLM serves no batch endpoints (use its offline `run-batch`).

Every result comes back as a `BatchResult` with its usage, an `LLMResponse` marked `via_batch` and its
cost at the provider's batch discount (None when the price is unknown). Requests that errored, expired
or were canceled come back as results too (`retryable` says whether sending them again may help), so the
caller records them per item and resubmits only those. Nothing here stores anything: the caller stores
the batch id as soon as `submit` returns (a batch submitted and never stored is found again with `find`,
by the `key` given to `submit` on OpenAI, by creation time and size on Anthropic).

Control calls (retrieve, list, cancel, file transfers) are retried like live calls (autointerp.llm.retry); a
call that still fails raises LLMCallError. Creating a batch is tried once: a create whose reply was lost may
have made the batch, and a retry would make (and bill) a second one; the caller finds it with `find`.
"""

from __future__ import annotations

import datetime
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field

from autointerp.errors import InputError
from autointerp.llm.base import LLMBackend, LLMCallError, LLMRequest, LLMResponse
from autointerp.llm.retry import PermanentError, TransientError, is_retryable_status, sdk_errors_translated

T = TypeVar("T")

CUSTOM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # Anthropic's rule; OpenAI takes any string, so one rule
ItemStatus = Literal["succeeded", "errored", "expired", "canceled"]
BatchState = Literal["in_progress", "canceling", "ended"]

# Limits per batch (provider documentation, 2026-12): requests and bytes of the request payload.
LIMITS = {"anthropic": (100_000, 256 * 1024**2), "openai": (50_000, 200 * 1024**2)}


class BatchStatus(BaseModel, frozen=True):
    """Where a batch stands. Counts are per request; `done`: results can be fetched (none will change)."""

    batch_id: str
    provider: str
    state: BatchState = Field(description="in_progress, canceling, or ended (completed, expired, failed, canceled)")
    provider_status: str = Field(description="the provider's own word: 'ended', 'completed', 'expired', 'failed'...")
    total: int
    succeeded: int = 0
    errored: int = 0
    expired: int = 0
    canceled: int = 0
    processing: int = 0
    created_at: datetime.datetime | None = None
    expires_at: datetime.datetime | None = None
    key: str | None = Field(default=None, description="the key given to submit, where the provider keeps it")
    error: str | None = Field(default=None, description="why the whole batch failed (OpenAI validation)")

    @property
    def done(self) -> bool:
        return self.state == "ended"

    def line(self) -> str:
        """One line for a progress display."""
        counts = ", ".join(
            f"{n} {name}"
            for name, n in (
                ("processing", self.processing),
                ("succeeded", self.succeeded),
                ("errored", self.errored),
                ("expired", self.expired),
                ("canceled", self.canceled),
            )
            if n
        )
        return f"{self.provider} batch {self.batch_id}: {self.provider_status} ({counts or f'{self.total} requests'})"


class BatchResult(BaseModel):
    """One request's outcome."""

    custom_id: str
    status: ItemStatus
    response: LLMResponse | None = None
    error: str | None = Field(default=None, description="why there is no response")
    retryable: bool = Field(default=False, description="sending the request again may succeed")
    cost_usd: float | None = Field(default=0.0, description="USD at the batch discount; None: price unknown")


class BatchClient(ABC):
    """A backend's batch API. Subclasses: AnthropicBatches, OpenAIBatches."""

    provider: str

    def __init__(self, backend: LLMBackend) -> None:
        self.backend = backend

    # ------------------------------------------------------------------ interface
    async def submit(self, items: Sequence[tuple[str, LLMRequest]], *, key: str | None = None) -> str:
        """Send one batch; returns its id as soon as the provider accepted it. Checked first (InputError,
        nothing sent): custom ids unique and of 1-64 letters, digits, '_' or '-'; within the provider's
        limits; no request the model would refuse."""
        self.check(items)
        for _, request in items:
            self.backend.check_prefix(request)  # warns once per shared prefix below the cache minimum
        return await self._submit(items, key)

    def check(self, items: Sequence[tuple[str, LLMRequest]]) -> None:
        """What `submit` checks first, without sending anything (InputError)."""
        self._check(items)

    @abstractmethod
    async def _submit(self, items: Sequence[tuple[str, LLMRequest]], key: str | None) -> str: ...

    @abstractmethod
    async def status(self, batch_id: str) -> BatchStatus: ...

    @abstractmethod
    async def _results(self, batch_id: str, requests: Mapping[str, LLMRequest]) -> list[BatchResult]: ...

    @abstractmethod
    async def cancel(self, batch_id: str) -> BatchStatus: ...

    @abstractmethod
    async def list_batches(self, since: datetime.datetime | None = None) -> list[BatchStatus]: ...

    async def results(
        self,
        batch_id: str,
        expected: Iterable[str] | Mapping[str, LLMRequest] = (),
    ) -> list[BatchResult]:
        """Every result of an ended batch (LLMCallError while it is still running). `expected`: the custom
        ids submitted (or id -> request, which also says whether logprobs were asked): any without a
        result comes back as errored and retryable. Usage and cost are added to the backend's totals."""
        requests = dict(expected) if isinstance(expected, Mapping) else {cid: None for cid in expected}
        results = await self._results(batch_id, {k: v for k, v in requests.items() if v is not None})
        seen = {r.custom_id for r in results}
        for cid in requests:
            if cid not in seen:
                results.append(
                    BatchResult(
                        custom_id=cid,
                        status="errored",
                        error=f"batch {batch_id} returned no result for this request",
                        retryable=True,
                    )
                )
        for r in results:
            if r.response is not None:
                self.backend.account(r.response.usage, batch=True)
        return results

    async def find(
        self, key: str | None = None, *, since: datetime.datetime | None = None, n_requests: int | None = None
    ) -> list[BatchStatus]:
        """Batches submitted earlier that the caller may not have stored (a kill between submit and store):
        by `key` where the provider keeps it (OpenAI metadata), else by creation at or after `since` and
        `n_requests` requests. The caller decides; nothing is resubmitted here."""
        found = []
        for status in await self.list_batches(since):
            if key is not None and status.key is not None:
                if status.key == key:
                    found.append(status)
            elif n_requests is None or status.total == n_requests:
                found.append(status)
        return found

    # ------------------------------------------------------------------ helpers
    def _check(self, items: Sequence[tuple[str, LLMRequest]]) -> None:
        where = f"batch for {self.backend.name}"
        if not items:
            raise InputError(f"{where}: found no requests; expected at least one (custom_id, request).")
        max_requests, max_bytes = LIMITS[self.provider]
        if len(items) > max_requests:
            raise InputError(
                f"{where}: found {len(items):,} requests; expected at most {max_requests:,} per batch "
                "(split them, see split_items)."
            )
        seen: set[str] = set()
        for cid, request in items:
            if not CUSTOM_ID.match(cid):
                raise InputError(
                    f"{where}: custom id {cid!r} is not 1-64 letters, digits, '_' or '-'; expected such an id."
                )
            if cid in seen:
                raise InputError(f"{where}: custom id {cid!r} appears twice; expected each id once.")
            seen.add(cid)
            if request.assistant_prefill is not None and not self.backend.supports_prefill:
                raise InputError(
                    f"{where}: request {cid!r} has an assistant prefill, which {self.backend.model} rejects; "
                    "expected requests without assistant_prefill."
                )
        size = sum(len(json.dumps(self._item_json(cid, r))) for cid, r in items)
        if size > max_bytes:
            raise InputError(f"{where}: found {size:,} bytes of requests; expected at most {max_bytes:,} per batch.")

    @abstractmethod
    def _item_json(self, custom_id: str, request: LLMRequest) -> dict[str, Any]: ...

    async def _control(
        self, sdk: Any, describe: Callable[[Any], str], call: Callable[[], Awaitable[T]], *, once: bool = False
    ) -> T:
        """One control call with the backend's retry policy (`once`: a single try, for calls that must not be
        repeated blindly); LLMCallError when it cannot succeed."""
        if once:
            try:
                with sdk_errors_translated(sdk, describe):
                    return await call()
            except (TransientError, PermanentError) as exc:
                raise self.backend._call_error(exc, 1) from None
        attempts = 0
        try:
            async for attempt in self.backend.retry.attempts():
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    with sdk_errors_translated(sdk, describe):
                        return await call()
        except (TransientError, PermanentError) as exc:
            raise self.backend._call_error(exc, attempts) from None
        raise AssertionError("unreachable: the retry loop returns or raises")


def split_items(
    items: Sequence[tuple[str, LLMRequest]],
    max_requests: int,
    max_bytes: int | None = None,
    size: Callable[[LLMRequest], int] | None = None,
) -> list[list[tuple[str, LLMRequest]]]:
    """Consecutive chunks of at most `max_requests` items (and `max_bytes` by `size`, if given)."""
    chunks: list[list[tuple[str, LLMRequest]]] = [[]]
    used = 0
    for item in items:
        n = size(item[1]) if size is not None else 0
        full = len(chunks[-1]) >= max_requests or (max_bytes is not None and chunks[-1] and used + n > max_bytes)
        if full:
            chunks.append([])
            used = 0
        chunks[-1].append(item)
        used += n
    return [c for c in chunks if c]


def _time(value: Any) -> datetime.datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        return value
    if isinstance(value, int | float):
        return datetime.datetime.fromtimestamp(value, tz=datetime.UTC)
    return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


# ------------------------------------------------------------------------------------------ Anthropic
class AnthropicBatches(BatchClient):
    provider = "anthropic"

    def _item_json(self, custom_id: str, request: LLMRequest) -> dict[str, Any]:
        return {"custom_id": custom_id, "params": self.backend.request_body(request)}  # type: ignore[attr-defined]

    def _sdk(self) -> tuple[Any, Callable[[Any], str]]:
        import anthropic

        from autointerp.llm.anthropic_backend import _describe

        return anthropic, _describe

    async def _submit(self, items: Sequence[tuple[str, LLMRequest]], key: str | None) -> str:
        sdk, describe = self._sdk()
        body = [self._item_json(cid, r) for cid, r in items]
        create = lambda: self.backend.client.messages.batches.create(requests=body)  # noqa: E731
        batch = await self._control(sdk, describe, create, once=True)
        return batch.id

    def _status(self, batch: Any) -> BatchStatus:
        counts = batch.request_counts
        state: BatchState = batch.processing_status
        word = state
        if state == "ended":
            word = (
                "canceled"
                if batch.cancel_initiated_at
                else "expired"
                if counts.expired and not counts.succeeded
                else "ended"
            )
        total = counts.processing + counts.succeeded + counts.errored + counts.expired + counts.canceled
        return BatchStatus(
            batch_id=batch.id,
            provider=self.provider,
            state=state,
            provider_status=word,
            total=total,
            succeeded=counts.succeeded,
            errored=counts.errored,
            expired=counts.expired,
            canceled=counts.canceled,
            processing=counts.processing,
            created_at=_time(batch.created_at),
            expires_at=_time(batch.expires_at),
        )

    async def status(self, batch_id: str) -> BatchStatus:
        sdk, describe = self._sdk()
        batch = await self._control(sdk, describe, lambda: self.backend.client.messages.batches.retrieve(batch_id))
        return self._status(batch)

    async def cancel(self, batch_id: str) -> BatchStatus:
        sdk, describe = self._sdk()
        batch = await self._control(sdk, describe, lambda: self.backend.client.messages.batches.cancel(batch_id))
        return self._status(batch)

    async def list_batches(self, since: datetime.datetime | None = None) -> list[BatchStatus]:
        sdk, describe = self._sdk()

        async def collect() -> list[Any]:
            return [b async for b in self.backend.client.messages.batches.list(limit=100)]

        out = [self._status(b) for b in await self._control(sdk, describe, collect)]
        return [s for s in out if since is None or (s.created_at is not None and s.created_at >= since)]

    async def _results(self, batch_id: str, requests: Mapping[str, LLMRequest]) -> list[BatchResult]:
        sdk, describe = self._sdk()
        status = await self.status(batch_id)
        if not status.done:
            raise LLMCallError(self.backend.name, None, f"{status.line()}: results come once it has ended", 0)

        async def collect() -> list[Any]:
            return [item async for item in await self.backend.client.messages.batches.results(batch_id)]

        out = []
        for item in await self._control(sdk, describe, collect):
            result = item.result
            kind = result.type
            if kind == "succeeded":
                response = self.backend.parse_message(result.message).model_copy(update={"via_batch": True})  # type: ignore[attr-defined]
                out.append(
                    BatchResult(
                        custom_id=item.custom_id,
                        status="succeeded",
                        response=response,
                        cost_usd=self.backend.cost(response.usage, batch=True),
                    )
                )
            elif kind == "errored":
                inner = _get(_get(result, "error"), "error")
                etype, message = _get(inner, "type") or "error", _get(inner, "message") or ""
                retryable = etype in {"api_error", "overloaded_error", "rate_limit_error", "timeout_error"}
                out.append(
                    BatchResult(
                        custom_id=item.custom_id, status="errored", error=f"{etype}: {message}", retryable=retryable
                    )
                )
            else:  # expired, canceled: never attempted
                out.append(
                    BatchResult(
                        custom_id=item.custom_id, status=kind, error=f"request {kind} before it ran", retryable=True
                    )
                )
        return out


# ------------------------------------------------------------------------------------------ OpenAI
class OpenAIBatches(BatchClient):
    provider = "openai"
    endpoint = "/v1/chat/completions"
    KEY = "autointerp_key"

    def _item_json(self, custom_id: str, request: LLMRequest) -> dict[str, Any]:
        body = self.backend.request_body(request)  # type: ignore[attr-defined]
        return {"custom_id": custom_id, "method": "POST", "url": self.endpoint, "body": body}

    def _sdk(self) -> tuple[Any, Callable[[Any], str]]:
        import openai

        from autointerp.llm.openai_backend import _describe

        return openai, _describe

    async def _submit(self, items: Sequence[tuple[str, LLMRequest]], key: str | None) -> str:
        sdk, describe = self._sdk()
        data = "".join(json.dumps(self._item_json(cid, r)) + "\n" for cid, r in items).encode()
        client = self.backend.client
        upload = await self._control(
            sdk, describe, lambda: client.files.create(file=("autointerp-batch.jsonl", data), purpose="batch")
        )
        metadata = {self.KEY: key} if key is not None else None
        batch = await self._control(
            sdk,
            describe,
            lambda: client.batches.create(
                input_file_id=upload.id,
                endpoint=self.endpoint,
                completion_window="24h",
                **({"metadata": metadata} if metadata else {}),
            ),
            once=True,
        )
        return batch.id

    def _status(self, batch: Any) -> BatchStatus:
        counts = batch.request_counts
        total = counts.total if counts else 0
        completed = counts.completed if counts else 0
        failed = counts.failed if counts else 0
        raw = batch.status
        state: BatchState = (
            "ended"
            if raw in ("completed", "expired", "failed", "cancelled")
            else "canceling"
            if raw == "cancelling"
            else "in_progress"
        )
        rest = max(0, total - completed - failed)
        errors = getattr(getattr(batch, "errors", None), "data", None) or []
        return BatchStatus(
            batch_id=batch.id,
            provider=self.provider,
            state=state,
            provider_status=raw,
            total=total,
            succeeded=completed,
            errored=failed + (rest if raw == "failed" else 0),
            expired=rest if raw == "expired" else 0,
            canceled=rest if raw == "cancelled" else 0,
            processing=rest if state != "ended" else 0,
            created_at=_time(batch.created_at),
            expires_at=_time(batch.expires_at),
            key=(batch.metadata or {}).get(self.KEY),
            error="; ".join(f"{e.code}: {e.message}" for e in errors) or None,
        )

    async def status(self, batch_id: str) -> BatchStatus:
        sdk, describe = self._sdk()
        return self._status(await self._control(sdk, describe, lambda: self.backend.client.batches.retrieve(batch_id)))

    async def cancel(self, batch_id: str) -> BatchStatus:
        sdk, describe = self._sdk()
        return self._status(await self._control(sdk, describe, lambda: self.backend.client.batches.cancel(batch_id)))

    async def list_batches(self, since: datetime.datetime | None = None) -> list[BatchStatus]:
        sdk, describe = self._sdk()

        async def collect() -> list[Any]:
            return [b async for b in self.backend.client.batches.list(limit=100)]

        out = [self._status(b) for b in await self._control(sdk, describe, collect)]
        return [s for s in out if since is None or (s.created_at is not None and s.created_at >= since)]

    async def _file_lines(self, file_id: str | None) -> list[dict[str, Any]]:
        if not file_id:
            return []
        sdk, describe = self._sdk()
        content = await self._control(sdk, describe, lambda: self.backend.client.files.content(file_id))
        return [json.loads(line) for line in content.text.splitlines() if line.strip()]

    async def _results(self, batch_id: str, requests: Mapping[str, LLMRequest]) -> list[BatchResult]:
        sdk, describe = self._sdk()
        batch = await self._control(sdk, describe, lambda: self.backend.client.batches.retrieve(batch_id))
        status = self._status(batch)
        if not status.done:
            raise LLMCallError(self.backend.name, None, f"{status.line()}: results come once it has ended", 0)
        out = []
        for line in [*await self._file_lines(batch.output_file_id), *await self._file_lines(batch.error_file_id)]:
            out.append(self._line_result(line, requests.get(line.get("custom_id", ""))))
        return out

    def _line_result(self, line: dict[str, Any], request: LLMRequest | None) -> BatchResult:
        cid = line.get("custom_id", "")
        response, error = line.get("response") or {}, line.get("error")
        code = response.get("status_code")
        if error is None and code == 200:
            parsed = self.backend.parse_completion(  # type: ignore[attr-defined]
                response.get("body"),
                logprobs=request.logprobs if request is not None else True,
                prompt_logprobs=bool(request.prompt_logprobs) if request is not None else True,
            ).model_copy(update={"via_batch": True})
            return BatchResult(
                custom_id=cid, status="succeeded", response=parsed, cost_usd=self.backend.cost(parsed.usage, batch=True)
            )
        if error is not None:  # e.g. {"code": "batch_expired", "message": ...}
            ecode = error.get("code") or "error"
            status: ItemStatus = (
                "expired" if ecode == "batch_expired" else "canceled" if ecode == "batch_cancelled" else "errored"
            )
            return BatchResult(
                custom_id=cid, status=status, error=f"{ecode}: {error.get('message') or ''}", retryable=True
            )
        body = response.get("body") or {}
        inner = body.get("error", body) if isinstance(body, dict) else {}
        message = inner.get("message") if isinstance(inner, dict) else str(body)
        return BatchResult(
            custom_id=cid,
            status="errored",
            error=f"HTTP {code}: {message}",
            retryable=code is None or is_retryable_status(int(code)),
        )


def batch_client(backend: LLMBackend) -> BatchClient:
    """The batch API of `backend`'s provider. InputError (before anything is sent) for a backend that has
    none: the local model, the baseline, any backend not of the anthropic or openai kind."""
    if backend.provider == "anthropic":
        return AnthropicBatches(backend)
    if backend.provider == "openai":
        return OpenAIBatches(backend)
    raise InputError(
        f"LLM backend {backend.name}: has no batch API; expected an anthropic:<model> or openai:<model> backend "
        "for batch mode (the local model and the baseline run without one; drop --batch for them)."
    )
