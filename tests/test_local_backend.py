"""The local backend for real: SmolLM2-135M-Instruct through llama.cpp (explanations) and through
transformers (teacher-forced value slots, per-token judging), offline. Slow-marked; the first run also
dequantises the GGUF once into the autointerp cache."""

from __future__ import annotations

import asyncio
import math

import pytest
import torch
from helpers_windows import make_sample, make_window

from autointerp.baseline import baseline_explanation
from autointerp.config import RunConfig, SamplerConfig
from autointerp.corpus import CorpusSpec, special_token_ids, tokenise_corpus
from autointerp.errors import InputError
from autointerp.explain import explain_feature
from autointerp.known_truth import token_feature_sae, truth_violations, word_explanation
from autointerp.llm import LLMCallError, LLMRequest, Message, make_backend
from autointerp.llm.local_backend import LocalBackend, chat_messages, slot_scorer, token_judge
from autointerp.llm.local_judge import WORD_END, judge_prompt
from autointerp.sampler import sample_features
from autointerp.scoring import score_feature
from autointerp.simulate import (
    build_simulation_request,
    expected_level,
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


def test_too_long_a_listing_is_a_call_error_and_counted(backend: LocalBackend) -> None:
    windows = [make_window([" word"] * 3000, [0.0] * 3000, split="score")]
    request = build_simulation_request("words", windows, "logprob")
    failed = backend.n_failed
    with pytest.raises(LLMCallError, match="at most"):
        asyncio.run(backend.score_value_slots(request, listing_slot_prefixes([w.tokens for w in windows])))
    assert backend.n_failed == failed + 1


# --------------------------------------------------------------------------------------------------
# Per-token judging (autointerp.llm.local_judge) on known-truth features

KNOWN_TOKENS = (" king", " death", " father")


@pytest.fixture(scope="module")
def known_truth_samples(smollm2):
    """Windows of three token features (feature i fires exactly on KNOWN_TOKENS[i]) from the real
    sampler over 32k Shakespeare tokens."""
    sae = token_feature_sae(smollm2, KNOWN_TOKENS, context_size=128)
    tokens_NL = tokenise_corpus(CorpusSpec(), smollm2.tokenizer, 128, prepend_bos=True, max_tokens=32_768)
    cfg = SamplerConfig(n_tokens=32_768, context_size=128)
    samples = sample_features(smollm2, sae, tokens_NL, [0, 1, 2], cfg, special_token_ids(smollm2.tokenizer), 1)
    for sample, token in zip(samples, KNOWN_TOKENS, strict=True):
        (token_id,) = smollm2.tokenizer.encode(token, add_special_tokens=False)
        assert truth_violations(sample.windows, token_id) == 0
        assert any(a > 0 for w in sample.split("score") for a in w.activations), token
    return samples


def judged_correlation(backend: LocalBackend, explanation: str, windows) -> float:
    response = asyncio.run(backend.judge_tokens(explanation, [w.tokens for w in windows]))
    levels = iter(expected_level(slot.top) for slot in response.logprobs)
    predictions = [[next(levels) for _ in w.tokens] for w in windows]
    assert next(levels, None) is None and response.usage.input_tokens > 0
    scores = score_feature(
        [w.activations for w in windows],
        predictions,
        [w.group for w in windows],
        [w.interval for w in windows],
        max(max(w.activations) for w in windows),
    )
    return scores.correlation if scores.correlation is not None else 0.0


def test_the_judge_scores_the_right_explanation_far_above_another_features(backend, known_truth_samples) -> None:
    """Measured (benchmarks/local_simulator.py): right explanations ~0.95, another feature's ~-0.04."""
    n = len(KNOWN_TOKENS)
    for i, sample in enumerate(known_truth_samples):
        windows = sample.split("score")
        right = judged_correlation(backend, word_explanation(KNOWN_TOKENS[i]), windows)
        baseline = baseline_explanation(sample.split("explain"), sample.stats.max_activation, "floor")
        right_baseline = judged_correlation(backend, baseline, windows)
        wrong = judged_correlation(backend, word_explanation(KNOWN_TOKENS[(i + 1) % n]), windows)
        assert right >= 0.7 and right_baseline >= 0.7 and wrong <= 0.2, (KNOWN_TOKENS[i], right, right_baseline, wrong)


def test_judged_likelihoods_equal_plain_forward_passes_of_the_real_model(backend) -> None:
    """The cached, batched likelihoods equal an uncached pass (rotary positions and grouped KV heads
    survive the cache's copy and batch expansion)."""
    judge = token_judge(backend.gguf_path)
    words = ["king", "night", "Westmoreland", "↵"]
    got, _ = judge.word_logprobs('the word "king"', words)
    prefix = judge.encode(judge_prompt('the word "king"'))
    for word, logp in zip(words, got, strict=True):
        completion = judge.encode(word + WORD_END)
        with torch.inference_mode():
            logits = judge.model(input_ids=torch.tensor([prefix + completion])).logits[0].float()
        plain = torch.log_softmax(logits, dim=-1)
        want = sum(float(plain[len(prefix) - 1 + j, t]) for j, t in enumerate(completion))
        assert logp == pytest.approx(want, abs=1e-3), word
    assert got[0] > got[1] + 3  # the explanation's own word is far likelier than another


def test_the_simulator_judges_tokens_on_the_local_backend(backend, known_truth_samples) -> None:
    windows = known_truth_samples[0].split("score")
    explanation = word_explanation(KNOWN_TOKENS[0])
    simulation, calls = asyncio.run(simulate_feature(backend, explanation, windows, 0, "llm", CFG))
    response = asyncio.run(backend.judge_tokens(explanation, [w.tokens for w in windows]))
    judged = [expected_level(slot.top) for slot in response.logprobs]
    assert [p for row in simulation.predictions for p in row] == pytest.approx(judged, abs=1e-6)
    assert simulation.mode == "logprob" and len(calls) == 1 and "judge" in calls[0].detail
