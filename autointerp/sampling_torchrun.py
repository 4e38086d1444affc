"""`autointerp sample` on every rank of a torchrun job; rank 0 writes the store:

    torchrun --nproc-per-node 8 -m autointerp.sampling_torchrun --sae PATH --n-tokens 20000000 ...

takes the flags of `autointerp sample`. Each rank streams and tokenises the corpus itself, keeping its
share of the contexts (sampling_distributed.py says how the work is split, merged, and how a dead rank
is named). Rank 0 stores each pass's merged records as the pass finishes; rerunning the same command after
a failure streams only the passes not stored, every rank resuming the pass in flight from its checkpoint.
"""

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from autointerp.cli import RunFlagHelpFormatter, add_run_flags, build_config
from autointerp.corpus import StreamedContexts
from autointerp.inputs import DEFAULT_CONTEXT_SIZE, load_inputs
from autointerp.pipeline import PassWriter, open_run, run_folder, sampling_finished, sampling_note, with_model_name
from autointerp.preflight import check_run
from autointerp.reporting import Reporter, token_rate
from autointerp.run_lock import RunLock
from autointerp.sampler import hook_activations, sample_passes
from autointerp.sampler_memory import plan_passes
from autointerp.sampling_distributed import init_from_env
from autointerp.selection import choose_features, probe_log10_density


def main(argv: list[str] | None = None) -> int:
    """`autointerp sample` on every rank of a torchrun job; rank 0 writes the store."""
    parser = argparse.ArgumentParser(
        prog="torchrun ... -m autointerp.sampling_torchrun", formatter_class=RunFlagHelpFormatter
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
        if run_id is not None and sampling_finished(store, run_id):
            reporter.note(f"Samples already stored in {run_dir} (run {run_id}); skipping sampling.")
            dist.broadcast_object_list([None], src=0)
            return 0
        box = [str(run_dir)]
    else:
        reporter, box, store, run_id = Reporter(), [None], None, None
    dist.broadcast_object_list(box, src=0)
    if box[0] is None:
        return 0
    run_dir = Path(box[0])
    inputs = load_inputs(cfg, with_corpus=False)
    started = time.time()
    model, sae = inputs.model, inputs.sae
    context_size = min(cfg.sampler.context_size or sae.cfg.context_size or DEFAULT_CONTEXT_SIZE, model.cfg.n_ctx)
    # Every rank reads and tokenises the documents itself and keeps only its share: no rank holds the corpus.
    contexts = StreamedContexts(cfg.corpus, model.tokenizer, context_size, sae.cfg.prepend_bos, cfg.sampler.n_tokens)
    inputs.contexts = contexts
    density = sae.log10_density
    if density is None and not cfg.selection.features:
        n_probe = max(1, cfg.selection.density_probe_tokens // context_size)
        probe = torch.from_numpy(np.stack(list(itertools.islice(contexts.rows(), n_probe))))
        args = (inputs.special_ids, inputs.first_position, cfg.sampler.batch_size, hook_activations)
        density = probe_log10_density(model, sae, probe, *args)
    # Each rank chooses; sample_passes streams rank 0's choice on every rank.
    features, n_dead = choose_features(cfg.selection, density, sae.cfg.d_sae)
    writer = PassWriter(store, run_id, run_dir, cfg, inputs, features) if rank == 0 else None
    if writer:
        writer.check_corpus()
    passes = plan_passes(features, cfg.sampler, context_size, sae.device, sae)[0]
    n_left = sum(not writer.done(p) for p in passes) if writer else len(passes)
    n_sampled = n_streamed = 0

    def rank0_tokens() -> int:
        """Rank 0's share of the tokens of one pass; exact once a read went through the corpus (before that,
        --n-tokens cut to whole contexts: a shorter corpus has fewer), and reads it when no --n-tokens is set."""
        return rank_share(contexts.n_tokens() // context_size, 0, world) * context_size

    with reporter.progress() as bar:  # only rank 0's is shown (the other ranks' reporter shows nothing)
        task = bar.add_task(f"sampling (rank 0 of {world})", total=rank0_tokens() * n_left if writer else 0)
        for _, _, records in sample_passes(
            model,
            sae,
            contexts,
            features,
            cfg.sampler,
            inputs.special_ids,
            inputs.first_position,
            token_rate(bar, task, " on rank 0"),
            reporter=reporter,
            checkpoint_dir=run_dir / "sampling",
            done=writer.done if writer else None,
        ):
            if writer:  # rank 0: the merged records of the pass, stored before the next pass streams
                writer.save(records)
                bar.set_total(task, rank0_tokens() * n_left)  # exact now that the pass read the corpus through
            n_sampled, n_streamed = n_sampled + len(records), n_streamed + 1
            del records
    if writer:
        n_tokens = contexts.fingerprint()[1]  # left by the passes' reads: no extra read
        seconds = time.time() - started
        reporter.note(
            sampling_note(
                n_sampled, n_tokens, n_streamed, seconds, n_dead, run_dir, world=world, n_resumed=len(passes) - n_left
            )
        )
    dist.destroy_process_group()
    return 0


def rank_share(n_contexts: int, rank: int, world: int) -> int:
    """How many of `n_contexts` contexts rank `rank` streams: the i with i % world == rank (ranks differ by at
    most one; a rank past the end gets none)."""
    return len(range(rank, n_contexts, world))


if __name__ == "__main__":
    sys.exit(main())
