"""Built-in assets addressed by name: the demo SAE (`--sae demo`)."""

from pathlib import Path

ASSETS = Path(__file__).parent / "assets"
BUILTIN_SAES = {"demo": ASSETS / "demo_sae"}


def resolve_sae_path(name_or_path: str | Path) -> Path:
    """`demo` -> the packaged demo SAE folder; anything else is taken as a path."""
    return BUILTIN_SAES.get(str(name_or_path), Path(name_or_path).expanduser())
