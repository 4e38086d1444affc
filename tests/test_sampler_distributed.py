"""Two real gloo ranks (separate processes on 127.0.0.1) sample one corpus: rank 0's merged records
equal one process's, bit for bit, every group (hard negatives included); a rank that dies is named."""

import multiprocessing
import pickle
import re
import socket
from pathlib import Path

import pytest
import torch
from helpers_sae import build_tiny_model
from test_sampler import CFG, decode, sparse_sae, synthetic, text_tokens
from test_sampler_merge import HARD, doubling_data, records, shard_state

WORLD = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_main(rank: int, port: int, job: str, out: str, env: dict) -> None:
    import os

    os.environ.update(env)
    import torch.distributed as dist

    from autointerp.sampling_distributed import RankFailure, gather_and_merge

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    result = None
    try:
        if job == "synthetic":
            tokens, acts = doubling_data()
            merged = gather_and_merge(shard_state(tokens, acts, HARD, rank, WORLD), HARD)
            result = records(merged, tokens, HARD) if merged is not None else None
        elif job == "model":
            from autointerp.sampler import sample_features

            tokens = text_tokens(40, 32)
            cfg = CFG.model_copy(update={"batch_size": 8, "n_random_score": 4, "n_hard_negative_score": 4})
            samples = sample_features(
                build_tiny_model(), sparse_sae("topk"), tokens, [1, 4, 9], cfg, [1], 1, decode=decode
            )
            result = [s.model_dump() for s in samples]
        elif job in ("killed", "resumed"):
            from autointerp.sampler import sample_features

            tokens = text_tokens(40, 32)
            cfg = CFG.model_copy(update={"batch_size": 4, "n_random_score": 4, "checkpoint_tokens": 2 * 4 * 32})
            batches = {"n": 0}

            def progress(n, seconds):
                batches["n"] += 1
                if job == "killed" and rank == 1 and batches["n"] == 3:
                    os._exit(9)  # killed mid-pass, after its checkpoint at batch 2

            folder = Path(out) / "sampling"
            samples = sample_features(
                build_tiny_model(),
                sparse_sae("topk"),
                tokens,
                [1, 4, 9],
                cfg,
                [1],
                1,
                progress,
                decode,
                checkpoint_dir=folder,
            )
            result = {"records": [s.model_dump() for s in samples], "files": sorted(p.name for p in folder.glob("*"))}
        elif job == "dies":
            if rank == 1:
                os._exit(3)  # a rank lost before the merge (out of memory, a node gone)
            tokens, acts = synthetic(n_contexts=20)
            gather_and_merge(shard_state(tokens, acts, HARD, rank, WORLD), HARD)
    except RankFailure as err:
        result = {"error": str(err)}
    Path(out, f"rank{rank}.pkl").write_bytes(pickle.dumps(result))
    if job != "dies":
        dist.destroy_process_group()


def run_ranks(tmp_path: Path, job: str, env: dict | None = None) -> list:
    ctx = multiprocessing.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=rank_main, args=(r, port, job, str(tmp_path), env or {})) for r in range(WORLD)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
        if p.is_alive():
            p.kill()
            pytest.fail(f"rank {procs.index(p)} hung")
    return [
        pickle.loads(f.read_bytes()) if (f := tmp_path / f"rank{r}.pkl").exists() else "missing" for r in range(WORLD)
    ]


def test_two_gloo_ranks_merge_to_the_one_process_result(tmp_path):
    tokens, acts = doubling_data()
    one = records(shard_state(tokens, acts, HARD, 0, 1, batch_size=9), tokens, HARD)
    rank0, rank1 = run_ranks(tmp_path, "synthetic")
    assert rank1 is None  # only rank 0 holds the merged state
    assert rank0 == one


def test_two_gloo_ranks_through_the_model_equal_one_process(tmp_path, tiny_model):
    """The real sampling loop (model forward, SAE encode, sampler) on each rank's half of the contexts."""
    from autointerp.sampler import sample_features

    tokens = text_tokens(40, 32)
    cfg = CFG.model_copy(update={"batch_size": 8, "n_random_score": 4, "n_hard_negative_score": 4})
    one = sample_features(tiny_model, sparse_sae("topk"), tokens, [1, 4, 9], cfg, [1], 1, decode=decode)
    one = [s.model_dump() for s in one]
    rank0, rank1 = run_ranks(tmp_path, "model")
    assert rank1 == []
    assert rank0 == one
    assert sum(len(s["windows"]) for s in one) > 30
    assert sum(w["group"] == "hard_negative" for s in one for w in s["windows"]) > 0


def test_a_rank_that_dies_is_named(tmp_path):
    rank0, rank1 = run_ranks(tmp_path, "dies", {"AUTOINTERP_RANK_TIMEOUT_S": "5"})
    assert rank1 == "missing"
    assert "rank(s) 1 of 2 did not reach the end of the explanation contexts" in rank0["error"]


@pytest.mark.slow  # four rank processes in two rounds: about a minute on 2 cores
def test_a_killed_rank_is_named_and_the_rerun_resumes_every_rank(tmp_path, tiny_model):
    """Rank 1 dies mid-pass: rank 0 names it at the merge. Rerunning the same job resumes both ranks
    from their checkpoints and gives the one-process records."""
    from autointerp.sampler import sample_features

    env = {"AUTOINTERP_RANK_TIMEOUT_S": "5"}
    rank0, rank1 = run_ranks(tmp_path, "killed", env)
    assert rank1 == "missing" and re.search(
        r"rank\(s\) 1 of 2 did not reach the (merge|end of the explanation)", rank0["error"]
    )
    files = sorted(p.name for p in (tmp_path / "sampling").glob("*.pt"))
    assert files == ["pass000-rank000-of002.pt", "pass000-rank001-of002.pt"]
    for f in tmp_path.glob("rank*.pkl"):
        f.unlink()
    rank0, rank1 = run_ranks(tmp_path, "resumed", env)
    cfg = CFG.model_copy(update={"batch_size": 4, "n_random_score": 4})
    one = sample_features(tiny_model, sparse_sae("topk"), text_tokens(40, 32), [1, 4, 9], cfg, [1], 1, decode=decode)
    one = [s.model_dump() for s in one]
    assert rank1["records"] == [] and rank0["files"] == []  # checkpoints removed once merged
    assert rank0["records"] == one


@pytest.mark.slow
def test_torchrun_two_ranks_store_the_single_process_samples(tmp_path):
    """`torchrun --nproc-per-node 2 -m autointerp.sampling_torchrun` (gloo on CPU, the corpus
    streamed by each rank) stores the samples `autointerp sample` stores."""
    import os
    import subprocess
    import sys

    from autointerp.cli import main
    from autointerp.store import RunStore

    flags = ["--sae", "demo", "--device", "cpu", "--n-tokens", "1024", "--context-size", "64", "--features", "1,2,3"]
    assert main(["sample", *flags, "--run-dir", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port())]
    done = subprocess.run(
        [*launch, "-m", "autointerp.sampling_torchrun", *flags, "--run-dir", str(tmp_path / "two")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "on 2 ranks" in done.stdout + done.stderr

    def stored(folder):
        store = RunStore.open(folder, create=False)
        run_id = store.latest_run_id()
        return store.get_run(run_id), store.load_samples(run_id)

    (run_one, one), (run_two, two) = stored(tmp_path / "one"), stored(tmp_path / "two")
    assert run_two["corpus_fingerprint"] == run_one["corpus_fingerprint"]
    assert [s.model_dump() for s in two] == [s.model_dump() for s in one]  # every group, hard negatives too
    assert not (tmp_path / "two" / "sampling").exists()
