"""The training-loop API appends one tagged run per checkpoint to a scores database."""

import torch
from helpers_sae import make_sae

from autointerp.api import score_checkpoint
from autointerp.tables import run_table


def test_score_checkpoint_appends_a_row_per_step(tiny_model, tmp_path):
    tokens = torch.randint(3, 300, (48, 40), generator=torch.Generator().manual_seed(0))
    tokens[:, 0] = 1
    sae = make_sae("jumprelu", d_in=16, d_sae=32, hook_name="blocks.1.hook_resid_post")
    rows = []
    for step in (0, 1000):
        row = score_checkpoint(
            sae, tiny_model, tokens, db=tmp_path / "db", training_run="run-a", step=step, n_features=4, n_tokens=48 * 40
        )
        rows.append(row)
    assert [r["step"] for r in rows] == [0, 1000]
    assert all(r["training_run"] == "run-a" and r["sampled"] == 4 for r in rows)
    table = run_table([tmp_path / "db"])
    assert sorted(r["step"] for r in table) == [0, 1000]


def test_score_checkpoint_takes_a_saelens_sae(tiny_model, tmp_path):
    from sae_lens import SAE, StandardSAEConfig

    lens = SAE.from_dict(StandardSAEConfig(d_in=16, d_sae=32).to_dict())
    with torch.no_grad():
        for p in lens.parameters():
            p.normal_(0, 0.5)
    tokens = torch.randint(3, 300, (32, 40), generator=torch.Generator().manual_seed(1))
    row = score_checkpoint(
        lens,
        tiny_model,
        tokens,
        db=tmp_path / "db",
        training_run="lens",
        step=5,
        n_features=3,
        hook_name="blocks.0.hook_resid_post",
    )
    assert row["step"] == 5 and row["sampled"] == 3
