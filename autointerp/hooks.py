"""TransformerLens hook names: the block a hook sits in, and the width of the activation it carries."""

import re

from autointerp.errors import InputError, expected

_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def hook_layer(hook_name: str) -> int | None:
    """Layer L of a hook named `blocks.L.<...>` (0-based); None for hooks outside the blocks
    (`hook_embed`, `ln_final.hook_normalized`, ...)."""
    match = _BLOCK.match(hook_name)
    return int(match.group(1)) if match else None


def hook_stop_layer(hook_name: str) -> int | None:
    """The `stop_at_layer` that runs the model just far enough to reach the hook: L + 1 for a hook in
    block L; None (the whole model) for any other hook."""
    layer = hook_layer(hook_name)
    return None if layer is None else layer + 1


def hook_width(model, hook_name: str) -> int:
    """The last dimension of the activation at `hook_name` in `model` (a HookedTransformer), checking
    the hook exists."""
    if hook_name not in model.hook_dict:
        near = [h for h in model.hook_dict if h.split(".")[-1] == hook_name.split(".")[-1]][:3]
        raise InputError(
            expected(
                f"Hook {hook_name!r}",
                f"no such hook in model {model.cfg.model_name!r} ({model.cfg.n_layers} layers)",
                "a TransformerLens hook name such as " + (", ".join(near) or "blocks.6.hook_resid_post"),
            )
        )
    suffix = hook_name.split(".")[-1]
    cfg = model.cfg
    if suffix in {"hook_z", "hook_q", "hook_k", "hook_v", "hook_result"}:
        return cfg.d_head * cfg.n_heads if suffix in {"hook_z", "hook_q"} else cfg.d_head
    if suffix in {"hook_pre", "hook_post", "hook_pre_linear"}:
        return cfg.d_mlp
    return cfg.d_model
