"""autointerp: automated interpretability for sparse-autoencoder features."""

from autointerp.version import __version__


def load(run_dir, run_id: str | None = None):
    """A run directory's database as pandas DataFrames (`autointerp.frames.RunFrames`: .features, .scores,
    .detection, .calls, .logits, .runs). run_id: one run only (default: every run in the file)."""
    from autointerp.frames import load_frames

    return load_frames(run_dir, run_id)


__all__ = ["__version__", "load"]
