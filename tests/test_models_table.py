"""The model table (autointerp/llm/models.toml) as data, prices from it, and the rules it drives: caching
only above each model's minimum (through the real SDKs against the loopback server, which enforces the
table's minimums), thinking turned off or budgeted, prompt logprobs from an OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import datetime
import logging
import tomllib
from importlib import resources

import pytest
from helpers_windows import make_window
from loopback_llm import LoopbackServer, fake_tokens, start_loopback

from autointerp.errors import InputError
from autointerp.explain import build_explain_request, explain_shared_prefix
from autointerp.llm import LLMRequest, Message, find_price, load_table, make_backend, model_info
from autointerp.llm.caching import approx_tokens, shared_prefix_tokens
from autointerp.llm.models import parse_table, staleness
from autointerp.llm.pricing import Price
from autointerp.llm.spec import DEFAULT_ANTHROPIC_MODEL, DEFAULT_OPENAI_MODEL
from autointerp.records import Usage
from autointerp.scorers.detection_prompt import detect_shared_prefix
from autointerp.simulate import simulate_shared_prefix

KEY = "sk-loopback-not-a-real-key-0123"


@pytest.fixture(autouse=True)
def _no_keys(no_llm_keys) -> None:
    """Tests see no real keys or base URLs."""


def table_minimums() -> dict[str, int]:
    return {name: info.min_cache_tokens for name, info in load_table().models.items()}


def raw_table() -> dict:
    return tomllib.loads(resources.files("autointerp.llm").joinpath("models.toml").read_text())


# ------------------------------------------------------------------------------------------ the table
def test_table_is_dated_and_every_model_complete() -> None:
    table = load_table()
    assert table.checked <= datetime.date.today()
    assert staleness(table, table.checked) is None
    for name, info in table.models.items():
        assert info.price is not None, name
        assert info.price.input > 0 and info.price.output > info.price.input, name
        assert 0 < (info.price.batch_discount or 0) < 1, name
        assert info.min_cache_tokens >= 512, name
        if info.thinks_by_default and info.thinking_off is None:
            assert info.effort and info.thinking_budget_tokens > 0, name


def test_default_models_are_in_the_table() -> None:
    assert model_info(DEFAULT_ANTHROPIC_MODEL).provider == "anthropic"
    assert model_info(DEFAULT_OPENAI_MODEL).provider == "openai"


def test_staleness_is_reported() -> None:
    table = load_table()
    later = table.checked + datetime.timedelta(days=table.stale_after_days + 1)
    assert "days ago" in staleness(table, later)
    assert "future" in staleness(table, table.checked - datetime.timedelta(days=1))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda raw: raw.pop("checked"), "checked"),
        (lambda raw: raw["models"]["claude-haiku-5-5"].update(provider="mistral"), "provider 'mistral'"),
        (lambda raw: raw["models"]["gpt-4o-mini"].update(input=-1), "gpt-4o-mini"),
        (lambda raw: raw["models"]["gpt-4o-mini"].update(logprob=True), "logprob"),  # a typo is an error
        (lambda raw: raw["models"]["claude-opus-5-5"].pop("effort"), "cannot turn it off"),
    ],
)
def test_bad_table_entries_are_named(edit, match: str) -> None:
    raw = raw_table()
    edit(raw)
    with pytest.raises(InputError, match=match):
        parse_table(raw)


def test_snapshots_and_aliases_match_their_family_only() -> None:
    assert model_info("claude-haiku-4-5-20251001").name == "claude-haiku-4-5"
    assert model_info("claude-opus-4-0").name == "claude-opus-4"
    assert model_info("claude-sonnet-5-5").name == "claude-sonnet-5-5"  # not claude-sonnet-5
    assert model_info("gpt-4o-audio-preview") is None
    unknown = model_info("claude-next", "anthropic")
    assert unknown is not None and not unknown.known and unknown.price is None


# ------------------------------------------------------------------------------------------ prices
USAGE = Usage(input_tokens=1_000_000, cached_input_tokens=1_000_000, cache_write_tokens=1_000_000, output_tokens=10**6)


def test_batch_discount_halves_every_token_class() -> None:
    price = find_price("claude-haiku-4-5")
    assert price.cost(USAGE) == pytest.approx(1.00 + 0.10 + 1.25 + 5.00)
    assert price.cost(USAGE, batch=True) == pytest.approx((1.00 + 0.10 + 1.25 + 5.00) / 2)


def test_long_prompts_pay_the_long_rates() -> None:
    price = find_price("claude-haiku-5-5")
    short = Usage(input_tokens=90_000, output_tokens=1000)
    long = Usage(input_tokens=60_000, cached_input_tokens=50_000, output_tokens=1000)  # 110k-token prompt
    assert price.cost(short) == pytest.approx((90_000 * 0.10 + 1000 * 0.50) / 1e6)
    assert price.cost(long) == pytest.approx((60_000 * 0.50 + 50_000 * 0.05 + 1000 * 2.50) / 1e6)


def test_override_keeps_the_tables_batch_discount_unless_given() -> None:
    assert find_price("gpt-4o-mini", {"gpt-4o-mini": Price(input=1, output=2)}).batch_discount == 0.5
    own = find_price("gpt-4o-mini", {"gpt-4o-mini": Price(input=1, output=2, batch_discount=0.25)})
    assert own.cost(Usage(input_tokens=10**6), batch=True) == pytest.approx(0.75)
    assert find_price("my-model", {"my-model": Price(input=1, output=2)}).batch_discount is None


def test_unknown_price_is_none_and_warned(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="autointerp.llm"):
        backend = make_backend("anthropic:claude-made-up@http://127.0.0.1:9", api_key=KEY)
    assert backend.cost(Usage(input_tokens=10)) is None and not backend.price_known
    assert "claude-made-up" in caplog.text and "unknown" in caplog.text
    assert make_backend("baseline").cost(Usage(input_tokens=10)) == 0.0  # runs here: costs nothing


def test_model_near_its_shutdown_is_warned(caplog: pytest.LogCaptureFixture) -> None:
    info = model_info("gpt-4o-mini")
    days = (info.shutdown - datetime.date.today()).days
    with caplog.at_level(logging.WARNING, logger="autointerp.llm"):
        make_backend("openai:gpt-4o-mini", api_key=KEY)
    said = str(info.shutdown) in caplog.text
    assert said if days <= 60 else not said


# ------------------------------------------------------------------------------------------ caching
def long_request(feature: int, prefix_chars: int) -> LLMRequest:
    demo = ("dog\t10\ncat\t0\nthe\t0\n" * (prefix_chars // 20 + 1))[:prefix_chars]
    return LLMRequest(
        system="You explain features of a sparse autoencoder.",
        prefix=(
            Message(role="user", content=f"Example feature:\n{demo}"),
            Message(role="assistant", content="Explanation: the word dog"),
        ),
        messages=(Message(role="user", content=f"Feature {feature}:\nbark\t7"),),
        max_tokens=20,
    )


@pytest.fixture
def strict_server():
    server = start_loopback(responder=lambda kind, body: "Explanation: dogs", cache_minimums=table_minimums())
    yield server
    server.stop()


def backend(kind: str, model: str, server: LoopbackServer):
    url = server.url if kind == "anthropic" else server.openai_url
    return make_backend(f"{kind}:{model}@{url}", api_key=KEY, retry_initial_wait_s=0.01, timeout_s=5.0)


@pytest.mark.parametrize(("kind", "model"), [("anthropic", "claude-haiku-5-5"), ("openai", "gpt-4o-mini")])
def test_cached_tokens_count_on_the_second_request_only_above_the_minimum(
    kind: str, model: str, strict_server: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    minimum = model_info(model).min_cache_tokens
    llm = backend(kind, model, strict_server)

    async def two(prefix_chars: int):
        return [await llm.complete(long_request(f, prefix_chars)) for f in (1, 2)]

    first, second = asyncio.run(two(prefix_chars=6 * minimum))  # ~1.5x the minimum at 4 characters a token
    assert first.usage.cached_input_tokens == 0
    assert second.usage.cached_input_tokens >= minimum
    if kind == "anthropic":  # written on the first request, read on the second
        assert first.usage.cache_write_tokens == second.usage.cached_input_tokens
    else:  # OpenAI counts in 128-token steps past the minimum
        assert (second.usage.cached_input_tokens - minimum) % 128 == 0
    assert llm.cost(second.usage) < llm.cost(first.usage)

    with caplog.at_level(logging.WARNING, logger="autointerp.llm"):
        short = asyncio.run(two(prefix_chars=minimum))  # ~a quarter of the minimum
    assert [r.usage.cached_input_tokens + r.usage.cache_write_tokens for r in short] == [0, 0]
    assert "BELOW" in caplog.text and f"{minimum:,}-token minimum" in caplog.text
    assert caplog.text.count("BELOW") == 1  # once per prefix, not once per request


def stage_prefixes(simulation_mode: str) -> dict[str, LLMRequest]:
    """Each LLM stage's real shared prefix (system prompt + few-shot turns), as a request."""
    feature_turn = (Message(role="user", content="x"),)
    stages = {
        "explain": explain_shared_prefix(),
        "simulate": simulate_shared_prefix(simulation_mode),
        "detect": detect_shared_prefix(),
    }
    return {name: LLMRequest(system=s, prefix=p, messages=feature_turn) for name, (s, p) in stages.items()}


# The default models, and gpt-4o-mini's successor (no logprobs: the sampled simulation) at OpenAI's 1,024.
@pytest.mark.parametrize("model", [DEFAULT_ANTHROPIC_MODEL, DEFAULT_OPENAI_MODEL, "gpt-6-luna"])
def test_real_prompt_prefixes_clear_the_models_minimum(model: str) -> None:
    info = model_info(model)
    assert info is not None and info.min_cache_tokens >= 512
    mode = "logprob" if info.logprobs else "sampled"
    sizes = {stage: shared_prefix_tokens(r) for stage, r in stage_prefixes(mode).items()}
    # by the same conservative estimate the run warns with (4 characters a token; real tokenizers count more)
    assert all(size >= info.min_cache_tokens for size in sizes.values()), (model, info.min_cache_tokens, sizes)
    # and by the loopback server's counter (no per-message overhead), which enforces the minimum in tests
    served = {
        stage: fake_tokens(r.system) + sum(fake_tokens(f"{m.role}:{m.content}") for m in r.prefix)
        for stage, r in stage_prefixes(mode).items()
    }
    assert all(size >= info.min_cache_tokens for size in served.values()), (model, served)


@pytest.mark.parametrize(("kind", "model"), [("anthropic", DEFAULT_ANTHROPIC_MODEL), ("openai", DEFAULT_OPENAI_MODEL)])
def test_real_explain_prompts_are_cached_from_the_second_feature(
    kind: str, model: str, strict_server: LoopbackServer
) -> None:
    llm = backend(kind, model, strict_server)
    notes: list[str] = []
    llm.report_to(notes.append)
    requests = [
        build_explain_request([make_window(["a", f" word{f}", "."], [0.0, 2.0, 0.0], feature=f)], 2.0, "floor")
        for f in (1, 2, 3)
    ]

    async def in_order():
        return [await llm.complete(r) for r in requests]

    first, second, third = asyncio.run(in_order())
    minimum = model_info(model).min_cache_tokens
    assert first.usage.cached_input_tokens == 0
    assert second.usage.cached_input_tokens >= minimum and third.usage.cached_input_tokens >= minimum
    assert second.usage.cached_input_tokens >= shared_prefix_tokens(requests[1]) - 128 - 40  # OpenAI's steps
    assert llm.cost(second.usage) < llm.cost(first.usage)  # cache reads: 0.1x input (0.5x on gpt-4o-mini)
    assert notes == []  # nothing to warn about


def test_prefix_below_the_minimum_is_a_note_through_the_reporter(strict_server: LoopbackServer) -> None:
    llm = backend("anthropic", "claude-haiku-4-5", strict_server)  # 4,096-token minimum
    notes: list[str] = []
    llm.report_to(notes.append)
    request = build_explain_request([make_window(["a", " b"], [1.0, 0.0])], 1.0, "floor")
    responses = asyncio.run(llm.complete_all([request, request]))
    assert [r.usage.cached_input_tokens + r.usage.cache_write_tokens for r in responses] == [0, 0]
    assert len(notes) == 1 and "BELOW the 4,096-token minimum that claude-haiku-4-5 caches" in notes[0]


def test_openai_model_without_logprobs_says_it_falls_back_to_sampled(strict_server: LoopbackServer) -> None:
    llm = backend("openai", "gpt-6-luna", strict_server)
    notes: list[str] = []
    llm.report_to(notes.append)
    assert not llm.supports_logprobs and len(notes) == 1 and "sampled mode" in notes[0]
    assert llm.request_body(stage_prefixes("sampled")["simulate"])["reasoning_effort"] == "none"


def test_prefix_estimate_is_conservative_against_the_server_counter() -> None:
    req = long_request(1, 4000)
    counted = sum(fake_tokens(t) for t in (req.system, *(m.content for m in req.prefix)))
    assert approx_tokens("abcd" * 100) == 100
    assert counted <= shared_prefix_tokens(req) <= counted + 20  # per-message overhead only


# ------------------------------------------------------------------------------------------ thinking
@pytest.mark.parametrize(
    ("model", "thinking", "effort", "extra_tokens"),
    [
        ("claude-haiku-5-5", {"type": "disabled"}, None, 0),
        ("claude-sonnet-5-5", {"type": "between_tools"}, None, 0),
        ("claude-opus-5-5", None, {"effort": "low"}, 4096),  # cannot stop thinking: budgeted instead
        ("claude-haiku-4-5", None, None, 0),  # thinks only when asked
    ],
)
def test_thinking_is_turned_off_or_budgeted(model, thinking, effort, extra_tokens, strict_server) -> None:
    asyncio.run(backend("anthropic", model, strict_server).complete(long_request(1, 100)))
    body = strict_server.requests[0].body
    assert body.get("thinking") == thinking
    assert body.get("output_config") == effort
    assert body["max_tokens"] == 20 + extra_tokens
    assert ("temperature" in body) == model_info(model).temperature


# ------------------------------------------------------------------------------------------ prompt logprobs
def test_prompt_logprobs_from_an_openai_compatible_server(strict_server: LoopbackServer) -> None:
    llm = backend("openai", "Qwen/Qwen3-8B", strict_server)
    req = long_request(1, 40).model_copy(update={"prompt_logprobs": 3, "max_tokens": 1})
    response = asyncio.run(llm.complete(req))
    body = strict_server.requests[0].body
    assert body["prompt_logprobs"] == 3 and body["return_token_ids"] is True
    assert response.prompt_logprobs is not None and response.prompt_logprobs[0] is None
    second = response.prompt_logprobs[1]
    assert second.token == ":" and len(second.top) == 3  # 'system' ':' ...: the prompt's own token, rank 1
    assert max(second.top.values()) == second.logprob
