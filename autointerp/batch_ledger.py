"""The run database's record of provider batches (batch mode, autointerp.batch_run): which batches were
submitted, which requests each holds, and each request's answer or error once the batch ended.

Two tables (autointerp.store.schema TABLES): `batches` (one row per submitted batch: its key, provider id,
state) and `batch_requests` (one row per request: custom id, the request as sent, then the response or
error). A batch's row and its request rows are written in one transaction BEFORE the batch is submitted,
with no provider id yet; the id is written as soon as the provider returns it. A run killed in between
finds a row without an id on resume and looks the batch up at the provider (`BatchClient.find`) before
ever submitting it again, so nothing is paid for twice.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from pydantic import BaseModel

from autointerp.llm.base import LLMRequest, LLMResponse
from autointerp.llm.batch import BatchResult, BatchStatus

# submitting: rows stored, provider id not yet known; open: submitted, results not yet stored;
# ingested: every request's outcome stored in batch_requests.
BatchState = Literal["submitting", "open", "ingested"]


class LedgerBatch(BaseModel):
    """One `batches` row."""

    batch_key: str
    backend: str
    stage: str
    batch_id: str | None
    state: BatchState
    n_requests: int
    submitted_at: str
    provider_status: str | None = None


class Answer(BaseModel):
    """A stored request outcome: the response, or why there is none."""

    response: LLMResponse | None = None
    status: str
    error: str | None = None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")


class BatchLedger:
    """Reads and writes the batch tables of one run through an open RunStore (each write one transaction)."""

    def __init__(self, store: Any, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self.db = store.db

    # ------------------------------------------------------------------ writes
    def record_submission(
        self, batch_key: str, backend: str, stage: str, items: Sequence[tuple[str, LLMRequest]]
    ) -> LedgerBatch:
        """The batch and its requests, before submitting (provider id unknown)."""
        self.store._writing()
        row = {
            "run_id": self.run_id,
            "batch_key": batch_key,
            "backend": backend,
            "stage": stage,
            "batch_id": None,
            "state": "submitting",
            "n_requests": len(items),
            "submitted_at": _now(),
            "provider_status": None,
            "updated_at": _now(),
        }
        with self.db.atomic():
            self.store._put("batches", [row])
            self.store._put(
                "batch_requests",
                [
                    {
                        "run_id": self.run_id,
                        "custom_id": cid,
                        "batch_key": batch_key,
                        "backend": backend,
                        "request_json": request.model_dump_json(),
                        "status": "pending",
                        "response_json": None,
                        "error": None,
                        "retryable": None,
                        "cost_usd": None,
                    }
                    for cid, request in items
                ],
            )
        return LedgerBatch.model_validate(row)

    def record_batch_id(self, batch_key: str, batch_id: str) -> None:
        self._update_batch(batch_key, batch_id=batch_id, state="open")

    def record_status(self, batch_key: str, status: BatchStatus) -> None:
        self._update_batch(batch_key, provider_status=status.provider_status)

    def _update_batch(self, batch_key: str, **values: Any) -> None:
        self.store._writing()
        with self.db.atomic():
            self.db.table("batches").update((self.run_id, batch_key), {**values, "updated_at": _now()})

    def record_results(self, batch_key: str, results: Iterable[BatchResult]) -> None:
        """Every request's outcome and the batch marked ingested, in one transaction."""
        self.store._writing()
        with self.db.atomic():
            for r in results:
                self.db.table("batch_requests").update(
                    (self.run_id, r.custom_id),
                    {
                        "status": r.status,
                        "response_json": r.response.model_dump_json() if r.response is not None else None,
                        "error": r.error,
                        "retryable": int(r.retryable),
                        "cost_usd": r.cost_usd,
                    },
                )
            self.db.table("batches").update((self.run_id, batch_key), {"state": "ingested", "updated_at": _now()})

    def mark_unusable(self, custom_ids: Sequence[str]) -> None:
        """Answers a stage could not use (unreadable, or part of a failed feature): `retryable` set, so
        --retry-failed sends their requests again (the answer is kept until then)."""
        if not custom_ids:
            return
        self.store._writing()
        with self.db.atomic():
            marks = ", ".join("?" * len(custom_ids))
            self.db.execute(
                f"UPDATE batch_requests SET retryable = 1 WHERE run_id = ? AND custom_id IN ({marks})",
                [self.run_id, *custom_ids],
            )

    def forget_failed(self) -> int:
        """Drop the requests that got no answer (errored, expired, canceled) or an unusable one, so the next
        pass asks for them again and they go out in a new batch; returns how many (for --retry-failed)."""
        self.store._writing()
        with self.db.atomic():
            cursor = self.db.execute(
                "DELETE FROM batch_requests WHERE run_id = ? AND status != 'pending' "
                "AND (status != 'succeeded' OR retryable = 1)",
                [self.run_id],
            )
            return cursor.rowcount

    # ------------------------------------------------------------------ reads
    def batches(self, states: Sequence[BatchState] = ("submitting", "open", "ingested")) -> list[LedgerBatch]:
        marks = ", ".join("?" * len(states))
        rows = self.store._rows(
            f"SELECT * FROM batches WHERE run_id = ? AND state IN ({marks}) ORDER BY submitted_at",
            [self.run_id, *states],
        )
        return [LedgerBatch.model_validate(r) for r in rows]

    def requests(self, batch_key: str) -> dict[str, LLMRequest]:
        rows = self.store._rows(
            "SELECT custom_id, request_json FROM batch_requests WHERE run_id = ? AND batch_key = ?",
            [self.run_id, batch_key],
        )
        return {r["custom_id"]: LLMRequest.model_validate_json(r["request_json"]) for r in rows}

    def answers(self) -> dict[str, Answer]:
        """custom id -> stored outcome, for every request whose batch has ended."""
        rows = self.store._rows(
            "SELECT custom_id, status, response_json, error FROM batch_requests WHERE run_id = ? AND status != ?",
            [self.run_id, "pending"],
        )
        return {
            r["custom_id"]: Answer(
                status=r["status"],
                error=r["error"],
                response=LLMResponse.model_validate_json(r["response_json"]) if r["response_json"] else None,
            )
            for r in rows
        }

    def known_ids(self) -> set[str]:
        """Every custom id already in a batch of this run (answered or not)."""
        rows = self.store._rows("SELECT custom_id FROM batch_requests WHERE run_id = ?", [self.run_id])
        return {r["custom_id"] for r in rows}

    def adopted_ids(self) -> set[str]:
        """Provider ids already stored (a batch found by `find` must not be adopted twice)."""
        rows = self.store._rows("SELECT batch_id FROM batches WHERE run_id = ? AND batch_id IS NOT NULL", [self.run_id])
        return {r["batch_id"] for r in rows}
