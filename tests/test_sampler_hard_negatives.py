"""Hard negatives: windows holding the feature's strongest token from contexts where it never fires,
checked against a brute-force reference of the documented two-stage rule and on a real model + SAE."""

import numpy as np
import pytest
import torch
from test_sampler import CFG, decode, ref_key, ref_split, run_state, sparse_sae, synthetic, text_tokens

from autointerp.sampler import hook_activations, sample_features
from autointerp.sampler_state import SALT_HARD


def low_vocab(n_contexts=120, seed=1):
    """Synthetic activations over a 12-token vocabulary, so a feature's max token recurs in silent contexts."""
    tokens, acts = synthetic(n_contexts=n_contexts, seed=seed, density=0.03)
    tokens[:, 1:] = tokens[:, 1:] % 12 + 3
    acts[:, 1:] = acts[:, 1:] * (torch.arange(n_contexts) % 5 != 0)[:, None, None]  # more silent contexts
    return tokens, acts


def reference(tokens, acts, f, cfg):
    """The documented rule, context by context: the running max's token, the contexts since it last
    changed, the smallest keys among silent score contexts holding it, the occurrence of smallest key."""
    body = acts[:, 1:, f]
    L, W = tokens.shape[1], cfg.window_size
    best, token, since = 0.0, -1, 0
    for c in range(len(tokens)):
        peak = float(body[c].max())
        if peak > best:
            best = peak
            new = int(tokens[c, 1 + int(body[c].argmax())])
            if new != token:
                token, since = new, c
    split = ref_split(len(tokens), cfg)
    pool = [
        c
        for c in range(since, len(tokens))
        if split[c] == 1 and float(body[c].max()) == 0 and token in tokens[c, 1:].tolist()
    ]
    chosen = sorted(pool, key=lambda c: ref_key(cfg.seed, SALT_HARD, f, c))[: cfg.n_hard_negative_score]
    out = []
    for c in chosen:
        positions = [p for p in range(1, L) if int(tokens[c, p]) == token]
        p = min(positions, key=lambda p: ref_key(cfg.seed, SALT_HARD, f, c, p))
        out.append((c, min(max(p - cfg.window_left, 1), L - W)))
    return token, out


def test_hard_negatives_match_the_documented_rule_for_any_batch_size():
    tokens, acts = low_vocab()
    cfg = CFG.model_copy(update={"n_hard_negative_score": 4})
    n_checked = 0
    runs = [run_state(tokens, acts, cfg, batch_size=b).finish(tokens, decode) for b in (1, 7, 120)]
    for f, sample in enumerate(runs[0]):
        token, expected = reference(tokens, acts, f, cfg)
        hard = [w for w in sample.windows if w.group == "hard_negative"]
        assert [(w.context_id, w.start) for w in hard] == expected
        for w in hard:
            assert w.split == "score"
            assert token in w.token_ids
            assert float(acts[w.context_id, 1:, f].max()) == 0 and not any(w.activations)
        n_checked += len(hard)
        for other in runs[1:]:
            assert [x.model_dump() for x in other[f].windows] == [x.model_dump() for x in sample.windows]
    assert n_checked >= 10  # the comparison saw real draws


def test_a_change_of_max_token_restarts_the_reservoir():
    """A late, stronger peak on another token discards the hard negatives kept for the old token."""
    cfg = CFG.model_copy(update={"n_hard_negative_score": 4})
    f = 0
    tokens, acts = low_vocab()
    before = run_state(tokens, acts, cfg).finish(tokens, decode)
    assert [w for w in before[f].windows if w.group == "hard_negative"]
    late = len(tokens) - 3
    acts[late, 5, f] = 1e4
    tokens[late, 5] = 99  # a token found nowhere else: no context after it can hold it
    after = run_state(tokens, acts, cfg).finish(tokens, decode)
    assert not [w for w in after[f].windows if w.group == "hard_negative"]


@pytest.mark.parametrize("architecture", ["topk", "jumprelu"])
def test_hard_negatives_on_a_real_model_are_silent_and_hold_a_top_token(tiny_model, architecture):
    sae = sparse_sae(architecture)
    tokens = text_tokens(48, 32)
    features = [4, 9, 17]
    cfg = CFG.model_copy(update={"batch_size": 8, "n_hard_negative_score": 3})
    samples = sample_features(tiny_model, sae, tokens, features, cfg, [1], 1, decode=decode)
    resid = hook_activations(tiny_model, tokens, sae.cfg.hook_name)
    acts_NLF = sae.encode(resid.flatten(0, 1), features=torch.tensor(features)).view(*tokens.shape, len(features))
    n_hard = 0
    for i, sample in enumerate(samples):
        if sample.stats.n_active == 0:
            continue
        body = acts_NLF[:, 1:, i]
        c, p = np.unravel_index(int(body.argmax()), body.shape)
        top_token = int(tokens[c, 1 + p])
        tops = {w.token_ids[int(np.argmax(w.activations))] for w in sample.windows if w.group == "top"}
        assert top_token in tops  # the max's token is one of the feature's top tokens
        for w in (w for w in sample.windows if w.group == "hard_negative"):
            assert float(body[w.context_id].abs().max()) == 0  # silent in the whole context
            assert top_token in w.token_ids
            n_hard += 1
    assert n_hard > 0
