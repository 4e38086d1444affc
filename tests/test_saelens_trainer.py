"""SAELens's own trainer, with CheckpointScorer as its checkpoint hook, leaves one scored run per checkpoint."""

import itertools

import torch
from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig
from sae_lens.config import SAETrainerConfig
from sae_lens.training.sae_trainer import SAETrainer

from autointerp.sae import load_sae, sae_fingerprint
from autointerp.saelens_trainer import CheckpointScorer
from autointerp.store import RunStore
from autointerp.tables import run_table

HOOK = "blocks.1.hook_resid_post"


def training_sae() -> StandardTrainingSAE:
    cfg = StandardTrainingSAEConfig(d_in=16, d_sae=32, l1_coefficient=1.0)
    cfg.metadata.hook_name = HOOK
    return StandardTrainingSAE(cfg)


def tokens_NL() -> torch.Tensor:
    tokens = torch.randint(3, 300, (32, 40), generator=torch.Generator().manual_seed(0))
    tokens[:, 0] = 1
    return tokens


def test_the_trainer_scores_each_checkpoint_through_the_hook(tiny_model, tmp_path):
    torch.manual_seed(0)
    _, cache = tiny_model.run_with_cache(tokens_NL(), names_filter=HOOK)
    batches = itertools.cycle(cache[HOOK].reshape(-1, 16).split(64))
    scorer = CheckpointScorer(tiny_model, tokens_NL(), db=tmp_path / "scores", training_run="t1", n_features=3)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=1024,
        train_batch_size_samples=64,
        lr_end=3e-4,
        n_checkpoints=2,
        checkpoint_path=str(tmp_path / "checkpoints"),
        save_final_checkpoint=True,
    )
    SAETrainer(cfg=trainer_cfg, sae=training_sae(), data_provider=batches, save_checkpoint_fn=scorer).fit()

    folders = sorted((tmp_path / "checkpoints").iterdir(), key=lambda p: int(p.name.removeprefix("final_")))
    steps = [int(p.name.removeprefix("final_")) for p in folders]
    assert len(steps) == 3 and steps[-1] == 1024
    table = run_table([tmp_path / "scores"])
    assert sorted(r["step"] for r in table) == steps
    assert all(r["training_run"] == "t1" for r in table)
    assert [r["step"] for r in scorer.rows] == steps and all(r["sampled"] == 3 for r in scorer.rows)
    # Each run carries the fingerprint `autointerp run --sae FOLDER` gives that checkpoint, and names the folder.
    with RunStore.open(tmp_path / "scores", create=False) as store:
        runs = [store.get_run(run["run_id"]) for run in store.list_runs()]
    runs = {run["config"]["sae"]: run for run in runs}
    for folder in folders:
        assert runs[str(folder)]["sae_fingerprint"] == sae_fingerprint(load_sae(folder))
    assert len({run["sae_fingerprint"] for run in runs.values()}) == 3  # the weights moved between checkpoints


def test_without_a_checkpoint_folder_nothing_is_scored(tiny_model, tmp_path):
    scorer = CheckpointScorer(tiny_model, tokens_NL(), db=tmp_path / "scores", training_run="t", n_features=2)
    scorer(checkpoint_path=None)  # SAELens passes None when it saved to a temporary folder only
    assert scorer.rows == [] and not (tmp_path / "scores").exists()


def test_the_evaluator_scores_the_live_sae_and_returns_log_metrics(tiny_model, tmp_path):
    from sae_lens.training.activation_scaler import ActivationScaler

    sae = training_sae()
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_(0, 0.5)
    scorer = CheckpointScorer(tiny_model, tokens_NL(), db=tmp_path / "scores", training_run="ev", n_features=3)
    metrics = scorer.evaluator(sae, iter(()), ActivationScaler())  # as SAETrainer._run_and_log_evals calls it
    assert set(metrics) == {
        "autointerp/correlation_mean",
        "autointerp/lift_mean",
        "autointerp/sampled",
        "autointerp/scored",
    }
    assert metrics["autointerp/sampled"] == 3
    assert [r["step"] for r in run_table([tmp_path / "scores"])] == [0]


def test_a_checkpoint_in_scaled_units_is_read_with_the_trainers_scale(tiny_model, tmp_path):
    """A mid-training 'expected_average_only_in' checkpoint: the trainer's scaling factor is folded in, so the
    scored SAE encodes raw activations as the training SAE encodes scaled ones."""
    from sae_lens.training.activation_scaler import ActivationScaler

    cfg = StandardTrainingSAEConfig(
        d_in=16, d_sae=32, l1_coefficient=1.0, normalize_activations="expected_average_only_in"
    )
    cfg.metadata.hook_name = HOOK
    sae = StandardTrainingSAE(cfg)
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_(0, 0.5)
    sae.save_model(tmp_path / "ckpt" / "512")
    x = torch.randn(8, 16)
    folded = load_sae(tmp_path / "ckpt" / "512", input_scale=2.5)
    torch.testing.assert_close(folded.encode(x), sae.encode(x * 2.5), atol=1e-5, rtol=1e-5)
    scorer = CheckpointScorer(
        tiny_model,
        tokens_NL(),
        db=tmp_path / "s",
        training_run="t",
        activation_scaler=ActivationScaler(2.5),
        n_features=2,
    )
    scorer(checkpoint_path=tmp_path / "ckpt" / "512")
    assert scorer.rows[0]["step"] == 512
