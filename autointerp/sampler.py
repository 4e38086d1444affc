"""Stream a corpus through model + SAE and keep, per feature, top / interval / random / non-activating
windows and activation statistics, in state that is O(features x k) on the model's device.

Shapes: B contexts per batch, L tokens per context, F tracked features, W tokens per window,
K top windows, G grid cells, M reservoir slots per cell.

How each group is drawn (per split; every context belongs to exactly one split, drawn with the seed):
- top: the K contexts with the highest peak activation; a window identical to one already kept
  (same W tokens) counts once.
- interval: equal-width intervals of (0, max']. A feature's positive peaks live on a grid of G cells
  over (0, bound], bound a power of two >= the running max; when the max outgrows the bound, the bound
  doubles and cell pairs merge, so nothing seen is lost. Each cell keeps the M contexts with the
  smallest random keys (bottom-M sampling), a uniform sample of the contexts whose peak fell in that
  cell. At the end, cells 0..c_max (c_max the cell of the max) are split into n_intervals runs of
  equal length (to within one cell), so max' is the max rounded up to the grid (at most 2/G above it)
  and each interval is a union of whole cells: the smallest keys over an interval are a uniform draw
  from its contexts. A context already kept as a top window is skipped, which stays exact while a cell
  holds at most M - draws top contexts.
- random: contexts chosen uniformly up front (the corpus is tokenised before streaming), windows at a
  random offset, stored with their TRUE activations.
- non-activating: bottom-k sampling over contexts where the feature never fires.
Statistics (token count, firing count, max, mean when active, histogram on the same grid) count every
token except BOS and other special tokens, in both splits.
"""

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from autointerp.config import SamplerConfig
from autointerp.errors import InputError, expected
from autointerp.records import FeatureSample, FeatureStats, Window

SPLITS = ("explain", "score")
_HASH_PRIME = (1 << 61) - 1


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
        gen = torch.Generator().manual_seed(cfg.seed)
        explain_mask = torch.rand(n_contexts, generator=gen) < cfg.explain_fraction
        # 0 explain, 1 score; one byte per context is the only state that grows with the corpus.
        self.split_of_context = torch.where(explain_mask, 0, 1).to(torch.int8).to(self.device)
        # Window-hash weights: a window's hash is sum_j token_j * weight_j mod a prime.
        self.hash_weights_W = torch.randint(1, 1 << 30, (W,), generator=gen).to(self.device)
        self.n_tokens = 0
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
        for split, (n_top, n_random, _) in enumerate(counts):
            pool = torch.nonzero(self.split_of_context.cpu() == split).flatten()
            pick = pool[torch.randperm(len(pool), generator=gen)[:n_random]].sort().values
            starts = torch.randint(first_position, context_size - W + 1, (len(pick),), generator=gen)
            self.splits.append(self._empty_split(F, n_top, n_nonact[split], pick, starts))
        self.batch_index = 0

    def _empty_split(self, F, K, N, random_contexts, random_starts) -> SplitState:
        G, M, W, dev = self.cfg.interval_grid, self.M, self.W, self.device
        R = len(random_contexts)
        return SplitState(
            top_value_FK=_fill((F, K), -math.inf, torch.float32, dev),
            top_context_FK=_fill((F, K), -1, torch.int64, dev),
            top_start_FK=_fill((F, K), 0, torch.int64, dev),
            top_hash_FK=_fill((F, K), -1, torch.int64, dev),
            top_acts_FKW=_fill((F, K, W), 0.0, torch.float32, dev),
            cell_key_FGM=_fill((F, G, M), math.inf, torch.float32, dev),
            cell_value_FGM=_fill((F, G, M), 0.0, torch.float32, dev),
            cell_context_FGM=_fill((F, G, M), -1, torch.int64, dev),
            cell_start_FGM=_fill((F, G, M), 0, torch.int64, dev),
            cell_acts_FGMW=_fill((F, G, M, W), 0.0, torch.float32, dev),
            nonact_key_FN=_fill((F, N), math.inf, torch.float32, dev),
            nonact_context_FN=_fill((F, N), -1, torch.int64, dev),
            nonact_start_FN=_fill((F, N), 0, torch.int64, dev),
            random_contexts_R=random_contexts.to(dev),
            random_starts_R=random_starts.to(dev),
            random_acts_FRW=_fill((F, R, W), 0.0, torch.float32, dev),
        )

    # ---- streaming -------------------------------------------------------------------------------

    @torch.no_grad()
    def update(self, acts_BLF: Tensor, tokens_BL: Tensor, context_ids_B: Tensor, valid_BL: Tensor) -> None:
        """Fold one batch in. `acts_BLF` raw activations of the tracked features; `valid_BL` False at
        BOS/special tokens, which count nowhere."""
        acts_BLF = torch.where(valid_BL[..., None], acts_BLF.float(), 0.0)
        B, L, F = acts_BLF.shape
        gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed * 1_000_003 + self.batch_index)
        self.batch_index += 1

        active_BLF = acts_BLF > 0
        self.n_tokens += int(valid_BL.sum())
        self.n_active_F += active_BLF.sum((0, 1))
        self.sum_active_F += acts_BLF.sum((0, 1), dtype=torch.float64)
        peak_BF, argmax_BF = acts_BLF.max(dim=1)
        batch_max_F = peak_BF.max(0).values
        self._grow_grid(batch_max_F)
        self.max_F = torch.maximum(self.max_F, batch_max_F)
        self._add_histogram(acts_BLF[active_BLF.any(-1)], active_BLF[active_BLF.any(-1)])

        # One candidate window per (context, feature): around the peak, or at a random offset if none.
        random_start_B = torch.randint(self.first, L - self.W + 1, (B,), generator=gen, device=self.device)
        peak_start_BF = (argmax_BF - self.cfg.window_left).clamp(self.first, L - self.W)
        start_BF = torch.where(peak_BF > 0, peak_start_BF, random_start_B[:, None])
        window_acts_BFW = self._cut(acts_BLF, start_BF)
        window_hash_BF = self._window_hashes(tokens_BL).gather(1, start_BF)
        has_valid_B = valid_BL.any(1)
        keys_BF = torch.rand(B, F, generator=gen, device=self.device)
        split_B = self.split_of_context[context_ids_B]
        for split, state in enumerate(self.splits):
            in_split_B = (split_B == split) & has_valid_B
            if not in_split_B.any():
                continue
            fires_BF = (peak_BF > 0) & in_split_B[:, None]
            self._update_top(state, peak_BF, fires_BF, context_ids_B, start_BF, window_hash_BF, window_acts_BFW)
            self._update_cells(state, peak_BF, fires_BF, keys_BF, context_ids_B, start_BF, window_acts_BFW)
            silent_BF = (peak_BF <= 0) & in_split_B[:, None]
            self._update_nonactivating(state, silent_BF, keys_BF, context_ids_B, start_BF)
            self._update_random(state, acts_BLF, context_ids_B)

    def _cut(self, acts_BLF: Tensor, start_BF: Tensor) -> Tensor:
        offsets_W = torch.arange(self.W, device=self.device)
        index_BFW = start_BF[..., None] + offsets_W
        return acts_BLF.permute(0, 2, 1).gather(2, index_BFW)

    def _window_hashes(self, tokens_BL: Tensor) -> Tensor:
        windows_BSW = tokens_BL.to(self.device).unfold(1, self.W, 1)
        return (windows_BSW * self.hash_weights_W).sum(-1) % _HASH_PRIME

    def _grow_grid(self, batch_max_F: Tensor) -> None:
        """Double each feature's bound until it covers the max, merging cell pairs (counts and samples)."""
        fresh_F = (self.bound_F == 0) & (batch_max_F > 0)
        if fresh_F.any():
            self.bound_F[fresh_F] = torch.exp2(torch.ceil(torch.log2(batch_max_F[fresh_F])))
        while True:
            grow_F = batch_max_F > self.bound_F
            if not grow_F.any():
                return
            idx = torch.nonzero(grow_F).flatten()
            self.bound_F[idx] *= 2
            G = self.cfg.interval_grid
            hist = self.hist_FG[idx].view(len(idx), G // 2, 2).sum(-1)
            self.hist_FG[idx] = torch.cat([hist, torch.zeros_like(hist)], dim=1)
            for state in self.splits:
                self._merge_cells(state, idx)

    def _merge_cells(self, state: SplitState, idx: Tensor) -> None:
        G, M = self.cfg.interval_grid, self.M
        key = state.cell_key_FGM[idx].view(len(idx), G // 2, 2 * M)
        order = key.argsort(dim=-1)[..., :M]
        for name in ("cell_key_FGM", "cell_value_FGM", "cell_context_FGM", "cell_start_FGM"):
            full = getattr(state, name)
            merged = full[idx].view(len(idx), G // 2, 2 * M).gather(2, order)
            empty = torch.full_like(
                merged, math.inf if name == "cell_key_FGM" else (-1 if name == "cell_context_FGM" else 0)
            )
            full[idx] = torch.cat([merged, empty], dim=1)
        acts = state.cell_acts_FGMW[idx].view(len(idx), G // 2, 2 * M, self.W)
        merged = acts.gather(2, order[..., None].expand(-1, -1, -1, self.W))
        state.cell_acts_FGMW[idx] = torch.cat([merged, torch.zeros_like(merged)], dim=1)

    def _cell_of(self, values: Tensor, bound: Tensor) -> Tensor:
        """Grid cell of positive values: cell c covers (c, c+1] * bound / G."""
        G = self.cfg.interval_grid
        return (torch.ceil(values / bound * G) - 1).clamp(0, G - 1).long()

    def _add_histogram(self, acts_TF: Tensor, active_TF: Tensor) -> None:
        token_idx, feature_idx = torch.nonzero(active_TF, as_tuple=True)
        cells = self._cell_of(acts_TF[token_idx, feature_idx], self.bound_F[feature_idx])
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
        if self.M == 0:
            return
        F = peak_BF.shape[1]
        f_idx = torch.arange(F, device=self.device)
        for b in torch.nonzero(fires_BF.any(1)).flatten().tolist():
            fires_F = fires_BF[b]
            cell_F = self._cell_of(peak_BF[b], self.bound_F.clamp_min(1e-30))
            slot_keys_FM = state.cell_key_FGM[f_idx, cell_F]
            worst_key_F, worst_slot_F = slot_keys_FM.max(-1)
            take_F = fires_F & (keys_BF[b] < worst_key_F)
            f, c, s = f_idx[take_F], cell_F[take_F], worst_slot_F[take_F]
            state.cell_key_FGM[f, c, s] = keys_BF[b][take_F]
            state.cell_value_FGM[f, c, s] = peak_BF[b][take_F]
            state.cell_context_FGM[f, c, s] = int(context_ids_B[b])
            state.cell_start_FGM[f, c, s] = start_BF[b][take_F]
            state.cell_acts_FGMW[f, c, s] = acts_BFW[b][take_F]

    def _update_nonactivating(self, state, silent_BF, keys_BF, context_ids_B, start_BF) -> None:
        N = state.nonact_key_FN.shape[1]
        if N == 0:
            return
        F, B = silent_BF.shape[1], silent_BF.shape[0]
        key = torch.cat([state.nonact_key_FN, torch.where(silent_BF, keys_BF, math.inf).T], 1)
        best = key.topk(N, dim=1, largest=False).indices
        state.nonact_key_FN = key.gather(1, best)
        ctx = torch.cat([state.nonact_context_FN, context_ids_B.to(self.device).expand(F, B)], 1)
        state.nonact_context_FN = ctx.gather(1, best)
        state.nonact_start_FN = torch.cat([state.nonact_start_FN, start_BF.T], 1).gather(1, best)

    def _update_random(self, state, acts_BLF, context_ids_B) -> None:
        ids = context_ids_B.to(self.device)
        for r, (ctx, start) in enumerate(zip(state.random_contexts_R.tolist(), state.random_starts_R.tolist())):
            hit = torch.nonzero(ids == ctx).flatten()
            if len(hit):
                state.random_acts_FRW[:, r] = acts_BLF[int(hit[0]), start : start + self.W].T

    # ---- results ---------------------------------------------------------------------------------

    def stats(self) -> list[FeatureStats]:
        G = self.cfg.interval_grid
        out = []
        hist, bound = self.hist_FG.cpu(), self.bound_F.cpu()
        n_active, sums, maxes = self.n_active_F.cpu(), self.sum_active_F.cpu(), self.max_F.cpu()
        for i, feature in enumerate(self.features):
            n_cells = int(self._cell_of(maxes[i : i + 1], bound[i : i + 1]).item()) + 1 if n_active[i] else 0
            width = float(bound[i]) / G
            out.append(
                FeatureStats(
                    feature=feature,
                    n_tokens=self.n_tokens,
                    n_active=int(n_active[i]),
                    max_activation=float(maxes[i]),
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
        host = [{k: v.cpu() if isinstance(v, Tensor) else v for k, v in vars(s).items()} for s in self.splits]
        samples = []
        for i, (feature, stats) in enumerate(zip(self.features, self.stats())):
            windows = [
                Window(
                    feature=feature,
                    context_id=context,
                    start=start,
                    token_ids=(ids := tokens_NL[context, start : start + self.W].tolist()),
                    tokens=decode(ids),
                    activations=acts.tolist(),
                    group=group,
                    interval=interval,
                    split=SPLITS[split],
                )
                for split, state in enumerate(host)
                for context, start, acts, group, interval in self._kept(i, split, state)
            ]
            samples.append(FeatureSample(stats=stats, windows=windows))
        return samples

    def _kept(self, i: int, split: int, state: dict) -> list[tuple[int, int, Tensor, str, int | None]]:
        """(context, start, activations [W], group, interval) of every window kept for tracked feature i."""
        kept: list[tuple[int, int, Tensor, str, int | None]] = []
        for k in range(state["top_value_FK"].shape[1]):
            if state["top_value_FK"][i, k] > -math.inf:
                context = int(state["top_context_FK"][i, k])
                kept.append((context, int(state["top_start_FK"][i, k]), state["top_acts_FKW"][i, k], "top", None))
        top_contexts = {context for context, *_ in kept}
        per_interval = (self.cfg.per_interval_explain, self.cfg.per_interval_score)[split]
        for interval, (lo, hi) in enumerate(self.interval_cells(i)):
            keys = state["cell_key_FGM"][i, lo:hi].flatten()
            drawn = 0
            for j in keys.argsort().tolist():  # smallest keys first: a uniform draw from the interval
                if drawn == per_interval or not math.isfinite(float(keys[j])):
                    break
                c, m = lo + j // self.M, j % self.M
                context = int(state["cell_context_FGM"][i, c, m])
                if context not in top_contexts:
                    start = int(state["cell_start_FGM"][i, c, m])
                    kept.append((context, start, state["cell_acts_FGMW"][i, c, m], "interval", interval))
                    drawn += 1
        for r, (context, start) in enumerate(
            zip(state["random_contexts_R"].tolist(), state["random_starts_R"].tolist())
        ):
            kept.append((context, start, state["random_acts_FRW"][i, r], "random", None))
        for n in range(state["nonact_key_FN"].shape[1]):
            if math.isfinite(float(state["nonact_key_FN"][i, n])):
                context, start = int(state["nonact_context_FN"][i, n]), int(state["nonact_start_FN"][i, n])
                kept.append((context, start, torch.zeros(self.W), "nonactivating", None))
        return kept


# ---- driving the model ---------------------------------------------------------------------------


def hook_stop_layer(hook_name: str) -> int | None:
    """Layer to stop the forward pass at: just after the hook's block."""
    parts = hook_name.split(".")
    return int(parts[1]) + 1 if parts[0] == "blocks" and parts[1].isdigit() else None


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
        state.update(acts_BLF, tokens_BL, context_ids_B.to(device), valid_BL.to(device))
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
