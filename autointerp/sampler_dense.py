"""Sync-free versions of the sampler's data-dependent steps, for asynchronous devices (CUDA).

On a GPU, `nonzero`, `unique`, boolean-mask indexing and `.item()` make the host wait for the device,
once per call, every batch: the host can no longer queue the next forward pass while this batch's
reservoirs update. The CPU path (sampler_stream.py) uses them because on a CPU they are just cheaper
sparse arithmetic. These versions compute the same result densely, with shapes known on the host:
- the grid: every feature's cells are re-binned by its own doubling count d (0 for most batches)
  through one sort per feature, instead of finding the features that grow;
- the histogram: a scatter-add over every (token, feature), zeros where silent;
- the interval cells: each batch's candidates are scattered into a [F, G, B] key block (a context
  lands in one cell per feature) and every cell keeps the bottom M of its M + B keys;
- hard negatives: the smallest (context, position) key among matching positions, by a dense min.
They cost a full pass over the cell reservoirs per batch (memory-bound, about 2 x the state's bytes).
`tests/test_sampler_dense.py` checks both paths give identical states and that the dense one calls
none of the operations that synchronise on CUDA.
"""

import math

import torch
from torch import Tensor

from autointerp.config import SamplerConfig
from autointerp.sampler_state import NO_KEY, FeatureState, SplitState, bottom, draw, gather_rows

_CELL_FIELDS = (
    ("cell_key_FGM", NO_KEY),
    ("cell_value_FGM", 0.0),
    ("cell_context_FGM", -1),
    ("cell_start_FGM", 0),
    ("cell_ratio_FGMW", 0.0),
)


def raise_bound_dense(state: FeatureState, target_F: Tensor, cfg: SamplerConfig) -> None:
    """sampler_state.raise_bound without finding the growing features on the host."""
    G = cfg.interval_grid
    grows = (state.bound_F > 0) & (target_F > state.bound_F)
    ratio = torch.where(grows, target_F.double() / state.bound_F.double().clamp_min(1e-300), 1.0)
    d_F = torch.round(torch.log2(ratio)).long().clamp(0, max(1, math.ceil(math.log2(G))))
    state.bound_F = torch.where(target_F > state.bound_F, target_F, state.bound_F)
    new_cell_FG = torch.arange(G, device=d_F.device) >> d_F[:, None]
    state.hist_FG = torch.zeros_like(state.hist_FG).scatter_add_(1, new_cell_FG, state.hist_FG)
    for split in state.splits:
        _rebin_cells(split, new_cell_FG)


def _rebin_cells(split: SplitState, new_cell_FG: Tensor) -> None:
    """Slots of cell g move to cell new_cell[g]; each cell keeps its M smallest keys."""
    F, G, M = split.cell_key_FGM.shape
    if M == 0:
        return
    key = split.cell_key_FGM.view(F, G * M)
    target = new_cell_FG.repeat_interleave(M, dim=1, output_size=G * M)  # [F, G*M]
    # Sort by (target cell, key): keys are < 2^33, so cell * 2^33 + key orders both at once.
    order = (target * (1 << 33) + key).argsort(dim=1)
    target, key = target.gather(1, order), key.gather(1, order)
    x = torch.arange(G * M, device=key.device).expand(F, -1)
    starts = torch.cat([torch.ones_like(target[:, :1], dtype=torch.bool), target[:, 1:] != target[:, :-1]], 1)
    rank = x - torch.where(starts, x, 0).cummax(1).values
    keep = (rank < M) & (key < NO_KEY)
    slot = torch.where(keep, target * M + rank, G * M)  # G*M: a spill column dropped below
    for name, empty in _CELL_FIELDS:
        full = getattr(split, name)
        flat = gather_rows(full.reshape(F, G * M, *full.shape[3:]), order)
        out = torch.full((F, G * M + 1, *full.shape[3:]), empty, dtype=full.dtype, device=full.device)
        index = slot.view(F, G * M, *([1] * (full.ndim - 3))).expand_as(flat)
        out.scatter_(1, index, flat)
        setattr(split, name, out[:, : G * M].reshape(full.shape))


def add_histogram_dense(state: FeatureState, cells_BLF: Tensor, active_BLF: Tensor, G: int) -> None:
    F = state.hist_FG.shape[0]
    index = (torch.arange(F, device=cells_BLF.device, dtype=torch.int32) * G + cells_BLF.int()).flatten()
    batch = torch.zeros(F * G, dtype=torch.int32, device=cells_BLF.device)
    batch.index_add_(0, index, active_BLF.flatten().int())
    state.hist_FG += batch.view(F, G)


def update_cells_dense(
    split: SplitState, cell_BF: Tensor, fires_BF: Tensor, keys_BF: Tensor, fields_BF: dict[str, Tensor]
) -> None:
    """Every cell keeps the bottom M of its slots and the candidates that land in it (one per context
    that fires). `fields_BF`: candidate value, context, start [B, F] and ratio [B, F, W]."""
    F, G, M = split.cell_key_FGM.shape
    B = cell_BF.shape[0]
    if M == 0:
        return
    block = torch.full((F, G, B), NO_KEY, dtype=torch.int64, device=cell_BF.device)
    block.scatter_(1, cell_BF.T[:, None, :], torch.where(fires_BF, keys_BF, NO_KEY).T[:, None, :])
    pick = bottom(torch.cat([split.cell_key_FGM, block], 2), M)  # [F, G, M]
    from_batch = pick >= M
    b = (pick - M).clamp_min(0).view(F, G * M)
    old = pick.clamp_max(M - 1)
    split.cell_key_FGM = torch.cat([split.cell_key_FGM, block], 2).gather(2, pick)
    filled = split.cell_key_FGM < NO_KEY
    for name, empty in _CELL_FIELDS[1:]:
        full = getattr(split, name)
        candidate = fields_BF[name].transpose(0, 1)  # [F, B, ...]
        new = gather_rows(candidate, b).view(F, G, M, *candidate.shape[2:])
        kept = full.gather(2, old.view(F, G, M, *([1] * (full.ndim - 3))).expand_as(full))
        mask = from_batch.view(F, G, M, *([1] * (full.ndim - 3)))
        value = torch.where(mask, new, kept)
        setattr(split, name, torch.where(filled.view_as(mask), value, torch.full_like(value, empty)))


def hard_positions_dense(match_BLF: Tensor, context_key_BF: Tensor, first: int) -> tuple[Tensor, Tensor]:
    """(position [B, F] of the matching position with the smallest key of (context key, position),
    whether any position matches [B, F]) without listing the matches."""
    L = match_BLF.shape[1]
    pos_L = torch.arange(L, device=match_BLF.device)
    pos_key_BLF = torch.where(match_BLF, draw(context_key_BF[:, None, :], pos_L[None, :, None]), NO_KEY)
    best_BF, pos_BF = pos_key_BLF.min(dim=1)
    return pos_BF, best_BF < NO_KEY
