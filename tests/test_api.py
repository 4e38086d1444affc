"""The training-loop API appends one tagged run per checkpoint to a scores database."""

import sqlite3

import pytest
import torch
from helpers_sae import make_sae, write_sae

from autointerp.api import score_checkpoint
from autointerp.tables import compare_runs, run_table


def test_score_checkpoint_appends_a_row_per_step(tiny_model, tmp_path, capsys):
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
    assert capsys.readouterr().out == ""  # a training loop's output is its own: no notes, no progress bars


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


def test_score_checkpoint_reports_through_the_reporter_it_is_given(tiny_model, tmp_path):
    from autointerp.reporting import Progress, Reporter

    class Recorder(Reporter, Progress):
        def __init__(self) -> None:
            self.notes: list[str] = []
            self.tasks: dict[str, list[float]] = {}

        def note(self, text: str) -> None:
            self.notes.append(text)

        def progress(self) -> Progress:
            return self

        def add_task(self, description: str, total: float) -> int:
            self.tasks[description] = [0, total]
            return len(self.tasks) - 1

        def advance(self, task: int, amount: float = 1, info: str = "") -> None:
            list(self.tasks.values())[task][0] += amount

    tokens = torch.randint(3, 300, (32, 40), generator=torch.Generator().manual_seed(2))
    sae = make_sae("standard", d_in=16, d_sae=32, hook_name="blocks.1.hook_resid_post")
    recorder = Recorder()
    score_checkpoint(
        sae, tiny_model, tokens, db=tmp_path / "db", training_run="r", step=0, n_features=3, reporter=recorder
    )
    assert any(note.startswith("LLM stages: explainer baseline") for note in recorder.notes), recorder.notes
    assert recorder.tasks == {"explaining": [3, 3], "scoring (simulation + detection)": [3, 3]}


@pytest.mark.slow
def test_a_command_line_run_and_a_checkpoint_run_of_one_sae_are_paired(smollm2, tmp_path, capsys):
    """Both faces store the same SAE fingerprint, so `compare` pairs their features instead of falling
    back to comparing unpaired means."""
    from autointerp.cli import main
    from autointerp.sae import load_sae

    sae_dir = write_sae(
        tmp_path, "jumprelu", d_in=576, d_sae=16, hook_name="blocks.3.hook_resid_post", model_name="smollm2-135m"
    )
    baseline = ["--explainer", "baseline", "--simulator", "baseline"]
    argv = ["--sae", str(sae_dir), "--n-tokens", "2000", "--context-size", "64", "--n-features", "6", *baseline]
    assert main(["run", *argv, "--run-dir", str(tmp_path / "cli")]) == 0
    score_checkpoint(
        load_sae(sae_dir),
        smollm2,
        "shakespeare",
        db=tmp_path / "api",
        training_run="t",
        step=0,
        n_features=6,
        n_tokens=2000,
        context_size=64,
    )
    stored = []
    for name in ("cli", "api"):
        with sqlite3.connect(tmp_path / name / "autointerp.sqlite") as db:
            stored += [row[0] for row in db.execute("SELECT sae_fingerprint FROM runs")]
    assert len(stored) == 2 and stored[0] == stored[1]
    result = compare_runs(tmp_path / "cli", tmp_path / "api")
    assert result["same_sae"] and result["paired"] is not None and result["unpaired"] is None
    assert result["note"].startswith("Same SAE")
