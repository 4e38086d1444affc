"""Sampling stores pass by pass: a run split into passes by --max-state-gb stores what one pass stores,
each pass is committed as soon as it finishes (no pass's records are held while the next one streams), and
a run killed in pass 2 of 3 resumes at pass 2 without streaming pass 1 again."""

import argparse
import gc
import json
import shutil

import numpy as np
import pytest
import torch
from helpers_sae import write_sae

from autointerp.cli import add_run_flags, build_config
from autointerp.errors import StoreError
from autointerp.logits import load_feature_logits
from autointerp.pipeline import sample_stage, sampling_note
from autointerp.records import FeatureSample
from autointerp.reporting import Progress, Reporter
from autointerp.sampler import TensorContexts
from autointerp.sampler_memory import GB, bytes_per_feature
from autointerp.sampling_torchrun import rank_share
from autointerp.store import RunStore

CONTEXT = 48
FEATURES = [18, 20, 22, 23, 29, 44]
CAP = 4800  # --n-tokens: more than the corpus holds (~1,400 tokens), so the bar's first total is too high


class Stop(Exception):
    """Raised from the progress callback: the run is killed there."""


class Recorder(Reporter):
    """Keeps the notes, the totals set (first and corrected) and the tokens advanced; `on_advance(done)` runs
    after each batch."""

    def __init__(self, on_advance=None) -> None:
        self.notes: list[str] = []
        self.totals: list[float] = []
        self.done = 0
        self.on_advance = on_advance

    def note(self, text: str) -> None:
        self.notes.append(text)

    def progress(self) -> Progress:
        recorder = self

        class Counting(Progress):
            def add_task(self, description: str, total: float) -> int:
                recorder.totals.append(total)
                return 0

            def set_total(self, task: int, total: float) -> None:
                recorder.totals.append(total)

            def advance(self, task: int, amount: float = 1, info: str = "") -> None:
                recorder.done += int(amount)
                if recorder.on_advance:
                    recorder.on_advance(recorder.done)

        return Counting()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(argv for one pass, argv for three passes of two features, corpus path)."""
    root = tmp_path_factory.mktemp("per_pass")
    sae_path = write_sae(
        root, "standard", d_in=576, d_sae=48, hook_name="blocks.0.hook_resid_post", model_name="smollm2-135m"
    )
    corpus = root / "docs.jsonl"
    lines = [
        json.dumps({"text": f"Entry {i}: {'blue ' * (i % 4)}owls saw {i % 9} mice near the mill."}) for i in range(90)
    ]
    corpus.write_text("\n".join(lines))
    argv = [
        "--sae",
        str(sae_path),
        "--corpus",
        str(corpus),
        "--context-size",
        str(CONTEXT),
        "--n-tokens",
        str(CAP),
    ]
    # Features given: no density probe, whose read of the short corpus would make the bar's first total exact.
    argv += ["--features", ",".join(map(str, FEATURES)), "--batch-size", "8", "--window-size", "16", "--device", "cpu"]
    state, work = bytes_per_feature(config(argv).sampler, CONTEXT)
    three = argv + ["--max-state-gb", f"{(state + work) * 2.5 / GB:.12f}"]  # room for 2 features: passes of 2, 2, 2
    return argv, three, corpus


def config(argv: list[str], run_dir=None):
    parser = argparse.ArgumentParser()
    add_run_flags(parser)
    return build_config(parser.parse_args(argv + (["--run-dir", str(run_dir)] if run_dir else [])))


def stored(run_dir) -> tuple[list[FeatureSample], dict, list[int], str]:
    """(samples, logits, sampling plan, corpus fingerprint) of the run in `run_dir`."""
    with RunStore.open(run_dir, create=False) as store:
        run_id = store.latest_run_id()
        return (
            store.load_samples(run_id),
            load_feature_logits(store, run_id),
            store.sampling_plan(run_id),
            store.get_run(run_id)["corpus_fingerprint"],
        )


def n_stored(run_dir) -> int:
    """Features stored in `run_dir` (0 while another process is still creating the database)."""
    try:
        with RunStore.open(run_dir, create=False) as store:
            run_id = store.latest_run_id()
            return len(store.sampled_features(run_id)) if run_id else 0
    except StoreError:
        return 0


def assert_same_store(got, want) -> None:
    """Windows, contexts, tokens and counts exactly; activations and logit values to 1e-6 relative (of the
    window's peak: windows are stored as ratios to it), since a feature encoded in a narrower matmul may move
    by an ulp."""
    (samples, logits, plan, fingerprint), (samples_w, logits_w, plan_w, fingerprint_w) = got, want
    assert fingerprint == fingerprint_w and plan == plan_w == sorted(s.feature for s in samples_w)
    assert [s.feature for s in samples] == [s.feature for s in samples_w] and len(samples) == len(FEATURES)
    assert sum(len(s.windows) for s in samples_w) > 0
    for s, w in zip(samples, samples_w, strict=True):
        a, b = s.stats.model_dump(), w.stats.model_dump()
        for key in ("max_activation", "mean_active"):
            assert a.pop(key) == pytest.approx(b.pop(key), rel=1e-6)
        assert a == b
        assert len(s.windows) == len(w.windows)
        for x, y in zip(s.windows, w.windows, strict=True):
            assert x.model_dump(exclude={"activations"}) == y.model_dump(exclude={"activations"})
            scale = max(map(abs, y.activations), default=0.0)  # stored as ratios to the window's peak
            np.testing.assert_allclose(x.activations, y.activations, rtol=1e-6, atol=1e-6 * scale)
    assert sorted(logits) == sorted(logits_w) == plan
    for f, entry in logits.items():
        for side in ("top", "bottom"):
            mine, theirs = getattr(entry, side), getattr(logits_w[f], side)
            assert [t[:2] for t in mine] == [t[:2] for t in theirs]
            np.testing.assert_allclose([t[2] for t in mine], [t[2] for t in theirs], rtol=1e-6)


@pytest.fixture(scope="module")
def one_pass(setup, tmp_path_factory):
    """(what a one-pass run stores, the corpus's real number of tokens: what that pass streamed)."""
    argv, _, _ = setup
    run_dir = tmp_path_factory.mktemp("one") / "run"
    reporter = Recorder()
    sample_stage(config(argv, run_dir), reporter)
    n = reporter.done
    assert n < CAP and reporter.totals == [CAP, n]  # the cap at first, the corpus's length once read through
    assert f"over {n:,} tokens in" in reporter.notes[-1]
    return stored(run_dir), n


def test_three_passes_store_what_one_pass_stores_pass_by_pass(setup, one_pass, tmp_path):
    _, three, _ = setup
    want, n = one_pass
    run_dir = tmp_path / "run"
    stored_at_pass_start: list[int] = []

    def at_each_pass_start(done: int) -> None:
        # The first batch of each pass (a batch is 8 x 48 tokens): what the store holds when it streams.
        if (done - 1) % n < 8 * CONTEXT:
            stored_at_pass_start.append(n_stored(run_dir))

    reporter = Recorder(at_each_pass_start)
    sample_stage(config(three, run_dir), reporter)
    assert_same_store(stored(run_dir), want)
    assert stored_at_pass_start == [0, 2, 4]  # each pass committed before the next one streamed
    assert reporter.totals == [3 * CAP, 3 * n, 3 * n, 3 * n] and reporter.done == 3 * n  # corrected after pass 1
    assert "3 pass(es) of up to 2 features" in reporter.notes[0]
    assert f"over {n:,} tokens x 3 passes = {3 * n:,} in" in reporter.notes[-1]
    assert not (run_dir / "sampling").exists()  # every pass's checkpoint removed


@pytest.fixture(scope="module")
def killed(setup, one_pass, tmp_path_factory):
    """A three-pass run killed at the first batch of pass 2: (its run folder, what was seen at the kill)."""
    _, three, _ = setup
    n = one_pass[1]
    run_dir = tmp_path_factory.mktemp("killed") / "run"
    seen: dict[str, int] = {}
    gc.collect()
    records_before = sum(type(o) is FeatureSample for o in gc.get_objects())

    def killed_in_pass_two(done: int) -> None:
        if done > n:  # pass 2's first batch
            gc.collect()
            seen["records held"] = sum(type(o) is FeatureSample for o in gc.get_objects()) - records_before
            seen["stored"] = n_stored(run_dir)
            raise Stop

    with pytest.raises(Stop):
        sample_stage(config(three, run_dir), Recorder(killed_in_pass_two))
    return run_dir, seen


def test_a_run_killed_in_pass_two_resumes_there_and_stores_the_uninterrupted_result(setup, one_pass, killed, tmp_path):
    _, three, _ = setup
    want, n = one_pass
    run_dir = tmp_path / "run"
    shutil.copytree(killed[0], run_dir)
    # Pass 1 was stored and dropped: nobody (generator, pipeline) holds its records while pass 2 streams.
    assert killed[1] == {"records held": 0, "stored": 2}

    resumed = Recorder()
    sample_stage(config(three, run_dir), resumed)
    # Passes 2 and 3, not pass 1; exact from the start (the corpus check before streaming read it through).
    assert resumed.totals == [2 * n] * 3 and resumed.done == 2 * n
    assert "1 pass(es) stored by an earlier run were not streamed again" in resumed.notes[-1]
    assert f"{n:,} tokens x 2 passes" in resumed.notes[-1]
    assert_same_store(stored(run_dir), want)

    again = Recorder()
    sample_stage(config(three, run_dir), again)
    assert again.done == 0 and "Samples already stored" in again.notes[0]


def test_a_resumed_run_refuses_a_corpus_edited_since_the_kill(setup, killed, tmp_path):
    """Refused before anything streams: its samples would mix with pass 1's."""
    _, three, corpus = setup
    run_dir = tmp_path / "run"
    shutil.copytree(killed[0], run_dir)
    original = corpus.read_text()
    corpus.write_text(original.replace("owls", "bats"))
    edited = Recorder()
    try:
        with pytest.raises(StoreError, match="2 features sampled from a corpus with fingerprint"):
            sample_stage(config(three, run_dir), edited)
    finally:
        corpus.write_text(original)
    assert n_stored(run_dir) == 2 and edited.done == 0


def test_rank_share_counts_the_contexts_each_rank_streams():
    for n_contexts in (0, 1, 5, 7, 8):
        tokens = torch.zeros(n_contexts, 4, dtype=torch.long)
        for world in (1, 2, 3, 4):
            shares = [rank_share(n_contexts, r, world) for r in range(world)]
            streamed = [sum(len(ids) for ids, _ in TensorContexts(tokens).batches(3, r, world)) for r in range(world)]
            assert shares == streamed and sum(shares) == n_contexts


def test_the_sampling_note_counts_tokens_times_passes_and_ranks(tmp_path):
    note = sampling_note(6, 1200, 3, 12.0, 1, tmp_path, world=2, n_resumed=1)
    assert "over 1,200 tokens x 3 passes = 3,600 on 2 ranks in 12s (300 tok/s)" in note
    assert "1 pass(es) stored by an earlier run" in note and "1 dead" in note
    assert "x 1 passes" not in sampling_note(6, 1200, 1, 1.0, 0, tmp_path)


@pytest.mark.slow  # three torchrun launches of two ranks, each loading SmolLM2: about a minute on 2 cores
def test_torchrun_stores_each_pass_on_rank_0_and_a_killed_job_resumes_at_the_first_pass_not_stored(
    setup, one_pass, tmp_path
):
    import contextlib
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from test_sampler_distributed import free_port

    _, three, _ = setup
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    def launch() -> subprocess.Popen:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
        command += ["--master-port", str(free_port()), "-m", "autointerp.sampling_torchrun", *three]
        return subprocess.Popen(
            [*command, "--run-dir", str(run_dir)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def kill_ranks() -> None:
        """SIGKILL what is left of this test's job: every process whose command names its run folder."""
        for proc in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                if proc.name.isdigit() and str(run_dir).encode() in (proc / "cmdline").read_bytes():
                    os.kill(int(proc.name), signal.SIGKILL)

    job = launch()
    try:
        deadline = time.monotonic() + 300
        while (stored_at_kill := n_stored(run_dir)) == 0 and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        kill_ranks()  # the launcher and both ranks, as a node lost mid-job
        job.communicate(timeout=60)
    finally:
        kill_ranks()
    assert stored_at_kill in (2, 4), "the job ended or stalled before storing a pass"

    job = launch()
    try:
        out, _ = job.communicate(timeout=600)
    finally:
        kill_ranks()
    assert job.returncode == 0, out[-3000:]
    want, n = one_pass
    passes_left = 3 - stored_at_kill // 2
    left = -(-n // CONTEXT // 2) * CONTEXT * passes_left  # rank 0 streams contexts 0, 2, 4, ...: the odd one too
    assert f"sampling (rank 0 of 2): 0/{left:,} (0%)" in out, out[-3000:]  # exact from the start
    assert f"sampling (rank 0 of 2): {left:,}/{left:,} (100%)" in out, out[-3000:]
    assert f"{n:,} tokens x {passes_left} passes" in out or passes_left == 1, out[-3000:]
    assert "on 2 ranks" in out and f"{3 - passes_left} pass(es) stored by an earlier run" in out, out[-3000:]
    assert_same_store(stored(run_dir), want)
    assert not (run_dir / "sampling").exists()
