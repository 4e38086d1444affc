"""Batch endpoints of the loopback LLM server (tests/loopback_llm.py): enough of Anthropic's Message Batches
and of OpenAI's Files + Batch APIs for the real SDKs' batch calls.

    Anthropic: POST /v1/messages/batches, GET /v1/messages/batches[/{id}[/results]],
               POST /v1/messages/batches/{id}/cancel
    OpenAI:    POST /v1/files (multipart), GET /v1/files/{id}/content,
               POST /v1/batches, GET /v1/batches[/{id}], POST /v1/batches/{id}/cancel

Every request of a batch is answered when the batch is created (through the server's own answer and
prompt-cache simulation, in order); the batch shows `in_progress` until its end time and then its results.
Per-batch faults come from `server.batch_faults` (in creation order, then "ok"):

    "ok"        ends at once
    "slow:2"    ends 2 s after creation (the caller must poll)
    "expire:N"  the first N requests ran, the rest expired (OpenAI: status "expired"); "expire" = none ran
    "fail"      OpenAI: the input file failed validation (status "failed", nothing ran)
    "lost"      the batch is created and runs, but the create call is answered 500 (the reply was lost: the
                caller must find the batch, not submit it again)

Per-request faults come from the server's `faults` script, one per batch request in order: "ok", or an HTTP
status ("400", "500"...) that becomes that request's error. Test-only code, stdlib only.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

ANTHROPIC_ERROR_TYPES = {400: "invalid_request_error", 429: "rate_limit_error", 529: "overloaded_error"}


@dataclass
class LoopbackBatch:
    id: str
    kind: str  # "anthropic" or "openai"
    created_at: float
    ends_at: float
    items: list[dict] = field(default_factory=list)  # custom_id, outcome ("succeeded", "errored", ...), body/error
    canceled: bool = False
    failed: bool = False
    expired: bool = False
    reply_lost: bool = False
    metadata: dict | None = None
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None

    @property
    def ended(self) -> bool:
        return self.failed or self.canceled or time.time() >= self.ends_at


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1e6):06d}Z"


class BatchEndpoints:
    """Mixed into the server: state and the route handlers. `self` is the LoopbackServer."""

    def _batch_init(self) -> None:
        self.batches: dict[str, LoopbackBatch] = {}
        self.files: dict[str, tuple[str, bytes]] = {}  # id -> (purpose, content)

    # ------------------------------------------------------------------ routing
    def route_batch(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any] | None:
        """(status, JSON-able body or raw bytes) for a batch route, None for any other path."""
        parts = [p for p in path.split("/") if p]
        if parts[:3] == ["v1", "messages", "batches"]:
            rest = parts[3:]
            if method == "POST" and not rest:
                return self._lost_or(self._anthropic_create(json.loads(raw)))
            if method == "GET" and not rest:
                return 200, self._page([self._anthropic_json(b) for b in self._of_kind("anthropic")], "anthropic")
            batch = self.batches.get(rest[0]) if rest else None
            if batch is None:
                return 404, {"type": "error", "error": {"type": "not_found_error", "message": "no such batch"}}
            if method == "GET" and len(rest) == 1:
                return 200, self._anthropic_json(batch)
            if method == "GET" and rest[1:] == ["results"]:
                if not batch.ended:
                    return 400, {"type": "error", "error": {"type": "invalid_request_error", "message": "not ended"}}
                return 200, self._anthropic_results(batch)
            if method == "POST" and rest[1:] == ["cancel"]:
                batch.canceled = not batch.ended or batch.canceled
                return 200, self._anthropic_json(batch)
        if parts[:2] == ["v1", "files"]:
            if method == "POST" and len(parts) == 2:
                return 200, self._file_create(headers.get("content-type", ""), raw)
            if method == "GET" and len(parts) == 4 and parts[3] == "content" and parts[2] in self.files:
                return 200, self.files[parts[2]][1]
            return 404, {"error": {"message": "no such file", "type": "invalid_request_error"}}
        if parts[:2] == ["v1", "batches"]:
            if method == "POST" and len(parts) == 2:
                status, body = self._openai_create(json.loads(raw))
                return self._lost_or(body) if status == 200 else (status, body)
            if method == "GET" and len(parts) == 2:
                return 200, self._page([self._openai_json(b) for b in self._of_kind("openai")], "openai")
            batch = self.batches.get(parts[2]) if len(parts) > 2 else None
            if batch is None:
                return 404, {"error": {"message": "no such batch", "type": "invalid_request_error"}}
            if method == "GET" and len(parts) == 3:
                return 200, self._openai_json(batch)
            if method == "POST" and parts[3:] == ["cancel"]:
                batch.canceled = not batch.ended or batch.canceled
                return 200, self._openai_json(batch)
        return None

    def _lost_or(self, body: dict) -> tuple[int, dict]:
        """A created batch's reply, or a 500 in its place when its fault says the reply was lost."""
        if self.batches[body["id"]].reply_lost:
            return 500, {"type": "error", "error": {"type": "api_error", "message": "loopback fault: reply lost"}}
        return 200, body

    def _of_kind(self, kind: str) -> list[LoopbackBatch]:
        return sorted((b for b in self.batches.values() if b.kind == kind), key=lambda b: -b.created_at)

    @staticmethod
    def _page(data: list[dict], kind: str) -> dict:
        page = {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None}
        page["last_id"] = data[-1]["id"] if data else None
        if kind == "openai":
            page["object"] = "list"
        return page

    # ------------------------------------------------------------------ running a batch
    def _new_batch(self, kind: str, requests: list[tuple[str, dict]]) -> LoopbackBatch:
        with self._lock:
            fault = self.batch_faults.popleft() if self.batch_faults else "ok"
        name, _, arg = fault.partition(":")
        now = time.time()
        prefix = "msgbatch_" if kind == "anthropic" else "batch_"
        batch = LoopbackBatch(id=prefix + uuid.uuid4().hex[:24], kind=kind, created_at=now, ends_at=now)
        if name == "slow":
            batch.ends_at = now + float(arg)
        run = len(requests)
        if name == "expire":
            batch.expired = True
            run = int(arg or 0)
        if name == "fail":
            batch.failed = True
            run = 0
        batch.reply_lost = name == "lost"
        for i, (custom_id, body) in enumerate(requests):
            item: dict[str, Any] = {"custom_id": custom_id}
            if i >= run:
                item["outcome"] = "failed" if batch.failed else "expired"
            else:
                item_fault = self._next_fault()
                code = item_fault.partition(":")[0]
                if item_fault == "ok":
                    item["outcome"], item["body"] = "succeeded", self.build_response(kind, body)
                else:
                    item["outcome"], item["status"] = "errored", int(code) if code.isdigit() else 500
            batch.items.append(item)
        with self._lock:
            self.batches[batch.id] = batch
        return batch

    def _counts(self, batch: LoopbackBatch) -> dict[str, int]:
        counts = {"succeeded": 0, "errored": 0, "expired": 0, "canceled": 0, "failed": 0}
        for item in batch.items:
            outcome = "canceled" if batch.canceled and item["outcome"] == "succeeded" else item["outcome"]
            counts[outcome] += 1
        return counts

    # ------------------------------------------------------------------ Anthropic
    def _anthropic_create(self, body: dict) -> dict:
        requests = [(r["custom_id"], r["params"]) for r in body["requests"]]
        return self._anthropic_json(self._new_batch("anthropic", requests))

    def _anthropic_json(self, batch: LoopbackBatch) -> dict:
        ended = batch.ended
        counts = self._counts(batch)
        n = len(batch.items)
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": "ended" if ended else ("canceling" if batch.canceled else "in_progress"),
            "request_counts": {
                "processing": 0 if ended else n,
                "succeeded": counts["succeeded"] if ended else 0,
                "errored": counts["errored"] if ended else 0,
                "expired": counts["expired"] if ended else 0,
                "canceled": counts["canceled"] if ended else 0,
            },
            "created_at": _iso(batch.created_at),
            "expires_at": _iso(batch.created_at + 86400),
            "ended_at": _iso(batch.ends_at) if ended else None,
            "cancel_initiated_at": _iso(batch.created_at) if batch.canceled else None,
            "archived_at": None,
            "results_url": f"{self.url}/v1/messages/batches/{batch.id}/results" if ended else None,
        }

    def _anthropic_results(self, batch: LoopbackBatch) -> bytes:
        lines = []
        for item in batch.items:
            outcome = "canceled" if batch.canceled and item["outcome"] == "succeeded" else item["outcome"]
            if outcome == "succeeded":
                result: dict = {"type": "succeeded", "message": item["body"]}
            elif outcome == "errored":
                status = item["status"]
                etype = ANTHROPIC_ERROR_TYPES.get(status, "api_error")
                result = {
                    "type": "errored",
                    "error": {"type": "error", "error": {"type": etype, "message": f"loopback fault {status}"}},
                }
            else:
                result = {"type": outcome}
            lines.append(json.dumps({"custom_id": item["custom_id"], "result": result}))
        return ("\n".join(lines) + "\n").encode()

    # ------------------------------------------------------------------ OpenAI
    def _file_create(self, content_type: str, raw: bytes) -> dict:
        message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw)
        fields: dict[str, bytes] = {}
        filename = "upload"
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            fields[name] = part.get_payload(decode=True)
            filename = part.get_filename() or filename
        file_id = "file-" + uuid.uuid4().hex[:24]
        purpose = fields.get("purpose", b"").decode()
        self.files[file_id] = (purpose, fields.get("file", b""))
        return self._file_json(file_id, filename)

    def _file_json(self, file_id: str, filename: str) -> dict:
        purpose, content = self.files[file_id]
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }

    def _openai_create(self, body: dict) -> tuple[int, dict]:
        upload = self.files.get(body.get("input_file_id", ""))
        if upload is None:
            return 400, {"error": {"message": "no such input file", "type": "invalid_request_error"}}
        lines = [json.loads(line) for line in upload[1].decode().splitlines() if line.strip()]
        batch = self._new_batch("openai", [(line["custom_id"], line["body"]) for line in lines])
        batch.metadata, batch.input_file_id = body.get("metadata"), body["input_file_id"]
        return 200, self._openai_json(batch)

    def _openai_files(self, batch: LoopbackBatch) -> None:
        """Write the output and error files of an ended batch (once)."""
        if batch.output_file_id is not None or batch.error_file_id is not None or batch.failed:
            return
        out, err = [], []
        for item in batch.items:
            line: dict[str, Any] = {"id": "batch_req_" + uuid.uuid4().hex[:16], "custom_id": item["custom_id"]}
            outcome = "canceled" if batch.canceled and item["outcome"] == "succeeded" else item["outcome"]
            if outcome == "succeeded":
                line.update(response={"status_code": 200, "request_id": "req_x", "body": item["body"]}, error=None)
                out.append(line)
                continue
            if outcome == "errored":
                status = item["status"]
                error = {"message": f"loopback fault {status}", "type": "loopback_error", "code": str(status)}
                line.update(
                    response={"status_code": status, "request_id": "req_x", "body": {"error": error}}, error=None
                )
            else:
                code = "batch_expired" if outcome == "expired" else "batch_cancelled"
                line.update(response=None, error={"code": code, "message": f"request {outcome} before it ran"})
            err.append(line)
        for lines, attr in ((out, "output_file_id"), (err, "error_file_id")):
            if lines:
                file_id = "file-" + uuid.uuid4().hex[:24]
                self.files[file_id] = ("batch_output", ("\n".join(json.dumps(x) for x in lines) + "\n").encode())
                setattr(batch, attr, file_id)

    def _openai_json(self, batch: LoopbackBatch) -> dict:
        ended = batch.ended
        counts = self._counts(batch)
        if batch.failed:
            status = "failed"
        elif not ended:
            status = "cancelling" if batch.canceled else "in_progress"
        elif batch.canceled:
            status = "cancelled"
        else:
            status = "expired" if batch.expired else "completed"
        if ended:
            self._openai_files(batch)
        errors = None
        if batch.failed:
            errors = {
                "object": "list",
                "data": [
                    {"code": "invalid_file", "message": "loopback fault: bad input file", "line": 1, "param": None}
                ],
            }
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "errors": errors,
            "input_file_id": batch.input_file_id or "",
            "completion_window": "24h",
            "status": status,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "created_at": int(batch.created_at),
            "expires_at": int(batch.created_at) + 86400,
            "request_counts": {
                "total": len(batch.items),
                "completed": counts["succeeded"] if ended else 0,
                "failed": counts["errored"] if ended else 0,
            },
            "metadata": batch.metadata,
        }
