"""Sampling past one pass: features split by --max-state-gb, float16 window storage that leaves the
quantised levels alone, checkpoints that resume a killed pass, and bf16 end to end."""

import numpy as np
import pytest
from test_sampler import CFG, decode, run_state, sparse_sae, synthetic, text_tokens

from autointerp.errors import InputError
from autointerp.reporting import Reporter
from autointerp.sampler import sample_features
from autointerp.sampler_memory import GB, bytes_per_feature, plan_passes, sae_bytes
from autointerp.scoring.quantise import quantise

FEATURES = [1, 4, 9, 12, 30]
MODEL_CFG = CFG.model_copy(update={"batch_size": 4, "n_random_score": 4})


class NoteTaker(Reporter):
    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)


def limit_for(n_features: float, sae, cfg=MODEL_CFG, context_size=32) -> float:
    """--max-state-gb that holds n_features (fewer than a block): their state, encoder columns and batch work."""
    state, work = bytes_per_feature(cfg, context_size)
    columns, fixed = sae_bytes(sae, cfg, context_size)
    return (n_features * (state + columns + work) + fixed) / GB


def run(model, cfg, **kwargs):
    samples = sample_features(
        model, sparse_sae("topk"), text_tokens(24, 32), FEATURES, cfg, [1], 1, decode=decode, **kwargs
    )
    return [s.model_dump() for s in samples]


def test_features_split_into_passes_give_the_one_pass_records(tiny_model):
    state, work = bytes_per_feature(MODEL_CFG, 32)
    two_per_pass = MODEL_CFG.model_copy(update={"max_state_gb": limit_for(2.5, sparse_sae("topk"))})
    assert [len(p) for p in plan_passes(FEATURES, two_per_pass, 32, sae=sparse_sae("topk"))[0]] == [2, 2, 1]
    reporter = NoteTaker()
    assert run(tiny_model, two_per_pass, reporter=reporter) == run(tiny_model, MODEL_CFG)
    assert "3 pass(es) of up to 2 features" in reporter.notes[0]
    assert f"{state / 1024:,.1f} KB state" in reporter.notes[0]


def test_passes_of_whole_encode_blocks_give_the_one_pass_activations_bit_for_bit(tiny_model, monkeypatch):
    """A matmul's rounding depends on its width (here 2 or 5 columns round unlike 16+), so the encode runs
    in fixed blocks and passes hold whole blocks: a jumprelu SAE's activations, statistics and windows
    from 3 passes equal one pass's exactly (without the blocks, 9-feature passes differ here: measured)."""
    import autointerp.sampler_memory as sampler_memory

    monkeypatch.setattr(sampler_memory, "ENCODE_BLOCK", 4)
    features = list(range(0, 64, 3))  # 22 features: blocks of 4, the last of 2
    state, work = bytes_per_feature(MODEL_CFG, 32)
    # 9 features' state and one block's batch work: 9 fit, cut to whole blocks of 4.
    limited = MODEL_CFG.model_copy(update={"max_state_gb": (9.5 * state + 4 * work) / GB})
    assert [len(p) for p in plan_passes(features, limited, 32)[0]] == [8, 8, 6]

    def records(cfg):
        sae = sparse_sae("jumprelu")
        samples = sample_features(tiny_model, sae, text_tokens(24, 32), features, cfg, [1], 1, decode=decode)
        return [s.model_dump() for s in samples]

    one, passes = records(MODEL_CFG), records(limited)
    assert sum(s["stats"]["n_active"] for s in one) > 20  # features fire: activations are compared
    assert passes == one


def test_a_limit_below_one_feature_is_a_clear_error(tiny_model):
    cfg = MODEL_CFG.model_copy(update={"max_state_gb": 1e-6})
    with pytest.raises(InputError, match=r"--max-state-gb: found 1e-06; expected at least 0\.0000"):
        run(tiny_model, cfg)


def test_state_bytes_per_feature_halved_by_float16_windows():
    """The per-feature state against the float32 layout it replaced (83,652 bytes at the defaults)."""
    from autointerp.config import SamplerConfig

    state, _ = bytes_per_feature(SamplerConfig(), 128)
    assert state < 0.55 * 83_652


def test_float16_windows_keep_the_quantised_levels():
    """Windows are stored as float16 ratios to their float32 peak. The 0..10 levels the explainer and
    the simulation scorer see can only move where 10 a / max sits within 2^-11 (relative) of a level
    boundary: everywhere else every level matches, under both rules."""
    tokens, acts = synthetic(n_contexts=120, F=6, density=0.3)
    samples = run_state(tokens, acts, CFG).finish(tokens, decode)
    n_compared, n_near = 0, 0
    for f, sample in enumerate(samples):
        top_max = sample.stats.max_activation
        for w in sample.windows:
            if w.group not in ("top", "interval"):
                continue
            true = acts[w.context_id, w.start : w.start + CFG.window_size, f].numpy().astype(np.float64)
            stored = np.asarray(w.activations)
            level = 10 * true / top_max
            near = (true > 0) & (np.abs(level - np.round(level)) < 1e-3 * np.maximum(level, 1))
            for rule in ("floor", "ceil"):
                same = quantise(stored, top_max, rule) == quantise(true, top_max, rule)
                assert same[~near].all()
            n_compared += len(true)
            n_near += int(near.sum())
            assert np.abs(stored - true).max() <= true.max() * 2**-11
            assert (stored > 0).tolist() == (true > 0).tolist()  # a firing token never rounds to silent
    assert n_compared > 500 and n_near < n_compared / 20


def test_a_killed_pass_resumes_from_its_checkpoint(tiny_model, tmp_path):
    sae = sparse_sae("topk")
    tokens = text_tokens(24, 32)
    cfg = MODEL_CFG.model_copy(update={"checkpoint_tokens": 2 * 4 * 32})  # every 2 batches
    uninterrupted = [
        s.model_dump() for s in sample_features(tiny_model, sae, tokens, FEATURES, cfg, [1], 1, decode=decode)
    ]

    calls = {"n": 0}
    encode = sae.encode

    def counted(*args, **kwargs):
        calls["n"] += 1
        return encode(*args, **kwargs)

    sae.encode = counted

    def killed_after_five_batches(n, seconds):
        if calls["n"] == 5:
            raise KeyboardInterrupt

    folder = tmp_path / "sampling"
    with pytest.raises(KeyboardInterrupt):
        sample_features(
            tiny_model, sae, tokens, FEATURES, cfg, [1], 1, killed_after_five_batches, decode, checkpoint_dir=folder
        )
    assert len(list(folder.glob("*.pt"))) == 1
    calls["n"] = 0
    resumed = sample_features(tiny_model, sae, tokens, FEATURES, cfg, [1], 1, decode=decode, checkpoint_dir=folder)
    assert [s.model_dump() for s in resumed] == uninterrupted
    assert calls["n"] == 6 - 4  # 6 batches in all; the checkpoint after batch 4 skips 4 of them
    assert not folder.exists()  # checkpoints go once the pass is done


def test_default_checkpoints_wait_for_ten_times_their_own_duration(tiny_model, tmp_path, monkeypatch):
    """By default a checkpoint is also spaced by CHECKPOINT_SPACING x the last save's duration (a 1M-feature
    state is tens of GB to write); an explicit --checkpoint-tokens is kept to the token."""
    import autointerp.sampler as sampler

    saves = []
    save = sampler.Checkpoints.save
    monkeypatch.setattr(sampler.Checkpoints, "save", lambda self, *a: saves.append(a[2]) or save(self, *a))
    monkeypatch.setattr(sampler, "DEFAULT_CHECKPOINT_TOKENS", 4 * 32)  # due after every batch
    tokens, sae = text_tokens(24, 32), sparse_sae("topk")

    def n_saves(cfg, spacing):
        monkeypatch.setattr(sampler, "CHECKPOINT_SPACING", spacing)
        saves.clear()
        sample_features(tiny_model, sae, tokens, FEATURES, cfg, [1], 1, decode=decode, checkpoint_dir=tmp_path / "c")
        return len(saves)

    every_batch = n_saves(MODEL_CFG, 0)
    assert every_batch >= 6  # one per batch and one at the end
    assert n_saves(MODEL_CFG, 1e9) == 2  # the first, then none until the pass ends
    assert n_saves(MODEL_CFG.model_copy(update={"checkpoint_tokens": 4 * 32}), 1e9) == every_batch


def test_a_checkpoint_from_other_settings_is_not_used(tiny_model, tmp_path):
    folder = tmp_path / "sampling"
    cfg = MODEL_CFG.model_copy(update={"checkpoint_tokens": 128})

    def stop(n, seconds):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tiny_model, cfg, progress=stop, checkpoint_dir=folder)
    other_seed = cfg.model_copy(update={"seed": 11})
    assert run(tiny_model, other_seed, checkpoint_dir=folder) == run(tiny_model, other_seed)


@pytest.mark.slow
def test_bfloat16_end_to_end_with_the_demo_sae(tmp_path, capsys):
    """`autointerp sample --dtype bfloat16` with the demo SAE and SmolLM2 on CPU: the stored samples
    are finite, windows hold positive activations where the feature fires, and statistics add up."""
    from autointerp.cli import main
    from autointerp.store import RunStore

    code = main(
        ["sample", "--sae", "demo", "--dtype", "bfloat16", "--device", "cpu", "--n-tokens", "1024",
         "--context-size", "64", "--features", "1,2,3,4", "--run-dir", str(tmp_path / "run")]
    )  # fmt: skip
    assert code == 0
    store = RunStore.open(tmp_path / "run", create=False)
    samples = store.load_samples(store.latest_run_id())
    assert len(samples) == 4
    assert "Sampler memory" in capsys.readouterr().out
    fired = [s for s in samples if s.stats.n_active > 0]
    assert fired
    for s in fired:
        assert 0 < s.stats.max_activation < float("inf")
        tops = [w for w in s.windows if w.group == "top"]
        assert tops and max(max(w.activations) for w in tops) == pytest.approx(s.stats.max_activation)
        assert sum(s.stats.histogram_counts) == s.stats.n_active


def test_a_streamed_corpus_samples_like_the_same_corpus_in_memory(tiny_model, tmp_path):
    """StreamedContexts (documents read and tokenised while sampling, windows' tokens read back at the
    end) gives the records of the tokenised tensor, in one pass and in several."""
    from types import SimpleNamespace

    from autointerp import sampler
    from autointerp.corpus import CorpusSpec, StreamedContexts, tokenise_corpus

    class ByteTokenizer:
        bos_token_id, eos_token_id = 1, 2

        def __call__(self, text, add_special_tokens=False):
            return SimpleNamespace(input_ids=[3 + b % 250 for b in text.encode()])

    folder = tmp_path / "docs"
    folder.mkdir()
    prose = sampler.__doc__.split("\n\n")
    for i, paragraph in enumerate(prose):
        (folder / f"{i:02d}.txt").write_text(paragraph)
    spec = CorpusSpec(source=str(folder))
    tokens = tokenise_corpus(spec, ByteTokenizer(), 32, max_tokens=900)
    stream = StreamedContexts(spec, ByteTokenizer(), 32, max_tokens=900)
    sae = sparse_sae("topk")
    for cfg in (
        MODEL_CFG,
        MODEL_CFG.model_copy(update={"max_state_gb": limit_for(2.5, sae)}),
    ):
        in_memory = sample_features(tiny_model, sae, tokens, FEATURES, cfg, [1, 2], 1, decode=decode)
        streamed = sample_features(tiny_model, sae, stream, FEATURES, cfg, [1, 2], 1, decode=decode)
        assert [s.model_dump() for s in streamed] == [s.model_dump() for s in in_memory]
    assert sum(len(s.windows) for s in in_memory) > 20


@pytest.mark.parametrize("sync_free", [False, True])
def test_features_folded_in_blocks_give_the_one_block_state_bit_for_bit(sync_free):
    """`update_blocks` folds a batch in a block of features at a time (what keeps a wide pass's batch work to
    one block); every tensor of the state equals the one-block state's, hard negatives and grid doublings
    included."""
    import torch
    from test_sampler_merge import HARD, doubling_data

    from autointerp.sampler import iter_batches, split_batches
    from autointerp.sampler_state import explain_best, hard_targets
    from autointerp.sampler_stream import Sampler

    tokens, acts = doubling_data()  # 4 features, grids doubling mid-stream

    def state(block):
        sampler = Sampler(list(range(4)), tokens.shape[1], HARD, first_position=1, sync_free=sync_free)
        for split in (0, 1):
            if split == 1:
                sampler.fix_hard_targets(hard_targets(*(t[None] for t in explain_best(sampler.state))))
            for ids, toks in split_batches(iter_batches(tokens, 7), split, HARD.model_copy(update={"batch_size": 7})):
                calls = []

                def acts_of(lo, hi, ids=ids, calls=calls):
                    calls.append((lo, hi))
                    return acts[ids][..., lo:hi]

                sampler.update_blocks(acts_of, block, toks, ids, toks != 1)
                assert calls == [(lo, min(lo + block, 4)) for lo in range(0, 4, block)]
        return sampler.state.tensors()

    whole = state(4)
    assert int(whole["n_tokens"]) > 0 and bool((whole["score.hard_key_FH"] < (1 << 32)).any())
    for block in (1, 3):
        for name, t in state(block).items():
            assert torch.equal(t, whole[name]), (block, name)


def test_clearing_checkpoints_tolerates_another_rank_removing_the_folder(tmp_path, monkeypatch):
    """Ranks share the checkpoint folder: one may remove it while another looks inside (seen in CI)."""
    from pathlib import Path

    from autointerp.sampler import Checkpoints

    folder = tmp_path / "sampling"
    folder.mkdir()
    (folder / "pass000-rank001-of002.pt").write_bytes(b"")
    checkpoints = Checkpoints(folder, MODEL_CFG, rank=1, world=2)

    def vanished(self):
        raise FileNotFoundError(2, "No such file or directory", str(self))

    monkeypatch.setattr(Path, "iterdir", vanished)
    checkpoints.clear(1)  # must not raise
    assert not (folder / "pass000-rank001-of002.pt").exists()
