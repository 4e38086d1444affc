"""autointerp: automated interpretability for sparse-autoencoder features."""

__version__ = "0.1.0"
