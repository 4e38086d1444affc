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
    assert recorder.tasks.pop("explaining") == [3, 3]
    # Scoring counts judgements (several per feature: the explanation's and the controls'), all done.
    ((name, (done, total)),) = recorder.tasks.items()
    assert name.startswith("scoring (simulation + detection") and done == total >= 3


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


def lens_sae(seed: int = 0, **metadata):
    """A SAELens SAE (d_in 16, 32 features) with random weights reading blocks.1 of the tiny model."""
    from sae_lens import SAE, StandardSAEConfig

    cfg = StandardSAEConfig(d_in=16, d_sae=32)
    cfg.metadata.hook_name = "blocks.1.hook_resid_post"
    cfg.metadata.model_name = "tiny-random"
    for key, value in metadata.items():
        setattr(cfg.metadata, key, value)
    lens = SAE.from_dict(cfg.to_dict())
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in lens.parameters():
            p.normal_(0, 0.5)
    return lens


def tokens_NL(seed: int = 3) -> torch.Tensor:
    tokens = torch.randint(3, 300, (32, 40), generator=torch.Generator().manual_seed(seed))
    tokens[:, 0] = 1
    return tokens


def test_score_checkpoint_runs_inside_a_running_event_loop(tiny_model, tmp_path):
    """In Jupyter a loop is already running, and asyncio.run refuses to start another in that thread."""
    import asyncio

    from autointerp.api import score_checkpoint_async

    async def notebook_cell() -> tuple[dict, dict]:
        plain = score_checkpoint(
            lens_sae(), tiny_model, tokens_NL(), db=tmp_path / "db", training_run="nb", step=1, n_features=3
        )
        awaited = await score_checkpoint_async(
            lens_sae(), tiny_model, tokens_NL(), db=tmp_path / "db", training_run="nb", step=2, n_features=3
        )
        return plain, awaited

    plain, awaited = asyncio.run(notebook_cell())
    assert (plain["step"], plain["sampled"], awaited["step"], awaited["sampled"]) == (1, 3, 2, 3)


def test_a_saelens_sae_in_memory_and_saved_to_a_folder_carry_one_fingerprint(tiny_model, tmp_path, capsys):
    """The in-memory SAELens object is converted as its saved folder is loaded, so `compare` pairs a
    checkpoint run with a run of the saved SAE; the call closes its database and prints nothing."""
    import os

    from autointerp.sae import load_sae, sae_fingerprint

    lens = lens_sae(seed=4)
    lens.save_model(tmp_path / "saved")
    fds_before = set(os.listdir("/proc/self/fd"))
    score_checkpoint(lens, tiny_model, tokens_NL(), db=tmp_path / "mem", training_run="a", step=0, n_features=4)
    score_checkpoint(
        load_sae(tmp_path / "saved"),
        tiny_model,
        tokens_NL(),
        db=tmp_path / "disk",
        training_run="b",
        step=0,
        n_features=4,
    )
    open_now = {os.readlink(f"/proc/self/fd/{fd}") for fd in set(os.listdir("/proc/self/fd")) - fds_before
                if os.path.exists(f"/proc/self/fd/{fd}")}  # fmt: skip
    assert not [path for path in open_now if "autointerp.sqlite" in path]  # both stores closed
    stored = []
    for name in ("mem", "disk"):
        with sqlite3.connect(tmp_path / name / "autointerp.sqlite") as db:
            stored += [row[0] for row in db.execute("SELECT sae_fingerprint FROM runs")]
    assert stored[0] == stored[1] == sae_fingerprint(load_sae(tmp_path / "saved"))
    result = compare_runs(tmp_path / "disk", tmp_path / "mem")
    assert result["same_sae"] and result["paired"] is not None
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_score_checkpoint_stores_each_sampled_features_logits(tiny_model, tmp_path):
    from autointerp.logits import load_feature_logits
    from autointerp.sae import load_sae
    from autointerp.store import RunStore

    lens = lens_sae(seed=5)
    lens.save_model(tmp_path / "saved")
    score_checkpoint(lens, tiny_model, tokens_NL(), db=tmp_path / "db", training_run="l", step=0, n_features=3)
    with RunStore.open(tmp_path / "db", create=False) as store:
        run_id = store.latest_run_id()
        logits = load_feature_logits(store, run_id)
        sampled = sorted(s.feature for s in store.load_samples(run_id))
    assert sorted(logits) == sampled
    W_dec = load_sae(tmp_path / "saved").weights["W_dec"]
    for feature, item in logits.items():
        direct_V = W_dec[feature] @ tiny_model.W_U
        assert [t for t, _, _ in item.top] == direct_V.topk(10).indices.tolist()
        assert [t for t, _, _ in item.bottom] == (-direct_V).topk(10).indices.tolist()
        assert item.top[0][2] == pytest.approx(direct_V.max().item(), rel=1e-5)


def test_score_checkpoint_refuses_a_scaled_sae_without_the_trainers_scale(tiny_model, tmp_path):
    from sae_lens.training.activation_scaler import ActivationScaler

    from autointerp.errors import InputError

    lens = lens_sae(seed=6)
    lens.cfg.normalize_activations = "expected_average_only_in"
    with pytest.raises(InputError, match="activation_scaler"):
        score_checkpoint(lens, tiny_model, tokens_NL(), db=tmp_path / "db", training_run="s", step=0, n_features=2)
    row = score_checkpoint(
        lens,
        tiny_model,
        tokens_NL(),
        db=tmp_path / "db",
        training_run="s",
        step=0,
        n_features=2,
        activation_scaler=ActivationScaler(scaling_factor=3.0),
    )
    assert row["sampled"] == 2


@pytest.mark.slow
def test_score_checkpoint_takes_context_size_and_prepend_bos_from_a_saelens_sae(smollm2, tmp_path):
    """A corpus given by name is cut into the SAE's own context size (48, not the default 128), with BOS
    only if the SAE trained with one."""
    from sae_lens import SAE, StandardSAEConfig

    from autointerp.store import RunStore

    bos = smollm2.tokenizer.bos_token_id
    for prepend_bos in (True, False):
        cfg = StandardSAEConfig(d_in=576, d_sae=16)
        cfg.metadata.hook_name = "blocks.3.hook_resid_post"
        cfg.metadata.context_size = 48
        cfg.metadata.prepend_bos = prepend_bos
        lens = SAE.from_dict(cfg.to_dict())
        db = tmp_path / str(prepend_bos)
        score_checkpoint(lens, smollm2, "shakespeare", db=db, training_run="c", step=0, n_features=3, n_tokens=1200)
        with RunStore.open(db, create=False) as store:
            run_id = store.latest_run_id()
            assert store.get_run(run_id)["config"]["sampler"]["context_size"] == 48
            windows = [w for s in store.load_samples(run_id) for w in s.windows]
        # With BOS, position 0 holds it and is never shown; without, position 0 is a text token like any other.
        at_zero = [w.token_ids[0] for w in windows if w.start == 0]
        assert bool(at_zero) != prepend_bos and bos not in at_zero


def test_an_architecture_we_do_not_implement_runs_through_its_own_encode(tiny_model, tmp_path):
    """SAELens's batchtopk training SAE has no autointerp counterpart: it is scored through its own encode,
    with its metadata's hook, and fingerprinted from its state dict."""
    from sae_lens import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig

    from autointerp.api import ForeignSAE, as_scored_sae

    cfg = BatchTopKTrainingSAEConfig(d_in=16, d_sae=32, k=4)
    cfg.metadata.hook_name = "blocks.1.hook_resid_post"
    lens = BatchTopKTrainingSAE(cfg)
    wrapped, _ = as_scored_sae(lens)
    assert isinstance(wrapped, ForeignSAE) and wrapped.cfg.hook_name == "blocks.1.hook_resid_post"
    row = score_checkpoint(lens, tiny_model, tokens_NL(), db=tmp_path / "db", training_run="b", step=0, n_features=2)
    assert row["sampled"] == 2
