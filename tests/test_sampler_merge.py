"""Sampler states merge exactly: shards of a corpus (contexts i % world == rank, global ids kept) give,
merged in any order or tree, the records one process gives, every group (hard negatives included).
In-process merges here; real gloo ranks in test_sampler_distributed.py."""

import itertools

import pytest
import torch
from test_sampler import CFG, decode, stream_contexts, stream_split, synthetic

from autointerp.sampler_state import explain_best, hard_targets, merge, merge_all
from autointerp.sampler_stream import Sampler

HARD = CFG.model_copy(update={"n_hard_negative_score": 4})


def shard_ids(n_contexts, rank, world):
    return torch.arange(rank, max(rank, n_contexts), world)


def shard_state(tokens, acts, cfg, rank, world, batch_size=5):
    """The state of one rank of a real process group (or of one process): its contexts only, in batches
    of its own, the hard-negative targets agreed with the other ranks."""
    sampler = Sampler(list(range(acts.shape[-1])), tokens.shape[1], cfg, first_position=1)
    return stream_contexts(sampler, tokens, acts, shard_ids(len(tokens), rank, world), batch_size).state


def shard_states(tokens, acts, cfg, world, batch_size=5):
    """Every rank's state, in this process: each streams its explanation contexts, the targets come from
    the shards' explanation top-1s (what agree_hard_targets gathers), then each streams its score contexts."""
    samplers = [Sampler(list(range(acts.shape[-1])), tokens.shape[1], cfg, first_position=1) for _ in range(world)]
    for rank, sampler in enumerate(samplers):
        stream_split(sampler, tokens, acts, shard_ids(len(tokens), rank, world), 0, batch_size)
    best = [explain_best(sampler.state) for sampler in samplers]
    targets = hard_targets(*(torch.stack(parts) for parts in zip(*best)))
    for rank, sampler in enumerate(samplers):
        sampler.fix_hard_targets(targets)
        stream_split(sampler, tokens, acts, shard_ids(len(tokens), rank, world), 1, batch_size)
    return [sampler.state for sampler in samplers]


def records(state, tokens, cfg):
    sampler = Sampler(state.features, tokens.shape[1], cfg, first_position=1, state=state)
    return [s.model_dump() for s in sampler.finish(tokens, decode)]


def doubling_data():
    """Shards whose maxima differ by 2^20, so merging must first line up grids of different bounds; a
    small vocabulary, so a feature's target token recurs in silent contexts (hard negatives are drawn)."""
    tokens, acts = synthetic(n_contexts=90, F=4, seed=7, density=0.15)
    tokens[:, 1:] = tokens[:, 1:] % 12 + 3
    acts[:, 1:] = acts[:, 1:] * (torch.arange(90) % 4 != 0)[:, None, None]  # more silent contexts
    acts[:45] *= 1e-4
    acts[60:, :, 1] *= 2.0**20
    acts[:, 0] = 100.0
    return tokens, acts


@pytest.mark.parametrize("world", [2, 3])
def test_merged_shards_equal_one_process(world):
    tokens, acts = doubling_data()
    one = records(shard_state(tokens, acts, HARD, 0, 1, batch_size=7), tokens, HARD)
    states = shard_states(tokens, acts, HARD, world)
    merged = records(merge_all(states, HARD), tokens, HARD)
    assert merged == one
    kinds = {(w["split"], w["group"]) for s in one for w in s["windows"]}
    assert {"top", "interval", "random", "nonactivating", "hard_negative"} <= {g for _, g in kinds}
    assert sum(s["stats"]["n_active"] for s in one) > 50


def test_merge_is_associative_and_commutative():
    tokens, acts = doubling_data()
    world = 4

    def fresh():
        return shard_states(tokens, acts, HARD, world)

    reference = records(merge_all(fresh(), HARD), tokens, HARD)
    for order in itertools.islice(itertools.permutations(range(world)), 0, 24, 5):
        s = fresh()
        assert records(merge_all([s[i] for i in order], HARD), tokens, HARD) == reference
    s = fresh()  # a tree: (0+1) + (2+3)
    tree = merge(merge(s[0], s[1], HARD), merge(s[2], s[3], HARD), HARD)
    assert records(tree, tokens, HARD) == reference


@pytest.mark.parametrize("world", [2, 3])
def test_hard_negatives_merge_exactly_and_hold_the_explanation_top_token(world):
    """Every hard-negative window lies in the score split, is silent, and holds the token at the peak of
    the feature's best explanation-split context; shards merged give one process's draw exactly."""
    from autointerp.sampler_state import split_of

    tokens, acts = synthetic(n_contexts=120, seed=1, density=0.03)
    tokens[:, 1:] = tokens[:, 1:] % 12 + 3  # a small vocabulary: target tokens recur in silent contexts
    acts[:, 1:] = acts[:, 1:] * (torch.arange(120) % 5 != 0)[:, None, None]
    one = records(shard_state(tokens, acts, HARD, 0, 1), tokens, HARD)
    assert records(merge_all(shard_states(tokens, acts, HARD, world, batch_size=3), HARD), tokens, HARD) == one
    explain = split_of(torch.arange(120), HARD) == 0
    n_hard = 0
    for f, sample in enumerate(one):
        body = acts[:, 1:, f] * explain[:, None]
        c = int(body.max(1).values.argmax())  # the first context wins a tie, as in the sampler
        token = int(tokens[c, 1 + int(body[c].argmax())])
        for w in (w for w in sample["windows"] if w["group"] == "hard_negative"):
            n_hard += 1
            assert w["split"] == "score" and token in w["token_ids"]
            assert float(acts[w["context_id"], 1:, f].max()) == 0
    assert n_hard > 3


def test_states_with_different_targets_refuse_to_merge():
    tokens, acts = doubling_data()
    a, b = shard_states(tokens, acts, HARD, 2)
    b.hard_token_F[0] += 1
    with pytest.raises(ValueError, match="different target tokens"):
        merge(a, b, HARD)


def test_a_world_larger_than_the_corpus_leaves_ranks_empty_and_still_merges():
    """World sizes need not divide the contexts: ranks differ by at most one, and a rank with none
    contributes an empty state that changes nothing."""
    tokens, acts = synthetic(n_contexts=4, F=3, density=0.3)
    one = records(shard_state(tokens, acts, HARD, 0, 1), tokens, HARD)
    states = shard_states(tokens, acts, HARD, 7)
    assert [int(s.n_tokens) for s in states][4:] == [0, 0, 0]
    assert records(merge_all(states, HARD), tokens, HARD) == one


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
