"""Stream a corpus through model + SAE and keep, per feature, top / interval / random / non-activating
windows and activation statistics, in state that is O(features x k) on the model's device.

Shapes: B contexts per batch, L tokens per context, F tracked features, W tokens per window,
K top windows, G grid cells, M reservoir slots per cell.

Every random choice is a hash, not a generator stream: a 32-bit key from (seed, what is drawn, feature
id, context id). So a feature's windows and statistics depend only on the seed, the corpus and the
settings, never on which other features are in the run or on how the corpus is batched: two runs that
share a feature give it the same windows, and `compare` pairs like with like.

How each group is drawn (per split; a context's split is a hash of (seed, context id) alone, so
explanation and scoring windows never share a context):
- top: the K contexts with the highest peak activation; a window identical to one already kept
  (same W tokens) counts once.
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
  feature, windows at a hashed offset, stored with their TRUE activations.
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

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from autointerp.config import SamplerConfig
from autointerp.errors import InputError, expected
from autointerp.hooks import hook_stop_layer
from autointerp.records import FeatureSample, FeatureStats, Window

SPLITS = ("explain", "score")
_GROUPS = ("top", "interval", "random", "nonactivating", "hard_negative")
_HASH_PRIME = (1 << 61) - 1

# ---- counter-based draws -------------------------------------------------------------------------
# What is drawn: each gets its own stream of the seed, so draws of different kinds are unrelated.
SALT_SPLIT, SALT_KEY, SALT_RANDOM, SALT_RANDOM_START, SALT_START, SALT_WINDOW_HASH, SALT_HARD = range(1, 8)
MASK32 = 0xFFFFFFFF
NO_KEY = 1 << 32  # above every key: an empty reservoir slot


def _mul32(x, c: int):
    """x * c mod 2^32 for x in [0, 2^32) (int64 tensor or int) and a constant c < 2^32. Split in 16-bit
    halves so no product passes 2^48: int64 overflow is never reached (its wrap is not defined)."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & MASK32


def fmix32(x):
    """MurmurHash3's 32-bit finaliser, a bijection of [0, 2^32) (int64 tensor or int). Values stay
    non-negative, so `>>` is the logical shift the finaliser needs."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x85EBCA6B)
    x = x ^ (x >> 13)
    x = _mul32(x, 0xC2B2AE35)
    return x ^ (x >> 16)


def stream(seed: int, salt: int) -> int:
    """A 32-bit start state for one kind of draw under one seed (any Python int, taken mod 2^64)."""
    s = seed & ((1 << 64) - 1)
    h = fmix32((salt * 0x9E3779B9) & MASK32)
    h = fmix32(h ^ (s & MASK32))
    return fmix32(h ^ (s >> 32))


def draw(state, index):
    """Key in [0, 2^32) of `index` (ids < 2^32) under `state`; a bijection of `index` for a fixed state,
    so keys of distinct ids never tie. Chain it for several ids: draw(draw(s, feature), context)."""
    return fmix32(state ^ index)


@dataclass
class SplitState:
    """Per-split reservoirs. All tensors live on the sampler's device."""

    top_value_FK: Tensor
    top_context_FK: Tensor
    top_start_FK: Tensor
    top_hash_FK: Tensor
    top_acts_FKW: Tensor
    cell_key_FGM: Tensor
    cell_value_FGM: Tensor
    cell_context_FGM: Tensor
    cell_start_FGM: Tensor
    cell_acts_FGMW: Tensor
    nonact_key_FN: Tensor
    nonact_context_FN: Tensor
    nonact_start_FN: Tensor
    hard_key_FH: Tensor  # H hard-negative slots, keyed like nonact but under their own stream
    hard_context_FH: Tensor
    hard_start_FH: Tensor
    random_contexts_R: Tensor  # chosen up front, [R]
    random_starts_R: Tensor
    random_acts_FRW: Tensor


def _fill(shape, value, dtype, device) -> Tensor:
    return torch.full(shape, value, dtype=dtype, device=device)


class SamplerState:
    """Streaming per-feature state. `update` takes encoded activations; `finish` builds the records."""

    def __init__(
        self,
        features: list[int],
        n_contexts: int,
        context_size: int,
        cfg: SamplerConfig,
        first_position: int,
        device: str | torch.device = "cpu",
    ) -> None:
        W = cfg.window_size
        if context_size - first_position < W:
            raise InputError(
                expected(
                    "window_size",
                    str(W),
                    f"at most the {context_size - first_position} usable tokens of a context",
                    "Lower --window-size or raise --context-size.",
                )
            )
        self.cfg, self.features, self.device = cfg, features, torch.device(device)
        self.L, self.W, self.first = context_size, W, first_position
        F, G = len(features), cfg.interval_grid
        self.M = max(cfg.per_interval_explain, cfg.per_interval_score) + 2
        seed = cfg.seed
        context_ids = torch.arange(n_contexts, dtype=torch.int64)
        explain_mask = draw(stream(seed, SALT_SPLIT), context_ids) < round(cfg.explain_fraction * (1 << 32))
        # 0 explain, 1 score; one byte per context is the only state that grows with the corpus.
        split_host = torch.where(explain_mask, 0, 1).to(torch.int8)
        self.split_of_context = split_host.to(self.device)
        self._split_host = split_host  # the same table on the host: a batch's splits without a device sync
        # Window-hash weights: a window's hash is sum_j token_j * weight_j mod a prime.
        weights_W = 1 + draw(stream(seed, SALT_WINDOW_HASH), torch.arange(W, dtype=torch.int64)) % ((1 << 30) - 1)
        self.hash_weights_W = weights_W.to(self.device)
        # Per-feature key states: a (feature, context) key is draw(feature_state, context).
        features_F = torch.tensor(features, dtype=torch.int64)
        self.feature_state_F = draw(stream(seed, SALT_KEY), features_F).to(self.device)
        self.hard_state_F = draw(stream(seed, SALT_HARD), features_F).to(self.device)
        self.max_token_F = torch.full((F,), -1, dtype=torch.int64, device=self.device)  # -1: never fired
        self._start_state = stream(seed, SALT_START)
        self._n_tokens = torch.zeros((), dtype=torch.int64, device=self.device)  # read once, at the end
        self.n_active_F = torch.zeros(F, dtype=torch.int64, device=self.device)
        self.sum_active_F = torch.zeros(F, dtype=torch.float64, device=self.device)
        self.max_F = torch.zeros(F, dtype=torch.float32, device=self.device)
        self.bound_F = torch.zeros(F, dtype=torch.float32, device=self.device)  # 0 until the feature first fires
        self.hist_FG = torch.zeros(F, G, dtype=torch.int64, device=self.device)
        self.splits = []
        counts = [
            (cfg.n_top_explain, 0, cfg.per_interval_explain),
            (cfg.n_top_score, cfg.n_random_score, cfg.per_interval_score),
        ]
        n_nonact = [0, cfg.n_nonactivating_score]
        n_hard = [0, cfg.n_hard_negative_score]
        random_key = draw(stream(seed, SALT_RANDOM), context_ids)
        random_start = self._offset(draw(stream(seed, SALT_RANDOM_START), context_ids))
        for split, (n_top, n_random, _) in enumerate(counts):
            pool = torch.nonzero(split_host == split).flatten()
            # The n_random smallest keys (distinct: draw is a bijection of the context id).
            pick = pool[random_key[pool].argsort()[:n_random]].sort().values
            self.splits.append(self._empty_split(F, n_top, n_nonact[split], n_hard[split], pick, random_start[pick]))
        # Random contexts on the host: context id -> [(split, slot r, start)].
        self._random_hits: dict[int, list[tuple[int, int, int]]] = {}
        for split, state in enumerate(self.splits):
            for r, (ctx, start) in enumerate(zip(state.random_contexts_R.tolist(), state.random_starts_R.tolist())):
                self._random_hits.setdefault(ctx, []).append((split, r, start))

    def _offset(self, key: Tensor) -> Tensor:
        """A window start in [first, L - W] from a key in [0, 2^32) (bias below 2^-20 for L < 4096)."""
        return self.first + key % (self.L - self.W + 1 - self.first)

    @property
    def n_tokens(self) -> int:
        return int(self._n_tokens)

    def _empty_split(self, F, K, N, H, random_contexts, random_starts) -> SplitState:
        G, M, W, dev = self.cfg.interval_grid, self.M, self.W, self.device
        R = len(random_contexts)
        return SplitState(
            top_value_FK=_fill((F, K), -math.inf, torch.float32, dev),
            top_context_FK=_fill((F, K), -1, torch.int64, dev),
            top_start_FK=_fill((F, K), 0, torch.int64, dev),
            top_hash_FK=_fill((F, K), -1, torch.int64, dev),
            top_acts_FKW=_fill((F, K, W), 0.0, torch.float32, dev),
            cell_key_FGM=_fill((F, G, M), NO_KEY, torch.int64, dev),
            cell_value_FGM=_fill((F, G, M), 0.0, torch.float32, dev),
            cell_context_FGM=_fill((F, G, M), -1, torch.int64, dev),
            cell_start_FGM=_fill((F, G, M), 0, torch.int64, dev),
            cell_acts_FGMW=_fill((F, G, M, W), 0.0, torch.float32, dev),
            nonact_key_FN=_fill((F, N), NO_KEY, torch.int64, dev),
            nonact_context_FN=_fill((F, N), -1, torch.int64, dev),
            nonact_start_FN=_fill((F, N), 0, torch.int64, dev),
            hard_key_FH=_fill((F, H), NO_KEY, torch.int64, dev),
            hard_context_FH=_fill((F, H), -1, torch.int64, dev),
            hard_start_FH=_fill((F, H), 0, torch.int64, dev),
            random_contexts_R=random_contexts.to(dev),
            random_starts_R=random_starts.to(dev),
            random_acts_FRW=_fill((F, R, W), 0.0, torch.float32, dev),
        )

    # ---- streaming -------------------------------------------------------------------------------

    @torch.no_grad()
    def update(self, acts_BLF: Tensor, tokens_BL: Tensor, context_ids_B: Tensor, valid_BL: Tensor) -> None:
        """Fold one batch in. `acts_BLF` raw activations of the tracked features; `valid_BL` False at
        BOS/special tokens, which count nowhere. `context_ids_B` is best passed on the host: the
        sampler reads it there (splits, random contexts) and copies it to its device itself."""
        acts_BLF = torch.where(valid_BL[..., None], acts_BLF.float(), 0.0)
        B, L, F = acts_BLF.shape
        ids_host = context_ids_B.cpu()
        context_ids_B = context_ids_B.to(self.device)

        active_BLF = acts_BLF > 0
        self._n_tokens += valid_BL.sum()
        self.n_active_F += active_BLF.sum((0, 1))
        # A float64 sum of float32 values is exact (so independent of which other features share the
        # reduction) while one batch's values span under 2^(29 - log2 tokens), 2^14 for 32k tokens;
        # wider spans can differ in the last bit between feature sets. Windows never depend on it.
        self.sum_active_F += acts_BLF.sum((0, 1), dtype=torch.float64)
        peak_BF, argmax_BF = acts_BLF.max(dim=1)
        batch_max_F = peak_BF.max(0).values
        tokens_BL = tokens_BL.to(self.device)
        hard_from_F = self._track_max_token(peak_BF, tokens_BL.gather(1, argmax_BF))
        self._grow_grid(batch_max_F)
        self.max_F = torch.maximum(self.max_F, batch_max_F)
        self._add_histogram(acts_BLF, active_BLF)

        # One candidate window per (context, feature): around the peak, or at the context's hashed
        # offset if the feature does not fire there.
        hashed_start_B = self._offset(draw(self._start_state, context_ids_B))
        peak_start_BF = (argmax_BF - self.cfg.window_left).clamp(self.first, L - self.W)
        start_BF = torch.where(peak_BF > 0, peak_start_BF, hashed_start_B[:, None])
        window_acts_BFW = self._cut(acts_BLF, start_BF)
        window_hash_BF = self._window_hashes(tokens_BL).gather(1, start_BF)
        has_valid_B = valid_BL.any(1)
        # Key of (feature, context): interval and non-activating reservoirs keep the smallest. A context
        # is in at most one of them per feature (fires or not), so one key serves both.
        keys_BF = draw(self.feature_state_F[None, :], context_ids_B[:, None])
        split_B = self.split_of_context[context_ids_B]
        present_splits = set(self._split_host[ids_host].tolist())
        for split, state in enumerate(self.splits):
            if split not in present_splits:  # decided on the host; the masks below do the rest
                continue
            in_split_B = (split_B == split) & has_valid_B
            fires_BF = (peak_BF > 0) & in_split_B[:, None]
            self._update_top(state, peak_BF, fires_BF, context_ids_B, start_BF, window_hash_BF, window_acts_BFW)
            self._update_cells(state, peak_BF, fires_BF, keys_BF, context_ids_B, start_BF, window_acts_BFW)
            silent_BF = (peak_BF <= 0) & in_split_B[:, None]
            self._update_nonactivating(state, silent_BF, keys_BF, context_ids_B, start_BF)
            self._update_hard(state, silent_BF, hard_from_F, context_ids_B, tokens_BL, valid_BL)
        self._update_random(acts_BLF, ids_host)

    def _cut(self, acts_BLF: Tensor, start_BF: Tensor) -> Tensor:
        offsets_W = torch.arange(self.W, device=self.device)
        index_BFW = start_BF[..., None] + offsets_W
        return acts_BLF.permute(0, 2, 1).gather(2, index_BFW)

    def _window_hashes(self, tokens_BL: Tensor) -> Tensor:
        windows_BSW = tokens_BL.to(self.device).unfold(1, self.W, 1)
        return (windows_BSW * self.hash_weights_W).sum(-1) % _HASH_PRIME

    def _grow_grid(self, batch_max_F: Tensor) -> None:
        """Raise each feature's bound to the smallest power-of-two multiple of it that covers the max,
        merging runs of 2^d cells (counts add, reservoirs keep the M smallest keys) in one pass per d."""
        fresh_F = (self.bound_F == 0) & (batch_max_F > 0)
        self.bound_F = torch.where(fresh_F, torch.exp2(torch.ceil(torch.log2(batch_max_F))), self.bound_F)
        idx = torch.nonzero(batch_max_F > self.bound_F).flatten()  # the one host sync of the grid
        if len(idx) == 0:
            return
        # d = the fewest doublings with bound * 2^d >= max (exact in float64: bounds are powers of two).
        bound, target = self.bound_F[idx].double(), batch_max_F[idx].double()
        d = torch.ceil(torch.log2(target / bound)).clamp_min(1)
        d = torch.where(bound * torch.exp2(d) < target, d + 1, d)
        d = torch.where((d > 1) & (bound * torch.exp2(d - 1) >= target), d - 1, d)
        self.bound_F[idx] = (bound * torch.exp2(d)).float()
        G = self.cfg.interval_grid
        # Past ceil(log2 G) doublings every cell lands in cell 0: merging more changes nothing.
        d = d.long().clamp_max(max(1, math.ceil(math.log2(G))))
        for step in torch.unique(d).tolist():
            group = idx[d == step]
            self._merge_hist(group, 1 << step)
            for state in self.splits:
                self._merge_cells(state, group, 1 << step)

    def _merge_hist(self, idx: Tensor, run: int) -> None:
        G = self.cfg.interval_grid
        n_new = -(-G // run)
        hist = self.hist_FG[idx]
        if n_new * run > G:
            hist = torch.cat([hist, hist.new_zeros(len(idx), n_new * run - G)], 1)
        merged = hist.view(len(idx), n_new, run).sum(-1)
        self.hist_FG[idx] = torch.cat([merged, merged.new_zeros(len(idx), G - n_new)], 1)

    def _merge_cells(self, state: SplitState, idx: Tensor, run: int) -> None:
        """Cells [c * run, (c + 1) * run) become cell c, keeping the M smallest keys of their slots."""
        G, M, W, n = self.cfg.interval_grid, self.M, self.W, len(idx)
        n_new = -(-G // run)
        pad = n_new * run - G
        fields = (
            ("cell_key_FGM", NO_KEY),
            ("cell_value_FGM", 0.0),
            ("cell_context_FGM", -1),
            ("cell_start_FGM", 0),
            ("cell_acts_FGMW", 0.0),
        )
        order = None
        for name, empty in fields:
            full = getattr(state, name)
            block = full[idx]
            if pad:
                block = torch.cat([block, torch.full_like(block[:, :1], empty).expand_as(block[:, :pad])], 1)
            block = block.view(n, n_new, run * M, *block.shape[3:])
            if order is None:
                order = block.topk(M, dim=2, largest=False).indices  # block holds the keys
            index = order if block.ndim == 3 else order[..., None].expand(-1, -1, -1, W)
            merged = block.gather(2, index)
            rest = torch.full_like(merged[:, :1], empty).expand(n, G - n_new, *merged.shape[2:])
            full[idx] = torch.cat([merged, rest], dim=1)

    def _cell_of(self, values: Tensor, bound: Tensor) -> Tensor:
        """Grid cell of positive values: cell c covers (c, c+1] * bound / G."""
        G = self.cfg.interval_grid
        return (torch.ceil(values / bound * G) - 1).clamp(0, G - 1).long()

    def _add_histogram(self, acts_BLF: Tensor, active_BLF: Tensor) -> None:
        b, pos, feature_idx = torch.nonzero(active_BLF, as_tuple=True)
        cells = self._cell_of(acts_BLF[b, pos, feature_idx], self.bound_F[feature_idx])
        flat = self.hist_FG.view(-1)
        flat.index_add_(0, feature_idx * self.cfg.interval_grid + cells, torch.ones_like(cells))

    def _update_top(self, state, peak_BF, fires_BF, context_ids_B, start_BF, hash_BF, acts_BFW) -> None:
        K = state.top_value_FK.shape[1]
        if K == 0:
            return
        cand_FB = torch.where(fires_BF, peak_BF, -math.inf).T.contiguous()
        hash_FB = hash_BF.T
        # Identical windows count once: against those kept, and against earlier ones in this batch.
        seen_FB = (hash_FB[:, :, None] == state.top_hash_FK[:, None, :]).any(-1)
        same_FBB = hash_FB[:, :, None] == hash_FB[:, None, :]
        earlier_FBB = same_FBB & fires_BF.T[:, None, :] & torch.ones_like(same_FBB[0]).tril(-1)
        cand_FB = torch.where(seen_FB | earlier_FBB.any(-1), -math.inf, cand_FB)
        B = cand_FB.shape[1]
        value = torch.cat([state.top_value_FK, cand_FB], dim=1)
        best_FK = value.topk(K, dim=1).indices
        state.top_value_FK = value.gather(1, best_FK)
        ctx = torch.cat([state.top_context_FK, context_ids_B.to(self.device).expand(len(cand_FB), B)], 1)
        state.top_context_FK = ctx.gather(1, best_FK)
        state.top_start_FK = torch.cat([state.top_start_FK, start_BF.T], 1).gather(1, best_FK)
        state.top_hash_FK = torch.cat([state.top_hash_FK, hash_FB], 1).gather(1, best_FK)
        acts = torch.cat([state.top_acts_FKW, acts_BFW.permute(1, 0, 2)], 1)
        state.top_acts_FKW = acts.gather(1, best_FK[..., None].expand(-1, -1, self.W))

    def _update_cells(self, state, peak_BF, fires_BF, keys_BF, context_ids_B, start_BF, acts_BFW) -> None:
        """Each touched (feature, cell) row keeps the M smallest keys among its slots and this batch's
        candidates: the same slots as inserting the contexts one by one, in one bottom-M pass."""
        if self.M == 0:
            return
        G, M, W = self.cfg.interval_grid, self.M, self.W
        B, F = peak_BF.shape
        b_C, f_C = torch.nonzero(fires_BF, as_tuple=True)
        if len(b_C) == 0:
            return
        cell_C = self._cell_of(peak_BF[b_C, f_C], self.bound_F[f_C].clamp_min(1e-30))
        rows_U, row_of_C = torch.unique(f_C * G + cell_C, return_inverse=True)
        U = len(rows_U)
        key_flat = state.cell_key_FGM.view(F * G, M)
        # Columns 0..M-1: the row's slots; column M + b: context b's candidate (NO_KEY where it has none).
        key_UX = torch.full((U, M + B), NO_KEY, dtype=key_flat.dtype, device=self.device)
        key_UX[:, :M] = key_flat[rows_U]
        key_UX[row_of_C, M + b_C] = keys_BF[b_C, f_C]
        key_UM, pick_UM = key_UX.topk(M, dim=1, largest=False)
        new_UM = pick_UM >= M
        filled_UM = key_UM < NO_KEY
        take_new_UM = new_UM & filled_UM
        empty_UM = new_UM & ~filled_UM  # an unfilled slot keeps the empty defaults
        old_UM = pick_UM.clamp_max(M - 1)
        b_UM = (pick_UM - M).clamp_min(0)
        f_UM = (rows_U // G)[:, None].expand(U, M)

        def merged(name, candidate, empty):
            flat = getattr(state, name).view(F * G, M, *getattr(state, name).shape[3:])
            rows = flat[rows_U]
            index = old_UM if rows.ndim == 2 else old_UM[..., None].expand(U, M, W)
            mask_new = take_new_UM if rows.ndim == 2 else take_new_UM[..., None]
            mask_empty = empty_UM if rows.ndim == 2 else empty_UM[..., None]
            out = torch.where(mask_new, candidate, rows.gather(1, index))
            flat[rows_U] = out.masked_fill(mask_empty, empty)

        key_flat[rows_U] = key_UM
        merged("cell_value_FGM", peak_BF[b_UM, f_UM], 0.0)
        merged("cell_context_FGM", context_ids_B[b_UM], -1)
        merged("cell_start_FGM", start_BF[b_UM, f_UM], 0)
        merged("cell_acts_FGMW", acts_BFW[b_UM, f_UM], 0.0)

    def _update_nonactivating(self, state, silent_BF, keys_BF, context_ids_B, start_BF) -> None:
        N = state.nonact_key_FN.shape[1]
        if N == 0:
            return
        F, B = silent_BF.shape[1], silent_BF.shape[0]
        key = torch.cat([state.nonact_key_FN, torch.where(silent_BF, keys_BF, NO_KEY).T], 1)
        best = key.topk(N, dim=1, largest=False).indices
        state.nonact_key_FN = key.gather(1, best)
        ctx = torch.cat([state.nonact_context_FN, context_ids_B.to(self.device).expand(F, B)], 1)
        state.nonact_context_FN = ctx.gather(1, best)
        state.nonact_start_FN = torch.cat([state.nonact_start_FN, start_BF.T], 1).gather(1, best)

    def _track_max_token(self, peak_BF: Tensor, peak_token_BF: Tensor) -> Tensor:
        """Follow the token at each feature's running max through the batch, context by context, and
        restart the hard-negative reservoirs of features whose token changed. Returns, per feature, the
        batch row from which this batch's contexts are eligible (-1: all, the token did not change).
        Call before max_F takes in this batch."""
        B = len(peak_BF)
        rows_B = torch.arange(B, device=self.device)
        best_BF = torch.cat([self.max_F[None], peak_BF]).cummax(0).values
        raises_BF = peak_BF > best_BF[:-1]  # strictly above all before it: the first context wins a tie
        last_BF = torch.where(raises_BF, rows_B[:, None], -1).cummax(0).values
        token_BF = torch.where(last_BF >= 0, peak_token_BF.gather(0, last_BF.clamp_min(0)), self.max_token_F)
        changed_BF = token_BF != torch.cat([self.max_token_F[None], token_BF[:-1]])
        from_F = torch.where(changed_BF, rows_B[:, None], -1).max(0).values
        self.max_token_F = token_BF[-1]
        restart_F = from_F >= 0
        for state in self.splits:  # also for a split absent from this batch: its windows hold the old token
            state.hard_key_FH[restart_F] = NO_KEY
            state.hard_context_FH[restart_F] = -1
            state.hard_start_FH[restart_F] = 0
        return from_F

    def _update_hard(self, state, silent_BF, from_F, context_ids_B, tokens_BL, valid_BL) -> None:
        """Contexts where the feature is silent and which hold its max token compete by key; the window
        is centred (as a top window) on the occurrence with the smallest key of (context key, position)."""
        H = state.hard_key_FH.shape[1]
        if H == 0:
            return
        B, L = tokens_BL.shape
        F = silent_BF.shape[1]
        rows_B = torch.arange(B, device=self.device)
        eligible_BF = silent_BF & (rows_B[:, None] >= from_F[None, :])
        usable_BL = valid_BL.to(self.device) & (torch.arange(L, device=self.device) >= self.first)
        match_BLF = (tokens_BL[..., None] == self.max_token_F) & usable_BL[..., None] & eligible_BF[:, None, :]
        b, pos, f = torch.nonzero(match_BLF, as_tuple=True)
        if len(b) == 0:
            return
        context_key_BF = draw(self.hard_state_F[None, :], context_ids_B[:, None])
        pos_key = draw(context_key_BF[b, f], pos)  # a bijection of the position: no ties in a context
        best = torch.full((B * F,), NO_KEY, dtype=torch.int64, device=self.device)
        best.scatter_reduce_(0, b * F + f, pos_key, reduce="amin")
        chosen = pos_key == best[b * F + f]
        pos_BF = torch.zeros(B * F, dtype=torch.int64, device=self.device)
        pos_BF[(b * F + f)[chosen]] = pos[chosen]
        pos_BF = pos_BF.view(B, F)
        has_BF = (best < NO_KEY).view(B, F)
        start_BF = (pos_BF - self.cfg.window_left).clamp(self.first, L - self.W)
        key = torch.cat([state.hard_key_FH, torch.where(has_BF, context_key_BF, NO_KEY).T], 1)
        keep = key.topk(H, dim=1, largest=False).indices
        state.hard_key_FH = key.gather(1, keep)
        ctx = torch.cat([state.hard_context_FH, context_ids_B.expand(F, B)], 1)
        state.hard_context_FH = ctx.gather(1, keep)
        state.hard_start_FH = torch.cat([state.hard_start_FH, start_BF.T], 1).gather(1, keep)

    def _update_random(self, acts_BLF: Tensor, ids_host: Tensor) -> None:
        """Store the true activations of the random contexts in this batch (found on the host)."""
        for b, ctx in enumerate(ids_host.tolist()):
            for split, r, start in self._random_hits.get(ctx, ()):
                self.splits[split].random_acts_FRW[:, r] = acts_BLF[b, start : start + self.W].T

    # ---- results ---------------------------------------------------------------------------------

    def _n_cells(self) -> np.ndarray:
        """Grid cells 0..c_max in use per tracked feature (0 if it never fired), on the host."""
        n_cells = self._cell_of(self.max_F, self.bound_F.clamp_min(1e-30)) + 1
        return torch.where(self.n_active_F > 0, n_cells, 0).cpu().numpy()

    def stats(self) -> list[FeatureStats]:
        G = self.cfg.interval_grid
        n_tokens, n_cells_F = self.n_tokens, self._n_cells().tolist()
        hist, bound = self.hist_FG.cpu().numpy(), self.bound_F.cpu().tolist()
        n_active, sums, maxes = (
            self.n_active_F.cpu().tolist(),
            self.sum_active_F.cpu().numpy(),
            self.max_F.cpu().tolist(),
        )
        out = []
        for i, feature in enumerate(self.features):
            n_cells, width = n_cells_F[i], bound[i] / G
            out.append(
                FeatureStats(
                    feature=feature,
                    n_tokens=n_tokens,
                    n_active=n_active[i],
                    max_activation=maxes[i],
                    mean_active=float(sums[i] / n_active[i]) if n_active[i] else None,
                    histogram_edges=[c * width for c in range(n_cells + 1)] if n_cells else [],
                    histogram_counts=hist[i, :n_cells].tolist(),
                )
            )
        return out

    def interval_cells(self, feature_pos: int) -> list[tuple[int, int]]:
        """Cell ranges [lo, hi) of each interval for one tracked feature (empty if it never fired)."""
        if self.n_active_F[feature_pos] == 0:
            return []
        n_cells = (
            int(self._cell_of(self.max_F[feature_pos : feature_pos + 1], self.bound_F[feature_pos : feature_pos + 1]))
            + 1
        )
        n = min(self.cfg.n_intervals, n_cells)
        return [(n_cells * i // n, n_cells * (i + 1) // n) for i in range(n)]

    def finish(self, tokens_NL: Tensor, decode: Callable[[list[int]], list[str]]) -> list[FeatureSample]:
        """Materialise every kept window as records (the only step that moves data to the host)."""
        stats = self.stats()
        n_cells_F = self._n_cells()
        parts = [part for split, state in enumerate(self.splits) for part in self._kept(split, state, n_cells_F)]
        # Columns of every kept window; a stable sort by feature keeps each feature's windows in the
        # order split, group (top, interval, random, nonactivating, hard_negative), then the order within the group.
        feature_X = np.concatenate([p[0] for p in parts])
        order = np.argsort(feature_X, kind="stable")
        feature_X = feature_X[order]
        context_X, start_X, acts_XW, group_X, interval_X, split_X = (
            np.concatenate([p[j] for p in parts])[order] for j in range(1, 7)
        )
        W = self.W
        index_XW = torch.from_numpy(start_X[:, None] + np.arange(W))
        ids_XW = tokens_NL.cpu()[torch.from_numpy(context_X)[:, None], index_XW].numpy()
        # Decode every distinct token id once; windows look their strings up in that table.
        unique_ids = np.flatnonzero(np.bincount(ids_XW.reshape(-1))) if ids_XW.size else ids_XW.reshape(-1)
        strings = np.empty(int(unique_ids[-1]) + 1 if len(unique_ids) else 0, dtype=object)
        strings[unique_ids] = decode(unique_ids.tolist())
        tokens_XW = strings[ids_XW].tolist()
        ids_XW, acts_XW = ids_XW.tolist(), acts_XW.tolist()
        features = [self.features[i] for i in feature_X.tolist()]
        groups = [_GROUPS[g] for g in group_X.tolist()]
        intervals = [None if v < 0 else v for v in interval_X.tolist()]
        splits = [SPLITS[s] for s in split_X.tolist()]
        context_X, start_X = context_X.tolist(), start_X.tolist()
        windows = [
            Window.model_construct(  # fields built here, of the declared types: no validation needed
                feature=features[x],
                context_id=context_X[x],
                start=start_X[x],
                token_ids=ids_XW[x],
                tokens=tokens_XW[x],
                activations=acts_XW[x],
                group=groups[x],
                interval=intervals[x],
                split=splits[x],
            )
            for x in range(len(features))
        ]
        ends = np.cumsum(np.bincount(feature_X, minlength=len(self.features))).tolist()
        return [
            FeatureSample.model_construct(stats=stats[i], windows=windows[ends[i - 1] if i else 0 : ends[i]])
            for i in range(len(self.features))
        ]

    def _kept(self, split: int, state: SplitState, n_cells_F: np.ndarray) -> list[tuple[np.ndarray, ...]]:
        """Every window kept in one split, for all features at once, one tuple of columns per group:
        (feature position, context, start, activations [n, W], group code, interval or -1, split)."""
        F, W = len(self.features), self.W
        host = {k: v.cpu().numpy() for k, v in vars(state).items()}
        parts = []

        def part(f, context, start, acts, group, interval=None):
            n = len(f)
            interval = np.full(n, -1, dtype=np.int64) if interval is None else interval
            code = np.full(n, group, dtype=np.int64)
            parts.append((f, context, start, acts.reshape(n, W), code, interval, np.full(n, split, dtype=np.int64)))

        f, k = np.nonzero(host["top_value_FK"] > -math.inf)
        part(f, host["top_context_FK"][f, k], host["top_start_FK"][f, k], host["top_acts_FKW"][f, k], 0)

        # Interval draws: per (feature, interval), the smallest finite keys among slots whose context
        # is not a top window, at most per_interval of them (the same as walking keys in order).
        per_interval = (self.cfg.per_interval_explain, self.cfg.per_interval_score)[split]
        key_FGM = host["cell_key_FGM"]
        n_int_F = np.minimum(self.cfg.n_intervals, n_cells_F)
        cell_G = np.arange(key_FGM.shape[1])
        usable = (key_FGM < NO_KEY) & (cell_G[None, :, None] < n_cells_F[:, None, None])
        f, c, m = np.nonzero(usable if per_interval else np.zeros_like(usable))
        context = host["cell_context_FGM"][f, c, m]
        n_contexts = len(self._split_host)
        top_codes = (np.arange(F)[:, None] * n_contexts + host["top_context_FK"])[host["top_value_FK"] > -math.inf]
        keep = ~np.isin(f * n_contexts + context, top_codes)
        f, c, m, context = f[keep], c[keep], m[keep], context[keep]
        n, n_cells = n_int_F[f], n_cells_F[f]
        interval = ((c + 1) * n - 1) // n_cells  # interval i covers cells [N*i//n, N*(i+1)//n)
        key = key_FGM[f, c, m]
        by = np.lexsort((key, interval, f))
        f, c, m, context, interval = f[by], c[by], m[by], context[by], interval[by]
        group_id = f * (self.cfg.n_intervals + 1) + interval
        x = np.arange(len(f))
        first = np.maximum.accumulate(np.where(np.r_[True, group_id[1:] != group_id[:-1]], x, 0)) if len(f) else x
        take = x - first < per_interval
        f, c, m, context, interval = f[take], c[take], m[take], context[take], interval[take]
        part(f, context, host["cell_start_FGM"][f, c, m], host["cell_acts_FGMW"][f, c, m], 1, interval)

        R = len(host["random_contexts_R"])
        part(
            np.repeat(np.arange(F), R),
            np.tile(host["random_contexts_R"], F),
            np.tile(host["random_starts_R"], F),
            host["random_acts_FRW"],
            2,
        )

        f, n = np.nonzero(host["nonact_key_FN"] < NO_KEY)
        part(f, host["nonact_context_FN"][f, n], host["nonact_start_FN"][f, n], np.zeros((len(f), W), np.float32), 3)

        f, h = np.nonzero(host["hard_key_FH"] < NO_KEY)
        part(f, host["hard_context_FH"][f, h], host["hard_start_FH"][f, h], np.zeros((len(f), W), np.float32), 4)
        return parts


# ---- driving the model ---------------------------------------------------------------------------


def iter_batches(tokens_NL: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    for start in range(0, len(tokens_NL), batch_size):
        yield torch.arange(start, min(start + batch_size, len(tokens_NL))), tokens_NL[start : start + batch_size]


@torch.no_grad()
def hook_activations(model, tokens_BL: Tensor, hook_name: str) -> Tensor:
    """The model's activation at `hook_name` [B, L, D], stopping the forward pass right after it."""
    _, cache = model.run_with_cache(tokens_BL, names_filter=hook_name, stop_at_layer=hook_stop_layer(hook_name))
    activation = cache[hook_name]
    return activation.flatten(2) if activation.ndim == 4 else activation  # hook_z: [B, L, H, d_head]


@torch.no_grad()
def sample_features(
    model,
    sae,
    tokens_NL: Tensor,
    features: list[int],
    cfg: SamplerConfig,
    special_ids: list[int],
    first_position: int,
    progress: Callable[[int, float], None] | None = None,
    decode: Callable[[list[int]], list[str]] | None = None,
) -> list[FeatureSample]:
    """Stream `tokens_NL` through `model` to the SAE's hook and sample windows for `features`.

    `progress(tokens_done_in_batch, seconds_elapsed)` is called after every batch."""
    device = sae.device
    state = SamplerState(features, len(tokens_NL), tokens_NL.shape[1], cfg, first_position, device)
    feature_idx = torch.tensor(features, device=device)
    special = torch.tensor(special_ids or [-1], device=device)
    started = time.perf_counter()
    for context_ids_B, tokens_BL in iter_batches(tokens_NL, cfg.batch_size):
        tokens_BL = tokens_BL.to(model.cfg.device)
        resid_BLD = hook_activations(model, tokens_BL, sae.cfg.hook_name)
        acts_BLF = sae.encode(resid_BLD.flatten(0, 1), features=feature_idx).view(*tokens_BL.shape, len(features))
        valid_BL = ~torch.isin(tokens_BL, special)
        valid_BL[:, :first_position] = False
        state.update(acts_BLF, tokens_BL, context_ids_B, valid_BL.to(device))  # ids stay on the host
        if progress:
            progress(tokens_BL.numel(), time.perf_counter() - started)
    return state.finish(tokens_NL, decode or token_decoder(model.tokenizer))


def token_decoder(tokenizer) -> Callable[[list[int]], list[str]]:
    cache: dict[int, str] = {}

    def decode(ids: list[int]) -> list[str]:
        missing = [i for i in set(ids) if i not in cache]
        for i, text in zip(missing, tokenizer.batch_decode([[i] for i in missing])):
            cache[i] = text
        return [cache[i] for i in ids]

    return decode
