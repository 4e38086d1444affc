"""A real HTTP server on 127.0.0.1 that speaks enough of two LLM APIs for the real SDKs to talk to it.

- Anthropic Messages API: `POST /v1/messages` (point `anthropic` at `server.url`).
- OpenAI Chat Completions: `POST /v1/chat/completions` (point `openai` at `server.openai_url`).

Answers come from `responder(kind, request_json)` (kind is "anthropic" or "openai"), which returns the
answer text, or a dict `{"text": str, "logprobs": [{"token", "logprob", "top": {token: logprob}}]}` to
script OpenAI logprobs exactly. Without a responder the answer is "ok".

Faults are injected per request, in arrival order, from `faults` (then every request succeeds), or at
random with `failure_rate` and `seed`:

    "ok"                      normal answer
    "429:retry-after=1"       429 with `retry-after: 1` (also "429:retry-after-ms=300", or bare "429")
    "529" "503" "500" ...     that status with the provider's error body (any 4xx/5xx code)
    "401:echo-auth"           that status, the error message quoting the key header it received
    "drop"                    read the request, close the connection without an answer
    "slow:3"                  wait 3 s, then answer normally (the client should have timed out)
    "malformed"               200 with a body that is not JSON
    "truncated"               200 whose body stops halfway (Content-Length promises more)

Usage is made up but consistent: a token is ~4 characters (`fake_tokens`, the server's counter). The
server caches prompts the way each provider does, and only from a per-model minimum length on
(`cache_minimums`: model-name prefix -> tokens, e.g. from autointerp's model table; `default_cache_minimum`
for other models): Anthropic reads the longest `cache_control` breakpoint prefix an earlier request wrote
and writes the rest up to the last breakpoint that clears the minimum (usage `cache_read_input_tokens` /
`cache_creation_input_tokens`); OpenAI caches the longest run of leading messages (all but the last) that
an earlier request also started with, if it clears the minimum, counted in 128-token steps past a nonzero
minimum (usage
`prompt_tokens_details.cached_tokens`).

vLLM's `prompt_logprobs` (an int k in the chat request) is answered with a top-level `prompt_logprobs`:
None for the first prompt token, then {token id: {"logprob", "rank", "decoded_token"}} per pseudo-token
of the flattened prompt (split as byte-level BPE pre-tokenisers split text: a word with at most one
leading space, a run of symbols, whitespace apart; so a tab stays its own token). The alternatives are the
token itself at rank 1 and k-1 made-up ones, or, when the responder's answer dict has
`"prompt_alternatives": f`, `f(tokens, i)` -> {decoded token: logprob} at position i (None: the default),
listed likeliest first, plus the prompt's own token when it is not among them (as vLLM does).
`prompt_token_ids` come back when the request says `return_token_ids`. A server made with
`prompt_logprobs=False` ignores the field, as SGLang's chat API does.

Batch endpoints (Anthropic Message Batches, OpenAI Files + Batch) with their own faults: tests/loopback_batch.py.

Test-only code: stdlib only, one background thread per connection.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from loopback_batch import BatchEndpoints

Responder = Callable[[str, dict], "str | dict"]

RANDOM_FAULTS = ["429:retry-after=0", "529", "503", "500", "drop"]


@dataclass
class RecordedRequest:
    kind: str  # "anthropic", "openai" or "unknown"
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or the raw text when it is not JSON
    fault: str
    received_at: float  # time.monotonic()


def fake_tokens(text: str) -> int:
    """Pretend tokeniser: one token per 4 characters, at least one for non-empty text."""
    return (len(text) + 3) // 4


def split_tokens(text: str) -> list[str]:
    """Split an answer into pseudo-tokens (a word with its leading space, or one symbol)."""
    return re.findall(r"\s*\w+|\s*[^\w\s]|\s+", text)


def pretokens(text: str) -> list[str]:
    """Split a prompt the way byte-level BPE pre-tokenisers do (GPT-2's rule): a word or number with at most
    one leading space, a run of symbols with at most one leading space, whitespace runs apart."""
    return re.findall(r" ?[^\W\d_]+| ?\d+| ?[^\s\w]+|_+|\s+(?!\S)|\s+", text)


@dataclass
class LoopbackServer(BatchEndpoints):
    responder: Responder | None = None
    faults: deque[str] = field(default_factory=deque)
    failure_rate: float = 0.0
    seed: int = 0
    latency_s: float = 0.0  # added to every answered request, to make concurrency measurable
    model: str | None = None  # model name reported back; default: the requested one
    cache_minimums: dict[str, int] = field(default_factory=dict)  # model-name prefix -> min cacheable tokens
    default_cache_minimum: int = 0
    openai_cache_step: int = 128  # OpenAI counts cached tokens in steps of 128 past the minimum
    prompt_logprobs: bool = True  # answer vLLM's prompt_logprobs (False: ignore the field, like SGLang)
    batch_faults: deque[str] = field(default_factory=deque)  # one per batch created (tests/loopback_batch.py)

    def __post_init__(self) -> None:
        self._batch_init()
        self._token_ids: dict[str, int] = {}
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._rng = random.Random(self.seed)
        self._seen_anthropic: set[str] = set()
        self._seen_openai: set[str] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        """Base URL for the Anthropic SDK (it appends /v1/messages)."""
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def openai_url(self) -> str:
        """Base URL for the OpenAI SDK (it appends /chat/completions)."""
        return self.url + "/v1"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def start(self) -> LoopbackServer:
        server = self

        class Handler(_Handler):
            loopback = server

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="loopback-llm", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self, faults: list[str] | None = None) -> None:
        """Forget recorded requests and counters; optionally load a new fault script."""
        with self._lock:
            self.requests.clear()
            self.in_flight = 0
            self.max_in_flight = 0
            self.faults = deque(faults or [])

    # ----------------------------------------------------------------- per request
    def _next_fault(self) -> str:
        with self._lock:
            if self.faults:
                return self.faults.popleft()
            if self.failure_rate and self._rng.random() < self.failure_rate:
                return self._rng.choice(RANDOM_FAULTS)
            return "ok"

    def _answer(self, kind: str, body: dict) -> dict:
        reply = self.responder(kind, body) if self.responder else "ok"
        return {"text": reply} if isinstance(reply, str) else reply

    def cache_minimum(self, model: str) -> int:
        best = max((name for name in self.cache_minimums if model.startswith(name)), key=len, default=None)
        return self.cache_minimums[best] if best is not None else self.default_cache_minimum

    def _cached_anthropic(self, body: dict) -> tuple[int, int, int]:
        """(uncached input, cache read, cache write) tokens of an Anthropic request."""
        system = body.get("system") or []
        if isinstance(system, str):
            system = [{"type": "text", "text": system}]
        pieces: list[tuple[str, bool]] = [(b.get("text", ""), "cache_control" in b) for b in system]
        for message in body.get("messages", []):
            content = message["content"]
            if isinstance(content, str):
                pieces.append((message["role"] + ":" + content, False))
            else:
                for block in content:
                    pieces.append((message["role"] + ":" + block.get("text", ""), "cache_control" in block))
        total = sum(fake_tokens(text) for text, _ in pieces)
        minimum = self.cache_minimum(body.get("model", ""))
        cumulative, sizes = 0, []
        for text, _ in pieces:
            cumulative += fake_tokens(text)
            sizes.append(cumulative)
        # Breakpoints whose prefix clears the minimum; shorter ones are silently not cached.
        usable = [i for i, (_, marked) in enumerate(pieces) if marked and sizes[i] >= minimum]
        if not usable:
            return total, 0, 0
        keys = {i: hashlib.sha256(json.dumps(pieces[: i + 1]).encode()).hexdigest() for i in usable}
        with self._lock:
            hits = [i for i in usable if keys[i] in self._seen_anthropic]
            self._seen_anthropic.update(keys.values())
        read = sizes[max(hits)] if hits else 0
        write = sizes[usable[-1]] - read
        return total - read - write, read, write

    def _cached_openai(self, body: dict) -> tuple[int, int]:
        """(prompt tokens including cached, cached tokens) of an OpenAI request."""
        messages = body.get("messages", [])
        texts = [m["role"] + ":" + _content_text(m.get("content")) for m in messages]
        keys = [hashlib.sha256(json.dumps(texts[: k + 1]).encode()).hexdigest() for k in range(len(texts))]
        with self._lock:
            hit = 0
            for k in range(len(texts) - 1):
                if keys[k] in self._seen_openai:
                    hit = k + 1
            self._seen_openai.update(keys[:-1])
        cached = sum(fake_tokens(t) for t in texts[:hit])
        minimum = self.cache_minimum(body.get("model", ""))
        if cached < max(minimum, 1):
            cached = 0
        elif minimum and self.openai_cache_step:
            cached = minimum + (cached - minimum) // self.openai_cache_step * self.openai_cache_step
        return sum(fake_tokens(t) for t in texts), cached

    def _token_id(self, token: str) -> int:
        with self._lock:
            return self._token_ids.setdefault(token, len(self._token_ids) + 1000)

    def _prompt_logprobs(self, body: dict, answer: dict) -> tuple[list, list[int]]:
        """vLLM-shaped prompt logprobs over the flattened prompt's pseudo-tokens (see the module docstring)."""
        k = int(body["prompt_logprobs"])
        messages = body.get("messages", [])
        text = "".join(m["role"] + ":" + _content_text(m.get("content")) + "\n" for m in messages)
        if messages and body.get("continue_final_message"):
            text = text.removesuffix("\n")  # the prompt ends where the prefilled answer ends
        tokens = pretokens(text)
        ids = [self._token_id(t) for t in tokens]
        scripted = answer.get("prompt_logprobs")
        alternatives = answer.get("prompt_alternatives")
        out: list = [None]
        for i, token in enumerate(tokens[1:], start=1):
            if scripted is not None:
                entry = scripted[i] if i < len(scripted) else None
                out.append(entry)
                continue
            chosen = alternatives(tokens, i) if alternatives is not None else None
            if chosen is None:
                chosen = {token: -0.01, **{f"<alt{r}>": -4.0 - r for r in range(2, k + 1)}}
            ranked = sorted(chosen.items(), key=lambda kv: -kv[1])[:k]
            alts = {
                str(self._token_id(t)): {"logprob": lp, "rank": r, "decoded_token": t}
                for r, (t, lp) in enumerate(ranked, start=1)
            }
            if str(ids[i]) not in alts:  # vLLM adds the prompt's own token, ranked below the others
                alts[str(ids[i])] = {"logprob": -20.0, "rank": k + 1, "decoded_token": token}
            out.append(alts)
        return out, ids

    def build_response(self, kind: str, body: dict) -> dict:
        answer = self._answer(kind, body)
        text = answer["text"]
        tokens = split_tokens(text)
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 10**9
        stop = body.get("stop_sequences") if kind == "anthropic" else body.get("stop")
        if isinstance(stop, str):
            stop = [stop]
        finish = "stop"
        for s in stop or []:
            if s in text:
                text = text[: text.index(s)]
                tokens = split_tokens(text)
                finish = "stop_sequence"
        if len(tokens) > max_tokens:
            tokens = tokens[:max_tokens]
            text = "".join(tokens)
            finish = "length"
        model = self.model or body.get("model", "loopback")
        if kind == "anthropic":
            uncached, read, write = self._cached_anthropic(body)
            stop_reason = {"stop": "end_turn", "stop_sequence": "stop_sequence", "length": "max_tokens"}[finish]
            return {
                "id": "msg_loopback",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": uncached,
                    "cache_read_input_tokens": read,
                    "cache_creation_input_tokens": write,
                    "output_tokens": len(tokens),
                },
            }
        prompt, cached = self._cached_openai(body)
        logprobs = None
        if body.get("logprobs"):
            n_top = int(body.get("top_logprobs") or 0)
            scripted = answer.get("logprobs")
            if scripted is None:
                scripted = [{"token": t, "logprob": -0.01, "top": {t: -0.01, "<alt>": -4.6}} for t in tokens]
            logprobs = {
                "content": [
                    {
                        "token": entry["token"],
                        "logprob": entry["logprob"],
                        "bytes": list(entry["token"].encode()),
                        "top_logprobs": [
                            {"token": t, "logprob": lp, "bytes": list(t.encode())}
                            # likeliest first, as the API sends them
                            for t, lp in sorted(entry.get("top", {}).items(), key=lambda kv: -kv[1])[:n_top]
                        ],
                    }
                    for entry in scripted
                ],
                "refusal": None,
            }
        extra: dict[str, Any] = {}
        if body.get("prompt_logprobs") and self.prompt_logprobs:
            extra["prompt_logprobs"], ids = self._prompt_logprobs(body, answer)
            if body.get("return_token_ids"):
                extra["prompt_token_ids"] = ids
        return {
            **extra,
            "id": "chatcmpl-loopback",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": logprobs,
                    "finish_reason": "length" if finish == "length" else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": len(tokens),
                "total_tokens": prompt + len(tokens),
                "prompt_tokens_details": {"cached_tokens": cached},
            },
        }


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _error_body(kind: str, status: int) -> dict:
    anthropic_types = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        529: "overloaded_error",
    }
    message = f"loopback fault {status}"
    if kind == "anthropic":
        return {
            "type": "error",
            "error": {"type": anthropic_types.get(status, "api_error"), "message": message},
        }
    return {"error": {"message": message, "type": "loopback_error", "param": None, "code": str(status)}}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 drops bursts of connects (1 s SYN retries)


class _Handler(BaseHTTPRequestHandler):
    loopback: LoopbackServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: avoid 40 ms stalls

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._batch_route("GET", b"")

    def _batch_route(self, method: str, raw: bytes) -> bool:
        """Serve a batch or file route (tests/loopback_batch.py); False if the path is not one."""
        server = self.loopback
        path = self.path.split("?")[0]
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            answer = server.route_batch(method, path, headers, raw)
        except Exception as exc:  # noqa: BLE001 - a malformed batch request is a test bug: answer 400, say why
            answer = 400, {"error": {"type": "invalid_request_error", "message": repr(exc)}}
        if answer is None:
            if method == "GET":
                self._send_json(404, _error_body("openai", 404))
                return True
            return False
        with server._lock:
            kind = "anthropic-batch" if path.startswith("/v1/messages/batches") else "openai-batch"
            server.requests.append(RecordedRequest(kind, path, headers, None, "ok", time.monotonic()))
        status, payload = answer
        if isinstance(payload, bytes):
            self._send_raw(status, payload, {"content-type": "application/octet-stream"})
        else:
            self._send_json(status, payload)
        return True

    def do_POST(self) -> None:
        server = self.loopback
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path.split("?")[0] not in ("/v1/messages", "/v1/chat/completions") and self._batch_route("POST", raw):
            return
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode(errors="replace")
        path = self.path.split("?")[0]
        kind = {"/v1/messages": "anthropic", "/v1/chat/completions": "openai"}.get(path, "unknown")
        fault = server._next_fault()
        with server._lock:
            server.requests.append(
                RecordedRequest(
                    kind, path, {k.lower(): v for k, v in self.headers.items()}, body, fault, time.monotonic()
                )
            )
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
        try:
            self._serve(kind, body, fault)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout); nothing to answer
        finally:
            with server._lock:
                server.in_flight -= 1

    def _serve(self, kind: str, body: Any, fault: str) -> None:
        server = self.loopback
        if kind == "unknown" or not isinstance(body, dict):
            self._send_json(404, _error_body("openai", 404))
            return
        name, _, arg = fault.partition(":")
        if name == "drop":
            self.close_connection = True
            return
        if name == "slow":
            time.sleep(float(arg))
        if name.isdigit():
            headers = {}
            if arg.startswith("retry-after-ms="):
                headers["retry-after-ms"] = arg.split("=", 1)[1]
            elif arg.startswith("retry-after="):
                headers["retry-after"] = arg.split("=", 1)[1]
            # The SDKs read this header to decide their own retries; ours are off, so it must not matter.
            headers["x-should-retry"] = "true"
            body = _error_body(kind, int(name))
            if arg == "echo-auth":  # a badly behaved proxy that quotes the credentials it was sent
                sent = self.headers.get("x-api-key") or self.headers.get("authorization") or ""
                inner = body["error"]
                inner["message"] += f" (invalid credentials: {sent})"
            self._send_json(int(name), body, headers)
            return
        if server.latency_s:
            time.sleep(server.latency_s)
        if name == "malformed":
            self._send_raw(200, b'{"id": "msg_loopback", "content": [{"type": "te')
            return
        try:
            payload = json.dumps(server.build_response(kind, body)).encode()
        except Exception as exc:  # noqa: BLE001 - a broken responder is a test bug: answer 500, say why
            self._send_json(500, {"error": {"type": "responder_error", "message": repr(exc)}})
            return
        if name == "truncated":
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self._send_raw(200, payload)

    def _send_json(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(body).encode(), headers)

    def _send_raw(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        headers = dict(headers or {})
        self.send_response(status)
        self.send_header("content-type", headers.pop("content-type", "application/json"))
        self.send_header("content-length", str(len(payload)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)


def start_loopback(
    responder: Responder | None = None,
    faults: list[str] | None = None,
    *,
    failure_rate: float = 0.0,
    seed: int = 0,
    latency_s: float = 0.0,
    model: str | None = None,
    cache_minimums: dict[str, int] | None = None,
    default_cache_minimum: int = 0,
    batch_faults: list[str] | None = None,
    prompt_logprobs: bool = True,
) -> LoopbackServer:
    """Start a loopback LLM server on a free port of 127.0.0.1; call `.stop()` when done."""
    server = LoopbackServer(
        responder=responder,
        faults=deque(faults or []),
        failure_rate=failure_rate,
        seed=seed,
        latency_s=latency_s,
        model=model,
        cache_minimums=dict(cache_minimums or {}),
        default_cache_minimum=default_cache_minimum,
        batch_faults=deque(batch_faults or []),
        prompt_logprobs=prompt_logprobs,
    )
    return server.start()
