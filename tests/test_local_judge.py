"""The local simulator's per-token judge (autointerp.llm.local_judge): the pure maths from likelihoods
to levels, the prompt (golden), and the batched, KV-cached likelihoods checked against plain forward
passes of a small random Llama. The judge on the real SmolLM2 is in tests/test_local_backend.py."""

from __future__ import annotations

import math

import pytest
import torch
from golden.golden_helpers import assert_golden, golden_score_windows
from transformers import LlamaConfig, LlamaForCausalLM

from autointerp.llm import local_judge
from autointerp.llm.local_judge import (
    NULL_DESCRIPTION,
    PRIOR_MATCH,
    WORD_END,
    TokenJudge,
    judge_prompt,
    match_level_logprobs,
    match_probability,
    token_word,
)
from autointerp.simulate import expected_level


def test_equal_likelihoods_give_the_prior_and_a_larger_ratio_a_larger_probability() -> None:
    assert match_probability(-7.0, -7.0) == pytest.approx(PRIOR_MATCH)
    assert match_probability(-3.0, -3.0, prior=0.25) == pytest.approx(0.25)
    ratios = [-20.0, -5.0, 0.0, 3.0, math.log(1 / PRIOR_MATCH), 10.0, 30.0]
    probabilities = [match_probability(-10.0 + r, -10.0) for r in ratios]
    assert probabilities == sorted(probabilities) and len(set(probabilities)) == len(probabilities)
    # where the ratio cancels the prior's odds, a match is as likely as not
    assert match_probability(math.log((1 - PRIOR_MATCH) / PRIOR_MATCH), 0.0) == pytest.approx(0.5)
    # Bayes' rule by hand: prior 0.1, the word 4 times as likely under the explanation
    assert match_probability(math.log(0.4), math.log(0.1), prior=0.1) == pytest.approx(0.04 / (0.04 + 0.09))


def test_extreme_ratios_stay_finite_probabilities() -> None:
    assert match_probability(0.0, -1e6) == 1.0
    assert match_probability(-1e6, 0.0) == 0.0
    assert 0.0 < match_probability(-700.0, 0.0, prior=0.5) < 1e-300  # no underflow to 0 where a float holds it


@pytest.mark.parametrize("prior", [0.0, 1.0, -0.1, 2.0])
def test_a_prior_outside_the_open_unit_interval_is_refused(prior: float) -> None:
    with pytest.raises(ValueError, match="expected 0 < prior < 1"):
        match_probability(-1.0, -2.0, prior=prior)


@pytest.mark.parametrize("p", [0.0, 1e-9, 0.001, 0.3, 0.5, 0.97, 1.0])
def test_levels_of_a_judged_token_have_expected_value_ten_times_p_match(p: float) -> None:
    levels = match_level_logprobs(p)
    assert set(levels) == {"0", "10"}
    assert math.exp(levels["0"]) + math.exp(levels["10"]) == pytest.approx(1.0)
    assert expected_level(levels) == pytest.approx(10 * p, abs=1e-9)


@pytest.mark.parametrize("p", [-0.01, 1.5, math.nan])
def test_levels_refuse_a_non_probability(p: float) -> None:
    with pytest.raises(ValueError, match="expected a probability"):
        match_level_logprobs(p)


def test_a_token_is_shown_as_a_word_or_its_visible_whitespace() -> None:
    assert [token_word(t) for t in (" king", "king", "ing", " King,", "\n", "  ", "\t")] == [
        "king",
        "king",
        "ing",
        "King,",
        "↵",
        "␣␣",
        "⇥",
    ]


def test_judge_prompt_matches_golden() -> None:
    words = sorted({token_word(t) for w in golden_score_windows() for t in w.tokens})
    explanation = 'the word\n\n "dog"  '
    text = "\n".join(
        [
            f"=== explanation ===\n{judge_prompt(explanation)}",
            f"=== null ===\n{judge_prompt(NULL_DESCRIPTION)}",
            "=== completions judged ===\n" + "\n".join(w + WORD_END for w in words),
        ]
    )
    assert judge_prompt(explanation).endswith('Description: the word "dog"\nExample: "')
    assert_golden("simulate_token_judge_prompt.txt", text + "\n")


# --------------------------------------------------------------------------------------------------
# Likelihoods on a real (small, random) transformers model


class CharTokenizer:
    """One token per character (code point modulo the vocabulary): enough to drive a causal LM."""

    def __init__(self, vocab: int) -> None:
        self.vocab = vocab

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) % self.vocab for c in text]


@pytest.fixture(scope="module")
def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    return LlamaForCausalLM(config).eval()


def plain_logprob(model, prefix: list[int], completion: list[int]) -> float:
    """log P(completion | prefix) from one uncached forward pass of the whole sequence."""
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([prefix + completion])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return sum(float(logp[len(prefix) - 1 + j, t]) for j, t in enumerate(completion))


def test_batched_cached_likelihoods_equal_plain_forward_passes(tiny_llama, monkeypatch) -> None:
    monkeypatch.setattr(local_judge, "BATCH", 5)  # several batches, each of mixed lengths before sorting
    tokenizer = CharTokenizer(tiny_llama.config.vocab_size)
    judge = TokenJudge(tiny_llama, tokenizer)
    words = ["a", "dog", "", "horses", "x", "↵", "kingdom", "ab", "the", "zz", "c", "elephants!", "q"]
    got, n_run = judge.word_logprobs("the word 'dog'", words)
    prefix = tokenizer.encode(judge_prompt("the word 'dog'"))
    want = [plain_logprob(tiny_llama, prefix, tokenizer.encode(w + WORD_END)) for w in words]
    assert got == pytest.approx(want, abs=1e-4)
    assert n_run == len(prefix) + sum(len(w + WORD_END) - 1 for w in words)


def test_judge_gives_each_token_its_words_posterior_and_caches_the_null(tiny_llama) -> None:
    tokenizer = CharTokenizer(tiny_llama.config.vocab_size)
    judge = TokenJudge(tiny_llama, tokenizer)
    tokens = [" dog", "dog", " cat", "\n", " dog"]
    p_match, n_first = judge.judge("animals", tokens, prior=0.2)
    described, _ = judge.word_logprobs("animals", ["dog", "cat", "↵"])
    null, _ = judge.word_logprobs(NULL_DESCRIPTION, ["dog", "cat", "↵"])
    by_word = {w: match_probability(d, n, prior=0.2) for w, d, n in zip(["dog", "cat", "↵"], described, null)}
    assert p_match == pytest.approx([by_word["dog"], by_word["dog"], by_word["cat"], by_word["↵"], by_word["dog"]])
    assert set(judge.null_cache) == {"dog", "cat", "↵"}
    _, n_again = judge.judge("animals", tokens, prior=0.2)
    assert n_again < n_first  # the null prompt is not run again for words already judged
