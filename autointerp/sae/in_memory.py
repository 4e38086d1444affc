"""A SAELens SAE object (trained in this process, or from SAE.from_pretrained) as our SparseAutoencoder.

The conversion goes through the same reader as a folder on disk: the SAE's `cfg.to_dict()` is what SAELens
writes to cfg.json, and its state dict, processed as SAELens processes it for saving, is what it writes to
sae_weights.safetensors. So a checkpoint scored in memory and the same checkpoint saved and scored by
`autointerp run --sae FOLDER` encode alike and carry one fingerprint (`compare` pairs them).
"""

from pathlib import Path
from typing import Any

import torch

from autointerp.errors import InputError, expected
from autointerp.sae.architectures import SparseAutoencoder
from autointerp.sae.load import (
    _fold_finetuning_scaling_factor,
    _infer_widths,
    _make_cfg,
    _saelens_fields,
    fold_input_scale,
)


def saelens_state(sae) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(cfg dict, weights) exactly as SAELens's `save_model` would write them, without the disk."""
    cfg = sae.cfg.to_dict()
    state = {name: tensor.detach().clone() for name, tensor in sae.state_dict().items()}
    process = getattr(sae, "process_state_dict_for_saving", None)
    if callable(process):
        process(state)
    return cfg, state


def from_saelens(sae, input_scale: float | None = None) -> SparseAutoencoder:
    """Our SparseAutoencoder holding a copy of SAELens SAE `sae`'s weights (float32 or its dtype).

    input_scale: the trainer's dataset-wide activation scale for an SAE with normalize_activations
    'expected_average_only_in' (SAELens's `ActivationScaler.scaling_factor`), folded into the copy as
    SAELens folds it at the end of training. Without it such an SAE is refused: its inputs would be off.
    """
    raw, weights = saelens_state(sae)
    label = f"SAELens {type(sae).__name__}"
    if raw.get("normalize_activations") == "expected_average_only_in":
        if input_scale is None:
            raise InputError(
                expected(
                    f"{label}: normalize_activations",
                    "'expected_average_only_in' and no input scale",
                    "the trainer's scaling factor",
                    "Pass activation_scaler=trainer.activation_scaler (or input_scale=FACTOR).",
                )
            )
        raw = raw | {"normalize_activations": "none"}
        fold_input_scale(weights, float(input_scale))
    source = Path(f"<in memory: {label}>")
    _fold_finetuning_scaling_factor(weights, source)
    fields = _saelens_fields(raw, source)
    _infer_widths(fields, weights.get("W_enc"), "W_enc", (0, 1), source, source)
    cfg = _make_cfg(fields | {"layout": "saelens", "path": None}, source)
    return SparseAutoencoder(cfg, weights, source=str(source))
