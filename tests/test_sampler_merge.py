"""Sampler states merge exactly: shards of a corpus (contexts i % world == rank, global ids kept) give,
merged in any order or tree, the records one process gives. In-process merges here; real gloo ranks in
test_sampler_distributed.py."""

import itertools

import pytest
import torch
from test_sampler import CFG, decode, synthetic

from autointerp.sampler_state import merge, merge_all
from autointerp.sampler_stream import Sampler

NO_HARD = CFG.model_copy(update={"n_hard_negative_score": 0})


def shard_state(tokens, acts, cfg, rank, world, batch_size=5):
    """The state of one rank: its contexts only, in batches of its own."""
    sampler = Sampler(list(range(acts.shape[-1])), tokens.shape[1], cfg, first_position=1)
    mine = torch.arange(rank, max(rank, len(tokens)), world)
    for start in range(0, len(mine), batch_size):
        ids = mine[start : start + batch_size]
        sampler.update(acts[ids], tokens[ids], ids, tokens[ids] != 1)
    return sampler.state


def records(state, tokens, cfg):
    sampler = Sampler(state.features, tokens.shape[1], cfg, first_position=1, state=state)
    return [s.model_dump() for s in sampler.finish(tokens, decode)]


def doubling_data():
    """Shards whose maxima differ by 2^20, so merging must first line up grids of different bounds."""
    tokens, acts = synthetic(n_contexts=90, F=4, seed=7, density=0.15)
    acts[:45] *= 1e-4
    acts[60:, :, 1] *= 2.0**20
    acts[:, 0] = 100.0
    return tokens, acts


@pytest.mark.parametrize("world", [2, 3])
def test_merged_shards_equal_one_process(world):
    tokens, acts = doubling_data()
    one = records(shard_state(tokens, acts, NO_HARD, 0, 1, batch_size=7), tokens, NO_HARD)
    states = [shard_state(tokens, acts, NO_HARD, r, world) for r in range(world)]
    merged = records(merge_all(states, NO_HARD), tokens, NO_HARD)
    assert merged == one
    kinds = {(w["split"], w["group"]) for s in one for w in s["windows"]}
    assert {"top", "interval", "random", "nonactivating"} <= {g for _, g in kinds}
    assert sum(s["stats"]["n_active"] for s in one) > 50


def test_merge_is_associative_and_commutative():
    tokens, acts = doubling_data()
    world = 4

    def fresh():
        return [shard_state(tokens, acts, NO_HARD, r, world) for r in range(world)]

    reference = records(merge_all(fresh(), NO_HARD), tokens, NO_HARD)
    for order in itertools.islice(itertools.permutations(range(world)), 0, 24, 5):
        s = fresh()
        assert records(merge_all([s[i] for i in order], NO_HARD), tokens, NO_HARD) == reference
    s = fresh()  # a tree: (0+1) + (2+3)
    tree = merge(merge(s[0], s[1], NO_HARD), merge(s[2], s[3], NO_HARD), NO_HARD)
    assert records(tree, tokens, NO_HARD) == reference


def test_hard_negatives_after_a_merge_keep_their_promise():
    """Hard negatives are the documented exception: after a merge every window still holds the
    feature's final max token, lies in the score split and is silent; all other groups are exact."""
    tokens, acts = synthetic(n_contexts=120, seed=1, density=0.03)
    tokens[:, 1:] = tokens[:, 1:] % 12 + 3  # a small vocabulary: max tokens recur in silent contexts
    acts[:, 1:] = acts[:, 1:] * (torch.arange(120) % 5 != 0)[:, None, None]
    cfg = CFG.model_copy(update={"n_hard_negative_score": 4})
    one = records(shard_state(tokens, acts, cfg, 0, 1), tokens, cfg)
    merged = records(merge_all([shard_state(tokens, acts, cfg, r, 2) for r in range(2)], cfg), tokens, cfg)
    n_hard = 0
    for f, (a, b) in enumerate(zip(one, merged)):
        assert [w for w in a["windows"] if w["group"] != "hard_negative"] == [
            w for w in b["windows"] if w["group"] != "hard_negative"
        ]
        assert a["stats"] == b["stats"]
        body = acts[:, 1:, f]
        c = int(body.max(1).values.argmax())
        token = int(tokens[c, 1 + int(body[c].argmax())])
        for w in (w for w in b["windows"] if w["group"] == "hard_negative"):
            n_hard += 1
            assert w["split"] == "score" and token in w["token_ids"]
            assert float(body[w["context_id"]].max()) == 0
    assert n_hard > 3


def test_a_world_larger_than_the_corpus_leaves_ranks_empty_and_still_merges():
    """World sizes need not divide the contexts: ranks differ by at most one, and a rank with none
    contributes an empty state that changes nothing."""
    tokens, acts = synthetic(n_contexts=4, F=3, density=0.3)
    one = records(shard_state(tokens, acts, NO_HARD, 0, 1), tokens, NO_HARD)
    states = [shard_state(tokens, acts, NO_HARD, r, 7) for r in range(7)]
    assert [int(s.n_tokens) for s in states][4:] == [0, 0, 0]
    assert records(merge_all(states, NO_HARD), tokens, NO_HARD) == one


def test_the_activation_sum_is_exact_whatever_the_grouping():
    """Values spanning 2^-30..2^30 (where float64 sums depend on the order): limbs of the parts add up
    to the limbs of the whole, and the value is the correctly rounded sum (math.fsum)."""
    import math

    from autointerp.exact_sum import carry, fixed_point_sum, fixed_point_value

    gen = torch.Generator().manual_seed(0)
    values = torch.rand(6, 50, 3, generator=gen) * torch.exp2(torch.randint(-30, 31, (6, 50, 3), generator=gen).float())
    whole = fixed_point_sum(values)
    parts = [fixed_point_sum(values[i : i + 1]) for i in range(6)]
    assert torch.equal(carry(sum(parts[::-1])), whole)
    assert torch.equal(carry(parts[0] + carry(parts[3] + parts[1]) + parts[2] + parts[4] + parts[5]), whole)
    for f in range(3):
        exact = math.fsum(values[..., f].double().flatten().tolist())
        assert float(fixed_point_value(whole)[f]) == pytest.approx(exact, rel=1e-15)
