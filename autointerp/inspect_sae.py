"""`autointerp info`: what an SAE file holds, and whether it fits the model's hook."""

import math

from pydantic import BaseModel

from autointerp.errors import InputError, expected
from autointerp.hooks import hook_width
from autointerp.sae import SparseAutoencoder


class FitReport(BaseModel):
    architecture: str
    d_in: int
    d_sae: int
    hook_name: str
    model_name: str
    sae_dtype: str
    model_dtype: str
    device: str
    layout: str
    k: int | None
    density: dict[str, float] | None


def density_summary(sae: SparseAutoencoder) -> dict[str, float] | None:
    """Quantiles of log10 firing density from sparsity.safetensors, and the share never seen firing."""
    if sae.log10_density is None:
        return None
    log10 = sae.log10_density.float()
    finite = log10[log10.isfinite() & (log10 > -10)]
    summary = {"dead_fraction": 1 - len(finite) / len(log10)}
    if len(finite):
        for q in (0.1, 0.5, 0.9):
            summary[f"log10_density_q{int(q * 100)}"] = round(finite.quantile(q).item(), 3)
    return summary


def check_fit(sae: SparseAutoencoder, model) -> FitReport:
    """Raise InputError unless the SAE's hook exists in `model` with width d_in."""
    if not sae.cfg.hook_name:
        raise InputError(expected(f"SAE {sae.cfg.path} cfg.json key 'hook_name'", "nothing", "the hook the SAE reads"))
    width = hook_width(model, sae.cfg.hook_name)
    if width != sae.cfg.d_in:
        raise InputError(
            expected(
                f"SAE {sae.cfg.path}: d_in",
                f"{sae.cfg.d_in}",
                f"the width of hook {sae.cfg.hook_name!r} in model {model.cfg.model_name!r}, which is {width}",
                "Is this SAE for another model? Pass --model with the model it was trained on.",
            )
        )
    density = density_summary(sae)
    return FitReport(
        architecture=sae.cfg.architecture,
        d_in=sae.cfg.d_in,
        d_sae=sae.cfg.d_sae,
        hook_name=sae.cfg.hook_name,
        model_name=model.cfg.model_name,
        sae_dtype=sae.cfg.dtype,
        model_dtype=str(model.cfg.dtype).removeprefix("torch."),
        device=str(model.cfg.device),
        layout=sae.cfg.layout,
        k=sae.cfg.k,
        density={k: v for k, v in density.items() if not math.isnan(v)} if density else None,
    )
