"""The built-in subject model and hook checks."""

import pytest
import torch

from autointerp.errors import InputError
from autointerp.subject_model import default_dtype, hook_width, parse_dtype, resolve_builtin


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
    assert parse_dtype("bf16") is torch.bfloat16 and parse_dtype("torch.float32") is torch.float32
    assert default_dtype("cpu") is torch.float32 and default_dtype("cuda") is torch.bfloat16
    with pytest.raises(InputError, match="dtype.*'int8'.*float32"):
        parse_dtype("int8")


def test_hook_width_and_unknown_hook(tiny_model):
    assert hook_width(tiny_model, "blocks.1.hook_resid_post") == 16
    assert hook_width(tiny_model, "blocks.0.mlp.hook_post") == 32
    with pytest.raises(InputError, match="blocks.7.hook_resid_post.*no such hook.*2 layers"):
        hook_width(tiny_model, "blocks.7.hook_resid_post")


def test_unknown_model_name_is_a_clear_error():
    from autointerp.subject_model import load_subject_model

    with pytest.raises(InputError, match="no-such-model-xyz.*built-in model: smollm2-135m"):
        load_subject_model("no-such-model-xyz", device="cpu")
