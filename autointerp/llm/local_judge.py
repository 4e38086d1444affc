"""Per-token simulation for a small local model: is this token more likely as an example of the
explanation than as an example of anything?

A 135M-parameter model cannot follow the simulator's listing prompt (it predicts about the same level
for every token whatever the explanation) and answers yes/no questions about a token barely better
than chance, but it copies and associates words well. So each distinct token of the scoring windows
is shown as a word (`token_word`) and judged by two likelihoods of the same completion prompt
(prompts/simulate_token_judge.md):

    L1 = log P(word + '"' | description = the explanation)
    L0 = log P(word + '"' | description = NULL_DESCRIPTION, "any word")

Read as a naive Bayes test, a token the explanation describes is drawn from the first distribution,
any other from the second, and a token matches a priori with probability PRIOR_MATCH; the posterior
P(match | token) = sigmoid(L1 - L0 + logit(PRIOR_MATCH)) (`match_probability`). The simulator's
prediction is the expected level of {0: 1 - P(match), 10: P(match)} (`match_level_logprobs`), i.e.
10 * P(match), on the usual 0..10 scale.

Measured on known-truth token features (benchmarks/local_simulator.py, docs/benchmarks.md) this scores
the right explanation far above another feature's one, where the listing prompt and a yes/no question
did not. Limits: the judgement is context-free (a token gets the same prediction in every window, so
features that depend on context cannot be simulated beyond their tokens), and a word the null prompt
already favours (' love') gets a smaller ratio than a rare one.

Cost: the description's prompt runs once per simulation and its key/value cache is reused for every
word (batched); the null prompt's likelihoods are cached per word for the life of the process, and the last
description's per word (the detection scorer then judges the words the simulation already ran for free).
"""

from __future__ import annotations

import copy
import inspect
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence

from autointerp.prompts import escape_token, render_file

JUDGE_TEMPLATE = "simulate_token_judge.md"
NULL_DESCRIPTION = "any word"
PRIOR_MATCH = 1e-3  # the share of tokens a typical explanation describes; sets where P(match) crosses 1/2
WORD_END = '"'  # closes the word in the template, so a word is judged whole, not as a prefix of another
BATCH = 64  # words per forward pass
DESCRIPTIONS_CACHED = 16  # explanations whose word likelihoods are kept (features in flight x explanations each)


class JudgeStopped(RuntimeError):
    """The caller gave up on a judgement (its `stop` event was set) before it finished."""


def token_word(token: str) -> str:
    """A token as the word shown to the judge: surrounding whitespace dropped, or the token's visible
    form (prompts.escape_token) when it is only whitespace."""
    return token.strip() or escape_token(token)


def match_probability(logp_described: float, logp_null: float, prior: float = PRIOR_MATCH) -> float:
    """P(match | token) in [0, 1] from the log-likelihoods of its word under the explanation and under
    the null description, with prior P(match) = `prior` (0 < prior < 1). Equal likelihoods give `prior`."""
    if not 0 < prior < 1:
        raise ValueError(f"match_probability: prior {prior}; expected 0 < prior < 1")
    z = logp_described - logp_null + math.log(prior / (1 - prior))
    if z >= 0:
        return 1 / (1 + math.exp(-z))
    e = math.exp(z)  # no overflow for very negative z
    return e / (1 + e)


def match_level_logprobs(p_match: float) -> dict[str, float]:
    """The level distribution of a judged token: '10' with P(match), '0' otherwise, as log-probabilities
    (-inf where a probability is 0). Its expected level is 10 * p_match."""
    if not 0 <= p_match <= 1:
        raise ValueError(f"match_level_logprobs: p_match {p_match}; expected a probability in [0, 1]")
    return {
        "0": math.log(1 - p_match) if p_match < 1 else -math.inf,
        "10": math.log(p_match) if p_match > 0 else -math.inf,
    }


def judge_prompt(description: str) -> str:
    """The completion prompt whose next words are judged: the template with `description` on one line."""
    return render_file(JUDGE_TEMPLATE, explanation=" ".join(description.split()))


class TokenJudge:
    """Word likelihoods under the judge prompt, on a transformers causal LM (see the module docstring)."""

    def __init__(self, model, tokenizer, lock: threading.Lock | None = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.lock = lock or threading.Lock()
        # transformers 5 renamed the forward's cache argument; 4.x only knows the old name.
        params = inspect.signature(model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        self.null_cache: dict[str, float] = {}
        # The latest descriptions' word likelihoods: the simulation and detection scorers judge one explanation on
        # the same windows (a few features in flight between them), so the second asks for words the first ran.
        self.described_cache: OrderedDict[str, dict[str, float]] = OrderedDict()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def judge(
        self,
        explanation: str,
        tokens: Sequence[str],
        prior: float = PRIOR_MATCH,
        stop: threading.Event | None = None,
    ) -> tuple[list[float], int]:
        """P(match) for every token (in order), and the number of tokens run through the model. `stop` set
        (the caller was cancelled, e.g. Ctrl-C) ends the work between batches with JudgeStopped."""
        words = sorted({token_word(t) for t in tokens})
        known = dict(self.described_cache.get(explanation, {}))
        new = [w for w in words if w not in known]
        n_run = 0
        if new:
            described, n_run = self.word_logprobs(explanation, new, stop)
            known.update(zip(new, described, strict=True))
        self.described_cache[explanation] = known
        self.described_cache.move_to_end(explanation)
        while len(self.described_cache) > DESCRIPTIONS_CACHED:
            self.described_cache.popitem(last=False)
        missing = [w for w in words if w not in self.null_cache]
        if missing:
            null, n_null = self.word_logprobs(NULL_DESCRIPTION, missing, stop)
            self.null_cache.update(zip(missing, null, strict=True))
            n_run += n_null
        by_word = {w: match_probability(known[w], self.null_cache[w], prior) for w in words}
        return [by_word[token_word(t)] for t in tokens], n_run

    def word_logprobs(
        self, description: str, words: Sequence[str], stop: threading.Event | None = None
    ) -> tuple[list[float], int]:
        """log P(word + WORD_END | the judge prompt with `description`) for each word, and tokens run."""
        import torch

        prefix = self.encode(judge_prompt(description))
        completions = [self.encode(w + WORD_END) for w in words]
        # Batches of equal-length completions: padding would cost as much as the words themselves.
        order = sorted(range(len(words)), key=lambda i: len(completions[i]))
        out = [0.0] * len(words)
        with self.lock, torch.inference_mode():
            first = self.model(input_ids=torch.tensor([prefix]), use_cache=True)
            prefix_cache = first.past_key_values
            first_logp = torch.log_softmax(first.logits[0, -1].float(), dim=-1)  # predicts each word's 1st token
            n_run = len(prefix)
            for start in range(0, len(order), BATCH):
                if stop is not None and stop.is_set():  # a batch is well under a second: exit comes soon
                    raise JudgeStopped("the judgement was cancelled")
                rows = order[start : start + BATCH]
                chunk = [completions[i] for i in rows]
                for i, logp in zip(rows, self._chunk(prefix_cache, first_logp, chunk), strict=True):
                    out[i] = logp
                n_run += sum(len(c) - 1 for c in chunk)
        return out, n_run

    def _chunk(self, prefix_cache, first_logp, chunk: list[list[int]]) -> list[float]:
        """Sum of log-probabilities of each completion's tokens after the cached prefix."""
        import torch

        length = max(len(c) for c in chunk)
        if length == 1:  # every completion is one token: the prefix's own logits say it all
            return [float(first_logp[c[0]]) for c in chunk]
        # Right-padded: a completion's tokens never attend to the padding after them, so no mask is needed.
        ids_BL = torch.zeros(len(chunk), length - 1, dtype=torch.long)
        for i, c in enumerate(chunk):
            ids_BL[i, : len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long)
        cache = copy.deepcopy(prefix_cache)  # the forward appends to the cache in place
        cache.batch_repeat_interleave(len(chunk))
        logits = self.model(input_ids=ids_BL, use_cache=True, **{self.cache_arg: cache}).logits
        logp_BLV = torch.log_softmax(logits.float(), dim=-1)
        sums = []
        for i, c in enumerate(chunk):
            later = logp_BLV[i, torch.arange(len(c) - 1), torch.tensor(c[1:], dtype=torch.long)].sum()
            sums.append(float(first_logp[c[0]] + later))
        return sums
