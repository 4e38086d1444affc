"""One reading of dtype names for SAE configs, job files and the command line."""

import pytest
import torch

from autointerp.dtypes import DTYPE_NAMES, parse_dtype


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        ("float32", torch.float32),
        ("torch.float32", torch.float32),
        ("fp32", torch.float32),
        ("bfloat16", torch.bfloat16),
        ("torch.bfloat16", torch.bfloat16),
        ("bf16", torch.bfloat16),
        ("half", torch.float16),
        ("double", torch.float64),
        (torch.float16, torch.float16),
    ],
)
def test_names_and_dtypes(name, dtype):
    assert parse_dtype(name) is dtype
    assert DTYPE_NAMES[parse_dtype(name)] == str(dtype).removeprefix("torch.")


@pytest.mark.parametrize("name", ["int8", "float8", "torch.int64", "", torch.int32, torch.complex64])
def test_anything_else_is_refused_saying_what_would_do(name):
    with pytest.raises(ValueError, match="float32, float64, float16, bfloat16"):
        parse_dtype(name)
