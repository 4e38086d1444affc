"""How many features a sampling pass can track: the bytes a feature's state, its encoder columns and a
block of features' batch work take on the sampler's device, and the features split into passes that fit
`--max-state-gb` (or 80 % of a GPU's free memory).

Within a batch the sampler encodes the SAE and folds the state one block of ENCODE_BLOCK features at a time
(sampler_stream.Sampler.update_blocks), so a pass holds every feature's state but only one block's
activations and batch work: memory, not the batch size, sets how many features a pass takes.
"""

import torch

from autointerp.config import SamplerConfig
from autointerp.errors import InputError, expected
from autointerp.sampler_state import state_bytes_per_feature

GB = 1 << 30
# Features per encode matmul. A matmul's rounding may depend on its width, so the encode always runs in
# blocks of this many of the pass's features and passes hold whole blocks (plan_passes): a feature's
# activations are then the same bits in one pass or in many. (A limit that fits less than one block, ~180 MB
# of CPU state, makes passes of fewer features than a block: their activations may then differ by an ulp.)
ENCODE_BLOCK = 4096


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


def sae_bytes(sae, cfg: SamplerConfig, context_size: int) -> tuple[int, int]:
    """(bytes per tracked feature, fixed bytes per batch) the SAE's encode adds on its device: the pass's
    sliced encoder columns (W_enc column and per-feature vectors, see SparseAutoencoder.encode); an SAE whose
    features compete (topk) instead holds every pre-activation and activation of a batch [B x L, d_sae]."""
    if sae is None:
        return 0, 0
    size = getattr(getattr(sae, "dtype", None), "itemsize", 4)
    if getattr(getattr(sae, "architecture", None), "couples_features", True):
        return 0, cfg.batch_size * context_size * sae.cfg.d_sae * (size + 4)
    return (sae.cfg.d_in + 4) * size, 0


def plan_passes(
    features: list[int], cfg: SamplerConfig, context_size: int, device: str | torch.device = "cpu", sae=None
) -> tuple[list[list[int]], str]:
    """Features split into passes that fit `cfg.max_state_gb` on `device`, and a sentence saying so. A pass
    holds every feature's state (and, given `sae`, its encoder columns) but the batch work of only one block
    of ENCODE_BLOCK features at a time (Sampler.update_blocks). Off the CPU the sampler's steps are the
    sync-free ones, which need more batch memory."""
    state, work = bytes_per_feature(cfg, context_size, sync_free=torch.device(device).type != "cpu")
    columns, fixed = sae_bytes(sae, cfg, context_size)
    per = state + columns

    def need(n: int) -> int:  # bytes a pass of n features holds at its peak
        return n * per + min(n, ENCODE_BLOCK) * work + fixed

    sentence = (
        f"Sampler memory: ~{per / 1024:,.1f} KB per feature ({state / 1024:,.1f} KB state"
        + (f" + {columns / 1024:,.1f} KB encoder columns" if columns else "")
        + f") and {_size(min(len(features), ENCODE_BLOCK) * work + fixed)} of batch work (one block of up to "
        f"{ENCODE_BLOCK:,} features at a time), {_size(need(len(features)))} for {len(features):,} features"
    )
    limit_gb, source = cfg.max_state_gb, "--max-state-gb"
    if limit_gb is None and torch.device(device).type == "cuda":
        # Nothing set on a GPU: 80 % of what is free now, so a 1M-feature SAE runs in passes, not out of memory.
        limit_gb, source = 0.8 * torch.cuda.mem_get_info(torch.device(device))[0] / GB, "80 % of free GPU memory"
    if limit_gb is None:
        return [list(features)], sentence + "."
    limit = int(limit_gb * GB)
    fit = (limit - fixed) // (per + work)  # up to a block, each feature also brings its batch work
    if fit >= ENCODE_BLOCK:
        fit = (limit - fixed - ENCODE_BLOCK * work) // per
        fit -= fit % ENCODE_BLOCK  # whole encode blocks: the same activations in one pass or many
    if fit < 1:
        raise InputError(
            expected(
                source,
                f"{limit_gb:g}",
                f"at least {need(1) / GB:.6f} GB, what one feature's state and batch work take "
                f"(window {cfg.window_size}, batch {cfg.batch_size}, context {context_size}, grid {cfg.interval_grid})",
                "Raise --max-state-gb or lower --batch-size.",
            )
        )
    passes = [features[i : i + fit] for i in range(0, len(features), fit)]
    return passes, sentence + (
        f"; {source} {limit_gb:g} GiB: {len(passes)} pass(es) of up to {fit:,} features"
        + (" (each pass streams the corpus again)." if len(passes) > 1 else ".")
    )
