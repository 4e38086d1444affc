"""The export context reads the run's SAE cfg.json only: the SAE's facts come through without its weights."""

import torch
from helpers_sae import write_sae

from autointerp.api import score_checkpoint
from autointerp.export.context import run_context
from autointerp.sae import load_sae
from autointerp.store import RunStore


def test_the_context_needs_only_the_sae_cfg_json(tiny_model, tmp_path):
    folder = write_sae(tmp_path, "standard", d_in=16, d_sae=32, hook_name="blocks.1.hook_resid_post", context_size=40)
    tokens = torch.randint(3, 300, (16, 40), generator=torch.Generator().manual_seed(0))
    score_checkpoint(
        load_sae(folder),
        tiny_model,
        tokens,
        db=tmp_path / "db",
        training_run="t",
        step=0,
        n_features=2,
        sae_name=str(folder),
    )
    (
        folder / "sae_weights.safetensors"
    ).unlink()  # weights gone (or too large to read for an export): cfg.json is enough
    with RunStore.open(tmp_path / "db", create=False) as store:
        context = run_context(store, store.latest_run_id())
    assert (context.hook_name, context.sae_context_size, context.prepend_bos) == ("blocks.1.hook_resid_post", 40, True)
    assert context.sae_cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_post"
