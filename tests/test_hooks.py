"""TransformerLens hook names: the layer a hook sits in, how far to run the model, the hook's width."""

import pytest

from autointerp.errors import InputError
from autointerp.hooks import hook_layer, hook_stop_layer, hook_width


@pytest.mark.parametrize(
    ("hook_name", "layer"),
    [
        ("blocks.0.hook_resid_post", 0),
        ("blocks.12.attn.hook_z", 12),
        ("blocks.3.mlp.hook_post", 3),
        ("hook_embed", None),
        ("ln_final.hook_normalized", None),
        ("blocks.x.hook_resid_post", None),
        ("blocks.3", None),  # not a hook inside a block
        ("", None),
    ],
)
def test_hook_layer_and_where_the_forward_pass_stops(hook_name, layer):
    assert hook_layer(hook_name) == layer
    assert hook_stop_layer(hook_name) == (None if layer is None else layer + 1)


def test_hook_width_and_unknown_hook(tiny_model):
    assert hook_width(tiny_model, "blocks.1.hook_resid_post") == 16
    assert hook_width(tiny_model, "blocks.0.mlp.hook_post") == 32
    assert hook_width(tiny_model, "blocks.0.attn.hook_z") == 16 and hook_width(tiny_model, "blocks.0.attn.hook_v") == 4
    with pytest.raises(InputError, match="blocks.7.hook_resid_post.*no such hook.*2 layers"):
        hook_width(tiny_model, "blocks.7.hook_resid_post")
