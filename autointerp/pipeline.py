"""Orchestration of `autointerp run`: sample once, then explain -> simulate -> score per feature.

Each feature's result at each stage is committed in one transaction, so a run killed at any point
resumes from the store: each sampling pass is stored as it finishes and a rerun streams only the passes
not stored (sampling is skipped once every chosen feature is), explained features are not explained again,
scored features are not simulated again.
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


def choose(cfg: RunConfig, inputs: Inputs) -> tuple[list[int], int]:
    """(the features to sample, the number of dead features never chosen). Deterministic in the settings, SAE
    and corpus, so a resumed run recomputes the choice of the run it resumes."""
    from autointerp.sampler import hook_activations
    from autointerp.selection import choose_features, probe_log10_density

    sae, model, contexts = inputs.sae, inputs.model, inputs.contexts
    if contexts is None:
        raise ValueError("choose() needs inputs loaded with their corpus (load_inputs(cfg, with_corpus=True))")
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
    return choose_features(cfg.selection, density, sae.cfg.d_sae)


def sampling_finished(store, run_id: str) -> bool:
    """Whether every feature the run chose is stored. A run sampled before plans were stored (no
    `sampling_plan` rows) stored all its samples in one transaction: finished once any is there."""
    stored = store.sampled_features(run_id)
    return bool(stored) and stored.issuperset(store.sampling_plan(run_id))


def sampling_note(
    n_sampled: int,
    n_tokens: int,
    n_passes: int,
    seconds: float,
    n_dead: int,
    run_dir: Path,
    *,
    world: int = 1,
    n_resumed: int = 0,
) -> str:
    """The sentence that closes sampling: features, tokens x passes streamed (every pass streams the corpus
    again), ranks, total wall time and rate, passes an earlier run had stored."""
    seconds = max(seconds, 1e-9)
    streamed = n_tokens * n_passes
    over = f"{n_tokens:,} tokens" if n_passes == 1 else f"{n_tokens:,} tokens x {n_passes} passes = {streamed:,}"
    ranks = f" on {world} ranks" if world > 1 else ""
    resumed = f" ({n_resumed} pass(es) stored by an earlier run were not streamed again)" if n_resumed else ""
    return (
        f"Sampled {n_sampled} features over {over}{ranks} in {seconds:.0f}s ({streamed / seconds:,.0f} tok/s)"
        f"{resumed}; {n_dead} dead features never chosen. Stored in {run_dir}."
    )


class PassWriter:
    """Stores each finished sampling pass as it comes, so a 1M-feature run never holds every feature's records
    and a kill loses only the pass in flight. Each pass's samples and logits go in one transaction; the first
    also creates the run (its row needs the corpus fingerprint, which the pass's read of the corpus leaves
    behind) and records the features chosen (`sampling_plan`), so a rerun knows whether sampling finished."""

    def __init__(self, store, run_id: str | None, run_dir: Path, cfg: RunConfig, inputs: Inputs, plan: list[int]):
        """`inputs` with their corpus (`contexts`); `plan`: every feature the run samples."""
        self.store, self.run_id, self.run_dir, self.cfg, self.inputs = store, run_id, run_dir, cfg, inputs
        self.plan, self.plan_stored = plan, False
        self.stored = store.sampled_features(run_id) if run_id is not None else set()  # by an earlier run

    def done(self, pass_features: list[int]) -> bool:
        """Every feature of the pass stored by an earlier run."""
        return self.stored.issuperset(pass_features)

    def save(self, records: list[FeatureSample]) -> None:
        """Store one finished pass's records (and their logits) in one transaction."""
        store = self.store
        with store.db.atomic():
            if self.run_id is None:
                assert self.inputs.contexts is not None
                fingerprint, _ = self.inputs.contexts.fingerprint()  # left by the pass's read: no extra read
                self.run_id = time.strftime("%Y%m%d-%H%M%S") + f"-{random.randrange(16**4):04x}"
                store.create_run(self.run_id, self.run_dir.name, self.cfg, self.inputs.sae_fingerprint, fingerprint)
            if not self.plan_stored:
                store.save_sampling_plan(self.run_id, self.plan)
                self.plan_stored = True
            store.save_samples(self.run_id, records)
            features = [s.feature for s in records]
            save_run_logits(store, self.run_id, self.inputs.sae, self.inputs.model, features)  # model still loaded

    def check_corpus(self) -> None:
        """Before a resumed run streams: passes stored from another corpus (edited since the run was killed)
        would mix with this one's. Reads the corpus once (tokenising, no model) when passes are stored."""
        if not self.stored or self.run_id is None:
            return
        assert self.inputs.contexts is not None
        fingerprint, _ = self.inputs.contexts.fingerprint()
        stored = self.store.get_run(self.run_id)["corpus_fingerprint"]
        if stored != fingerprint:
            raise StoreError(
                expected(
                    f"Run directory {self.run_dir}",
                    f"{len(self.stored)} features sampled from a corpus with fingerprint {stored}, "
                    f"this corpus's is {fingerprint}",
                    "the corpus the stored passes were sampled from (edited since?)",
                    "Restore it, or sample into a new --run-dir.",
                )
            )


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
    """sample_stage once its settings are checked and the folder is locked. Each pass is stored as it
    finishes; a rerun after a kill streams only the passes whose features are not all stored (and resumes
    the pass in flight from its checkpoint)."""
    from autointerp.sampler import sample_passes
    from autointerp.sampler_memory import plan_passes

    store, run_id, run_dir = open_run(cfg)
    if run_id is not None and sampling_finished(store, run_id):
        reporter.note(f"Samples already stored in {run_dir} (run {run_id}); skipping sampling.")
        return store, run_id
    inputs = load_inputs(cfg)
    contexts = inputs.contexts
    assert contexts is not None
    started = time.time()
    features, n_dead = choose(cfg, inputs)
    writer = PassWriter(store, run_id, run_dir, cfg, inputs, features)
    writer.check_corpus()
    passes = plan_passes(features, cfg.sampler, contexts.context_size, inputs.sae.device, inputs.sae)[0]
    n_left = sum(not writer.done(p) for p in passes)
    n_sampled = n_streamed = 0
    with reporter.progress() as bar:
        # Every pass streams the corpus again: the bar, its ETA and tok/s count tokens x passes left.
        label = "sampling" if len(passes) == 1 else f"sampling ({len(passes)} passes)"
        if n_left < len(passes):
            label = f"sampling ({n_left} of {len(passes)} passes left)"
        task = bar.add_task(label, total=contexts.n_tokens() * n_left)
        for _, _, records in sample_passes(
            inputs.model,
            inputs.sae,
            contexts,
            features,
            cfg.sampler,
            inputs.special_ids,
            inputs.first_position,
            token_rate(bar, task),
            reporter=reporter,
            checkpoint_dir=run_dir / "sampling",
            done=writer.done,
        ):
            writer.save(records)
            # Exact once a pass read the corpus through: it may be shorter than the --n-tokens the total assumed.
            bar.set_total(task, contexts.n_tokens() * n_left)
            n_sampled, n_streamed = n_sampled + len(records), n_streamed + 1
            del records  # stored: not held while the next pass streams
    assert writer.run_id is not None
    n_tokens = contexts.fingerprint()[1]  # left by the passes' reads: no extra read
    reporter.note(
        sampling_note(
            n_sampled, n_tokens, n_streamed, time.time() - started, n_dead, run_dir, n_resumed=len(passes) - n_left
        )
    )
    return store, writer.run_id


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
