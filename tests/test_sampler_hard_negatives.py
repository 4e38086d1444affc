"""Hard negatives: windows holding the token at the feature's best explanation-split peak, from score
contexts where it never fires, checked against a brute-force reference of the documented rule (for any
batch size and any order of the score contexts) and on a real model + SAE."""

import numpy as np
import pytest
import torch
from test_sampler import CFG, decode, ref_key, ref_split, run_state, sparse_sae, stream_split, synthetic, text_tokens

from autointerp.sampler import hook_activations, sample_features
from autointerp.sampler_state import SALT_HARD, explain_best, hard_targets, split_of
from autointerp.sampler_stream import Sampler


def low_vocab(n_contexts=120, seed=1):
    """Synthetic activations over a 12-token vocabulary, so a feature's max token recurs in silent contexts."""
    tokens, acts = synthetic(n_contexts=n_contexts, seed=seed, density=0.03)
    tokens[:, 1:] = tokens[:, 1:] % 12 + 3
    acts[:, 1:] = acts[:, 1:] * (torch.arange(n_contexts) % 5 != 0)[:, None, None]  # more silent contexts
    return tokens, acts


def reference(tokens, acts, f, cfg):
    """The documented rule from every activation: the token at the peak of the best explanation context
    (the first context and first position win ties), then the smallest keys among silent score contexts
    holding it, each window on the occurrence of smallest key."""
    body = acts[:, 1:, f]
    L, W = tokens.shape[1], cfg.window_size
    split = ref_split(len(tokens), cfg)
    best, token = 0.0, -1
    for c in range(len(tokens)):
        peak = float(body[c].max())
        if split[c] == 0 and peak > best:
            best, token = peak, int(tokens[c, 1 + int(body[c].argmax())])
    pool = [
        c for c in range(len(tokens)) if split[c] == 1 and float(body[c].max()) == 0 and token in tokens[c, 1:].tolist()
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


def test_the_draw_does_not_depend_on_the_order_of_the_score_contexts():
    """A late, stronger peak in a SCORE context changes nothing (the target comes from the explanation
    split), and streaming the score contexts backwards gives the same windows."""
    cfg = CFG.model_copy(update={"n_hard_negative_score": 4})
    tokens, acts = low_vocab()
    before = run_state(tokens, acts, cfg).finish(tokens, decode)
    assert sum(w.group == "hard_negative" for s in before for w in s.windows) >= 10
    score = split_of(torch.arange(len(tokens)), cfg) == 1
    late = int(torch.nonzero(score & (acts[:, 1:, 0].amax(1) > 0)).flatten()[-1])  # feature 0 fires there
    acts[late, 5, 0] = 1e4  # the strongest peak of all now sits on a score context, on a unique token
    tokens[late, 5] = 99
    after = run_state(tokens, acts, cfg).finish(tokens, decode)
    hard_before, hard_after = ([w for w in x[0].windows if w.group == "hard_negative"] for x in (before, after))
    assert hard_before and hard_after == hard_before  # the running max's token would have been 99: none
    assert [x.windows for x in before[1:]] == [x.windows for x in after[1:]]  # other features untouched

    backwards = Sampler(list(range(acts.shape[-1])), tokens.shape[1], cfg, first_position=1)
    ids = torch.arange(len(tokens))
    stream_split(backwards, tokens, acts, ids, 0, 7)
    backwards.fix_hard_targets(hard_targets(*(t[None] for t in explain_best(backwards.state))))
    stream_split(backwards, tokens, acts, ids.flip(0), 1, 5)
    reversed_records = backwards.finish(tokens, decode)
    forward = run_state(tokens, acts, cfg).finish(tokens, decode)
    assert [s.model_dump() for s in reversed_records] == [s.model_dump() for s in forward]


def test_a_score_context_before_the_targets_is_refused():
    cfg = CFG.model_copy(update={"n_hard_negative_score": 4})
    tokens, acts = low_vocab()
    sampler = Sampler(list(range(acts.shape[-1])), tokens.shape[1], cfg, first_position=1)
    ids = torch.arange(len(tokens))
    with pytest.raises(ValueError, match="before the hard-negative targets"):
        sampler.update(acts, tokens, ids, tokens != 1)


@pytest.mark.parametrize("architecture", ["topk", "jumprelu"])
def test_hard_negatives_on_a_real_model_are_silent_and_hold_the_explanation_top_token(tiny_model, architecture):
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
        explain = (split_of(torch.arange(len(tokens)), cfg) == 0)[:, None]
        c, p = np.unravel_index(int((body * explain).argmax()), body.shape)
        top_token = int(tokens[c, 1 + p])
        tops = {w.token_ids[int(np.argmax(w.activations))] for w in sample.windows if w.group == "top"}
        assert top_token in tops  # the explanation max's token is one of the feature's top tokens
        for w in (w for w in sample.windows if w.group == "hard_negative"):
            assert float(body[w.context_id].abs().max()) == 0  # silent in the whole context
            assert top_token in w.token_ids
            n_hard += 1
    assert n_hard > 0
