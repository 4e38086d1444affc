"""The real anthropic and openai SDKs against a loopback HTTP server: answers, faults, retries, limits,
usage, cost, spec parsing. No network beyond 127.0.0.1; tiny backoff so the file runs in seconds."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator

import anthropic
import openai
import pytest
from loopback_llm import LoopbackServer, start_loopback

from autointerp.errors import InputError
from autointerp.llm import (
    LLMCallError,
    LLMRequest,
    Message,
    Price,
    default_backend_spec,
    find_price,
    load_overrides,
    make_backend,
    parse_backend_spec,
    redact,
)
from autointerp.llm.base import LLMBackend, TokenBucket
from autointerp.llm.retry import TransientError, parse_retry_after, sdk_errors_translated
from autointerp.records import Usage

ANTHROPIC_KEY = "sk-ant-api03-LOOPBACK-SECRET-0123456789"
OPENAI_KEY = "sk-proj-LOOPBACK-SECRET-9876543210"
KINDS = ["anthropic", "openai"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see no real keys, URLs or profiles from the machine they run on."""
    for var in (
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_PROFILE",
        "ANTHROPIC_CUSTOM_HEADERS",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
    ):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def loopback() -> Iterator[LoopbackServer]:
    server = start_loopback(responder=lambda kind, body: "a feature about dogs")
    yield server
    server.stop()


def backend_for(kind: str, server: LoopbackServer, model: str | None = None, **kwargs) -> LLMBackend:
    kwargs.setdefault("retry_initial_wait_s", 0.01)
    kwargs.setdefault("retry_max_wait_s", 0.05)
    kwargs.setdefault("timeout_s", 5.0)
    if kind == "anthropic":
        return make_backend(f"anthropic:{model or 'claude-haiku-4-5'}@{server.url}", api_key=ANTHROPIC_KEY, **kwargs)
    return make_backend(f"openai:{model or 'gpt-4o-mini'}@{server.openai_url}", api_key=OPENAI_KEY, **kwargs)


def request(feature: int = 1, **kwargs) -> LLMRequest:
    return LLMRequest(
        system="You explain features of a sparse autoencoder.",
        prefix=[
            Message(role="user", content="Example feature:\ndog\t10\ncat\t0"),
            Message(role="assistant", content="Explanation: the word dog"),
        ],
        messages=[Message(role="user", content=f"Feature {feature}:\nbark\t7\nmeow\t0")],
        **kwargs,
    )


def run(coro):
    return asyncio.run(coro)


# --------------------------------------------------------------------------------------- answers
@pytest.mark.parametrize("kind", KINDS)
def test_normal_answer(kind: str, loopback: LoopbackServer) -> None:
    backend = backend_for(kind, loopback)
    response = run(backend.complete(request()))
    assert response.text == "a feature about dogs"
    assert response.finish_reason == "stop"
    assert response.attempts == 1
    assert response.latency_s > 0
    assert response.usage.output_tokens > 0 and response.usage.input_tokens > 0
    assert response.model == backend.model
    assert loopback.count == 1 and loopback.requests[0].kind == kind
    assert backend.n_calls == 1 and backend.total_usage == response.usage
    assert backend.total_cost_usd == pytest.approx(backend.cost(response.usage)) and backend.total_cost_usd > 0


@pytest.mark.parametrize("kind", KINDS)
def test_max_tokens_cut_is_reported_as_length(kind: str, loopback: LoopbackServer) -> None:
    response = run(backend_for(kind, loopback).complete(request(max_tokens=2)))
    assert response.finish_reason == "length"
    assert response.usage.output_tokens == 2


# --------------------------------------------------------------------------------------- retries
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fault", ["529", "503", "500", "502", "drop", "truncated", "malformed", "slow:3"])
def test_transient_fault_is_retried_then_succeeds(kind: str, fault: str, loopback: LoopbackServer) -> None:
    loopback.reset([fault])
    backend = backend_for(kind, loopback, timeout_s=0.5)
    started = time.monotonic()
    response = run(backend.complete(request()))
    assert response.text == "a feature about dogs"
    assert response.attempts == 2
    assert loopback.count == 2
    assert time.monotonic() - started < 2.5  # a slow answer is abandoned at the timeout, not awaited


@pytest.mark.parametrize("kind", KINDS)
def test_429_waits_for_retry_after(kind: str, loopback: LoopbackServer) -> None:
    loopback.reset(["429:retry-after=1"])
    response = run(backend_for(kind, loopback).complete(request()))
    assert response.attempts == 2
    first, second = loopback.requests
    assert second.received_at - first.received_at >= 1.0


def test_429_waits_for_retry_after_ms(loopback: LoopbackServer) -> None:
    loopback.reset(["429:retry-after-ms=400"])
    run(backend_for("openai", loopback).complete(request()))
    first, second = loopback.requests
    assert 0.4 <= second.received_at - first.received_at < 1.5


def test_retry_after_is_capped(loopback: LoopbackServer) -> None:
    loopback.reset(["429:retry-after=3600"])
    run(backend_for("anthropic", loopback, retry_after_cap_s=0.2).complete(request()))
    first, second = loopback.requests
    assert second.received_at - first.received_at < 1.0


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412470.0) == 10.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_not_retried(kind: str, status: int, loopback: LoopbackServer) -> None:
    loopback.reset([str(status)])
    backend = backend_for(kind, loopback)
    with pytest.raises(LLMCallError) as info:
        run(backend.complete(request()))
    assert info.value.status == status
    # the SDK's error body, worded by the backend's own describer through the shared translation
    assert info.value.message.startswith(f"HTTP {status} ") and info.value.message.endswith(f"loopback fault {status}")
    assert info.value.attempts == 1
    assert not info.value.retryable
    assert loopback.count == 1
    assert backend.n_failed == 1 and backend.n_calls == 0


@pytest.mark.parametrize("kind", KINDS)
def test_exhausted_attempts_raise_with_count(kind: str, loopback: LoopbackServer) -> None:
    loopback.reset(["503"] * 10)
    with pytest.raises(LLMCallError) as info:
        run(backend_for(kind, loopback, max_attempts=3).complete(request()))
    assert info.value.attempts == 3
    assert info.value.status == 503
    assert info.value.retryable
    assert loopback.count == 3
    assert "after 3 attempt(s)" in str(info.value)


@pytest.mark.parametrize("sdk", [anthropic, openai], ids=["anthropic", "openai"])
def test_sdk_translation_leaves_other_exceptions_alone(sdk) -> None:
    with pytest.raises(KeyError), sdk_errors_translated(sdk, str):
        raise KeyError("not an SDK failure")
    with pytest.raises(TransientError, match="malformed response: JSONDecodeError") as info:
        with sdk_errors_translated(sdk, str):
            json.loads("{not json")
    assert info.value.__suppress_context__


def test_timeouts_exhausted_name_the_timeout(loopback: LoopbackServer) -> None:
    loopback.reset(["slow:2", "slow:2"])
    with pytest.raises(LLMCallError) as info:
        run(backend_for("openai", loopback, max_attempts=2, timeout_s=0.3).complete(request()))
    assert info.value.status is None and info.value.attempts == 2
    assert "0.3 s" in info.value.message or "Timeout" in info.value.message


def test_random_faults_with_seed_all_recover(loopback: LoopbackServer) -> None:
    loopback.failure_rate, loopback.seed = 0.4, 7
    loopback._rng.seed(7)
    backend = backend_for("anthropic", loopback, max_attempts=8, max_in_flight=4)
    results = run(backend.complete_all([request(i) for i in range(12)]))
    assert all(not isinstance(r, LLMCallError) for r in results)
    assert loopback.count > 12  # some were retried


# --------------------------------------------------------------------------------------- limits
@pytest.mark.parametrize("kind", KINDS)
def test_in_flight_limit_holds(kind: str, loopback: LoopbackServer) -> None:
    loopback.latency_s = 0.2
    backend = backend_for(kind, loopback, max_in_flight=3)
    started = time.monotonic()
    results = run(backend.complete_all([request(i) for i in range(20)]))
    elapsed = time.monotonic() - started
    assert all(not isinstance(r, LLMCallError) for r in results)
    assert loopback.max_in_flight == 3
    assert elapsed >= 7 * 0.2  # ceil(20 / 3) waves of 0.2 s


def test_requests_per_minute_limit(loopback: LoopbackServer) -> None:
    backend = backend_for("openai", loopback, requests_per_minute=600, max_in_flight=16)  # 10/s, burst 10
    started = time.monotonic()
    run(backend.complete_all([request(i) for i in range(15)]))
    assert time.monotonic() - started >= 0.4  # 10 at once, then 5 more at 0.1 s intervals


def test_token_bucket_waits_and_refunds() -> None:
    async def go() -> tuple[float, float]:
        bucket = TokenBucket(rate_per_minute=600)  # 10 per second, burst of 10
        started = time.monotonic()
        await bucket.acquire(10)  # the whole burst, at once
        await bucket.acquire(5)  # waits ~0.5 s for refill
        waited = time.monotonic() - started
        bucket.adjust(-5)  # the call used 5 fewer than estimated: give them back
        started = time.monotonic()
        await bucket.acquire(5)
        return waited, time.monotonic() - started

    waited, refunded = run(go())
    assert 0.4 <= waited < 1.0
    assert refunded < 0.1


def test_tokens_per_minute_limit_applies(loopback: LoopbackServer) -> None:
    # Each call is estimated at ~35 input + 50 output tokens; 6000 tokens/min = 100/s, burst 100.
    backend = backend_for("openai", loopback, tokens_per_minute=6000, max_in_flight=4)
    started = time.monotonic()
    results = run(backend.complete_all([request(i, max_tokens=50) for i in range(4)]))
    elapsed = time.monotonic() - started
    assert all(not isinstance(r, LLMCallError) for r in results)
    assert 0.3 <= elapsed < 3.0


def test_backend_survives_several_event_loops(loopback: LoopbackServer) -> None:
    backend = backend_for("openai", loopback, max_in_flight=2)
    clients = []

    async def go():
        results = await backend.complete_all([request(i) for i in range(4)])
        clients.append(backend.client)
        return results

    for _ in range(2):
        assert all(not isinstance(r, LLMCallError) for r in run(go()))
    assert backend.n_calls == 8
    assert clients[0] is not clients[1]  # one HTTP client per event loop...
    assert all(client.is_closed() for client in clients)  # ...closed as its asyncio.run ended


def test_aclose_closes_the_loops_client(loopback: LoopbackServer) -> None:
    backend = backend_for("anthropic", loopback)

    async def go():
        await backend.complete(request())
        client = backend.client
        await backend.aclose()
        return client

    assert run(go()).is_closed()


# --------------------------------------------------------------------------------------- prompt caching
@pytest.mark.parametrize("kind", KINDS)
def test_cached_tokens_are_recorded(kind: str, loopback: LoopbackServer) -> None:
    backend = backend_for(kind, loopback)
    first = run(backend.complete(request(1)))
    second = run(backend.complete(request(2)))
    assert first.usage.cached_input_tokens == 0
    assert second.usage.cached_input_tokens > 0
    if kind == "anthropic":
        assert first.usage.cache_write_tokens == second.usage.cached_input_tokens
    # the fields never overlap: uncached + cached (+ written) is the whole prompt
    assert second.usage.input_tokens + second.usage.cached_input_tokens == (
        first.usage.input_tokens + first.usage.cache_write_tokens + first.usage.cached_input_tokens
    )
    assert backend.cost(second.usage) < backend.cost(first.usage)


def test_anthropic_marks_the_end_of_the_prefix_for_caching(loopback: LoopbackServer) -> None:
    run(backend_for("anthropic", loopback).complete(request()))
    body = loopback.requests[0].body
    assert body["system"] == [
        {
            "type": "text",
            "text": "You explain features of a sparse autoencoder.",
            "cache_control": {"type": "ephemeral"},
        }
    ]
    prefix_last = body["messages"][1]
    assert prefix_last["role"] == "assistant"
    assert prefix_last["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in json.dumps(body["messages"][2:])
    assert json.dumps(body).count("cache_control") == 2  # system prompt, end of the few-shot turns
    assert body["temperature"] == 0.0
    assert "thinking" not in body  # Haiku 4.5 thinks only when asked


def test_anthropic_without_prefix_marks_the_system_prompt(loopback: LoopbackServer) -> None:
    req = LLMRequest(system="sys", messages=[Message(role="user", content="q")])
    run(backend_for("anthropic", loopback).complete(req))
    assert loopback.requests[0].body["system"][-1]["cache_control"] == {"type": "ephemeral"}


def test_openai_prefix_is_byte_identical_across_features(loopback: LoopbackServer) -> None:
    backend = backend_for("openai", loopback)
    run(backend.complete(request(1)))
    run(backend.complete(request(2)))
    a, b = (r.body["messages"] for r in loopback.requests)
    assert [m["role"] for m in a] == ["system", "user", "assistant", "user"]
    assert json.dumps(a[:3]) == json.dumps(b[:3]) and a[3] != b[3]


# --------------------------------------------------------------------------------------- request options
def test_openai_logprobs_are_parsed() -> None:
    scripted = {
        "text": "7",
        "logprobs": [{"token": "7", "logprob": -0.3, "top": {"7": -0.3, "6": -1.5, "8": -2.0}}],
    }
    server = start_loopback(responder=lambda kind, body: scripted)
    try:
        response = run(backend_for("openai", server).complete(request(logprobs=True, top_logprobs=2)))
        body = server.requests[0].body
    finally:
        server.stop()
    assert body["logprobs"] is True and body["top_logprobs"] == 2
    assert response.logprobs is not None and len(response.logprobs) == 1
    assert response.logprobs[0].token == "7" and response.logprobs[0].logprob == -0.3
    assert response.logprobs[0].top == {"7": -0.3, "6": -1.5}


def test_logprobs_absent_unless_asked(loopback: LoopbackServer) -> None:
    response = run(backend_for("openai", loopback).complete(request()))
    assert response.logprobs is None
    assert "logprobs" not in loopback.requests[0].body


def test_anthropic_has_no_logprobs(loopback: LoopbackServer) -> None:
    backend = backend_for("anthropic", loopback)
    assert backend.supports_logprobs is False
    response = run(backend.complete(request(logprobs=True, top_logprobs=5)))
    assert response.logprobs is None


@pytest.mark.parametrize("kind", KINDS)
def test_stop_sequences_and_prefill_are_sent(kind: str, loopback: LoopbackServer) -> None:
    run(backend_for(kind, loopback).complete(request(stop=["\n\n"], assistant_prefill="Explanation: ")))
    body = loopback.requests[0].body
    assert body["messages"][-1]["role"] == "assistant"
    assert body["messages"][-1]["content"].startswith("Explanation:")
    assert body["stop_sequences" if kind == "anthropic" else "stop"] == ["\n\n"]


def test_newer_claude_gets_no_temperature_and_refuses_prefill(loopback: LoopbackServer) -> None:
    backend = backend_for("anthropic", loopback, model="claude-haiku-5-5")
    run(backend.complete(request()))
    assert "temperature" not in loopback.requests[0].body
    with pytest.raises(LLMCallError) as info:
        run(backend.complete(request(assistant_prefill="Explanation:")))
    assert info.value.attempts == 0 and "prefill" in info.value.message
    assert loopback.count == 1  # never sent


def test_openai_reasoning_model_without_logprobs_gets_neither_temperature_nor_logprobs(
    loopback: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="autointerp.llm"):
        backend = backend_for("openai", loopback, model="gpt-5-mini")  # a table model behind a proxy
    assert backend.supports_logprobs is False
    assert "sampled mode" in caplog.text  # the simulator's fallback is said out loud
    run(backend.complete(request(logprobs=True)))
    body = loopback.requests[0].body
    assert "temperature" not in body and "logprobs" not in body
    assert body["reasoning_effort"] == "minimal"
    assert body["max_tokens"] == 512  # not api.openai.com: the classic field name


def test_openai_model_with_logprobs_at_a_reasoning_setting_gets_that_setting(loopback: LoopbackServer) -> None:
    backend = backend_for("openai", loopback, model="gpt-5.4-mini")
    assert backend.supports_logprobs is True
    run(backend.complete(request(logprobs=True, top_logprobs=15)))
    body = loopback.requests[0].body
    assert body["reasoning_effort"] == "none" and body["logprobs"] is True and body["top_logprobs"] == 15
    assert body["temperature"] == 0.0


def test_unknown_official_reasoning_model_falls_back_to_the_name_rule() -> None:
    backend = make_backend("openai:o9-preview", api_key=OPENAI_KEY)
    assert not backend.info.known and backend.supports_logprobs is False
    assert "temperature" not in backend.build_params(request())


def test_self_hosted_model_takes_logprobs_and_caches_any_prefix(loopback: LoopbackServer) -> None:
    backend = backend_for("openai", loopback, model="Qwen/Qwen3-8B")
    assert backend.supports_logprobs and backend.supports_prompt_logprobs and backend.min_cache_tokens == 0
    params = backend.build_params(request(logprobs=True, top_logprobs=5, prompt_logprobs=5))
    assert params["top_logprobs"] == 5 and params["temperature"] == 0.0
    assert params["extra_body"] == {
        "chat_template_kwargs": {"enable_thinking": False},  # Qwen3-style templates answer without thinking
        "prompt_logprobs": 5,
        "return_token_ids": True,
    }


def test_official_openai_host_gets_max_completion_tokens_and_no_prefill() -> None:
    backend = make_backend("openai:gpt-4o-mini", api_key=OPENAI_KEY)
    assert backend.official and not backend.supports_prefill
    params = backend.build_params(request(max_tokens=33))
    assert params["max_completion_tokens"] == 33 and "max_tokens" not in params
    assert params["temperature"] == 0.0


def test_request_must_end_with_a_user_turn() -> None:
    with pytest.raises(ValueError, match="last message"):
        LLMRequest(system="s", messages=[Message(role="assistant", content="x")])


# --------------------------------------------------------------------------------------- secrets
@pytest.mark.parametrize("kind", KINDS)
def test_api_key_is_sent_but_never_leaks_into_errors(kind: str, loopback: LoopbackServer) -> None:
    key = ANTHROPIC_KEY if kind == "anthropic" else OPENAI_KEY
    loopback.reset(["401:echo-auth"])
    backend = backend_for(kind, loopback)
    with pytest.raises(LLMCallError) as info:
        run(backend.complete(request()))
    headers = loopback.requests[0].headers
    assert key in (headers.get("x-api-key", "") + headers.get("authorization", ""))  # it was sent...
    error = info.value
    for text in (str(error), repr(error), error.message, *map(str, error.args)):
        assert key not in text  # ...and the server's echo of it was redacted
    assert "[redacted]" in error.message
    assert error.__cause__ is None and error.__suppress_context__
    assert key not in repr(backend) and key not in repr(backend.options)


def test_redact_masks_key_shapes() -> None:
    text = "bad key sk-ant-api03-abcdefgh and Bearer abc.def-123456 and x-api-key: zzzzzzzz, secret hunter2"
    out = redact(text, ["hunter2"])
    assert "sk-ant" not in out and "abc.def" not in out and "zzzzzzzz" not in out and "hunter2" not in out


def test_openai_without_key_or_url_is_an_input_error() -> None:
    with pytest.raises(InputError, match="OPENAI_API_KEY"):
        make_backend("openai:gpt-4o-mini")


def test_anthropic_without_credentials_is_an_input_error() -> None:
    with pytest.raises(InputError, match="ANTHROPIC_API_KEY"):
        make_backend("anthropic:claude-haiku-5-5")


def test_local_server_needs_no_key(loopback: LoopbackServer) -> None:
    backend = make_backend(f"openai:my-model@{loopback.openai_url}", retry_initial_wait_s=0.01)
    run(backend.complete(request()))
    assert loopback.requests[0].headers["authorization"] == "Bearer not-needed"
    # no price known: the cost is unknown, never $0
    assert not backend.price_known and backend.cost(Usage(input_tokens=10**6)) is None
    assert backend.total_cost_usd is None and backend.n_calls == 1


# --------------------------------------------------------------------------------------- specs
@pytest.mark.parametrize(
    ("spec", "kind", "model", "url"),
    [
        ("anthropic:claude-haiku-5-5", "anthropic", "claude-haiku-5-5", None),
        ("openai:gpt-4o-mini", "openai", "gpt-4o-mini", None),
        ("openai:gpt-4o-mini@http://127.0.0.1:8000/v1", "openai", "gpt-4o-mini", "http://127.0.0.1:8000/v1"),
        (
            "openai:llama3.1:8b@http://localhost:11434/v1",
            "openai",
            "llama3.1:8b",
            "http://localhost:11434/v1",
        ),
        (
            "anthropic:claude-x@20250101@https://proxy.example/",
            "anthropic",
            "claude-x@20250101",
            "https://proxy.example/",
        ),
        ("vllm:Qwen/Qwen3-8B@http://127.0.0.1:8000/v1", "vllm", "Qwen/Qwen3-8B", "http://127.0.0.1:8000/v1"),
        ("local", "local", None, None),
        ("local:SmolLM2-135M-Instruct", "local", "SmolLM2-135M-Instruct", None),
        ("baseline", "baseline", None, None),
        ("  OpenAI:gpt-4o  ", "openai", "gpt-4o", None),
    ],
)
def test_parse_good_specs(spec: str, kind: str, model: str | None, url: str | None) -> None:
    parsed = parse_backend_spec(spec)
    assert (parsed.kind, parsed.model, parsed.base_url) == (kind, model, url)
    assert parse_backend_spec(str(parsed)) == parsed


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "gpt-4o",
        "anthropic",
        "anthropic:",
        "openai:@http://x:1/v1",
        "mistral:large",
        "openai:gpt-4o@ftp://x/",
        "openai:gpt-4o@http://",
        "local@http://127.0.0.1:1/v1",
        "baseline:foo",
        "openai:gpt 4o",
        "vllm:Qwen/Qwen3-8B",  # a vLLM server is always somewhere: its URL is required
        "vllm@http://127.0.0.1:8000/v1",
    ],
)
def test_parse_bad_specs(spec: str) -> None:
    with pytest.raises(InputError) as info:
        parse_backend_spec(spec)
    assert repr(spec) in str(info.value) and "openai:<model>@http://host:port/v1" in str(info.value)


def test_every_spec_kind_is_registered() -> None:
    from autointerp.llm.spec import BACKENDS

    assert set(BACKENDS) == {"anthropic", "openai", "vllm", "local", "baseline"}
    assert make_backend("baseline").name == "baseline"


def test_bad_options_are_input_errors(loopback: LoopbackServer) -> None:
    with pytest.raises(InputError, match="max_attempts"):
        backend_for("openai", loopback, max_attempts=0)


def test_default_backend_spec_prefers_anthropic_then_openai_then_local() -> None:
    spec, reason = default_backend_spec({"ANTHROPIC_API_KEY": "k1", "OPENAI_API_KEY": "k2"})
    assert spec.startswith("anthropic:") and "ANTHROPIC_API_KEY" in reason and "k1" not in reason
    spec, reason = default_backend_spec({"OPENAI_API_KEY": "k2"})
    assert spec.startswith("openai:") and "OPENAI_API_KEY" in reason and "k2" not in reason
    spec, reason = default_backend_spec({})
    assert spec == "local" and "offline" in reason
    for spec in (
        default_backend_spec({"ANTHROPIC_API_KEY": "k"})[0],
        default_backend_spec({"OPENAI_API_KEY": "k"})[0],
    ):
        parse_backend_spec(spec)


# --------------------------------------------------------------------------------------- cost
def price_of(model: str, overrides=None) -> Price:
    price = find_price(model, load_overrides(overrides))
    assert price is not None, f"no price for {model!r}"
    return price


def test_cost_known_models_and_snapshots() -> None:
    usage = Usage(
        input_tokens=1_000_000,
        cached_input_tokens=1_000_000,
        cache_write_tokens=1_000_000,
        output_tokens=1_000_000,
    )
    haiku = price_of("claude-haiku-4-5").cost(usage)
    assert haiku == pytest.approx(1.00 + 0.10 + 1.25 + 5.00)
    assert price_of("claude-haiku-4-5-20251001").cost(usage) == haiku
    mini = price_of("gpt-4o-mini-2024-07-18").cost(usage)
    assert mini == pytest.approx(0.15 + 0.075 + 0.15 + 0.60)
    assert price_of("gpt-4o").cost(usage) != mini  # longest name wins, no bleed between models


def test_unknown_model_has_no_price() -> None:
    assert find_price("my-finetune") is None
    assert find_price("gpt-4o-audio-preview") is None  # not gpt-4o's price


def test_price_overrides_dict_json_toml(tmp_path) -> None:
    usage = Usage(input_tokens=2_000_000, output_tokens=1_000_000)
    override = {"claude-haiku-4-5": {"input": 0.5, "output": 1.0}, "my-model": {"input": 1, "output": 2}}
    assert price_of("claude-haiku-4-5", override).cost(usage) == pytest.approx(2.0)
    assert price_of("my-model", override).cost(usage) == pytest.approx(4.0)
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(override))
    assert price_of("my-model", path).cost(usage) == pytest.approx(4.0)
    toml = tmp_path / "prices.toml"
    toml.write_text('["my-model"]\ninput = 1.0\noutput = 2.0\ncached_input = 0.1\n')
    table = load_overrides(toml)
    assert table["my-model"].cached_input == 0.1
    assert price_of("my-model", toml).cost(Usage(cached_input_tokens=10**6)) == pytest.approx(0.1)


def test_backend_cost_uses_overrides(loopback: LoopbackServer) -> None:
    backend = backend_for("openai", loopback, model="my-model", prices={"my-model": {"input": 1e6, "output": 0}})
    response = run(backend.complete(request()))
    assert backend.price_known
    assert backend.cost(response.usage) == pytest.approx(
        response.usage.input_tokens + response.usage.cached_input_tokens
    )


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"m": {"input": -1, "output": 1}}, "'m'"),
        ({"m": {"output": 1}}, "input"),
        ("/no/such/prices.json", "cannot be read"),
    ],
)
def test_bad_price_overrides_are_input_errors(overrides, match: str) -> None:
    with pytest.raises(InputError, match=match):
        load_overrides(overrides)


def test_self_hosted_request_shape_reaches_the_server(loopback: LoopbackServer) -> None:
    """What vLLM and SGLang receive (docs/self_hosted.md): their extension fields at the top level of the
    JSON body, the classic max_tokens, no OpenAI-only reasoning field."""
    backend = backend_for("openai", loopback, model="Qwen/Qwen3-8B")
    run(backend.complete(request(assistant_prefill="Explanation:", logprobs=True, top_logprobs=3)))
    body = loopback.requests[0].body
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["messages"][-1] == {"role": "assistant", "content": "Explanation:"}
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert body["max_tokens"] == 512 and body["logprobs"] is True and body["top_logprobs"] == 3
    assert "reasoning_effort" not in body and "max_completion_tokens" not in body and "extra_body" not in body
