"""SAEConfig: what an SAE file says about the SAE and about the activations it was trained on."""

from typing import Any, Literal

import torch
from pydantic import BaseModel, Field, field_validator, model_validator

from autointerp.dtypes import DTYPE_NAMES, DTYPES, parse_dtype
from autointerp.hooks import hook_layer

# Input normalisations that can be redone from the input alone at encode time.
NORMALIZATIONS = ("none", "constant_norm_rescale", "layer_norm")


class SAEConfig(BaseModel):
    """One SAE's shape, encoder options and the model/hook whose activations it reads."""

    architecture: str = Field(description="Encoder family: 'standard' (ReLU), 'jumprelu', 'gated' or 'topk'.")
    d_in: int = Field(gt=0, description="Width of the activations the SAE reads (model d_model).")
    d_sae: int = Field(gt=0, description="Number of SAE features (latents).")
    dtype: str = Field(
        default="float32",
        description="Weight dtype and the dtype encode computes in, canonical short form ('bfloat16').",
    )
    hook_name: str | None = Field(
        default=None,
        description="TransformerLens hook the SAE reads, e.g. 'blocks.6.hook_resid_post'; None if unknown.",
    )
    model_name: str | None = Field(default=None, description="Name of the model the SAE was trained on.")
    prepend_bos: bool = Field(default=True, description="Whether training contexts started with BOS.")
    context_size: int | None = Field(default=None, description="Training context length in tokens.")
    model_from_pretrained_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments the model was loaded with during training (TransformerLens).",
    )
    apply_b_dec_to_input: bool = Field(default=True, description="Subtract b_dec from the input before encoding.")
    normalize_activations: Literal["none", "constant_norm_rescale", "layer_norm"] = Field(
        default="none",
        description=(
            "Per-token input normalisation redone at encode time: 'constant_norm_rescale' scales each "
            "token to norm sqrt(d_in); 'layer_norm' centres and divides by the (unbiased) std + 1e-5."
        ),
    )
    k: int | None = Field(default=None, gt=0, description="topk only: features kept per token.")
    rescale_acts_by_decoder_norm: bool = Field(
        default=False,
        description="topk only: rank features by pre-activation x decoder-row norm (SAELens option).",
    )
    reshape_activations: Literal["none", "hook_z"] = Field(
        default="none",
        description="'hook_z': the input is [..., n_heads, d_head] and is flattened to d_in first.",
    )
    layout: Literal["saelens", "sparsify"] = Field(
        default="saelens", description="File layout the SAE was loaded from."
    )
    path: str | None = Field(default=None, description="Directory the SAE was loaded from, if any.")

    @field_validator("dtype", mode="before")
    @classmethod
    def _canonical_dtype(cls, value: Any) -> str:
        return DTYPE_NAMES[parse_dtype(value)]

    @model_validator(mode="after")
    def _topk_options(self) -> "SAEConfig":
        if self.architecture == "topk":
            if self.k is None or self.k > self.d_sae:
                raise ValueError(f"key 'k': a topk SAE needs 1 <= k <= d_sae ({self.d_sae}); got {self.k}")
        elif self.rescale_acts_by_decoder_norm:
            raise ValueError("key 'rescale_acts_by_decoder_norm': true applies to topk SAEs only")
        return self

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def hook_layer(self) -> int | None:
        """Layer L of a hook named `blocks.L.<...>`; None for other hooks or no hook."""
        return hook_layer(self.hook_name or "")
