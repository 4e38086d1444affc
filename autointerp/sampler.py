"""Stream a corpus through model + SAE and keep, per feature, top / interval / random / non-activating
windows and activation statistics, in state that is O(features x k) on the model's device.

This module drives a pass: it streams batches of contexts (its share of them when several ranks run,
see sampling_distributed.py), splits the features into passes that fit `max_state_gb` (sampler_memory.py:
within a batch the SAE is encoded and the state updated one block of features at a time), checkpoints
the state every `checkpoint_tokens` tokens and resumes from the checkpoint. The streaming update is
sampler_stream.py; the state, its hashes and its exact merge across shards are sampler_state.py;
records are built in sampler_results.py.

Shapes: B contexts per batch, L tokens per context, F tracked features, W tokens per window,
K top windows, G grid cells, M reservoir slots per cell.

Every random choice is a hash, not a generator stream: a 32-bit key from (seed, what is drawn, feature
id, context id). So a feature's windows and statistics depend only on the seed, the corpus and the
settings, never on which other features are in the run or on how the corpus is batched: two runs that
share a feature give it the same windows, and `compare` pairs like with like.

How each group is drawn (per split; a context's split is a hash of (seed, context id) alone, so
explanation and scoring windows never share a context):
- top: the K contexts with the highest peak activation (ties: the smaller context id); identical
  windows (same W tokens) count once, by the best of them.
- interval: equal-width intervals of (0, max']. A feature's positive peaks live on a grid of G cells
  over (0, bound], bound a power of two >= the running max; when the max outgrows the bound, the bound
  doubles and cell pairs merge, so nothing seen is lost. Each cell keeps the M contexts with the
  smallest keys (bottom-M sampling), a uniform sample of the contexts whose peak fell in that cell.
  Keys are distinct per feature (the hash is a bijection of the context id), so the kept set is the
  same whatever order the contexts come in, and the bottom M of a union is the bottom M of the parts'
  bottom Ms: shards of a corpus (one per GPU, say) merge exactly. At the end, cells 0..c_max (c_max
  the cell of the max) are split into n_intervals runs of equal length (to within one cell), so max'
  is the max rounded up to the grid (at most 2/G above it) and each interval is a union of whole
  cells: the smallest keys over an interval are a uniform draw from its contexts. A context already
  kept as a top window is skipped, which stays exact while a cell holds at most M - draws top contexts.
- random: the n_random score contexts with the smallest keys of (seed, context id), the same for every
  feature (a streaming bottom-R reservoir, so the corpus length need not be known), windows at a
  hashed offset, stored with their TRUE activations.
- non-activating: bottom-k sampling over contexts where the feature never fires, window at a hashed
  offset of the context.
- hard_negative (score split only): windows that hold the feature's target token where it never fires.
  The target is fixed before any score context is streamed, so the draw is order-free and mergeable: a
  pass streams every explanation-split context first, then takes for each feature the token at the peak
  of its best explanation window (peak desc, then the smaller context id; within a context the first
  position of its peak), the token the explainer sees at activation 10 (-1, no hard negatives, if the
  feature never fires in the explanation split); under several ranks, from the ranks' merged top-1
  (sampling_distributed.agree_hard_targets). Then, over the score-split contexts, it keeps the
  n_hard_negative_score contexts with the smallest keys of (seed, feature, context) among those where the
  feature never fires that contain the target at a valid position; the window is centred like a top window
  on the occurrence with the smallest key of (that key, position). The price of the order: the corpus is
  read (and tokenised) twice per pass, each context still goes through the model once.
Statistics (token count, firing count, max, mean when active, histogram on the same grid) count every
token except BOS and other special tokens, in both splits, each feature reduced on its own.
"""

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from autointerp import sampler_memory, sampling_distributed
from autointerp.config import SamplerConfig
from autointerp.hooks import hook_stop_layer
from autointerp.records import FeatureSample
from autointerp.reporting import Reporter
from autointerp.sampler_results import finish_records
from autointerp.sampler_state import (
    STATE_FORMAT,
    FeatureState,
    explain_best,
    from_tensors,
    split_of,
)
from autointerp.sampler_stream import Sampler, check_window

DEFAULT_CHECKPOINT_TOKENS = 1_000_000  # per rank: a kill loses at most this much streaming
# By default a checkpoint also waits until streaming has taken this many times the last save's duration:
# a wide pass's state (tens of GB for 1M features) then costs at most ~1/CHECKPOINT_SPACING of the time.
CHECKPOINT_SPACING = 10


class Contexts(Protocol):
    """A corpus of fixed-length contexts, streamed in batches with their GLOBAL context ids."""

    context_size: int

    def batches(self, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
        """(context ids [B] on the host, tokens [B, L]) for the contexts i with i % world == rank."""
        ...

    def tokens_of(self, context_ids: np.ndarray) -> np.ndarray:
        """Tokens [n, L] of the given context ids (for the windows' token ids at the end)."""
        ...

    def identity(self) -> str:
        """A string that changes with the corpus, so a checkpoint of another corpus is not resumed."""
        ...


class TensorContexts:
    """Contexts held in memory as one [N, L] tensor."""

    def __init__(self, tokens_NL: Tensor) -> None:
        self.tokens_NL, self.context_size = tokens_NL, tokens_NL.shape[1]

    def batches(self, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
        mine = torch.arange(rank, max(rank, len(self.tokens_NL)), world)  # a rank past the end gets none
        for start in range(0, len(mine), batch_size):
            ids = mine[start : start + batch_size]
            yield ids, self.tokens_NL[ids]

    def tokens_of(self, context_ids: np.ndarray) -> np.ndarray:
        return self.tokens_NL[torch.from_numpy(context_ids)].numpy()

    def identity(self) -> str:
        return hashlib.sha256(self.tokens_NL.numpy().tobytes()).hexdigest()[:16]


def iter_batches(tokens_NL: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    return TensorContexts(tokens_NL).batches(batch_size)


def split_batches(
    batches: Iterator[tuple[Tensor, Tensor]], split: int, cfg: SamplerConfig
) -> Iterator[tuple[Tensor, Tensor]]:
    """The contexts of one split (0 explain, 1 score; `split_of`) from `batches`, regrouped into full batches
    of `cfg.batch_size`, in stream order."""
    ids: list[Tensor] = []
    rows: list[Tensor] = []
    held = 0
    for context_ids_B, tokens_BL in batches:  # on the host: nothing here waits for a device
        keep = torch.from_numpy(np.flatnonzero((split_of(context_ids_B, cfg) == split).numpy()))
        ids.append(context_ids_B.index_select(0, keep))
        rows.append(tokens_BL.index_select(0, keep))
        held += len(keep)
        while held >= cfg.batch_size:
            all_ids, all_rows = torch.cat(ids), torch.cat(rows)
            yield all_ids[: cfg.batch_size], all_rows[: cfg.batch_size]
            ids, rows, held = [all_ids[cfg.batch_size :]], [all_rows[cfg.batch_size :]], held - cfg.batch_size
    if held:
        yield torch.cat(ids), torch.cat(rows)


def block_encoder(sae, x_ND: Tensor, blocks: list[Tensor], shape_BL: tuple[int, int]) -> Callable[[int, int], Tensor]:
    """`acts_of(lo, hi)` for `Sampler.update_blocks`: the activations [B, L, hi - lo] of the pass's features
    lo..hi-1, one encode matmul per block (blocks[lo // ENCODE_BLOCK], sampler_memory), made when asked, so
    only one block's activations are held and their bits do not depend on how many blocks a pass holds.
    An SAE whose features compete (topk), or one run through its own encode (api.ForeignSAE, no
    `architecture`), computes every activation anyway: one encode, sliced."""
    if len(blocks) > 1 and not getattr(getattr(sae, "architecture", None), "couples_features", True):
        block = len(blocks[0])
        return lambda lo, hi: sae.encode(x_ND, features=blocks[lo // block]).view(*shape_BL, hi - lo)
    index = blocks[0] if len(blocks) == 1 else torch.cat(blocks)
    acts_BLF = sae.encode(x_ND, features=index).view(*shape_BL, len(index))
    return lambda lo, hi: acts_BLF[..., lo:hi]


@torch.no_grad()
def hook_activations(model, tokens_BL: Tensor, hook_name: str) -> Tensor:
    """The model's activation at `hook_name` [B, L, D], stopping the forward pass right after it."""
    _, cache = model.run_with_cache(tokens_BL, names_filter=hook_name, stop_at_layer=hook_stop_layer(hook_name))
    activation = cache[hook_name]
    return activation.flatten(2) if activation.ndim == 4 else activation  # hook_z: [B, L, H, d_head]


# ---- checkpoints ---------------------------------------------------------------------------------


class Checkpoints:
    """One file per (pass, rank) in `folder`: the state after this rank's first `contexts_done`
    contexts, counted in the order a pass streams them (explanation split, then score split). Files from
    other settings (features, sampler settings, world size, state format) are ignored."""

    def __init__(self, folder: Path | None, cfg: SamplerConfig, rank: int, world: int, extra: str = "") -> None:
        self.folder, self.rank, self.world = folder, rank, world
        settings = cfg.model_dump(exclude={"batch_size", "checkpoint_tokens", "max_state_gb"})
        settings["state_format"] = STATE_FORMAT
        self.digest = hashlib.sha256((json.dumps(settings, sort_keys=True) + extra).encode()).hexdigest()[:16]

    def path(self, pass_index: int) -> Path | None:
        if self.folder is None:
            return None
        return self.folder / f"pass{pass_index:03d}-rank{self.rank:03d}-of{self.world:03d}.pt"

    def load(self, pass_index: int, features: list[int]) -> tuple[FeatureState, int] | None:
        path = self.path(pass_index)
        if path is None or not path.is_file():
            return None
        data = torch.load(path, map_location="cpu", weights_only=True)
        if data["digest"] != self.digest or data["features"] != features:
            return None
        return from_tensors(features, data["tensors"]), int(data["contexts_done"])

    def save(self, pass_index: int, state: FeatureState, contexts_done: int) -> None:
        path = self.path(pass_index)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu() for k, v in state.tensors().items()}
        data = {"digest": self.digest, "features": state.features, "contexts_done": contexts_done, "tensors": tensors}
        tmp = path.with_suffix(".tmp")
        torch.save(data, tmp)
        os.replace(tmp, path)  # a kill mid-write leaves the previous checkpoint whole

    def clear(self, n_passes: int) -> None:
        for p in range(n_passes):
            path = self.path(p)
            if path is not None:
                path.unlink(missing_ok=True)
        # Ranks share the folder: another rank may remove it, or add its file, at any point in between.
        with contextlib.suppress(OSError):
            if self.folder is not None and not any(self.folder.iterdir()):
                self.folder.rmdir()


# ---- a pass ----------------------------------------------------------------------------------------


@torch.no_grad()
def run_pass(
    model,
    sae,
    contexts: Contexts,
    features: list[int],
    cfg: SamplerConfig,
    special_ids: list[int],
    first_position: int,
    progress: Callable[[int, float], None] | None = None,
    checkpoints: Checkpoints | None = None,
    pass_index: int = 0,
    rank: int = 0,
    world: int = 1,
    sync_free: bool | None = None,
) -> FeatureState:
    """Stream this rank's share of `contexts` and return its state for `features` (resuming from a
    checkpoint when one matches): first its explanation-split contexts, then, once the hard-negative
    targets are fixed (agreed by every rank), its score-split ones. The loop reads nothing back to the
    host per batch: activations, masks and reservoirs stay on the device (see sampler_stream.Sampler.update)."""
    device = sae.device
    resumed = checkpoints.load(pass_index, features) if checkpoints else None
    state, done = resumed if resumed else (None, 0)
    sampler = Sampler(features, contexts.context_size, cfg, first_position, device, state, sync_free)
    feature_idx = torch.tensor(features, device=device)
    blocks = list(feature_idx.split(sampler_memory.ENCODE_BLOCK))
    special = torch.tensor(special_ids or [-1], device=model.cfg.device)
    started, seen, since_checkpoint = time.perf_counter(), 0, 0
    every = cfg.checkpoint_tokens or DEFAULT_CHECKPOINT_TOKENS
    last_save_s, saved_at = 0.0, started  # an explicit --checkpoint-tokens is kept to the token
    for split in (0, 1):
        if split == 1:  # every rank, resumed or not: the agreement is collective
            sampler.fix_hard_targets(sampling_distributed.agree_hard_targets(*explain_best(sampler.state)))
        for context_ids_B, tokens_BL in split_batches(contexts.batches(cfg.batch_size, rank, world), split, cfg):
            skip = min(max(done - seen, 0), len(context_ids_B))
            seen += len(context_ids_B)
            if skip == len(context_ids_B):  # streamed before the checkpoint
                if progress:
                    progress(tokens_BL.numel(), time.perf_counter() - started)
                continue
            context_ids_B, tokens_BL = context_ids_B[skip:], tokens_BL[skip:]
            if torch.device(model.cfg.device).type == "cuda":  # pinned: the copy overlaps the device's work
                tokens_BL = tokens_BL.pin_memory()
            tokens_BL = tokens_BL.to(model.cfg.device, non_blocking=True)
            resid_BLD = hook_activations(model, tokens_BL, sae.cfg.hook_name)
            acts_of = block_encoder(sae, resid_BLD.flatten(0, 1), blocks, tuple(tokens_BL.shape))
            valid_BL = ~torch.isin(tokens_BL, special)
            valid_BL[:, :first_position] = False
            # One block of features at a time: its activations and batch work, never the whole pass's.
            sampler.update_blocks(acts_of, len(blocks[0]), tokens_BL, context_ids_B, valid_BL.to(device))  # ids on host
            since_checkpoint += tokens_BL.numel()
            spaced = cfg.checkpoint_tokens or time.perf_counter() - saved_at >= CHECKPOINT_SPACING * last_save_s
            if checkpoints and since_checkpoint >= every and spaced:
                t0 = time.perf_counter()
                checkpoints.save(pass_index, sampler.state, seen)
                saved_at = time.perf_counter()
                last_save_s, since_checkpoint = saved_at - t0, 0
            if progress:
                progress(tokens_BL.numel(), time.perf_counter() - started)
    if checkpoints:
        checkpoints.save(pass_index, sampler.state, seen)  # a finished pass is not streamed again
    if hasattr(sae, "release_subsets"):  # this pass's sliced encoder weights: not held during the next pass
        sae.release_subsets()
    return sampler.state


def sample_passes(
    model,
    sae,
    tokens_NL: "Tensor | Contexts",
    features: list[int],
    cfg: SamplerConfig,
    special_ids: list[int],
    first_position: int,
    progress: Callable[[int, float], None] | None = None,
    decode: Callable[[list[int]], list[str]] | None = None,
    reporter: Reporter | None = None,
    checkpoint_dir: Path | None = None,
    done: Callable[[list[int]], bool] | None = None,
    keep_finished: bool = False,
) -> Iterator[tuple[int, int, list[FeatureSample]]]:
    """`sample_features` one pass at a time: yields (pass index, number of passes, that pass's records) as
    each pass finishes, so the caller can store a pass and drop it before the next one streams; neither side
    then holds more than one pass of records (a 1M-feature SAE's records never sit in memory together), and
    a kill loses at most the pass in flight. Under torch.distributed rank 0 yields the records after the
    exact merge; the other ranks yield [] for the same passes.

    `done(pass_features)`, asked on rank 0 before the first pass: True for a pass the caller already holds
    (stored by an earlier, killed run); it is neither streamed nor yielded. Rank 0's plan and answers go to
    every rank (broadcast), since each pass ends in a collective merge that all ranks must join: on a GPU the
    plan depends on the memory free there, and only rank 0 sees the store.

    With `checkpoint_dir`, a pass's checkpoint files go once the caller asks for the next pass (it has
    stored what it was given by then), unless `keep_finished`; the rest go at the end."""
    contexts = TensorContexts(tokens_NL) if isinstance(tokens_NL, Tensor) else tokens_NL
    check_window(contexts.context_size, first_position, cfg)
    rank, world = sampling_distributed.rank_and_world()
    passes, sentence = sampler_memory.plan_passes(features, cfg, contexts.context_size, sae.device, sae)
    if reporter and rank == 0:
        reporter.note(sentence)
    skip = [bool(done(p)) for p in passes] if done is not None and rank == 0 else [False] * len(passes)
    if world > 1:
        box = [(passes, skip)]
        torch.distributed.broadcast_object_list(box, src=0)
        passes, skip = box[0]
    extra = f"{first_position}:{contexts.context_size}:{contexts.identity()}"
    checkpoints = Checkpoints(checkpoint_dir, cfg, rank, world, extra) if checkpoint_dir else None
    decode = decode or token_decoder(model.tokenizer)
    t0 = time.perf_counter()
    overall = (lambda n, _seconds: progress(n, time.perf_counter() - t0)) if progress else None
    for p, pass_features in enumerate(passes):
        if skip[p]:
            continue
        state = run_pass(
            model, sae, contexts, pass_features, cfg, special_ids, first_position, overall, checkpoints, p, rank, world
        )
        with torch.no_grad():  # not a decorator: torch's generator wrapper holds the last yield (a pass's records)
            if world > 1:
                state = sampling_distributed.gather_and_merge(state, cfg)
            records = [] if state is None else finish_records(state, cfg, cfg.window_size, contexts.tokens_of, decode)
        del state  # not held (on the device) while the next pass's state grows
        yield p, len(passes), records
        del records  # the caller has them: held here they would double the records in memory
        path = checkpoints.path(p) if checkpoints and not keep_finished else None
        if path is not None:
            # The caller stored the pass before asking for the next. (On another rank this may run before
            # rank 0 stored it; a kill in between only costs that rank this pass's streaming again.)
            path.unlink(missing_ok=True)
    if checkpoints:
        sampling_distributed.barrier()  # every rank is past its last pass before files go
        checkpoints.clear(len(passes))


@torch.no_grad()
def sample_features(
    model,
    sae,
    tokens_NL: "Tensor | Contexts",
    features: list[int],
    cfg: SamplerConfig,
    special_ids: list[int],
    first_position: int,
    progress: Callable[[int, float], None] | None = None,
    decode: Callable[[list[int]], list[str]] | None = None,
    reporter: Reporter | None = None,
    checkpoint_dir: Path | None = None,
) -> list[FeatureSample]:
    """Stream the corpus through `model` to the SAE's hook and sample windows for `features`: every pass of
    `sample_passes`, concatenated (in memory at once; `sample_passes` lets a caller store pass by pass).

    `tokens_NL`: contexts [N, L] in memory, or a `Contexts` stream (corpus.StreamedContexts).
    Features are split into passes by `cfg.max_state_gb` (the estimate goes to `reporter` first).
    Under torch.distributed (torchrun) each rank streams its share and rank 0 returns every feature's
    records after an exact merge; other ranks return []. `progress(tokens_done_in_batch, seconds)`
    is called after every batch of every pass. With `checkpoint_dir`, the state is saved every
    `cfg.checkpoint_tokens` tokens and a rerun resumes from it; the files are removed at the end."""
    # keep_finished: the records of finished passes live only in this call, so their checkpoints resume them.
    args = (model, sae, tokens_NL, features, cfg, special_ids, first_position, progress, decode, reporter)
    passes = sample_passes(*args, checkpoint_dir, keep_finished=True)
    return [record for _, _, records in passes for record in records]


def token_decoder(tokenizer) -> Callable[[list[int]], list[str]]:
    cache: dict[int, str] = {}

    def decode(ids: list[int]) -> list[str]:
        missing = [i for i in set(ids) if i not in cache]
        for i, text in zip(missing, tokenizer.batch_decode([[i] for i in missing])):
            cache[i] = text
        return [cache[i] for i in ids]

    return decode
