"""Stream a corpus through model + SAE and keep, per feature, top / interval / random / non-activating
windows and activation statistics, in state that is O(features x k) on the model's device.

This module drives a pass: it streams batches of contexts (its share of them when several ranks run,
see sampling_distributed.py), splits the features into passes that fit `max_state_gb`, checkpoints
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
- hard_negative (score split only): windows that hold the feature's strongest token where it does not
  fire. The top tokens are only known at the end, so the rule is two-stage and says so: the sampler
  follows the token id t at the feature's running max (a context sets a new max only if its peak is
  strictly above every earlier one, so the first context wins a tie; within a context the first
  position of its peak). Each time t changes, the reservoir restarts. It keeps, among the contexts
  streamed since t last changed where the feature never fires, the n_hard_negative_score with the
  smallest keys of (seed, feature, context) that contain t at a valid position; the window is centred
  like a top window on the occurrence with the smallest key of (that key, position). So every window
  contains t = the token of the final max and has zero activation throughout; contexts streamed
  before t was last established are not eligible (an early max token gets the whole corpus, a late
  one only its tail). Unlike the other reservoirs this depends on the order of contexts (not on the
  batching): shards of a corpus do not merge exactly here.
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

from autointerp import sampling_distributed
from autointerp.config import SamplerConfig
from autointerp.errors import InputError, expected
from autointerp.hooks import hook_stop_layer
from autointerp.records import FeatureSample
from autointerp.reporting import Reporter
from autointerp.sampler_results import finish_records
from autointerp.sampler_state import FeatureState, from_tensors, state_bytes_per_feature
from autointerp.sampler_stream import Sampler, check_window

GB = 1 << 30
DEFAULT_CHECKPOINT_TOKENS = 1_000_000  # per rank: a kill loses at most this much streaming


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


@torch.no_grad()
def hook_activations(model, tokens_BL: Tensor, hook_name: str) -> Tensor:
    """The model's activation at `hook_name` [B, L, D], stopping the forward pass right after it."""
    _, cache = model.run_with_cache(tokens_BL, names_filter=hook_name, stop_at_layer=hook_stop_layer(hook_name))
    activation = cache[hook_name]
    return activation.flatten(2) if activation.ndim == 4 else activation  # hook_z: [B, L, H, d_head]


# ---- memory: features per pass ----------------------------------------------------------------------


def bytes_per_feature(cfg: SamplerConfig, context_size: int, sync_free: bool = False) -> tuple[int, int]:
    """(state bytes, per-batch working bytes) one tracked feature costs on the sampler's device.
    Working memory is an estimate: the encoded activations and their masked copy (float32 [B, L]),
    candidate windows and ratios [B, W], and the top-window comparison [(K + B)^2] of bools; the
    sync-free (GPU) steps add dense [B, L] histogram indices and hard-negative keys (int64) and a
    [G, B] block of cell keys."""
    B, L, W = cfg.batch_size, context_size, cfg.window_size
    K = max(cfg.n_top_explain, cfg.n_top_score)
    work = B * L * 13 + B * W * 10 + (K + B) ** 2 * 2 + B * 80
    if sync_free:
        work += B * L * 32 + cfg.interval_grid * B * 8
    return state_bytes_per_feature(cfg), work


def _size(n: float) -> str:
    return f"{n / GB:,.2f} GiB" if n >= GB / 10 else f"{n / (1 << 20):,.1f} MiB"


def plan_passes(
    features: list[int], cfg: SamplerConfig, context_size: int, device: str | torch.device = "cpu"
) -> tuple[list[list[int]], str]:
    """Features split into passes whose state fits `cfg.max_state_gb` on `device`, and a sentence
    saying so. Off the CPU the sampler's steps are the sync-free ones, which need more batch memory."""
    state, work = bytes_per_feature(cfg, context_size, sync_free=torch.device(device).type != "cpu")
    per = state + work
    total = per * len(features)
    sentence = (
        f"Sampler memory: ~{per / 1024:,.1f} KB per feature ({state / 1024:,.1f} KB state + {work / 1024:,.1f} KB "
        f"per batch), {_size(total)} for {len(features):,} features"
    )
    limit_gb, source = cfg.max_state_gb, "--max-state-gb"
    if limit_gb is None and torch.device(device).type == "cuda":
        # Nothing set on a GPU: 80 % of what is free now, so a 1M-feature SAE runs in passes, not out of memory.
        limit_gb, source = 0.8 * torch.cuda.mem_get_info(torch.device(device))[0] / GB, "80 % of free GPU memory"
    if limit_gb is None:
        return [list(features)], sentence + "."
    fit = int(limit_gb * GB // per)
    if fit < 1:
        raise InputError(
            expected(
                source,
                f"{limit_gb:g}",
                f"at least {per / GB:.6f} GB, what one feature's state and batch work take "
                f"(window {cfg.window_size}, batch {cfg.batch_size}, grid {cfg.interval_grid})",
                "Raise --max-state-gb or lower --batch-size.",
            )
        )
    passes = [features[i : i + fit] for i in range(0, len(features), fit)]
    return passes, sentence + (
        f"; {source} {limit_gb:g} GiB: {len(passes)} pass(es) of up to {fit:,} features"
        + (" (each pass streams the corpus again)." if len(passes) > 1 else ".")
    )


# ---- checkpoints ---------------------------------------------------------------------------------


class Checkpoints:
    """One file per (pass, rank) in `folder`: the state after this rank's first `contexts_done`
    contexts. Files from other settings (features, sampler settings, world size) are ignored."""

    def __init__(self, folder: Path | None, cfg: SamplerConfig, rank: int, world: int, extra: str = "") -> None:
        self.folder, self.rank, self.world = folder, rank, world
        settings = cfg.model_dump(exclude={"batch_size", "checkpoint_tokens", "max_state_gb"})
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
            if path is not None and path.is_file():
                path.unlink()
        if self.folder is not None and self.folder.is_dir() and not any(self.folder.iterdir()):
            # Ranks share the folder: another rank may remove it (or add its file) between the check and here.
            with contextlib.suppress(OSError):
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
    checkpoint when one matches). The loop reads nothing back to the host per batch: activations,
    masks and reservoirs stay on the device (see sampler_stream.Sampler.update)."""
    device = sae.device
    resumed = checkpoints.load(pass_index, features) if checkpoints else None
    state, done = resumed if resumed else (None, 0)
    sampler = Sampler(features, contexts.context_size, cfg, first_position, device, state, sync_free)
    feature_idx = torch.tensor(features, device=device)
    special = torch.tensor(special_ids or [-1], device=model.cfg.device)
    started, seen, since_checkpoint = time.perf_counter(), 0, 0
    every = cfg.checkpoint_tokens or DEFAULT_CHECKPOINT_TOKENS
    for context_ids_B, tokens_BL in contexts.batches(cfg.batch_size, rank, world):
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
        acts_BLF = sae.encode(resid_BLD.flatten(0, 1), features=feature_idx).view(*tokens_BL.shape, len(features))
        valid_BL = ~torch.isin(tokens_BL, special)
        valid_BL[:, :first_position] = False
        sampler.update(acts_BLF, tokens_BL, context_ids_B, valid_BL.to(device))  # ids stay on the host
        since_checkpoint += tokens_BL.numel()
        if checkpoints and since_checkpoint >= every:
            checkpoints.save(pass_index, sampler.state, seen)
            since_checkpoint = 0
        if progress:
            progress(tokens_BL.numel(), time.perf_counter() - started)
    if checkpoints:
        checkpoints.save(pass_index, sampler.state, seen)  # a finished pass is not streamed again
    return sampler.state


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
    """Stream the corpus through `model` to the SAE's hook and sample windows for `features`.

    `tokens_NL`: contexts [N, L] in memory, or a `Contexts` stream (corpus.StreamedContexts).
    Features are split into passes by `cfg.max_state_gb` (the estimate goes to `reporter` first).
    Under torch.distributed (torchrun) each rank streams its share and rank 0 returns every feature's
    records after an exact merge; other ranks return []. `progress(tokens_done_in_batch, seconds)`
    is called after every batch of every pass. With `checkpoint_dir`, the state is saved every
    `cfg.checkpoint_tokens` tokens and a rerun resumes from it; the files are removed at the end."""
    contexts = TensorContexts(tokens_NL) if isinstance(tokens_NL, Tensor) else tokens_NL
    check_window(contexts.context_size, first_position, cfg)
    rank, world = sampling_distributed.rank_and_world()
    passes, sentence = plan_passes(features, cfg, contexts.context_size, sae.device)
    if reporter and rank == 0:
        reporter.note(sentence)
    extra = f"{first_position}:{contexts.context_size}:{contexts.identity()}"
    checkpoints = Checkpoints(checkpoint_dir, cfg, rank, world, extra) if checkpoint_dir else None
    decode = decode or token_decoder(model.tokenizer)
    t0 = time.perf_counter()
    overall = (lambda n, _seconds: progress(n, time.perf_counter() - t0)) if progress else None
    out: list[FeatureSample] = []
    for p, pass_features in enumerate(passes):
        state = run_pass(
            model, sae, contexts, pass_features, cfg, special_ids, first_position, overall, checkpoints, p, rank, world
        )
        if world > 1:
            state = sampling_distributed.gather_and_merge(state, cfg)
        if state is not None:
            out += finish_records(state, cfg, cfg.window_size, contexts.tokens_of, decode)
    if checkpoints:
        sampling_distributed.barrier()  # every rank is past its last pass before files go
        checkpoints.clear(len(passes))
    return out


def token_decoder(tokenizer) -> Callable[[list[int]], list[str]]:
    cache: dict[int, str] = {}

    def decode(ids: list[int]) -> list[str]:
        missing = [i for i in set(ids) if i not in cache]
        for i, text in zip(missing, tokenizer.batch_decode([[i] for i in missing])):
            cache[i] = text
        return [cache[i] for i in ids]

    return decode
