"""Orchestration of `autointerp run`: sample once, then explain -> simulate -> score per feature.

Each feature's result at each stage is committed in one transaction, so a run killed at any point
resumes from the store: sampling is skipped once its examples are stored, explained features are not
explained again, scored features are not simulated again.
"""

import asyncio
import json
import logging
import random
import time
from pathlib import Path

from autointerp.assets import resolve_sae_path
from autointerp.config import RunConfig
from autointerp.errors import InputError, StoreError, expected
from autointerp.inputs import Inputs, load_inputs
from autointerp.logits import save_run_logits
from autointerp.preflight import check_run
from autointerp.records import FeatureSample
from autointerp.reporting import Reporter, token_rate
from autointerp.run_lock import RunLock
from autointerp.sae import load_sae, sae_fingerprint
from autointerp.settings_hash import settings_differences

log = logging.getLogger(__name__)


def default_run_dir(cfg: RunConfig) -> Path:
    name = Path(str(resolve_sae_path(cfg.sae))).name if cfg.sae != "demo" else "demo"
    return Path("scores") / name


def sample(
    cfg: RunConfig, inputs: Inputs, reporter: Reporter | None = None, checkpoint_dir: Path | None = None
) -> tuple[list[FeatureSample], int, int]:
    """Choose features and stream the corpus (`inputs.contexts`: read and tokenised as each pass goes, never
    held whole); returns (samples, number of dead features, number of passes over the corpus). With
    `checkpoint_dir` the sampler state is saved there as it goes and a rerun resumes from it."""
    from autointerp.sampler import hook_activations, plan_passes, sample_features
    from autointerp.selection import choose_features, probe_log10_density

    sae, model, contexts = inputs.sae, inputs.model, inputs.contexts
    if contexts is None:
        raise ValueError("sample() needs inputs loaded with their corpus (load_inputs(cfg, with_corpus=True))")
    density = sae.log10_density
    if density is None and not cfg.selection.features:
        density = probe_log10_density(  # reads only the contexts it probes
            model,
            sae,
            contexts.head(cfg.selection.density_probe_tokens // contexts.context_size),
            inputs.special_ids,
            inputs.first_position,
            cfg.sampler.batch_size,
            hook_activations,
        )
    features, n_dead = choose_features(cfg.selection, density, sae.cfg.d_sae)
    n_passes = len(plan_passes(features, cfg.sampler, contexts.context_size, sae.device)[0])
    with (reporter or Reporter()).progress() as bar:
        # Every pass streams the corpus again: the bar, its ETA and tok/s count tokens x passes.
        label = "sampling" if n_passes == 1 else f"sampling ({n_passes} passes)"
        task = bar.add_task(label, total=contexts.n_tokens() * n_passes)
        progress = token_rate(bar, task)
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
            checkpoint_dir=checkpoint_dir,
        )
    return samples, n_dead, n_passes


def run_folder(cfg: RunConfig) -> Path:
    return Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)


def open_run(cfg: RunConfig, create: bool = True):
    """The run's store and run id; refuses a run directory made with settings that change results. The check
    reads the database read-only first, so a refused directory is left byte for byte as it was (a writable
    open, once closed, checkpoints the WAL and rewrites the file's header)."""
    from autointerp.store import DB_NAME, RunStore

    run_dir = run_folder(cfg)
    if create and (run_dir / DB_NAME).is_file() and (run_dir / DB_NAME).stat().st_size > 0:
        with RunStore.open(run_dir, create=False) as reader:
            refuse_other_settings(reader, cfg, run_dir)
    store = RunStore.open(run_dir, create=create)
    run_id = store.latest_run_id()
    if run_id is not None:
        if not create:
            refuse_other_settings(store, cfg, run_dir)
        if store.get_run(run_id)["results_key"] != json.loads(json.dumps(cfg.results_key())):
            store.update_run_config(run_id, cfg)
    return store, run_id, run_dir


def refuse_other_settings(store, cfg: RunConfig, run_dir: Path) -> None:
    """StoreError when the directory's latest run was made with settings (or an SAE) that change results."""
    run_id = store.latest_run_id()
    if run_id is None:
        return
    run = store.get_run(run_id)
    diffs = settings_differences(run["results_key"], json.loads(json.dumps(cfg.results_key())))
    if store.load_explanations(run_id):
        # LLM settings and scorers left open by `autointerp sample` may be settled now; decided ones may not change.
        diffs = [d for d in diffs if not (d[0].startswith(("llm.", "scoring.scorers")) and d[1] is None)]
    else:
        # No stored result depends on the LLM and scoring settings before the first LLM explanation (every
        # explain call may have failed): they may change, e.g. a bad --explainer fixed after sampling.
        diffs = [d for d in diffs if not d[0].startswith(("llm.", "scoring."))]
    if run["sae_fingerprint"] != sae_fingerprint(load_sae(cfg.sae)):
        diffs.append(("SAE weights", f"fingerprint {run['sae_fingerprint']}", "another SAE's"))
    if diffs:
        listed = "; ".join(f"{k}: stored {a!r}, now {b!r}" for k, a, b in diffs[:6])
        raise StoreError(
            f"Run directory {run_dir} holds a run made with other settings ({listed}). Resuming would mix "
            f"results; expected the same settings, or a new --run-dir for the new ones."
        )


def with_model_name(cfg: RunConfig) -> RunConfig:
    """`cfg` with `model` taken from the SAE's metadata when not given, so the stored config names it."""
    if cfg.model:
        return cfg
    sae = load_sae(cfg.sae)
    if not sae.cfg.model_name:
        raise InputError(
            expected(f"SAE {sae.cfg.path}", "no metadata.model_name", "a model name in cfg.json", "Pass --model NAME.")
        )
    return cfg.model_copy(update={"model": sae.cfg.model_name})


def sample_stage(cfg: RunConfig, reporter: Reporter | None = None):
    """Sample (once) into the run's store; returns (store, run_id). Every setting given is checked first
    (autointerp.preflight), and the run folder is locked against a second writer while it samples."""
    cfg = with_model_name(cfg)
    check_run(cfg, llm=False)
    with RunLock(run_folder(cfg)):
        return _sample_into_store(cfg, reporter or Reporter())


def _sample_into_store(cfg: RunConfig, reporter: Reporter):
    """sample_stage once its settings are checked and the folder is locked."""
    store, run_id, run_dir = open_run(cfg)
    if run_id is not None and store.load_samples(run_id):
        reporter.note(f"Samples already stored in {run_dir} (run {run_id}); skipping sampling.")
        return store, run_id
    inputs = load_inputs(cfg)
    assert inputs.contexts is not None
    started = time.time()
    samples, n_dead, n_passes = sample(cfg, inputs, reporter, checkpoint_dir=run_dir / "sampling")
    fingerprint, n_tokens = inputs.contexts.fingerprint()  # left by the passes' reads: no extra read
    if run_id is None:
        run_id = time.strftime("%Y%m%d-%H%M%S") + f"-{random.randrange(16**4):04x}"
        store.create_run(run_id, run_dir.name, cfg, inputs.sae_fingerprint, fingerprint)
    store.save_samples(run_id, samples)
    save_run_logits(store, run_id, inputs.sae, inputs.model, [s.feature for s in samples])  # model still loaded
    seconds = max(time.time() - started, 1e-9)
    streamed = n_tokens * n_passes
    over = f"{n_tokens:,} tokens" if n_passes == 1 else f"{n_tokens:,} tokens x {n_passes} passes = {streamed:,}"
    reporter.note(
        f"Sampled {len(samples)} features over {over} in {seconds:.0f}s ({streamed / seconds:,.0f} tok/s); "
        f"{n_dead} dead features never chosen. Stored in {run_dir}."
    )
    return store, run_id


def run(cfg: RunConfig, retry_failed: bool = False, reporter: Reporter | None = None) -> dict:
    """The main job. Returns the run's summary (`run_summary`); features that failed are recorded in it,
    not raised."""
    from autointerp.interpret import settle_scorers
    from autointerp.llm.spec import default_backend_spec

    reporter = reporter or Reporter()
    if cfg.llm.explainer is None:  # settled before anything is stored, so the stored config says what ran
        spec, why = default_backend_spec()
        cfg = cfg.model_copy(update={"llm": cfg.llm.model_copy(update={"explainer": spec})})
        reporter.note(f"No --explainer given: using {spec} ({why}).")
    cfg = settle_scorers(with_model_name(cfg))  # the stored config says which scorers run
    check_run(cfg)  # every backend built, every key checked, before the first token is sampled
    with RunLock(run_folder(cfg)):  # released when the run returns or raises; the kernel frees it on a kill
        return _run_locked(cfg, retry_failed, reporter)


def _run_locked(cfg: RunConfig, retry_failed: bool, reporter: Reporter) -> dict:
    """run() once its settings are checked and the folder is locked."""
    from autointerp.batch_run import run_batched
    from autointerp.interpret import interpret_run

    store, run_id = _sample_into_store(cfg, reporter)
    llm_stages = run_batched if cfg.llm.batch else interpret_run  # --batch: the providers' batch APIs
    summary = asyncio.run(llm_stages(store, run_id, cfg, retry_failed=retry_failed, reporter=reporter))
    if cfg.scoring.redraws:  # spread over fresh window draws of the control subset (autointerp.redraws)
        from autointerp.redraws import redraw_stage
        from autointerp.run_summary import run_summary

        redraw_stage(store, run_id, cfg, reporter)
        summary = run_summary(store, run_id)
    return summary
