"""The streaming half of the sampler: `Sampler.update` folds one batch of activations into a
`FeatureState` (sampler_state.py) on the model's device; the rules it follows are in sampler.py.

Shapes: B contexts per batch, L tokens per context, F tracked features, W tokens per window,
K top windows, G grid cells, M reservoir slots per cell.
"""

import math
from collections.abc import Callable

import torch
from torch import Tensor

from autointerp.config import SamplerConfig
from autointerp.errors import InputError, expected
from autointerp.exact_sum import carry, fixed_point_sum
from autointerp.records import FeatureSample
from autointerp.sampler_dense import add_histogram_dense, hard_positions_dense, raise_bound_dense, update_cells_dense
from autointerp.sampler_results import finish_records, interval_cells
from autointerp.sampler_state import (
    NO_KEY,
    RATIO_DTYPE,
    SALT_HARD,
    SALT_KEY,
    SALT_RANDOM,
    SALT_RANDOM_START,
    SALT_START,
    SALT_WINDOW_HASH,
    FeatureState,
    SplitState,
    bottom,
    draw,
    empty_state,
    feature_slice,
    gather_rows,
    per_feature,
    pow2_ceil,
    raise_bound,
    split_of,
    stream,
    top_order,
    write_back,
)

_HASH_PRIME = (1 << 61) - 1
TINY_RATIO = 2.0**-24  # float16's smallest positive value


def check_window(context_size: int, first_position: int, cfg: SamplerConfig) -> None:
    if context_size - first_position < cfg.window_size:
        raise InputError(
            expected(
                "window_size",
                str(cfg.window_size),
                f"at most the {context_size - first_position} usable tokens of a context",
                "Lower --window-size or raise --context-size.",
            )
        )


class Sampler:
    """Streams batches into a `FeatureState` (`update`); `finish` builds the records."""

    def __init__(
        self,
        features: list[int],
        context_size: int,
        cfg: SamplerConfig,
        first_position: int,
        device: str | torch.device = "cpu",
        state: FeatureState | None = None,
        sync_free: bool | None = None,
    ) -> None:
        """`sync_free`: use the dense steps of sampler_dense.py that never make the host wait
        (default: on any device but the CPU, where the sparse steps are cheaper and waiting is free)."""
        check_window(context_size, first_position, cfg)
        self.cfg, self.features, self.device = cfg, list(features), torch.device(device)
        self.L, self.W, self.first = context_size, cfg.window_size, first_position
        self.state = state.to(self.device) if state is not None else empty_state(self.features, cfg, self.device)
        self.sync_free = self.device.type != "cpu" if sync_free is None else sync_free
        seed = cfg.seed
        # Window-hash weights: a window's hash is sum_j token_j * weight_j mod a prime.
        W = self.W
        weights_W = 1 + draw(stream(seed, SALT_WINDOW_HASH), torch.arange(W, dtype=torch.int64)) % ((1 << 30) - 1)
        self.hash_weights_W = weights_W.to(self.device)
        # Per-feature key states: a (feature, context) key is draw(feature_state, context).
        features_F = torch.tensor(self.features, dtype=torch.int64)
        self.feature_state_F = draw(stream(seed, SALT_KEY), features_F).to(self.device)
        self.hard_state_F = draw(stream(seed, SALT_HARD), features_F).to(self.device)
        self._start_state = stream(seed, SALT_START)
        self._random_state, self._random_start_state = stream(seed, SALT_RANDOM), stream(seed, SALT_RANDOM_START)
        # Hard negatives need their target tokens before the first score context (fix_hard_targets).
        self.awaiting_targets = self.state.splits[1].hard_key_FH.shape[1] > 0

    def fix_hard_targets(self, token_F: Tensor) -> None:
        """Set the token each feature's hard negatives must hold, once every explanation-split context has
        been streamed (by every rank): `sampler_state.hard_targets` of the shards' `explain_best`. From here
        on score contexts may come; their draw no longer depends on the order they come in."""
        self.state.hard_token_F = token_F.to(self.device, torch.int64).clone()  # never shared between states
        self.awaiting_targets = False

    def _offset(self, key: Tensor) -> Tensor:
        """A window start in [first, L - W] from a key in [0, 2^32) (bias below 2^-20 for L < 4096)."""
        return self.first + key % (self.L - self.W + 1 - self.first)

    @property
    def n_tokens(self) -> int:
        return int(self.state.n_tokens)

    # ---- streaming -------------------------------------------------------------------------------

    @torch.no_grad()
    def update(self, acts_BLF: Tensor, tokens_BL: Tensor, context_ids_B: Tensor, valid_BL: Tensor) -> None:
        """Fold one batch in. `acts_BLF` raw activations of the tracked features; `valid_BL` False at
        BOS/special tokens, which count nowhere. `context_ids_B` (GLOBAL context ids, so every rank
        draws the same keys) is best passed on the host: the sampler reads it there to skip a split
        absent from the batch, and copies it to its device itself. With `sync_free` nothing here makes
        the host wait for the device (tests/test_sampler_dense.py checks the operations called)."""
        self.update_blocks(lambda lo, hi: acts_BLF[..., lo:hi], len(self.features), tokens_BL, context_ids_B, valid_BL)

    @torch.no_grad()
    def update_blocks(
        self,
        acts_of: Callable[[int, int], Tensor],
        block: int,
        tokens_BL: Tensor,
        context_ids_B: Tensor,
        valid_BL: Tensor,
    ) -> None:
        """`update`, `block` tracked features at a time: `acts_of(lo, hi)` gives the raw activations
        [B, L, hi - lo] of tracked features lo..hi-1 and is called once per block, so a caller that encodes
        there holds one block's activations and batch work at a time, however many features the pass
        tracks. Every step is per feature or per context, so the state is the same bits for any block."""
        split_host_B = split_of(context_ids_B.cpu(), self.cfg)
        if self.awaiting_targets and 1 in split_host_B.tolist():  # on the host: no device wait
            raise ValueError(
                "Sampler.update: a score-split context came before the hard-negative targets were fixed; "
                "stream the explanation-split contexts first, then call fix_hard_targets (sampler.run_pass does)"
            )
        F = len(self.features)
        if block >= F:
            self._fold(acts_of(0, F), tokens_BL, context_ids_B, split_host_B, valid_BL)
            return
        full, keys = self.state, (self.feature_state_F, self.hard_state_F)
        before = {name: t for name, t in full.tensors().items() if not per_feature(name)}  # n_tokens, random_*_R
        try:
            for lo in range(0, F, block):
                hi = min(lo + block, F)
                # Every block starts from the batch's starting shared fields and ends with the same ones.
                self.state = feature_slice(full, lo, hi, {k: v.clone() for k, v in before.items()})
                self.feature_state_F, self.hard_state_F = keys[0][lo:hi], keys[1][lo:hi]
                self._fold(acts_of(lo, hi), tokens_BL, context_ids_B, split_host_B, valid_BL)
                write_back(full, self.state, lo, hi)
        finally:
            self.state, (self.feature_state_F, self.hard_state_F) = full, keys

    def _fold(self, acts_BLF: Tensor, tokens_BL: Tensor, context_ids_B: Tensor, split_host_B: Tensor, valid_BL) -> None:
        st = self.state
        acts_BLF = torch.where(valid_BL[..., None], acts_BLF.float(), 0.0)
        B, L, F = acts_BLF.shape
        present_splits = set(split_host_B.tolist())
        context_ids_B = context_ids_B.to(self.device)

        active_BLF = acts_BLF > 0
        st.n_tokens += valid_BL.sum()
        st.n_active_F += active_BLF.sum((0, 1))
        # Exact fixed point (sampler_state.fixed_point_sum): the same bits whatever the batching,
        # the sharding across ranks or the other features in the run.
        st.sum_active_F3 = carry(st.sum_active_F3 + fixed_point_sum(acts_BLF))
        peak_BF, argmax_BF = acts_BLF.max(dim=1)
        batch_max_F = peak_BF.max(0).values
        tokens_BL = tokens_BL.to(self.device)
        peak_token_BF = tokens_BL.gather(1, argmax_BF)
        target_F = torch.where(batch_max_F > 0, pow2_ceil(batch_max_F.clamp_min(1e-30)), 0.0)
        if self.sync_free:
            raise_bound_dense(st, torch.maximum(st.bound_F, target_F), self.cfg)
        else:
            raise_bound(st, torch.maximum(st.bound_F, target_F), self.cfg)
        st.max_F = torch.maximum(st.max_F, batch_max_F)
        if self.sync_free:
            add_histogram_dense(
                st, self._cell_of(acts_BLF, st.bound_F.clamp_min(1e-30)), active_BLF, self.cfg.interval_grid
            )
        else:
            self._add_histogram(acts_BLF, active_BLF)

        # One candidate window per (context, feature): around the peak, or at the context's hashed
        # offset if the feature does not fire there.
        hashed_start_B = self._offset(draw(self._start_state, context_ids_B))
        peak_start_BF = (argmax_BF - self.cfg.window_left).clamp(self.first, L - self.W)
        start_BF = torch.where(peak_BF > 0, peak_start_BF, hashed_start_B[:, None])
        window_BFW = self._cut(acts_BLF, start_BF)
        # Stored as float16 ratios to the peak (see sampler_state.py); only firing windows are kept.
        ratio_BFW = window_BFW / torch.where(peak_BF > 0, peak_BF, 1.0)[..., None]
        ratio16_BFW = ratio_BFW.to(RATIO_DTYPE)
        # A positive activation stays positive (it fires, level >= 1 under the ceil rule) even below
        # float16's smallest subnormal.
        ratio_BFW = torch.where((ratio_BFW > 0) & (ratio16_BFW == 0), TINY_RATIO, ratio16_BFW)
        window_hash_BF = self._window_hashes(tokens_BL).gather(1, start_BF)
        has_valid_B = valid_BL.any(1).to(self.device)
        # Key of (feature, context): interval and non-activating reservoirs keep the smallest. A context
        # is in at most one of them per feature (fires or not), so one key serves both.
        keys_BF = draw(self.feature_state_F[None, :], context_ids_B[:, None])
        split_B = split_host_B.to(self.device)
        for split, state in enumerate(st.splits):
            if split not in present_splits:  # decided on the host; the masks below do the rest
                continue
            in_split_B = (split_B == split) & has_valid_B
            fires_BF = (peak_BF > 0) & in_split_B[:, None]
            self._update_top(
                state, peak_BF, fires_BF, context_ids_B, start_BF, window_hash_BF, peak_token_BF, ratio_BFW
            )
            if self.sync_free:
                fields = {"cell_value_FGM": peak_BF, "cell_start_FGM": start_BF, "cell_ratio_FGMW": ratio_BFW}
                fields["cell_context_FGM"] = context_ids_B[:, None].expand(B, F)
                cell_BF = self._cell_of(peak_BF, st.bound_F.clamp_min(1e-30))
                update_cells_dense(state, cell_BF, fires_BF, keys_BF, fields)
            else:
                self._update_cells(state, peak_BF, fires_BF, keys_BF, context_ids_B, start_BF, ratio_BFW)
            silent_BF = (peak_BF <= 0) & in_split_B[:, None]
            self._update_nonactivating(state, silent_BF, keys_BF, context_ids_B, start_BF)
            self._update_hard(state, silent_BF, context_ids_B, tokens_BL, valid_BL)
            self._update_random(state, acts_BLF, context_ids_B, split_B == split)

    def _cut(self, acts_BLF: Tensor, start_BF: Tensor) -> Tensor:
        offsets_W = torch.arange(self.W, device=self.device)
        index_BFW = start_BF[..., None] + offsets_W
        return acts_BLF.permute(0, 2, 1).gather(2, index_BFW)

    def _window_hashes(self, tokens_BL: Tensor) -> Tensor:
        windows_BSW = tokens_BL.to(self.device).unfold(1, self.W, 1)
        return (windows_BSW * self.hash_weights_W).sum(-1) % _HASH_PRIME

    def _cell_of(self, values: Tensor, bound: Tensor) -> Tensor:
        """Grid cell of positive values: cell c covers (c, c+1] * bound / G."""
        G = self.cfg.interval_grid
        return (torch.ceil(values / bound * G) - 1).clamp(0, G - 1).long()

    def _add_histogram(self, acts_BLF: Tensor, active_BLF: Tensor) -> None:
        b, pos, feature_idx = torch.nonzero(active_BLF, as_tuple=True)
        cells = self._cell_of(acts_BLF[b, pos, feature_idx], self.state.bound_F[feature_idx])
        flat = self.state.hist_FG.view(-1)
        flat.index_add_(0, feature_idx * self.cfg.interval_grid + cells, torch.ones_like(cells))

    def _update_top(
        self, state: SplitState, peak_BF, fires_BF, context_ids_B, start_BF, hash_BF, token_BF, ratio_BFW
    ) -> None:
        """The K best of kept + this batch's candidates, by the same rule a merge uses (top_order)."""
        K = state.top_value_FK.shape[1]
        if K == 0:
            return
        F, B = fires_BF.shape[1], fires_BF.shape[0]
        value = torch.cat([state.top_value_FK, torch.where(fires_BF, peak_BF, -math.inf).T], 1)
        ctx = torch.cat([state.top_context_FK, context_ids_B.expand(F, B)], 1)
        hashes = torch.cat([state.top_hash_FK, hash_BF.T], 1)
        pick = top_order(value, ctx, hashes, K)
        state.top_value_FK = value.gather(1, pick)
        state.top_context_FK = ctx.gather(1, pick)
        state.top_start_FK = torch.cat([state.top_start_FK, start_BF.T], 1).gather(1, pick)
        state.top_hash_FK = hashes.gather(1, pick)
        state.top_token_FK = torch.cat([state.top_token_FK, token_BF.T], 1).gather(1, pick)
        state.top_ratio_FKW = gather_rows(torch.cat([state.top_ratio_FKW, ratio_BFW.transpose(0, 1)], 1), pick)

    def _update_cells(self, state: SplitState, peak_BF, fires_BF, keys_BF, context_ids_B, start_BF, ratio_BFW) -> None:
        """Each touched (feature, cell) row keeps the M smallest keys among its slots and this batch's
        candidates: the same slots as inserting the contexts one by one, in one bottom-M pass."""
        F, G, M = state.cell_key_FGM.shape
        if M == 0:
            return
        W, B = self.W, peak_BF.shape[0]
        b_C, f_C = torch.nonzero(fires_BF, as_tuple=True)
        cell_C = self._cell_of(peak_BF[b_C, f_C], self.state.bound_F[f_C].clamp_min(1e-30))
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
            full = getattr(state, name)
            flat = full.view(F * G, M, *full.shape[3:])
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
        merged("cell_ratio_FGMW", ratio_BFW[b_UM, f_UM], 0.0)

    def _update_nonactivating(self, state: SplitState, silent_BF, keys_BF, context_ids_B, start_BF) -> None:
        N = state.nonact_key_FN.shape[1]
        if N == 0:
            return
        F, B = silent_BF.shape[1], silent_BF.shape[0]
        key = torch.cat([state.nonact_key_FN, torch.where(silent_BF, keys_BF, NO_KEY).T], 1)
        best = bottom(key, N)
        state.nonact_key_FN = key.gather(1, best)
        state.nonact_context_FN = torch.cat([state.nonact_context_FN, context_ids_B.expand(F, B)], 1).gather(1, best)
        state.nonact_start_FN = torch.cat([state.nonact_start_FN, start_BF.T], 1).gather(1, best)

    def _update_random(self, state: SplitState, acts_BLF: Tensor, context_ids_B: Tensor, in_split_B: Tensor) -> None:
        """Bottom-R reservoir of the split's contexts by (seed, context) key, for every feature at once:
        only the R picked contexts' windows are cut, so a batch costs O(F x R x W), not O(F x B x W)."""
        R = len(state.random_key_R)
        if R == 0:
            return
        key_B = torch.where(in_split_B, draw(self._random_state, context_ids_B), NO_KEY)
        key = torch.cat([state.random_key_R, key_B])
        pick_R = key.topk(R, largest=False).indices
        from_batch_R = pick_R >= R
        b_R = (pick_R - R).clamp_min(0)
        start_R = self._offset(draw(self._random_start_state, context_ids_B[b_R]))
        index_RW = start_R[:, None] + torch.arange(self.W, device=self.device)
        new_FRW = acts_BLF[b_R[:, None], index_RW].permute(2, 0, 1)  # [R, W, F] -> [F, R, W]
        old_FRW = state.random_acts_FRW[:, pick_R.clamp_max(R - 1)]
        state.random_acts_FRW = torch.where(from_batch_R[None, :, None], new_FRW, old_FRW)
        state.random_start_R = torch.where(from_batch_R, start_R, state.random_start_R[pick_R.clamp_max(R - 1)])
        state.random_context_R = torch.cat([state.random_context_R, context_ids_B])[pick_R]
        state.random_key_R = key[pick_R]

    def _update_hard(self, state: SplitState, silent_BF, context_ids_B, tokens_BL, valid_BL) -> None:
        """Contexts where the feature is silent and which hold its target token (fixed before any score
        context, see `fix_hard_targets`) compete by key; the window is centred (as a top window) on the
        occurrence with the smallest key of (context key, position)."""
        H = state.hard_key_FH.shape[1]
        if H == 0:
            return
        B, L = tokens_BL.shape
        F = silent_BF.shape[1]
        usable_BL = valid_BL.to(self.device) & (torch.arange(L, device=self.device) >= self.first)
        match_BLF = (tokens_BL[..., None] == self.state.hard_token_F) & usable_BL[..., None] & silent_BF[:, None, :]
        context_key_BF = draw(self.hard_state_F[None, :], context_ids_B[:, None])
        if self.sync_free:
            pos_BF, has_BF = hard_positions_dense(match_BLF, context_key_BF, self.first)
        else:
            b, pos, f = torch.nonzero(match_BLF, as_tuple=True)
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
        keep = bottom(key, H)
        state.hard_key_FH = key.gather(1, keep)
        ctx = torch.cat([state.hard_context_FH, context_ids_B.expand(F, B)], 1)
        state.hard_context_FH = ctx.gather(1, keep)
        state.hard_start_FH = torch.cat([state.hard_start_FH, start_BF.T], 1).gather(1, keep)

    # ---- results ---------------------------------------------------------------------------------

    def interval_cells(self, feature_pos: int) -> list[tuple[int, int]]:
        """Cell ranges [lo, hi) of each interval for one tracked feature (empty if it never fired)."""
        return interval_cells(self.state, self.cfg, feature_pos)

    def finish(self, tokens: "Tensor | Callable", decode: Callable[[list[int]], list[str]]) -> list[FeatureSample]:
        """Records of every kept window. `tokens`: the corpus [N, L], or a function from an int64 array
        of context ids to their tokens [n, L] (for a corpus that is streamed, not held)."""
        return finish_records(self.state, self.cfg, self.W, tokens, decode)
