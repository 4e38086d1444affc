"""The sampler's per-feature state as plain tensors, and an exact, associative `merge` of two states.

A state summarises the contexts it has seen (any set of global context ids): statistics, the grid
histogram and every reservoir. Two states over DISJOINT sets of contexts merge into the state one
process would hold after streaming both sets, bit for bit, whatever the order or grouping of the merges:

- counts and the histogram add (integers); the max is a max; the sum of activations is kept as an
  exact fixed-point integer (three int64 limbs, see `fixed_point_sum`), so it adds associatively too.
- the grid bound is a function of the max alone (the smallest power of two >= it, see `pow2_ceil`), so
  both sides are first brought to the larger bound by merging runs of 2^d cells, as streaming does;
  then cells line up and their bottom-M reservoirs merge by keeping the M smallest keys of 2M slots.
- every reservoir but top keeps the smallest keys of a hash that is a bijection of the context id:
  keys never tie, so "the n smallest of a union" is the n smallest of the parts' n smallest.
- top keeps the K best windows under a total order (peak descending, then context id ascending),
  identical windows (same tokens) represented by their best: the best of a union is the best of bests.
- random windows: one bottom-R reservoir over score contexts, keyed per context (shared by features).
- hard negatives hold a target token per feature that is fixed before any score context is streamed
  (`hard_targets`: the token at the feature's best explanation-split window, from the merged explanation
  top-1 of every shard), so every shard draws from the same rule and their bottom-H reservoirs merge
  like the others; states with different targets refuse to merge.
Merging costs O(F x slots): a few sorts over 2x the state, never a pass over the corpus.

Window activations of top and interval windows are kept as float16 ratios to the window's peak (the
peak itself is kept in float32): ratios lie in [0, 1], so float16 never overflows whatever the SAE's
scale, the peak token is exact (ratio 1), and every other activation is within 2^-11 relative.
"""

import math
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from autointerp.config import SamplerConfig
from autointerp.exact_sum import carry

# ---- counter-based draws -------------------------------------------------------------------------
# What is drawn: each gets its own stream of the seed, so draws of different kinds are unrelated.
SALT_SPLIT, SALT_KEY, SALT_RANDOM, SALT_RANDOM_START, SALT_START, SALT_WINDOW_HASH, SALT_HARD = range(1, 8)
MASK32 = 0xFFFFFFFF
NO_KEY = 1 << 32  # above every key: an empty reservoir slot
RATIO_DTYPE = torch.float16
STATE_FORMAT = 2  # bumped when the state's fields change, so an older checkpoint is not resumed


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


def split_of(context_ids: Tensor, cfg: SamplerConfig) -> Tensor:
    """0 explain, 1 score for each global context id: a hash of (seed, context id) alone."""
    cut = round(cfg.explain_fraction * (1 << 32))
    return (draw(stream(cfg.seed, SALT_SPLIT), context_ids) >= cut).to(torch.int8)


def pow2_ceil(x: Tensor) -> Tensor:
    """The smallest power of two >= x (float32, x > 0), exact: float64 log2 is corrected by one step."""
    x64 = x.double()
    p = torch.exp2(torch.ceil(torch.log2(x64)))
    p = torch.where(p < x64, p * 2, p)
    p = torch.where(p / 2 >= x64, p / 2, p)
    return p.float()


def slots_per_cell(cfg: SamplerConfig) -> tuple[int, int]:
    """Reservoir slots M per grid cell for (explain, score): the draws plus 2, so a cell may hold two
    top windows (skipped at the end) and still give its draws exactly."""
    return cfg.per_interval_explain + 2, cfg.per_interval_score + 2


@dataclass
class SplitState:
    """Reservoirs of one split. K top, G cells x M slots, N non-activating, H hard, R random; W tokens."""

    top_value_FK: Tensor  # float32 peak, -inf empty
    top_context_FK: Tensor
    top_start_FK: Tensor
    top_hash_FK: Tensor
    top_token_FK: Tensor  # token at the window's peak (-1 empty)
    top_ratio_FKW: Tensor  # float16 activation / peak
    cell_key_FGM: Tensor  # NO_KEY empty
    cell_value_FGM: Tensor
    cell_context_FGM: Tensor
    cell_start_FGM: Tensor
    cell_ratio_FGMW: Tensor
    nonact_key_FN: Tensor
    nonact_context_FN: Tensor
    nonact_start_FN: Tensor
    hard_key_FH: Tensor
    hard_context_FH: Tensor
    hard_start_FH: Tensor
    random_key_R: Tensor  # the same contexts for every feature
    random_context_R: Tensor
    random_start_R: Tensor
    random_acts_FRW: Tensor  # float32 true activations (no peak to scale by)


@dataclass
class FeatureState:
    """Everything a sampling pass keeps for `features` (positions 0..F-1 in the tensors)."""

    features: list[int]
    n_tokens: Tensor  # 0-d int64
    n_active_F: Tensor
    sum_active_F3: Tensor  # int64 limbs of the exact activation sum (see fixed_point_sum)
    max_F: Tensor  # 0 until the feature fires
    hard_token_F: Tensor  # the token hard negatives hold (-1: none, or not fixed yet; see hard_targets)
    bound_F: Tensor  # grid bound, a power of two; 0 until the feature fires
    hist_FG: Tensor
    splits: list[SplitState]

    def tensors(self) -> dict[str, Tensor]:
        """Every tensor by a flat name (`explain.top_value_FK`), for checkpoints and byte counts."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("features", "splits")}
        for name, split in zip(("explain", "score"), self.splits):
            out |= {f"{name}.{f.name}": getattr(split, f.name) for f in fields(split)}
        return out

    def to(self, device: str | torch.device) -> "FeatureState":
        return from_tensors(self.features, {k: v.to(device) for k, v in self.tensors().items()})

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())


def per_feature(name: str) -> bool:
    """Whether a flat state tensor (`FeatureState.tensors`) has one row per tracked feature: all but the
    token count and the random reservoir's per-context fields, which every feature shares."""
    return name.rsplit("_", 1)[-1].startswith("F")


def feature_slice(state: FeatureState, lo: int, hi: int, shared: dict[str, Tensor]) -> FeatureState:
    """The state of tracked features lo..hi-1: views of `state`'s per-feature rows, with `shared` as the
    fields every feature shares (see `per_feature`)."""
    tensors = {n: t[lo:hi] if per_feature(n) else shared[n] for n, t in state.tensors().items()}
    return from_tensors(state.features[lo:hi], tensors)


def write_back(state: FeatureState, part: FeatureState, lo: int, hi: int) -> None:
    """Copy a `feature_slice`'s fields into rows lo..hi-1 of `state` (rows changed in place are there
    already), and take its shared fields."""
    own = state.tensors()
    for name, t in part.tensors().items():
        if not per_feature(name):
            _set(state, name, t)
        elif t.data_ptr() != own[name][lo:hi].data_ptr():
            own[name][lo:hi].copy_(t)


def _set(state: FeatureState, name: str, t: Tensor) -> None:
    split, _, field = name.rpartition(".")
    setattr(state.splits[("explain", "score").index(split)] if split else state, field, t)


def from_tensors(features: list[int], tensors: dict[str, Tensor]) -> FeatureState:
    """The inverse of `FeatureState.tensors`."""
    splits = [
        SplitState(**{f.name: tensors[f"{name}.{f.name}"] for f in fields(SplitState)}) for name in ("explain", "score")
    ]
    top = {f.name: tensors[f.name] for f in fields(FeatureState) if f.name not in ("features", "splits")}
    return FeatureState(features=list(features), splits=splits, **top)


def _fill(shape, value, dtype, device) -> Tensor:
    return torch.full(shape, value, dtype=dtype, device=device)


def empty_state(features: list[int], cfg: SamplerConfig, device: str | torch.device = "cpu") -> FeatureState:
    F, G, W, dev = len(features), cfg.interval_grid, cfg.window_size, torch.device(device)
    i64 = torch.int64
    splits = []
    shapes = (
        (cfg.n_top_explain, 0, 0, 0),
        (cfg.n_top_score, cfg.n_nonactivating_score, cfg.n_hard_negative_score, cfg.n_random_score),
    )
    for (K, N, H, R), M in zip(shapes, slots_per_cell(cfg)):
        splits.append(
            SplitState(
                top_value_FK=_fill((F, K), -math.inf, torch.float32, dev),
                top_context_FK=_fill((F, K), -1, i64, dev),
                top_start_FK=_fill((F, K), 0, i64, dev),
                top_hash_FK=_fill((F, K), -1, i64, dev),
                top_token_FK=_fill((F, K), -1, i64, dev),
                top_ratio_FKW=_fill((F, K, W), 0.0, RATIO_DTYPE, dev),
                cell_key_FGM=_fill((F, G, M), NO_KEY, i64, dev),
                cell_value_FGM=_fill((F, G, M), 0.0, torch.float32, dev),
                cell_context_FGM=_fill((F, G, M), -1, i64, dev),
                cell_start_FGM=_fill((F, G, M), 0, i64, dev),
                cell_ratio_FGMW=_fill((F, G, M, W), 0.0, RATIO_DTYPE, dev),
                nonact_key_FN=_fill((F, N), NO_KEY, i64, dev),
                nonact_context_FN=_fill((F, N), -1, i64, dev),
                nonact_start_FN=_fill((F, N), 0, i64, dev),
                hard_key_FH=_fill((F, H), NO_KEY, i64, dev),
                hard_context_FH=_fill((F, H), -1, i64, dev),
                hard_start_FH=_fill((F, H), 0, i64, dev),
                random_key_R=_fill((R,), NO_KEY, i64, dev),
                random_context_R=_fill((R,), -1, i64, dev),
                random_start_R=_fill((R,), 0, i64, dev),
                random_acts_FRW=_fill((F, R, W), 0.0, torch.float32, dev),
            )
        )
    return FeatureState(
        features=list(features),
        n_tokens=torch.zeros((), dtype=i64, device=dev),
        n_active_F=torch.zeros(F, dtype=i64, device=dev),
        sum_active_F3=torch.zeros(F, 3, dtype=i64, device=dev),
        max_F=torch.zeros(F, dtype=torch.float32, device=dev),
        hard_token_F=_fill((F,), -1, i64, dev),
        bound_F=torch.zeros(F, dtype=torch.float32, device=dev),
        hist_FG=torch.zeros(F, G, dtype=i64, device=dev),
        splits=splits,
    )


def state_bytes_per_feature(cfg: SamplerConfig) -> int:
    """Bytes of state one tracked feature costs (the feature-independent parts are a few hundred bytes)."""
    return empty_state([0, 1], cfg).nbytes() - empty_state([0], cfg).nbytes()


# ---- selection rules shared by streaming and merging ---------------------------------------------


def bottom(key_FX: Tensor, n: int) -> Tensor:
    """Indices [F, n] of the n smallest keys per row. Keys of real entries are distinct (bijective
    hashes), so the set chosen is unique; ties are only among empty slots, which are all alike."""
    return key_FX.topk(n, dim=-1, largest=False).indices


def top_order(value_FX: Tensor, context_FX: Tensor, hash_FX: Tensor, k: int) -> Tensor:
    """Indices [F, k] of the k best windows per row under (peak desc, context asc), each distinct window
    (hash) counted once, by its best. Rows must hold distinct contexts. Empty/lost entries sort last."""
    by_context = context_FX.argsort(dim=1, stable=True)
    order = by_context.gather(1, value_FX.gather(1, by_context).argsort(dim=1, descending=True, stable=True))
    value, hashes = value_FX.gather(1, order), hash_FX.gather(1, order)
    X = value.shape[1]
    earlier = torch.ones(X, X, dtype=torch.bool, device=value.device).tril(-1)
    dup = ((hashes[:, :, None] == hashes[:, None, :]) & earlier).any(-1) & (value > -math.inf)
    # Losers of a duplicate move behind every real window; the stable sort keeps the rest in order.
    return order.gather(1, dup.to(torch.int8).argsort(dim=1, stable=True)[:, :k])


def gather_rows(t: Tensor, index: Tensor) -> Tensor:
    """t[i, index[i, j], ...] for t of shape [N, X, ...] and index [N, k]. Advanced indexing copies
    whole trailing rows (a window's W values at once), several times faster than `gather` with an
    index expanded over them."""
    rows = torch.arange(t.shape[0], device=t.device)[:, None]
    return t[rows, index]


# ---- the grid --------------------------------------------------------------------------------------


def raise_bound(state: FeatureState, target_F: Tensor, cfg: SamplerConfig, idx: Tensor | None = None) -> None:
    """Bring each feature's bound up to `target_F` (powers of two >= the bound, or 0: unchanged),
    merging runs of 2^d cells of the histogram and the reservoirs. `idx` (features whose bound grows)
    may be passed when known; otherwise it is found here (one host sync)."""
    fresh = (state.bound_F == 0) & (target_F > 0)  # nothing on the grid yet: just set it
    state.bound_F = torch.where(fresh, target_F, state.bound_F)
    if idx is None:
        idx = torch.nonzero(target_F > state.bound_F).flatten()
    if len(idx) == 0:
        return
    d = torch.round(torch.log2(target_F[idx].double() / state.bound_F[idx].double())).long()
    state.bound_F[idx] = target_F[idx]
    G = cfg.interval_grid
    d = d.clamp_max(max(1, math.ceil(math.log2(G))))  # past log2 G doublings all lands in cell 0
    for step in torch.unique(d).tolist():
        group = idx[d == step]
        run = 1 << step
        state.hist_FG[group] = _merge_runs(state.hist_FG[group], run, 0, lambda block: block.sum(2))
        for split in state.splits:
            _merge_cell_runs(split, group, run, G)


def _merge_runs(block_nG: Tensor, run: int, empty, reduce) -> Tensor:
    """Cells [c * run, (c + 1) * run) -> cell c (`reduce` over dim 2 of [n, G/run, run, ...]), rest empty."""
    n, G = block_nG.shape[:2]
    n_new = -(-G // run)
    if n_new * run > G:
        pad = torch.full_like(block_nG[:, :1], empty).expand(n, n_new * run - G, *block_nG.shape[2:])
        block_nG = torch.cat([block_nG, pad], 1)
    merged = reduce(block_nG.view(n, n_new, run, *block_nG.shape[2:]))
    rest = torch.full_like(merged[:, :1], empty).expand(n, G - n_new, *merged.shape[2:])
    return torch.cat([merged, rest], 1)


def _merge_cell_runs(split: SplitState, idx: Tensor, run: int, G: int) -> None:
    M = split.cell_key_FGM.shape[2]
    keys = _merge_runs(split.cell_key_FGM[idx], run, NO_KEY, lambda b: b.flatten(2))  # [n, G, run*M]
    pick = bottom(keys, M) if M else keys[..., :0]
    split.cell_key_FGM[idx] = keys.gather(2, pick)
    for name, empty in (("cell_value_FGM", 0.0), ("cell_context_FGM", -1), ("cell_start_FGM", 0)):
        block = _merge_runs(getattr(split, name)[idx], run, empty, lambda b: b.flatten(2))
        getattr(split, name)[idx] = block.gather(2, pick)
    ratio = _merge_runs(split.cell_ratio_FGMW[idx], run, 0.0, lambda b: b.flatten(2, 3))
    n, G_ = pick.shape[:2]
    split.cell_ratio_FGMW[idx] = gather_rows(ratio.flatten(0, 1), pick.flatten(0, 1)).view(n, G_, -1, ratio.shape[-1])


# ---- merge -----------------------------------------------------------------------------------------


def merge(a: FeatureState, b: FeatureState, cfg: SamplerConfig) -> FeatureState:
    """The state of the union of two DISJOINT sets of contexts (see the module docstring for why it is
    exact). Associative and commutative; `a` and `b` are consumed (their tensors may be reused)."""
    if a.features != b.features:
        raise ValueError(f"merge: states track different features ({len(a.features)} vs {len(b.features)})")
    bound = torch.maximum(a.bound_F, b.bound_F)
    for side in (a, b):
        raise_bound(side, torch.where(side.bound_F > 0, bound, 0.0), cfg)
        side.bound_F = bound.clone()
    if not torch.equal(a.hard_token_F, b.hard_token_F):
        raise ValueError(
            "merge: the states hold hard negatives for different target tokens; fix every shard's targets "
            "from the same explanation top-1 (sampler_state.hard_targets) before streaming score contexts"
        )
    out = FeatureState(
        features=a.features,
        n_tokens=a.n_tokens + b.n_tokens,
        n_active_F=a.n_active_F + b.n_active_F,
        sum_active_F3=carry(a.sum_active_F3 + b.sum_active_F3),
        max_F=torch.maximum(a.max_F, b.max_F),
        hard_token_F=a.hard_token_F,
        bound_F=bound,
        hist_FG=a.hist_FG + b.hist_FG,
        splits=[_merge_split(sa, sb) for sa, sb in zip(a.splits, b.splits)],
    )
    return out


def _merge_split(a: SplitState, b: SplitState) -> SplitState:
    # Per-feature fields join along dim 1 (slots); the random reservoir's per-context fields along dim 0.
    cat = {
        f.name: torch.cat([getattr(a, f.name), getattr(b, f.name)], dim=0 if f.name.endswith("_R") else 1)
        for f in fields(SplitState)
    }
    out: dict[str, Tensor] = {}
    K = a.top_value_FK.shape[1]
    pick = top_order(cat["top_value_FK"], cat["top_context_FK"], cat["top_hash_FK"], K)
    for name in ("top_value_FK", "top_context_FK", "top_start_FK", "top_hash_FK", "top_token_FK", "top_ratio_FKW"):
        out[name] = gather_rows(cat[name], pick)
    # Cells: [F, G, 2M] -> bottom M along the slots.
    F, G, M = a.cell_key_FGM.shape
    cell = {n: torch.cat([getattr(a, n), getattr(b, n)], dim=2) for n in ("cell_key_FGM", "cell_value_FGM")}
    cell |= {n: torch.cat([getattr(a, n), getattr(b, n)], dim=2) for n in ("cell_context_FGM", "cell_start_FGM")}
    cell["cell_ratio_FGMW"] = torch.cat([a.cell_ratio_FGMW, b.cell_ratio_FGMW], dim=2)
    pick = bottom(cell["cell_key_FGM"], M).view(F * G, M)
    for name, t in cell.items():
        out[name] = gather_rows(t.view(F * G, 2 * M, *t.shape[3:]), pick).view(F, G, M, *t.shape[3:])
    pick = bottom(cat["nonact_key_FN"], a.nonact_key_FN.shape[1])
    for name in ("nonact_key_FN", "nonact_context_FN", "nonact_start_FN"):
        out[name] = gather_rows(cat[name], pick)
    pick = bottom(cat["hard_key_FH"], a.hard_key_FH.shape[1])  # same targets on both sides (checked in merge)
    for name in ("hard_key_FH", "hard_context_FH", "hard_start_FH"):
        out[name] = gather_rows(cat[name], pick)
    R = len(a.random_key_R)
    pick_R = cat["random_key_R"].topk(R, largest=False).indices
    for name in ("random_key_R", "random_context_R", "random_start_R"):
        out[name] = cat[name][pick_R]
    out["random_acts_FRW"] = cat["random_acts_FRW"][:, pick_R]
    return SplitState(**out)


def merge_all(states: list[FeatureState], cfg: SamplerConfig) -> FeatureState:
    """Fold a list of states over disjoint contexts (any order gives the same state)."""
    merged = states[0]
    for other in states[1:]:
        merged = merge(merged, other, cfg)
    return merged


def explain_best(state: FeatureState) -> tuple[Tensor, Tensor, Tensor]:
    """(peak, context, token at the peak) [F] of each feature's best explanation-split window: the top-1
    under `top_order`'s rule (peak desc, context asc); peak -inf and token -1 where it never fired there."""
    top = state.splits[0]
    if top.top_value_FK.shape[1] == 0:  # no explanation top windows kept: no target
        F = len(state.features)
        return (_fill((F,), -math.inf, torch.float32, top.top_value_FK.device),) + (
            _fill((F,), -1, torch.int64, top.top_value_FK.device),
        ) * 2
    return top.top_value_FK[:, 0], top.top_context_FK[:, 0], top.top_token_FK[:, 0]


def hard_targets(peak_SF: Tensor, context_SF: Tensor, token_SF: Tensor) -> Tensor:
    """The target token [F] of each feature's hard negatives from S shards' `explain_best`: the token of
    the best of bests (peak desc, then the smaller context), exactly the one-process explanation top-1.
    -1 where no shard saw the feature fire in the explanation split."""
    ctx = torch.where(context_SF < 0, torch.iinfo(torch.int64).max, context_SF)
    by_context = ctx.argsort(dim=0, stable=True)
    order = by_context.gather(0, peak_SF.gather(0, by_context).argsort(dim=0, descending=True, stable=True))
    best = order[0]
    rows = torch.arange(peak_SF.shape[1], device=peak_SF.device)
    return torch.where(peak_SF[best, rows] > 0, token_SF[best, rows], -1)
