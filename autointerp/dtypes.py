"""Floating dtype names as SAE configs, job files and the command line spell them -> torch dtypes."""

import torch

# Canonical short names (what SAELens writes in cfg.json, and what we store) -> torch dtype.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
DTYPE_NAMES: dict[torch.dtype, str] = {dtype: name for name, dtype in DTYPES.items()}
# Other spellings people type for the same dtypes (torch's own aliases and the common short forms).
ALIASES = {
    "fp32": "float32",
    "float": "float32",
    "fp64": "float64",
    "double": "float64",
    "fp16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
}


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """`"bfloat16"`, `"torch.bfloat16"`, `"bf16"` or a torch dtype -> that floating torch dtype.

    Raises ValueError, whose message says what would be accepted, for anything else; callers add
    which input it was (pydantic validators, or `expected(...)` at the CLI's inputs).
    """
    if isinstance(name, torch.dtype):
        if name not in DTYPE_NAMES:
            raise ValueError(f"dtype {name} is not one of {', '.join(DTYPES)}")
        return name
    key = str(name).removeprefix("torch.")
    key = ALIASES.get(key, key)
    if key not in DTYPES:
        raise ValueError(f"one of {', '.join(DTYPES)} (with or without a 'torch.' prefix)")
    return DTYPES[key]
