"""Built-in assets addressed by name: the demo SAE (`--sae demo`)."""

from pathlib import Path

ASSETS = Path(__file__).parent / "assets"
BUILTIN_SAES = {"demo": ASSETS / "demo_sae"}


def resolve_sae_path(name_or_path: str | Path) -> Path:
    """`demo` -> the packaged demo SAE folder; anything else is taken as a path (a SAELens name
    'release/sae_id' gives its last part, e.g. for a run folder's name; `autointerp.sae.pretrained.locate_sae`
    finds its files in the Hugging Face cache)."""
    return BUILTIN_SAES.get(str(name_or_path), Path(name_or_path).expanduser())
