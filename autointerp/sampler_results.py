"""A finished sampler state -> records: statistics per feature, and every kept window with its tokens.

The only step of sampling that moves data to the host. Interval draws are settled here: a feature's
cells 0..c_max are split into n_intervals runs, and each run gives the smallest keys among its cells'
slots whose context is not a top window (see sampler.py).
"""

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from autointerp.config import SamplerConfig
from autointerp.exact_sum import fixed_point_value
from autointerp.records import FeatureSample, FeatureStats, Window
from autointerp.sampler_state import NO_KEY, FeatureState, SplitState

SPLITS = ("explain", "score")
GROUPS = ("top", "interval", "random", "nonactivating", "hard_negative")


def to_host(tensors: dict[str, Tensor]) -> dict[str, np.ndarray]:
    """The tensors as host arrays. From a GPU they are copied into pinned host memory without waiting, then
    the host waits once: the copies queue back to back at full bandwidth (a pageable copy is staged
    through a pinned buffer and waits for each tensor in turn)."""
    devices = {t.device for t in tensors.values()}
    if not any(d.type == "cuda" for d in devices):
        return {k: v.cpu().numpy() for k, v in tensors.items()}
    pinned = {k: torch.empty(v.shape, dtype=v.dtype, pin_memory=True) for k, v in tensors.items()}
    for k, v in tensors.items():
        pinned[k].copy_(v, non_blocking=True)
    for device in devices:
        torch.cuda.synchronize(device)
    return {k: p.numpy() for k, p in pinned.items()}


def cell_of(values: Tensor, bound: Tensor, G: int) -> Tensor:
    """Grid cell of positive values: cell c covers (c, c+1] * bound / G."""
    return (torch.ceil(values / bound * G) - 1).clamp(0, G - 1).long()


def n_cells(state: FeatureState, cfg: SamplerConfig) -> np.ndarray:
    """Grid cells 0..c_max in use per tracked feature (0 if it never fired), on the host."""
    cells = cell_of(state.max_F, state.bound_F.clamp_min(1e-30), cfg.interval_grid) + 1
    return torch.where(state.n_active_F > 0, cells, 0).cpu().numpy()


def interval_cells(state: FeatureState, cfg: SamplerConfig, feature_pos: int) -> list[tuple[int, int]]:
    """Cell ranges [lo, hi) of each interval for one tracked feature (empty if it never fired)."""
    cells = int(n_cells(state, cfg)[feature_pos])
    if cells == 0:
        return []
    n = min(cfg.n_intervals, cells)
    return [(cells * i // n, cells * (i + 1) // n) for i in range(n)]


def stats(state: FeatureState, cfg: SamplerConfig) -> list[FeatureStats]:
    G = cfg.interval_grid
    n_tokens, n_cells_F = int(state.n_tokens), n_cells(state, cfg).tolist()
    hist, bound = state.hist_FG.cpu().numpy(), state.bound_F.cpu().tolist()
    n_active, sums, maxes = (
        state.n_active_F.cpu().tolist(),
        fixed_point_value(state.sum_active_F3).cpu().numpy(),
        state.max_F.cpu().tolist(),
    )
    out = []
    for i, feature in enumerate(state.features):
        cells, width = n_cells_F[i], bound[i] / G
        out.append(
            FeatureStats(
                feature=feature,
                n_tokens=n_tokens,
                n_active=n_active[i],
                max_activation=maxes[i],
                mean_active=float(sums[i] / n_active[i]) if n_active[i] else None,
                histogram_edges=[c * width for c in range(cells + 1)] if cells else [],
                histogram_counts=hist[i, :cells].tolist(),
            )
        )
    return out


def _context_tokens(tokens, context_X: np.ndarray) -> np.ndarray:
    if callable(tokens):
        return np.asarray(tokens(context_X))
    return tokens.cpu()[torch.from_numpy(context_X)].numpy()


def finish_records(
    state: FeatureState,
    cfg: SamplerConfig,
    W: int,
    tokens: "Tensor | Callable[[np.ndarray], np.ndarray]",
    decode: Callable[[list[int]], list[str]],
) -> list[FeatureSample]:
    """Materialise every kept window as records. `tokens`: the corpus [N, L] or a function from context
    ids to their tokens [n, L]."""
    feature_stats = stats(state, cfg)
    n_cells_F = n_cells(state, cfg)
    parts = [part for split, s in enumerate(state.splits) for part in _kept(state, cfg, W, split, s, n_cells_F)]
    # Columns of every kept window; a stable sort by feature keeps each feature's windows in the
    # order split, group (top, interval, random, nonactivating, hard_negative), then the order within the group.
    feature_X = np.concatenate([p[0] for p in parts])
    order = np.argsort(feature_X, kind="stable")
    feature_X = feature_X[order]
    context_X, start_X, acts_XW, group_X, interval_X, split_X = (
        np.concatenate([p[j] for p in parts])[order] for j in range(1, 7)
    )
    unique_contexts, row_X = np.unique(context_X, return_inverse=True)
    tokens_CL = _context_tokens(tokens, unique_contexts.astype(np.int64)) if len(context_X) else np.zeros((0, W))
    ids_XW = tokens_CL[row_X[:, None], start_X[:, None] + np.arange(W)] if len(context_X) else np.zeros((0, W), int)
    ids_XW = ids_XW.astype(np.int64)
    # Decode every distinct token id once; windows look their strings up in that table.
    unique_ids = np.flatnonzero(np.bincount(ids_XW.reshape(-1))) if ids_XW.size else ids_XW.reshape(-1)
    strings = np.empty(int(unique_ids[-1]) + 1 if len(unique_ids) else 0, dtype=object)
    strings[unique_ids] = decode(unique_ids.tolist())
    tokens_XW = strings[ids_XW].tolist()
    ids_XW, acts_XW = ids_XW.tolist(), acts_XW.tolist()
    features = [state.features[i] for i in feature_X.tolist()]
    groups = [GROUPS[g] for g in group_X.tolist()]
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
    ends = np.cumsum(np.bincount(feature_X, minlength=len(state.features))).tolist()
    return [
        FeatureSample.model_construct(stats=feature_stats[i], windows=windows[ends[i - 1] if i else 0 : ends[i]])
        for i in range(len(state.features))
    ]


def _kept(
    state: FeatureState, cfg: SamplerConfig, W: int, split: int, s: SplitState, n_cells_F: np.ndarray
) -> list[tuple[np.ndarray, ...]]:
    """Every window kept in one split, for all features at once, one tuple of columns per group:
    (feature position, context, start, activations [n, W], group code, interval or -1, split)."""
    F = len(state.features)
    host = to_host(vars(s))
    parts = []

    def part(f, context, start, acts, group, interval=None):
        n = len(f)
        interval = np.full(n, -1, dtype=np.int64) if interval is None else interval
        code = np.full(n, group, dtype=np.int64)
        acts = acts.reshape(n, W).astype(np.float32)
        parts.append((f, context, start, acts, code, interval, np.full(n, split, dtype=np.int64)))

    # Top and interval windows are stored as float16 ratios to their float32 peak.
    f, k = np.nonzero(host["top_value_FK"] > -math.inf)
    top_acts = host["top_ratio_FKW"][f, k].astype(np.float32) * host["top_value_FK"][f, k][:, None]
    part(f, host["top_context_FK"][f, k], host["top_start_FK"][f, k], top_acts, 0)

    # Interval draws: per (feature, interval), the smallest finite keys among slots whose context
    # is not a top window, at most per_interval of them (the same as walking keys in order).
    per_interval = (cfg.per_interval_explain, cfg.per_interval_score)[split]
    key_FGM = host["cell_key_FGM"]
    n_int_F = np.minimum(cfg.n_intervals, n_cells_F)
    cell_G = np.arange(key_FGM.shape[1])
    usable = (key_FGM < NO_KEY) & (cell_G[None, :, None] < n_cells_F[:, None, None])
    f, c, m = np.nonzero(usable if per_interval else np.zeros_like(usable))
    context = host["cell_context_FGM"][f, c, m]
    top_codes = ((np.arange(F)[:, None] << 32) + host["top_context_FK"])[host["top_value_FK"] > -math.inf]
    keep = ~np.isin((f << 32) + context, top_codes)
    f, c, m, context = f[keep], c[keep], m[keep], context[keep]
    n, cells = n_int_F[f], n_cells_F[f]
    interval = ((c + 1) * n - 1) // cells  # interval i covers cells [N*i//n, N*(i+1)//n)
    key = key_FGM[f, c, m]
    by = np.lexsort((key, interval, f))
    f, c, m, context, interval = f[by], c[by], m[by], context[by], interval[by]
    group_id = f * (cfg.n_intervals + 1) + interval
    x = np.arange(len(f))
    first = np.maximum.accumulate(np.where(np.r_[True, group_id[1:] != group_id[:-1]], x, 0)) if len(f) else x
    take = x - first < per_interval
    f, c, m, context, interval = f[take], c[take], m[take], context[take], interval[take]
    cell_acts = host["cell_ratio_FGMW"][f, c, m].astype(np.float32) * host["cell_value_FGM"][f, c, m][:, None]
    part(f, context, host["cell_start_FGM"][f, c, m], cell_acts, 1, interval)

    # Random windows in context order, the same for every feature.
    filled = np.flatnonzero(host["random_key_R"] < NO_KEY)
    by_context = filled[np.argsort(host["random_context_R"][filled], kind="stable")]
    R = len(by_context)
    part(
        np.repeat(np.arange(F), R),
        np.tile(host["random_context_R"][by_context], F),
        np.tile(host["random_start_R"][by_context], F),
        host["random_acts_FRW"][:, by_context],
        2,
    )

    f, n = np.nonzero(host["nonact_key_FN"] < NO_KEY)
    part(f, host["nonact_context_FN"][f, n], host["nonact_start_FN"][f, n], np.zeros((len(f), W), np.float32), 3)

    f, h = np.nonzero(host["hard_key_FH"] < NO_KEY)
    part(f, host["hard_context_FH"][f, h], host["hard_start_FH"][f, h], np.zeros((len(f), W), np.float32), 4)
    return parts
