"""`autointerp sample` on every rank of a torchrun job; rank 0 writes the store:

    torchrun --nproc-per-node 8 -m autointerp.sampling_torchrun --sae PATH --n-tokens 20000000 ...

takes the flags of `autointerp sample`. Each rank streams and tokenises the corpus itself, keeping its
share of the contexts (sampling_distributed.py says how the work is split, merged, and how a dead rank
is named); rerunning the same command after a failure resumes every rank from its checkpoint.
"""

import argparse
import itertools
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from autointerp.cli import RunFlagHelpFormatter, add_run_flags, build_config
from autointerp.corpus import StreamedContexts
from autointerp.inputs import DEFAULT_CONTEXT_SIZE, load_inputs
from autointerp.logits import save_run_logits
from autointerp.pipeline import open_run, run_folder, with_model_name
from autointerp.preflight import check_run
from autointerp.reporting import Reporter, token_rate
from autointerp.run_lock import RunLock
from autointerp.sampler import hook_activations, plan_passes, sample_features
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
        progress = token_rate(bar, task, " on rank 0")
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
