"""The local backend for real: SmolLM2-135M-Instruct through llama.cpp (explanations) and through
transformers (teacher-forced value slots), offline. Slow-marked; the first run also dequantises the GGUF
once into the autointerp cache."""

from __future__ import annotations

import asyncio
import math

import pytest
import torch
from helpers_windows import make_sample, make_window

from autointerp.config import RunConfig
from autointerp.errors import InputError
from autointerp.explain import explain_feature
from autointerp.llm import LLMRequest, Message, make_backend
from autointerp.llm.local_backend import LocalBackend, chat_messages, slot_scorer
from autointerp.simulate import (
    SimulationFailure,
    build_simulation_request,
    listing_slot_prefixes,
    simulate_feature,
)

pytestmark = pytest.mark.slow

CFG = RunConfig(sae="demo", llm={"explainer_max_tokens": 24})


def features() -> list[tuple[list, list]]:
    """Two hand-made features: (explanation windows, scoring windows)."""
    dog = (
        [
            make_window(["The", " dog", " barked", " at", " the", " cat", "."], [0, 5.0, 0, 0, 0, 1.0, 0]),
            make_window(["A", " dog", " is", " a", " loyal", " friend", "\n"], [0, 4.0, 0, 0, 0, 0, 0], context_id=1),
        ],
        [
            make_window(["My", " dog", " sleeps", "."], [0, 4.5, 0, 0], split="score", context_id=2),
            make_window(["It", " rained", " today", "."], [0, 0, 0, 0], split="score", context_id=3),
        ],
    )
    bracket = (
        [
            make_window(["print", "(", "x", ")", "\n"], [0, 0, 0, 6.0, 0], feature=9),
            make_window(["f", "(", "a", ",", " b", ")"], [0, 0, 0, 0, 0, 5.0], feature=9, context_id=1),
        ],
        [
            make_window(["run", "(", "y", ")"], [0, 0, 0, 5.5], split="score", feature=9, context_id=2),
            make_window(["no", " code", " here"], [0, 0, 0], split="score", feature=9, context_id=3),
            make_window(["g", "(", ")", ";"], [0, 0, 4.0, 0], split="score", feature=9, context_id=4),
        ],
    )
    return [dog, bracket]


@pytest.fixture(scope="module")
def backend() -> LocalBackend:
    made = make_backend("local")
    assert isinstance(made, LocalBackend) and made.max_in_flight == 1
    return made


def test_explain_and_simulate_two_features_end_to_end(backend: LocalBackend) -> None:
    async def run_all():
        out = []
        for feature, (explain_windows, score_windows) in zip((7, 9), features(), strict=True):
            explanation, explain_calls = await explain_feature(
                backend, make_sample(explain_windows + score_windows, feature), CFG
            )
            simulation, sim_calls = await simulate_feature(
                backend, explanation.text, score_windows, feature, "llm", CFG
            )
            out.append((explanation, explain_calls, simulation, sim_calls, score_windows))
        return out

    for explanation, explain_calls, simulation, sim_calls, windows in asyncio.run(run_all()):
        assert explanation.text and len(explanation.text) <= 200 and explanation.backend == "local"
        assert explain_calls[-1].ok and explanation.usage.input_tokens + explanation.usage.cached_input_tokens > 500
        assert simulation.mode == "logprob" and len(sim_calls) == 1
        assert [len(p) for p in simulation.predictions] == [len(w.tokens) for w in windows]
        assert all(0.0 <= p <= 10.0 and math.isfinite(p) for row in simulation.predictions for p in row)
        assert len({p for row in simulation.predictions for p in row}) > 1  # a distribution per slot, not a constant


def test_slot_distributions_do_not_depend_on_the_filler(backend: LocalBackend) -> None:
    """The filler in each value slot is masked from every later position: putting another digit there
    changes nothing but the 1-vs-10 split read at the filler itself."""
    _, score_windows = features()[0]
    request = build_simulation_request("the word dog", score_windows, "logprob")
    prefixes = listing_slot_prefixes([w.tokens for w in score_windows])
    scorer = slot_scorer(backend.gguf_path)
    messages = chat_messages(request)
    with_one, n_tokens = scorer.score(messages, prefixes)
    saved = scorer.filler_id
    scorer.filler_id = scorer.digit_ids[7]
    try:
        with_seven, _ = scorer.score(messages, prefixes)
    finally:
        scorer.filler_id = saved
    assert n_tokens > 100
    for a, b in zip(with_one, with_seven, strict=True):
        for level in ("0", "2", "5", "9"):
            assert a[level] == pytest.approx(b[level], abs=1e-4)

    # ...and the first slot reads exactly what a plain causal forward pass of the prompt reads
    prompt = scorer.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = scorer.tokenizer.encode(prompt, add_special_tokens=False) + scorer.tokenizer.encode(
        prefixes[0], add_special_tokens=False
    )
    with torch.inference_mode():
        logits = scorer.model(input_ids=torch.tensor([ids])).logits[0, -1]
    plain = torch.log_softmax(logits.float(), dim=-1)[scorer.digit_ids]
    assert with_one[0]["0"] == pytest.approx(float(plain[0]), abs=1e-3)
    assert with_one[0]["7"] == pytest.approx(float(plain[7]), abs=1e-3)


def test_generation_honours_prefill_and_logprobs(backend: LocalBackend) -> None:
    request = LLMRequest(
        system="Answer briefly.",
        messages=(Message(role="user", content="Name a colour."),),
        assistant_prefill="Colour:",
        max_tokens=4,
        logprobs=True,
        top_logprobs=3,
    )
    response = asyncio.run(backend.complete(request))
    assert not response.text.startswith("Colour:")
    assert response.logprobs and len(response.logprobs) == response.usage.output_tokens <= 4
    assert all(len(entry.top) >= 1 for entry in response.logprobs)
    assert response.finish_reason in ("stop", "length")


def test_a_local_spec_must_name_the_builtin_model_or_a_gguf_file(tmp_path) -> None:
    with pytest.raises(InputError, match="no such .gguf file"):
        make_backend(f"local:{tmp_path / 'missing.gguf'}")
    with pytest.raises(InputError, match="neither the built-in name"):
        make_backend("local:llama-3-8b")


def test_request_options_reach_llama_cpp(backend: LocalBackend) -> None:
    request = LLMRequest(
        system="s",
        messages=(Message(role="user", content="u"),),
        stop=("\n",),
        max_tokens=9,
    )
    body = backend.build_body(request)
    assert body["messages"] == [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert body["stop"] == ["\n"] and body["max_tokens"] == 9 and body["seed"] == 0
    hot = request.model_copy(update={"temperature": 1.0})
    assert backend.build_body(hot)["seed"] != backend.build_body(hot)["seed"]  # best-of candidates differ


def test_too_long_a_simulation_is_a_recorded_failure(backend: LocalBackend) -> None:
    windows = [make_window([" word"] * 3000, [0.0] * 3000, split="score")]
    with pytest.raises(SimulationFailure, match="at most") as info:
        asyncio.run(simulate_feature(backend, "words", windows, 7, "llm", CFG))
    assert len(info.value.calls) == 1 and not info.value.calls[0].ok
