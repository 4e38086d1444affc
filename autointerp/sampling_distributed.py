"""Sampling on many ranks (GPUs, or CPU processes) through torch.distributed: the process group, the
exact merge of the ranks' states onto rank 0, and naming a rank that died. The torchrun entry point
(`torchrun --nproc-per-node 8 -m autointerp.sampling_torchrun --sae PATH ...`) is sampling_torchrun.py.

How the work is split: rank r streams the contexts i with i % world == r, keeping their GLOBAL ids,
so every hash draw (split, keys, offsets) is the one a single process makes. A world size that does
not divide the number of contexts is fine: ranks differ by at most one context (a rank may even get
none), and nothing is exchanged per batch, so uneven shares cost no waiting until the merge. At the end
of each pass the ranks' states are reduced pairwise in a binary tree onto rank 0 (log2(world) rounds,
at most two states in memory per rank, sent as raw tensors); `sampler_state.merge` is associative and
commutative, so the tree gives exactly the state one process would hold. One exchange happens mid-pass:
when every rank has streamed its explanation-split contexts, the ranks agree on each feature's hard-negative
target token (`agree_hard_targets`: an all-gather of three [F] vectors) before any score context.

A rank that dies: on gloo, ranks meet at a monitored barrier before the merge, which names the ranks
that did not arrive; torchrun also reports the failed rank and exit code. Each rank checkpoints its own
state (files named by pass, rank and world size) in the run directory, so rerunning the same command
resumes every rank where its last checkpoint left it.
"""

import datetime
import os

import torch
import torch.distributed as dist

from autointerp.config import SamplerConfig
from autointerp.errors import AutointerpError
from autointerp.sampler_state import FeatureState, empty_state, hard_targets, merge


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


def agree_hard_targets(peak_F: torch.Tensor, context_F: torch.Tensor, token_F: torch.Tensor) -> torch.Tensor:
    """Every rank's hard-negative targets from every rank's explanation top-1 (`sampler_state.explain_best`):
    the token one process would pick. Alone: from this state's own top-1."""
    rank, world = rank_and_world()
    if world == 1:
        return hard_targets(peak_F[None], context_F[None], token_F[None])
    _meet("the end of the explanation contexts")
    device = peak_F.device
    gathered = []
    for tensor in (peak_F, context_F, token_F):
        wire = _wire(tensor)
        parts = [torch.empty_like(wire) for _ in range(world)]
        dist.all_gather(parts, wire)
        gathered.append(torch.stack(parts).to(device))
    return hard_targets(*gathered)
