"""Score every checkpoint of a SAELens training run, through the trainer's own seams.

SAELens's `SAETrainer` (sae_lens/training/sae_trainer.py, sae-lens 6.x) takes two callables:

- `save_checkpoint_fn(checkpoint_path=Path | None)`: called after each checkpoint (`n_checkpoints`, and
  the final one with `save_final_checkpoint`) is written to `checkpoint_path` in SAELens's layout, under a
  folder named by the number of training samples seen (`final_<n>` for the last). `CheckpointScorer` is
  such a callable: it scores the folder as `autointerp run --sae FOLDER` would (same fingerprint, so
  `compare` pairs them) and appends one run per checkpoint, tagged with the step, to one database.
- `evaluator(sae, data_provider, activation_scaler) -> dict`: called with the live SAE at each eval (only
  when logging to Weights & Biases); `CheckpointScorer.evaluator` scores it in memory and returns the headline
  numbers as `autointerp/<column>` metrics for the log.

    scorer = CheckpointScorer(model, "shakespeare", db="scores/my-run", training_run="my-run", n_features=20)
    trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=batches, save_checkpoint_fn=scorer)
    scorer.activation_scaler = trainer.activation_scaler  # only for 'expected_average_only_in' SAEs
    trainer.fit()
    # autointerp table scores/my-run: one row per checkpoint

A trainer built by SAELens's `LanguageModelSAETrainingRunner` passes its own checkpoint function; wrap it:
`runner.save_checkpoint = scorer.after(runner.save_checkpoint)`.
"""

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autointerp.api import score_checkpoint
from autointerp.sae import load_sae

log = logging.getLogger(__name__)
_SAMPLES = re.compile(r"(\d+)$")  # SAELens names checkpoints str(n_training_samples) or f"final_{n}"
HEADLINE = ("correlation_mean", "lift_mean", "sampled", "scored")


class CheckpointScorer:
    """A SAELens `save_checkpoint_fn` (and `evaluator`) that scores each checkpoint into the database `db`.

    model: the HookedTransformer the SAE reads. corpus, **options: as for `autointerp.api.score_checkpoint`
    (n_features, n_tokens, explainer, simulator, ...). step: the number of training samples in the
    checkpoint's name. rows: the summary row of every checkpoint scored so far, in order.
    """

    def __init__(self, model, corpus, *, db: str | Path, training_run: str, activation_scaler=None, **options: Any):
        self.model = model
        self.corpus = corpus
        self.db = Path(db)
        self.training_run = training_run
        self.activation_scaler = activation_scaler
        self.options = options
        self.rows: list[dict] = []

    def __call__(self, checkpoint_path: Path | None) -> None:
        if checkpoint_path is None:  # the trainer had no checkpoint_path: nothing on disk to score
            log.warning("autointerp: SAELens saved no checkpoint folder (set checkpoint_path); nothing scored")
            return
        folder = Path(checkpoint_path)
        match = _SAMPLES.search(folder.name)
        step = int(match.group(1)) if match else len(self.rows)
        scale = getattr(self.activation_scaler, "scaling_factor", None)
        sae = load_sae(folder, input_scale=scale)
        row = score_checkpoint(
            sae,
            self.model,
            self.corpus,
            db=self.db,
            training_run=self.training_run,
            step=step,
            sae_name=str(folder),
            **self.options,
        )
        self.rows.append(row)

    def after(self, save_checkpoint: Callable[..., None]) -> Callable[..., None]:
        """A checkpoint function that runs `save_checkpoint` (e.g. SAELens runner's own), then scores."""

        def both(checkpoint_path: Path | None) -> None:
            save_checkpoint(checkpoint_path)
            self(checkpoint_path)

        return both

    def evaluator(self, sae, data_provider, activation_scaler) -> dict[str, Any]:
        """SAELens's Evaluator signature: score the live SAE; returns {'autointerp/<column>': value}."""
        row = score_checkpoint(
            sae,
            self.model,
            self.corpus,
            db=self.db,
            training_run=self.training_run,
            step=len(self.rows),
            activation_scaler=activation_scaler,
            **self.options,
        )
        self.rows.append(row)
        return {f"autointerp/{key}": row.get(key) for key in HEADLINE}
