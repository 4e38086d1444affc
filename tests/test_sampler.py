"""The sampler against a brute-force reference that keeps every activation."""

import math

import numpy as np
import pytest
import torch

from autointerp.config import SamplerConfig
from autointerp.sampler import sample_features
from autointerp.sampler_results import SPLITS
from autointerp.sampler_state import (
    SALT_KEY,
    SALT_RANDOM,
    SALT_RANDOM_START,
    SALT_SPLIT,
    SALT_START,
    draw,
    explain_best,
    split_of,
    stream,
)
from autointerp.sampler_stream import Sampler
from autointerp.sampling_distributed import agree_hard_targets


def synthetic(n_contexts=60, L=24, F=6, seed=0, density=0.08):
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(3, 500, (n_contexts, L), generator=gen)
    tokens[:, 0] = 1  # BOS
    acts = torch.rand(n_contexts, L, F, generator=gen) * torch.linspace(0.5, 40, F)
    acts = acts * (torch.rand(n_contexts, L, F, generator=gen) < density)
    acts[:, 0] = 100.0  # BOS activations are huge and must count nowhere
    acts[: n_contexts // 6, :, -1] = 0  # some silent contexts for the last feature
    return tokens, acts


def stream_split(sampler, tokens, acts, ids, split, batch_size):
    """Fold in the contexts `ids` of one split (0 explain, 1 score), in batches, BOS (token 1) invalid."""
    mine = ids[split_of(ids, sampler.cfg) == split]
    for start in range(0, len(mine), batch_size):
        b = mine[start : start + batch_size]
        sampler.update(acts[b], tokens[b], b, tokens[b] != 1)


def stream_contexts(sampler, tokens, acts, ids, batch_size):
    """The order run_pass streams in: explanation contexts, the hard-negative targets (agreed with the
    other ranks when a process group is up, else this sampler's own), score contexts."""
    stream_split(sampler, tokens, acts, ids, 0, batch_size)
    sampler.fix_hard_targets(agree_hard_targets(*explain_best(sampler.state)))
    stream_split(sampler, tokens, acts, ids, 1, batch_size)
    return sampler


def run_state(tokens, acts, cfg, batch_size=8):
    sampler = Sampler(list(range(acts.shape[-1])), tokens.shape[1], cfg, first_position=1)
    return stream_contexts(sampler, tokens, acts, torch.arange(len(tokens)), batch_size)


def window_close(true):
    """Top and interval windows keep float16 ratios to their float32 peak: within 2^-12 of the peak."""
    return pytest.approx(true, rel=1e-6, abs=max(abs(x) for x in true) * 2**-11)


def decode(ids):
    return [f"t{i}" for i in ids]


CFG = SamplerConfig(
    window_size=8,
    window_left=5,
    n_top_explain=4,
    n_top_score=3,
    n_intervals=3,
    per_interval_explain=2,
    per_interval_score=1,
    n_random_score=3,
    n_nonactivating_score=3,
    interval_grid=16,
    seed=3,
)


def _fmix32(h: int) -> int:
    """MurmurHash3's finaliser in plain Python integers: the reference for the sampler's int64 version."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) % 2**32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) % 2**32
    return h ^ (h >> 16)


def ref_key(seed: int, salt: int, *ids: int) -> int:
    """The key the sampler should draw for `ids` (feature, context...) under (seed, salt)."""
    s = seed % 2**64
    h = _fmix32((salt * 0x9E3779B9) % 2**32)
    h = _fmix32(h ^ (s % 2**32))
    h = _fmix32(h ^ (s >> 32))
    for i in ids:
        h = _fmix32(h ^ i)
    return h


def ref_split(n_contexts: int, cfg: SamplerConfig) -> np.ndarray:
    """0 explain, 1 score, from (seed, context id) alone."""
    cut = round(cfg.explain_fraction * 2**32)
    return np.array([0 if ref_key(cfg.seed, SALT_SPLIT, c) < cut else 1 for c in range(n_contexts)])


def test_hash_matches_plain_integer_reference_and_never_overflows():
    rng = np.random.default_rng(0)
    ids = [0, 1, 2, 2**31 - 1, 2**31, 2**32 - 1, *rng.integers(0, 2**32, 200).tolist()]
    for seed, salt in ((0, 1), (3, 2), (-5, 4), (2**40 + 7, 6)):
        got = draw(stream(seed, salt), torch.tensor(ids, dtype=torch.int64)).tolist()
        assert got == [ref_key(seed, salt, i) for i in ids]
        assert all(0 <= k < 2**32 for k in got)
    # A bijection of the context id: the keys of distinct contexts never tie.
    keys = draw(draw(stream(3, SALT_KEY), 4), torch.arange(1 << 16))
    assert len(torch.unique(keys)) == 1 << 16


def test_statistics_and_top_k_match_brute_force():
    tokens, acts = synthetic()
    state = run_state(tokens, acts, CFG)
    samples = state.finish(tokens, decode)
    body = acts[:, 1:]  # BOS excluded
    split = ref_split(len(tokens), CFG)
    assert split_of(torch.arange(len(tokens)), CFG).tolist() == split.tolist()
    for f, sample in enumerate(samples):
        a = body[..., f]
        st = sample.stats
        assert st.n_tokens == a.numel()
        assert st.n_active == int((a > 0).sum())
        assert st.max_activation == pytest.approx(float(a.max()))
        assert st.mean_active == pytest.approx(float(a[a > 0].mean()), rel=1e-6)
        bound = 2.0 ** math.ceil(math.log2(float(a.max())))
        cells = np.clip(np.ceil(a[a > 0].numpy() / bound * CFG.interval_grid) - 1, 0, None).astype(int)
        expected_hist = np.bincount(cells, minlength=len(st.histogram_counts))
        assert st.histogram_counts == expected_hist.tolist()
        assert st.histogram_edges[-1] >= st.max_activation
        peaks = a.max(1).values.numpy()
        for split_id, name, k in ((0, "explain", CFG.n_top_explain), (1, "score", CFG.n_top_score)):
            ids = [c for c in np.argsort(-peaks) if split[c] == split_id and peaks[c] > 0][:k]
            got = [w for w in sample.windows if w.split == name and w.group == "top"]
            assert [w.context_id for w in got] == ids
            for w in got:
                assert max(w.activations) == pytest.approx(float(peaks[w.context_id]))
                assert w.activations == window_close(acts[w.context_id, w.start : w.start + 8, f].tolist())
                assert w.start >= 1  # windows never include BOS


def test_windows_record_true_activations_and_splits_never_share_a_context():
    tokens, acts = synthetic()
    samples = run_state(tokens, acts, CFG).finish(tokens, decode)
    for f, sample in enumerate(samples):
        explain = {w.context_id for w in sample.windows if w.split == "explain"}
        score = {w.context_id for w in sample.windows if w.split == "score"}
        assert not explain & score
        for w in sample.windows:
            assert w.token_ids == tokens[w.context_id, w.start : w.start + 8].tolist()
            assert w.tokens == decode(w.token_ids)
            true = acts[w.context_id, w.start : w.start + 8, f].tolist()
            assert w.activations == window_close(true)
            if w.group == "nonactivating":
                assert float(acts[w.context_id, 1:, f].max()) == 0
        groups = [w.group for w in sample.windows if w.split == "score"]
        assert groups.count("random") == CFG.n_random_score


def test_interval_draws_fall_in_their_interval():
    tokens, acts = synthetic(n_contexts=120)
    state = run_state(tokens, acts, CFG)
    samples = state.finish(tokens, decode)
    for f, sample in enumerate(samples):
        st = sample.stats
        edges = st.histogram_edges
        cells = state.interval_cells(f)
        for w in (w for w in sample.windows if w.group == "interval"):
            lo, hi = cells[w.interval]
            peak = float(acts[w.context_id, 1:, f].max())
            assert edges[lo] < peak <= edges[hi] + 1e-6


def test_interval_random_and_nonactivating_draws_match_brute_force():
    """Every drawn window is the one the reference picks from all activations with the hashed keys:
    the smallest keys per interval (top windows left out), per silent context, per score context."""
    tokens, acts = synthetic(n_contexts=120)
    samples = run_state(tokens, acts, CFG).finish(tokens, decode)
    L, W, G, seed = tokens.shape[1], CFG.window_size, CFG.interval_grid, CFG.seed
    split = ref_split(len(tokens), CFG)
    n_starts = L - W + 1 - 1  # windows start after BOS
    score_contexts = [c for c in range(len(tokens)) if split[c] == 1]
    random_ids = sorted(sorted(score_contexts, key=lambda c: ref_key(seed, SALT_RANDOM, c))[: CFG.n_random_score])
    n_checked = 0
    for f, sample in enumerate(samples):
        peaks = acts[:, 1:, f].max(1).values.numpy()

        def by_group(group, name, sample=sample):
            return [w for w in sample.windows if w.group == group and w.split == name]

        random = by_group("random", "score")
        assert [w.context_id for w in random] == random_ids
        assert [w.start for w in random] == [1 + ref_key(seed, SALT_RANDOM_START, c) % n_starts for c in random_ids]
        silent = [c for c in score_contexts if peaks[c] == 0]
        nonact = sorted(silent, key=lambda c: ref_key(seed, SALT_KEY, f, c))[: CFG.n_nonactivating_score]
        got = by_group("nonactivating", "score")
        assert [w.context_id for w in got] == nonact
        assert [w.start for w in got] == [1 + ref_key(seed, SALT_START, c) % n_starts for c in nonact]
        bound = 2.0 ** math.ceil(math.log2(float(peaks.max())))
        cell = (np.clip(np.ceil(peaks / bound * G) - 1, 0, G - 1)).astype(int)
        n_cells = int(cell[peaks.argmax()]) + 1
        n = min(CFG.n_intervals, n_cells)
        interval_of_cell = [i for i in range(n) for _ in range(n_cells * i // n, n_cells * (i + 1) // n)]
        for split_id, name, per in ((0, "explain", CFG.per_interval_explain), (1, "score", CFG.per_interval_score)):
            tops = {w.context_id for w in by_group("top", name)}
            expected = []
            for i in range(n):
                pool = [
                    c
                    for c in range(len(tokens))
                    if split[c] == split_id and peaks[c] > 0 and interval_of_cell[cell[c]] == i and c not in tops
                ]
                expected += [(i, c) for c in sorted(pool, key=lambda c: ref_key(seed, SALT_KEY, f, c))[:per]]
            got = [(w.interval, w.context_id) for w in by_group("interval", name)]
            assert got == expected
            n_checked += len(got)
    assert n_checked > 20  # the comparison saw real draws


def text_tokens(n_contexts: int, L: int) -> torch.Tensor:
    """Real-ish tokens for the tiny model (vocabulary 300): English prose as bytes shifted past the
    special ids, so words and whole windows repeat as in a corpus; BOS (1) first in every context."""
    from autointerp import sampler

    prose = np.frombuffer(sampler.__doc__.encode(), dtype=np.uint8).astype(np.int64) + 3
    body = torch.from_numpy(np.resize(prose, n_contexts * (L - 1))).view(n_contexts, L - 1)
    return torch.cat([torch.ones(n_contexts, 1, dtype=torch.int64), body], 1)


def sparse_sae(architecture: str):
    """A small SAE whose feature 4 fires in some contexts of `text_tokens(48, 32)` and not in others."""
    from helpers_sae import make_sae, random_weights

    from autointerp.sae import SparseAutoencoder

    if architecture == "topk":
        return make_sae("topk", d_in=16, d_sae=64, seed=1, k=2)
    weights = random_weights(architecture, 16, 64, seed=1)
    weights["threshold"] = weights["threshold"] + 1.0  # ~4% of tokens fire instead of ~30%
    return SparseAutoencoder.from_weights(make_sae(architecture, d_in=16, d_sae=64).cfg, weights)


def _without_floats(sample: dict) -> dict:
    """A dumped FeatureSample with activations and float statistics taken out."""
    stats = {k: v for k, v in sample["stats"].items() if k not in ("max_activation", "mean_active", "histogram_edges")}
    return {"stats": stats, "windows": [{k: v for k, v in w.items() if k != "activations"} for w in sample["windows"]]}


@pytest.mark.parametrize("architecture", ["topk", "jumprelu"])
def test_a_features_windows_do_not_depend_on_the_other_features(tiny_model, architecture):
    """Feature 4 alone, among 4 features and among 16 (at another position each time): the same windows
    (tokens, activations, groups, splits, intervals, contexts, starts) and statistics.

    topk reads a subset off the full encode, so its activations are the same bits in every run and all
    must match exactly. jumprelu encodes only the chosen columns, and a matmul over 1, 4 or 16 columns
    may round differently in the last bit: there the draws must match exactly and the floats to rounding."""
    sae = sparse_sae(architecture)
    tokens = text_tokens(48, 32)
    cfg = CFG.model_copy(update={"batch_size": 8, "n_random_score": 4})

    def feature_4(features):
        samples = sample_features(tiny_model, sae, tokens, features, cfg, [1], 1, decode=decode)
        return samples[features.index(4)].model_dump()

    sixteen = [15, 0, 13, 2, 11, 4, 9, 6, 7, 8, 5, 10, 3, 12, 1, 14]
    alone, four, many = feature_4([4]), feature_4([1, 2, 4, 9]), feature_4(sixteen)
    kinds = {(w["split"], w["group"]) for w in alone["windows"]}
    # Every kind of draw is compared: both splits' top and interval windows, random, non-activating, hard.
    assert kinds == {(s, g) for s in SPLITS for g in ("top", "interval")} | {
        ("score", "random"),
        ("score", "nonactivating"),
        ("score", "hard_negative"),
    }
    assert 0 < alone["stats"]["n_active"] < alone["stats"]["n_tokens"]
    for other in (four, many):
        if architecture == "topk":
            assert other == alone
            continue
        assert _without_floats(other) == _without_floats(alone)
        for w_other, w_alone in zip(other["windows"], alone["windows"]):
            peak = max(w_alone["activations"])  # float16 ratios to the peak may round one step apart
            assert w_other["activations"] == pytest.approx(w_alone["activations"], rel=1e-5, abs=peak * 2**-10)
        assert other["stats"]["mean_active"] == pytest.approx(alone["stats"]["mean_active"], rel=1e-5)


def test_windows_do_not_depend_on_the_batch_size():
    """Keys hash context ids instead of following a generator's stream per batch, and bottom-k and
    top-k are exact over any split of the corpus: one context per batch, 7, or all at once keep the
    same windows."""
    tokens, acts = synthetic(n_contexts=90)
    runs = [run_state(tokens, acts, CFG, batch_size=b).finish(tokens, decode) for b in (1, 7, 90)]
    for samples in runs[1:]:
        for sample, sample0 in zip(samples, runs[0], strict=True):
            assert [w.model_dump() for w in sample.windows] == [w.model_dump() for w in sample0.windows]
            assert sample.stats.histogram_counts == sample0.stats.histogram_counts
            assert sample.stats.mean_active == pytest.approx(sample0.stats.mean_active, rel=1e-12)


def test_same_seed_same_result_and_other_seed_differs():
    tokens, acts = synthetic()
    first = run_state(tokens, acts, CFG).finish(tokens, decode)
    again = run_state(tokens, acts, CFG).finish(tokens, decode)
    other = run_state(tokens, acts, CFG.model_copy(update={"seed": 4})).finish(tokens, decode)
    assert [s.model_dump() for s in first] == [s.model_dump() for s in again]
    assert [s.model_dump() for s in first] != [s.model_dump() for s in other]


def test_identical_windows_count_once_in_top():
    tokens, acts = synthetic(n_contexts=16)
    tokens[5] = tokens[2]
    acts[5] = acts[2]
    acts[2, 10, 0] = acts[5, 10, 0] = 1000.0  # the same window is the feature's top twice
    cfg = CFG.model_copy(update={"explain_fraction": 0.999})  # every context in one split
    state = run_state(tokens, acts, cfg)
    tops = [w for w in state.finish(tokens, decode)[0].windows if w.group == "top"]
    assert [w.context_id for w in tops].count(2) + [w.context_id for w in tops].count(5) == 1


def chi_square(counts):
    counts = np.asarray(counts, dtype=float)
    expected = counts.sum() / len(counts)
    return float(((counts - expected) ** 2 / expected).sum())


def test_interval_and_random_draws_are_uniform():
    """Over many seeds, each eligible context is drawn equally often (chi-square, ~5 sigma bound)."""
    L, F = 12, 1
    n_contexts = 40
    tokens = torch.randint(3, 500, (n_contexts, L), generator=torch.Generator().manual_seed(0))
    tokens[:, 0] = 1
    acts = torch.zeros(n_contexts, L, F)
    # Peaks 1..8 spread evenly; the context with peak 10 pins the max (and is the only top window).
    acts[:, 3, 0] = torch.tensor([1.0 + (c % 8) for c in range(n_contexts)])
    acts[0, 3, 0] = 10.0
    cfg = SamplerConfig(
        window_size=6,
        window_left=2,
        n_top_explain=0,
        n_top_score=1,
        n_intervals=1,
        per_interval_explain=0,
        per_interval_score=1,
        n_random_score=1,
        n_nonactivating_score=0,
        interval_grid=16,
        explain_fraction=0.01,
    )
    interval_counts = np.zeros(n_contexts)
    random_counts = np.zeros(n_contexts)
    for seed in range(300):
        state = run_state(tokens, acts, cfg.model_copy(update={"seed": seed}), batch_size=7)
        for w in state.finish(tokens, decode)[0].windows:
            if w.split != "score":
                continue
            if w.group == "interval":
                interval_counts[w.context_id] += 1
            if w.group == "random":
                random_counts[w.context_id] += 1
    eligible = [c for c in range(1, n_contexts)]
    dof = len(eligible) - 1
    bound = dof + 5 * math.sqrt(2 * dof)
    assert interval_counts[0] == 0  # the top context is never drawn again
    assert chi_square(interval_counts[eligible]) < bound
    assert chi_square(random_counts) < n_contexts - 1 + 5 * math.sqrt(2 * (n_contexts - 1))


def test_state_does_not_grow_with_the_corpus():
    tokens, acts = synthetic(n_contexts=40)
    small = run_state(tokens, acts, CFG)
    big_tokens, big_acts = synthetic(n_contexts=80)
    big = run_state(big_tokens, big_acts, CFG)

    # Nothing scales with the corpus: not even a split table (splits are hashed per batch).
    assert big.state.nbytes() == small.state.nbytes()
    assert big.n_tokens == 2 * small.n_tokens


def test_many_doublings_in_one_batch_match_brute_force():
    """A feature that first fires weakly and later strongly (and at exact powers of two) needs many
    doublings at once: histogram, max and interval draws still match the brute-force grid."""
    tokens, acts = synthetic(n_contexts=64, F=3, seed=5, density=0.2)
    acts[:32] *= 1e-4  # early batches fire weakly, later ones up to 2^20 times stronger
    acts[40:, :, 1] *= 2.0**20
    acts[50, 4, 2] = 2.0**12  # an exact power of two as the max
    acts[:, 0] = 100.0
    state = run_state(tokens, acts, CFG)
    samples = state.finish(tokens, decode)
    body = acts[:, 1:]
    for f, sample in enumerate(samples):
        a, st = body[..., f], sample.stats
        assert st.max_activation == pytest.approx(float(a.max()))
        bound = 2.0 ** math.ceil(math.log2(float(a.max())))
        assert st.histogram_edges[-1] <= bound and st.histogram_edges[-1] >= st.max_activation
        cells = np.clip(np.ceil(a[a > 0].numpy() / bound * CFG.interval_grid) - 1, 0, None).astype(int)
        assert st.histogram_counts == np.bincount(cells, minlength=len(st.histogram_counts)).tolist()
        cell_ranges = state.interval_cells(f)
        drawn = [w for w in sample.windows if w.group == "interval"]
        assert drawn
        for w in drawn:
            lo, hi = cell_ranges[w.interval]
            peak = float(acts[w.context_id, 1:, f].max())
            assert st.histogram_edges[lo] < peak <= st.histogram_edges[hi] + 1e-6
            assert w.activations == window_close(acts[w.context_id, w.start : w.start + 8, f].tolist())
