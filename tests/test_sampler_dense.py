"""The sync-free (dense) sampler steps used on GPUs: the same state as the CPU's sparse steps, and none
of the operations that make a CUDA host wait for the device, checked on the CPU by recording every
aten operation the update dispatches."""

import pytest
import torch
from test_sampler import CFG, decode, stream_contexts, synthetic
from test_sampler_merge import doubling_data
from torch.utils._python_dispatch import TorchDispatchMode

from autointerp.sampler import iter_batches, split_batches
from autointerp.sampler_state import explain_best, hard_targets
from autointerp.sampler_stream import Sampler

# aten operations that copy a value or a data-dependent shape back to the host on CUDA.
SYNCING = {
    "nonzero",
    "nonzero_static",
    "unique",
    "_unique",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
    "_local_scalar_dense",
    "masked_select",
    "is_nonzero",
    "equal",
}


class OpRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []
        self.bool_indexing = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.ops.append(name)
        if name in ("index", "index_put", "index_put_"):  # a boolean mask as index is a nonzero
            indices = args[1] if len(args) > 1 else []
            self.bool_indexing += sum(1 for i in indices if i is not None and i.dtype == torch.bool)
        if name == "repeat_interleave" and (kwargs or {}).get("output_size") is None and len(args) < 4:
            self.ops.append("repeat_interleave_without_output_size")
        return func(*args, **(kwargs or {}))


def run(tokens, acts, cfg, sync_free, batch_size=8):
    sampler = Sampler(list(range(acts.shape[-1])), tokens.shape[1], cfg, first_position=1, sync_free=sync_free)
    return stream_contexts(sampler, tokens, acts, torch.arange(len(tokens)), batch_size)


def phase_batches(sampler, tokens, batch_size):
    """run_pass's order: the explanation contexts' batches, the targets fixed, the score contexts' batches."""
    for split in (0, 1):
        if split == 1:
            sampler.fix_hard_targets(hard_targets(*(t[None] for t in explain_best(sampler.state))))
        yield from split_batches(iter_batches(tokens, batch_size), split, sampler.cfg)


@pytest.mark.parametrize("data", ["doublings", "low_vocab"])
def test_dense_steps_give_the_sparse_steps_state(data):
    if data == "doublings":
        tokens, acts = doubling_data()
    else:  # target tokens recur in silent contexts: hard negatives are drawn
        tokens, acts = synthetic(n_contexts=120, seed=1, density=0.03)
        tokens[:, 1:] = tokens[:, 1:] % 12 + 3
    cfg = CFG.model_copy(update={"n_hard_negative_score": 4})
    sparse, dense = run(tokens, acts, cfg, False), run(tokens, acts, cfg, True)
    for name, t in sparse.state.tensors().items():
        assert torch.equal(t, dense.state.tensors()[name]), name
    records = sparse.finish(tokens, decode)
    assert records == dense.finish(tokens, decode)
    assert any(w.group == "hard_negative" for s in records for w in s.windows) or data == "doublings"


def test_the_dense_update_never_waits_for_the_device():
    tokens, acts = doubling_data()  # grids double mid-stream
    sampler = Sampler(list(range(acts.shape[-1])), tokens.shape[1], CFG, first_position=1, sync_free=True)
    recorders = []
    for ids, toks in phase_batches(sampler, tokens, 8):
        valid = toks != 1
        with OpRecorder() as rec:
            sampler.update(acts[ids], toks, ids, valid)
        recorders.append(rec)
    ops = {op for r in recorders for op in r.ops}
    assert "scatter_add" in ops or "scatter_add_" in ops  # the recorder sees the update's operations
    assert not ops & SYNCING, ops & SYNCING
    assert "repeat_interleave_without_output_size" not in ops
    assert sum(r.bool_indexing for r in recorders) == 0
    # The sparse CPU path does use them: the recorder can tell.
    sparse = Sampler(list(range(acts.shape[-1])), tokens.shape[1], CFG, first_position=1, sync_free=False)
    with OpRecorder() as rec:
        for ids, toks in phase_batches(sparse, tokens, 8):
            sparse.update(acts[ids], toks, ids, toks != 1)
    assert set(rec.ops) & SYNCING


@pytest.mark.parametrize("architecture,block", [("topk", 4096), ("jumprelu", 4096), ("jumprelu", 2)])
def test_the_whole_sampling_loop_never_waits_for_the_device_per_batch(tiny_model, architecture, block, monkeypatch):
    """Forward pass, SAE encode and sampler update, as run_pass drives them (also in blocks of 2 features:
    the pass's features folded block by block): operations that wait for the device occur as often over
    2 batches as over 12 (the SAE checks each block's feature list once per pass), so none happens per batch."""
    from test_sampler import sparse_sae, text_tokens

    import autointerp.sampler_memory
    from autointerp.sampler import TensorContexts, run_pass

    monkeypatch.setattr(autointerp.sampler_memory, "ENCODE_BLOCK", block)
    n_blocks = -(-3 // block)

    sae = sparse_sae(architecture)
    contexts = TensorContexts(text_tokens(24, 32))
    waits = []
    for batch_size in (12, 2):
        with OpRecorder() as rec:
            cfg = CFG.model_copy(update={"batch_size": batch_size})
            state = run_pass(tiny_model, sae, contexts, [1, 4, 9], cfg, [1], 1, sync_free=True)
        assert int(state.n_tokens) == 24 * 31
        assert "scatter_add" in set(rec.ops) or "scatter_add_" in set(rec.ops)
        assert rec.bool_indexing == 0
        waits.append(sorted(op for op in rec.ops if op in SYNCING))
    assert waits[0] == waits[1] and len(waits[0]) <= 2 * n_blocks, waits
