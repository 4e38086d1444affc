"""Self-hosted servers (docs/self_hosted.md): vLLM's all-at-once simulation from prompt logprobs, through the
real openai SDK against the loopback server, which answers `prompt_logprobs` the way vLLM does (a server made
with prompt_logprobs=False ignores the field, as SGLang does)."""

from __future__ import annotations

import asyncio
import math

import pytest
from helpers_windows import make_window
from loopback_llm import LoopbackServer, start_loopback

from autointerp.config import RunConfig
from autointerp.errors import InputError
from autointerp.llm import make_backend
from autointerp.llm.base import TokenLogprob
from autointerp.llm.openai_backend import SLOT_FILLER, SLOT_TOP_LOGPROBS, VLLMBackend, slot_distributions
from autointerp.llm.retry import PermanentError
from autointerp.simulate import SimulationFailure, SlotScorer, simulate_feature

CFG = RunConfig(sae="demo")


@pytest.fixture(autouse=True)
def _no_keys(no_llm_keys) -> None:
    """Tests see no real keys or base URLs."""


def line_before(tokens: list[str], i: int) -> str:
    """The listing line a slot belongs to: the text from the last newline up to the slot's tab."""
    text = ""
    for token in reversed(tokens[: i - 1]):
        if "\n" in token:
            return text
        text = token + text
    return text


def dog_model(tokens: list[str], i: int) -> dict[str, float] | None:
    """A simulator that knows the explanation 'dogs': at every value slot (a tab, then the filler), ' dog'
    lines get mostly 9 and everything else mostly 0; elsewhere the server's default alternatives."""
    if not (tokens[i].startswith(SLOT_FILLER) and tokens[i - 1].endswith("\t")):
        return None
    if line_before(tokens, i) == " dog":
        return {"9": math.log(0.8), "8": math.log(0.15), "?": math.log(0.05)}
    return {"0": math.log(0.9), "1": math.log(0.08), "?": math.log(0.02)}


def windows():
    return [
        make_window([" the", " dog", " barked"], [0.0, 4.0, 0.0], feature=3),
        make_window([" a", " cat", "\n", " dog"], [0.0, 0.0, 0.0, 3.0], feature=3),
    ]


def vllm(server: LoopbackServer) -> VLLMBackend:
    backend = make_backend(f"vllm:Qwen/Qwen3-8B@{server.openai_url}", retry_initial_wait_s=0.01, timeout_s=5.0)
    assert isinstance(backend, VLLMBackend)
    return backend


def test_vllm_scores_every_slot_from_one_teacher_forced_request() -> None:
    server = start_loopback(responder=lambda kind, body: {"text": "0", "prompt_alternatives": dog_model})
    try:
        backend = vllm(server)
        assert isinstance(backend, SlotScorer) and backend.supports_logprobs
        simulation, calls = asyncio.run(simulate_feature(backend, "dogs", windows(), 3, "llm", CFG))
        bodies = [r.body for r in server.requests]
    finally:
        server.stop()
    assert len(bodies) == 1 and len(calls) == 1 and calls[0].ok  # one request for every token of every window
    body = bodies[0]
    assert body["prompt_logprobs"] == SLOT_TOP_LOGPROBS and body["max_tokens"] == 1
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert "logprobs" not in body  # nothing generated worth reading
    forced = body["messages"][-1]
    assert forced["role"] == "assistant" and forced["content"].count(f"\t{SLOT_FILLER}") == 7
    expected_dog, expected_other = (9 * 0.8 + 8 * 0.15) / 0.95, 0.08 / 0.98
    assert simulation.mode == "logprob"
    assert simulation.predictions == [
        pytest.approx([expected_other, expected_dog, expected_other]),
        pytest.approx([expected_other, expected_other, expected_other, expected_dog]),
    ]


def test_vllm_backend_against_a_server_without_prompt_logprobs_says_so() -> None:
    server = start_loopback(responder=lambda kind, body: "0", prompt_logprobs=False)
    try:
        with pytest.raises(SimulationFailure, match="sent no prompt_logprobs.*openai:<model>@<url>") as info:
            asyncio.run(simulate_feature(vllm(server), "dogs", windows(), 3, "llm", CFG))
    finally:
        server.stop()
    assert len(info.value.calls) == 1 and not info.value.calls[0].ok


def test_slots_are_found_only_after_a_raw_tab() -> None:
    def entry(token: str, top: dict[str, float] | None = None) -> TokenLogprob:
        return TokenLogprob(token=token, logprob=-0.1, top=top or {token: -0.1})

    prompt = [None, entry("x"), entry("\t"), entry("?", {" 3": -0.2, "?": -2.0}), entry("\n"), entry("?")]
    (slot,) = slot_distributions(prompt, 1)  # the last "?" follows a newline, not a tab: not a slot
    assert slot.top == {"3": -0.2} and slot.token == "3"
    with pytest.raises(PermanentError, match="found 1 value slots in the prompt logprobs; expected 2"):
        slot_distributions(prompt, 2)
    with pytest.raises(PermanentError, match="no level 0..10"):
        slot_distributions([None, entry("\t"), entry("?", {"?": -0.1, "a": -3.0})], 1)


def test_vllm_needs_a_server_of_its_own() -> None:
    with pytest.raises(InputError, match="expected the URL of a vLLM server"):
        make_backend("vllm:Qwen/Qwen3-8B@https://api.openai.com/v1", api_key="sk-test-not-a-key-000")
