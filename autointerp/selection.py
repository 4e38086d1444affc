"""Which features a run looks at: explicit lists, or N live features drawn with a seed."""

import torch

from autointerp.config import SelectionConfig
from autointerp.errors import InputError, expected

DEAD_LOG10_DENSITY = -9.0  # SAELens stores log10(density + 1e-10): -10 means never seen firing
# When neither --n-features nor --features is given: the first README command runs in minutes on a CPU.
DEFAULT_N_FEATURES = 5


def parse_feature_list(text: str, d_sae: int) -> list[int]:
    """'3,17,100-120' -> [3, 17, 100, ..., 120]; every index must be in [0, d_sae)."""
    features: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            lo, _, hi = part.partition("-")
            first, last = int(lo), int(hi) if hi else int(lo)
        except ValueError:
            raise InputError(
                expected(f"--features item {part!r}", "not a number or range", "e.g. '3,17,100-120'")
            ) from None
        if first > last:
            raise InputError(expected(f"--features range {part!r}", "a range that runs backwards", "low-high"))
        features.extend(range(first, last + 1))
    bad = [f for f in features if not 0 <= f < d_sae]
    if bad:
        raise InputError(
            expected("--features", f"index {bad[0]}", f"indices in 0..{d_sae - 1} (the SAE has {d_sae} features)")
        )
    if not features:
        raise InputError(expected("--features", repr(text), "at least one feature index"))
    return sorted(set(features))


def choose_features(cfg: SelectionConfig, log10_density: torch.Tensor | None, d_sae: int) -> tuple[list[int], int]:
    """(chosen features, number of dead features). Dead features are never drawn.

    `log10_density` is from the SAE's sparsity file or a density probe; None means every feature
    counts as live (only possible with an explicit list)."""
    if cfg.features:
        return parse_feature_list(cfg.features, d_sae), 0
    live = torch.arange(d_sae) if log10_density is None else torch.nonzero(log10_density > DEAD_LOG10_DENSITY).flatten()
    n_dead = d_sae - len(live)
    n = cfg.n_features if cfg.n_features is not None else min(DEFAULT_N_FEATURES, len(live))
    if n <= 0 or n > len(live):
        raise InputError(
            expected("--n-features", str(n), f"1..{len(live)} (the live features; {n_dead} of {d_sae} are dead)")
        )
    gen = torch.Generator().manual_seed(cfg.seed)
    if not cfg.stratify_by_density or log10_density is None:
        return sorted(live[torch.randperm(len(live), generator=gen)[:n]].tolist()), n_dead
    # Stratified: split live features into n_buckets equal-count density buckets and draw evenly.
    order = live[log10_density[live].argsort()]
    buckets = torch.tensor_split(order, min(5, n))
    chosen: list[int] = []
    for i, bucket in enumerate(buckets):
        take = n // len(buckets) + (1 if i < n % len(buckets) else 0)
        chosen += bucket[torch.randperm(len(bucket), generator=gen)[:take]].tolist()
    return sorted(chosen), n_dead


@torch.no_grad()
def probe_log10_density(
    model, sae, tokens_NL: torch.Tensor, special_ids: list[int], first_position: int, batch_size: int, hook_activations
) -> torch.Tensor:
    """log10 firing density of every feature over `tokens_NL` (for SAEs without a sparsity file)."""
    fired = torch.zeros(sae.cfg.d_sae, device=sae.device)
    n_tokens = 0
    special = torch.tensor(special_ids or [-1], device=model.cfg.device)
    for start in range(0, len(tokens_NL), batch_size):
        tokens = tokens_NL[start : start + batch_size].to(model.cfg.device)
        valid = ~torch.isin(tokens, special)
        valid[:, :first_position] = False
        acts = sae.encode(hook_activations(model, tokens, sae.cfg.hook_name)[valid].to(sae.device))
        fired += (acts > 0).sum(0)
        n_tokens += int(valid.sum())
    return torch.log10(fired.cpu() / max(n_tokens, 1) + 1e-10)
