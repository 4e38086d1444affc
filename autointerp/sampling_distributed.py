"""Sampling on many ranks (GPUs, or CPU processes) through torch.distributed, launched with torchrun:

    torchrun --nproc-per-node 8 -m autointerp.sampling_distributed --sae PATH --n-tokens 20000000 ...

takes the flags of `autointerp sample` and stores the samples in the run directory as it does.

How the work is split: rank r streams the contexts i with i % world == r, keeping their GLOBAL ids,
so every hash draw (split, keys, offsets) is the one a single process makes. A world size that does
not divide the number of contexts is fine: ranks differ by at most one context (a rank may even get
none), and nothing is exchanged per batch, so uneven shares cost no waiting until the merge. At the end
of each pass the ranks' states are reduced pairwise in a binary tree onto rank 0 (log2(world) rounds,
at most two states in memory per rank, sent as raw tensors); `sampler_state.merge` is associative and
commutative, so the tree gives exactly the state one process would hold (hard negatives aside, see sampler_state.py).

A rank that dies: on gloo, ranks meet at a monitored barrier before the merge, which names the ranks
that did not arrive; torchrun also reports the failed rank and exit code. Each rank checkpoints its own
state (files named by pass, rank and world size) in the run directory, so rerunning the same command
resumes every rank where its last checkpoint left it.
"""

import datetime
import os
import sys

import torch
import torch.distributed as dist

from autointerp.config import SamplerConfig
from autointerp.errors import AutointerpError
from autointerp.logits import save_run_logits
from autointerp.sampler_state import FeatureState, empty_state, merge


def rank_timeout_s() -> float:
    """How long a rank waits for the others at the merge (AUTOINTERP_RANK_TIMEOUT_S, default 30 min)."""
    return float(os.environ.get("AUTOINTERP_RANK_TIMEOUT_S", "1800"))


class RankFailure(AutointerpError):
    """A rank died or stalled before the merge."""


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(device: str | None = None) -> tuple[int, int]:
    """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE, MASTER_ADDR...):
    nccl when the ranks use CUDA, gloo otherwise. A single process without that environment stays alone."""
    if "WORLD_SIZE" not in os.environ or dist.is_initialized():
        return rank_and_world()
    cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=rank_timeout_s() + 60))
    return rank_and_world()


def barrier() -> None:
    if rank_and_world()[1] > 1:
        _meet("the end of sampling")


_meetings = [0]  # meetings so far: every rank counts the same sequence, so keys match across ranks


def _meet(where: str) -> None:
    """Wait for every rank. Each rank first signs in at the process group's key-value store (the one
    torchrun or init_process_group set up), so when the wait fails, the ranks that never signed in are
    named whether the failure was a timeout or a connection a dead rank closed."""
    rank, world = rank_and_world()
    _meetings[0] += 1
    prefix = f"autointerp/meeting{_meetings[0]}/rank"
    store = _store()
    if store is not None:
        store.set(f"{prefix}{rank}", "arrived")
    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=rank_timeout_s()), wait_all_ranks=True)
        else:
            dist.barrier()
    except RuntimeError as err:
        missing = "unknown"
        if store is not None:
            missing = ", ".join(str(r) for r in range(world) if not store.check([f"{prefix}{r}"])) or "none"
        raise RankFailure(
            f"Sampling rank {rank}: rank(s) {missing} of {world} did not reach {where} within {rank_timeout_s():.0f}s "
            f"(died or stalled; {err}). Expected all ranks alive; rerun the same command to resume every rank "
            "from its checkpoint."
        ) from err


def _store():
    """The default process group's store, or None (a private torch accessor, stable since 1.x)."""
    try:
        return dist.distributed_c10d._get_default_store()
    except (AttributeError, RuntimeError, ValueError):
        return None


def gather_and_merge(state: FeatureState, cfg: SamplerConfig) -> FeatureState | None:
    """Tree-reduce every rank's state onto rank 0; returns the merged state there, None elsewhere."""
    rank, world = rank_and_world()
    _meet("the merge")
    device = state.n_tokens.device
    step = 1
    while step < world:
        if rank % (2 * step) == step:  # send to the partner below and drop out
            for tensor in state.tensors().values():
                dist.send(_wire(tensor), dst=rank - step)
            return None
        if rank % (2 * step) == 0 and rank + step < world:
            other = empty_state(state.features, cfg, device)
            for tensor in other.tensors().values():
                buffer = _wire(tensor)
                dist.recv(buffer, src=rank + step)
                tensor.copy_(buffer)
            state = merge(state, other, cfg)  # lower ranks first: the same order at every size
        step *= 2
    return state if rank == 0 else None


def _wire(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor as the backend sends it: raw tensors, not pickles (nccl: on the GPU, over NVLink;
    gloo: on the host). Both sides know every shape, since both track the same features."""
    tensor = tensor.contiguous()
    return tensor if dist.get_backend() == "nccl" else tensor.cpu()


def main(argv: list[str] | None = None) -> int:
    """`autointerp sample` on every rank of a torchrun job; rank 0 writes the store."""
    import argparse
    import itertools
    import random
    import time
    from pathlib import Path

    import numpy as np

    from autointerp.cli import RunFlagHelpFormatter, add_run_flags, build_config
    from autointerp.corpus import StreamedContexts
    from autointerp.pipeline import DEFAULT_CONTEXT_SIZE, load_inputs, open_run, run_folder, with_model_name
    from autointerp.preflight import check_run
    from autointerp.reporting import Reporter
    from autointerp.run_lock import RunLock
    from autointerp.sampler import hook_activations, plan_passes, sample_features
    from autointerp.selection import choose_features, probe_log10_density

    parser = argparse.ArgumentParser(
        prog="torchrun ... -m autointerp.sampling_distributed", formatter_class=RunFlagHelpFormatter
    )
    parser.add_argument("--job", default=None)
    add_run_flags(parser)
    cfg = with_model_name(build_config(parser.parse_args(argv)))
    check_run(cfg, llm=False)  # every rank, before the process group: a bad setting stops them all at once
    rank, world = init_from_env(cfg.device)
    reporter: Reporter
    if rank == 0:
        from autointerp.terminal import TerminalReporter

        reporter = TerminalReporter()
        RunLock(run_folder(cfg)).acquire()  # one writer per run folder; held until this process ends
        store, run_id, run_dir = open_run(cfg)
        if run_id is not None and store.load_samples(run_id):
            reporter.note(f"Samples already stored in {run_dir} (run {run_id}); skipping sampling.")
            dist.broadcast_object_list([None], src=0)
            return 0
        box = [str(run_dir)]
    else:
        reporter, box = Reporter(), [None]
    dist.broadcast_object_list(box, src=0)
    if box[0] is None:
        return 0
    run_dir = Path(box[0])
    inputs = load_inputs(cfg, with_corpus=False)
    model, sae = inputs.model, inputs.sae
    context_size = min(cfg.sampler.context_size or sae.cfg.context_size or DEFAULT_CONTEXT_SIZE, model.cfg.n_ctx)
    # Every rank reads and tokenises the documents itself and keeps only its share: no rank holds the corpus.
    contexts = StreamedContexts(cfg.corpus, model.tokenizer, context_size, sae.cfg.prepend_bos, cfg.sampler.n_tokens)
    density = sae.log10_density
    if density is None and not cfg.selection.features:
        n_probe = max(1, cfg.selection.density_probe_tokens // context_size)
        probe = torch.from_numpy(np.stack(list(itertools.islice(contexts.rows(), n_probe))))
        args = (inputs.special_ids, inputs.first_position, cfg.sampler.batch_size, hook_activations)
        density = probe_log10_density(model, sae, probe, *args)
    features, n_dead = choose_features(cfg.selection, density, sae.cfg.d_sae)
    started = time.time()
    with reporter.progress() as bar:
        n_passes = len(plan_passes(features, cfg.sampler, context_size, sae.device)[0])
        share = cfg.sampler.n_tokens // context_size * context_size // world  # rank 0's share, at most
        task = bar.add_task(f"sampling (rank 0 of {world})", total=share * n_passes)
        done = 0

        def progress(n: int, seconds: float) -> None:
            nonlocal done
            done += n
            bar.advance(task, n, info=f"{done / max(seconds, 1e-9):,.0f} tok/s on rank 0")

        samples = sample_features(
            model,
            sae,
            contexts,
            features,
            cfg.sampler,
            inputs.special_ids,
            inputs.first_position,
            progress,
            reporter=reporter,
            checkpoint_dir=run_dir / "sampling",
        )
    if rank == 0:
        fingerprint, n = contexts.fingerprint()
        if run_id is None:
            run_id = time.strftime("%Y%m%d-%H%M%S") + f"-{random.randrange(16**4):04x}"
            store.create_run(run_id, run_dir.name, cfg, inputs.sae_fingerprint, fingerprint)
        store.save_samples(run_id, samples)
        save_run_logits(store, run_id, sae, model, [s.feature for s in samples])  # W_dec @ W_U, model still loaded
        seconds = time.time() - started
        reporter.note(
            f"Sampled {len(samples)} features over {n:,} tokens on {world} ranks in {seconds:.0f}s "
            f"({n / seconds:,.0f} tok/s); {n_dead} dead features never chosen. Stored in {run_dir}."
        )
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
