"""Sparse autoencoders from disk: load (SAELens or sparsify layout), encode chosen features, save."""

from autointerp.sae.architectures import ARCHITECTURES, Architecture, SparseAutoencoder
from autointerp.sae.config import SAEConfig
from autointerp.sae.load import load_sae, save_sae

__all__ = ["ARCHITECTURES", "Architecture", "SAEConfig", "SparseAutoencoder", "load_sae", "save_sae"]
