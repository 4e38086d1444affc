"""Small random SAEs for tests: `make_sae(...)` in memory, `write_sae(dir, ...)` on disk.

Weights are random but not degenerate: nonzero biases, positive thresholds, unit-norm decoder rows,
so that every architecture fires on some features and not on others.
"""

from pathlib import Path
from typing import Any

import torch

from autointerp.sae import ARCHITECTURES, SAEConfig, SparseAutoencoder, save_sae


def random_weights(architecture: str, d_in: int, d_sae: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Float32 weights for `architecture`, deterministic in `seed`."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    W_dec_SD = randn(d_sae, d_in)
    W_dec_SD = W_dec_SD / W_dec_SD.norm(dim=-1, keepdim=True)
    weights = {
        "W_enc": randn(d_in, d_sae) / d_in**0.5,
        "W_dec": W_dec_SD,
        "b_dec": 0.1 * randn(d_in),
    }
    extra = {
        "b_enc": 0.1 * randn(d_sae),
        "threshold": 0.3 * torch.rand(d_sae, generator=generator),
        "b_gate": 0.1 * randn(d_sae),
        "b_mag": 0.1 * randn(d_sae),
        "r_mag": 0.2 * randn(d_sae),
    }
    names = ARCHITECTURES.get(architecture).feature_vectors
    return weights | {name: extra[name] for name in names}


def make_sae(
    architecture: str = "jumprelu",
    d_in: int = 16,
    d_sae: int = 64,
    hook_name: str | None = "blocks.0.hook_resid_post",
    seed: int = 0,
    **cfg: Any,
) -> SparseAutoencoder:
    """A random SAE; extra keyword arguments are SAEConfig fields (topk gets k=8 unless given)."""
    if architecture == "topk":
        cfg.setdefault("k", 8)
    config = SAEConfig(architecture=architecture, d_in=d_in, d_sae=d_sae, hook_name=hook_name, **cfg)
    return SparseAutoencoder.from_weights(config, random_weights(architecture, d_in, d_sae, seed))


def write_sae(
    directory: Path,
    architecture: str = "jumprelu",
    log10_density: torch.Tensor | None = None,
    **make_sae_kwargs: Any,
) -> Path:
    """Save `make_sae(architecture, **make_sae_kwargs)` under directory/"sae" (SAELens layout)."""
    sae = make_sae(architecture, **make_sae_kwargs)
    sae.log10_density = log10_density
    return save_sae(sae, Path(directory) / "sae")


# The tiny model's shape (also benchmarks/wide_sae.py's "tiny" model).
TINY_MODEL = dict(
    n_layers=2, d_model=16, n_ctx=64, d_head=4, n_heads=4, d_mlp=32, d_vocab=300, act_fn="gelu", normalization_type="LN"
)


def build_tiny_model():
    """A 2-layer random HookedTransformer (d_model 16, vocabulary 300), the same weights every call (seed 0):
    the conftest's `tiny_model` fixture, and child processes that must rebuild the same model."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(0)
    return HookedTransformer(HookedTransformerConfig(**TINY_MODEL, model_name="tiny-random")).eval()
