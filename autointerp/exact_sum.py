"""An exact, associative sum of float activations: the sampler's per-feature sum, mergeable across shards.

Float addition depends on the order: shards summed separately differ in the last bits once values
span more than 2^29. So the sum is fixed point: each activation is cut into three 40-bit integer
limbs at weights 2^20, 2^-20 and 2^-60 (exact float64 steps; bits below 2^-60 are dropped, the same
way every time), and limbs add as integers. After `carry` each limb but the top is in [0, 2^40), so
the representation is unique and a batch of up to 2^22 tokens adds without overflow; the top limb
holds the sum / 2^20, exact while it stays below 2^63 (activations times tokens below 2^83).
"""

import torch
from torch import Tensor

_LIMB_BITS = 40
_LIMB_WEIGHTS = (2.0**20, 2.0**-20, 2.0**-60)


def fixed_point_sum(values_BLF: Tensor) -> Tensor:
    """Limbs [F, 3] (int64) of the exact sum over B and L of the positive part of `values_BLF`. Rows
    go a few at a time, so the float64 copies stay small next to the float32 input."""
    step = max(1, (1 << 24) // max(1, values_BLF[0].numel()))
    total = torch.zeros(values_BLF.shape[-1], 3, dtype=torch.int64, device=values_BLF.device)
    for part in values_BLF.split(step):
        x = part.double().clamp_min(0)
        limbs = []
        for weight in _LIMB_WEIGHTS:
            whole = torch.floor(x / weight)
            x = x - whole * weight  # exact: whole * weight holds the leading bits of x
            limbs.append(whole.long().sum((0, 1)))
        total += torch.stack(limbs[::-1], -1)  # [low, mid, top]; a batch stays far below 2^63
    return carry(total)


def carry(limbs: Tensor) -> Tensor:
    """Canonical limbs: carry each limb's overflow above 40 bits into the next one up."""
    low, mid, top = limbs.unbind(-1)
    mid = mid + (low >> _LIMB_BITS)
    low = low & ((1 << _LIMB_BITS) - 1)
    top = top + (mid >> _LIMB_BITS)
    mid = mid & ((1 << _LIMB_BITS) - 1)
    return torch.stack([low, mid, top], -1)


def fixed_point_value(limbs: Tensor) -> Tensor:
    """The float64 value of canonical limbs (rounded once, from the same integers every time)."""
    low, mid, top = limbs.double().unbind(-1)
    return top * _LIMB_WEIGHTS[0] + mid * _LIMB_WEIGHTS[1] + low * _LIMB_WEIGHTS[2]
