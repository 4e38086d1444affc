"""Sparse autoencoders from disk: load (SAELens or sparsify layout), encode chosen features, save, fingerprint."""

from autointerp.sae.architectures import ARCHITECTURES, Architecture, SparseAutoencoder
from autointerp.sae.config import SAEConfig
from autointerp.sae.fingerprint import sae_fingerprint
from autointerp.sae.load import load_sae, save_sae

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "SAEConfig",
    "SparseAutoencoder",
    "load_sae",
    "sae_fingerprint",
    "save_sae",
]
