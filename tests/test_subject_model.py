"""The built-in subject model and hook checks."""

import pytest
import torch

from autointerp.errors import InputError
from autointerp.subject_model import default_dtype, load_subject_model, resolve_builtin


@pytest.mark.slow
def test_builtin_smollm2_logits_match_the_transformers_model(smollm2):
    from autointerp.subject_model import load_hf_smollm2

    hf_model, tokenizer = load_hf_smollm2()
    ids = torch.tensor([[tokenizer.bos_token_id] + tokenizer("To be, or not to be, that is the question:").input_ids])
    with torch.no_grad():
        ours = smollm2(ids)
        reference = hf_model(ids).logits
    assert ours.shape == reference.shape == (1, ids.shape[1], 49152)
    assert (ours - reference).abs().max() < 1e-3
    assert smollm2.cfg.n_layers == 30 and smollm2.cfg.d_model == 576


def test_names_dtypes_and_defaults():
    assert resolve_builtin("SmolLM2-135M") == "smollm2-135m"
    assert resolve_builtin("HuggingFaceTB/SmolLM2-135M-Instruct") == "smollm2-135m"
    assert resolve_builtin("gpt2") is None
    assert default_dtype("cpu") is torch.float32 and default_dtype("cuda") is torch.bfloat16
    with pytest.raises(InputError, match="dtype.*'int8'.*float32"):  # refused before any loading
        load_subject_model("smollm2-135m", device="cpu", dtype="int8")


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(InputError, match="no-such-model-xyz.*built-in model: smollm2-135m"):
        load_subject_model("no-such-model-xyz", device="cpu")
