"""Orchestration of `autointerp run`: sample once, then explain -> simulate -> score per feature.

Each feature's result at each stage is committed in one transaction, so a run killed at any point
resumes from the store: sampling is skipped once its examples are stored, explained features are not
explained again, scored features are not simulated again.
"""

import asyncio
import hashlib
import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from autointerp.assets import resolve_sae_path
from autointerp.config import RunConfig
from autointerp.corpus import special_token_ids, tokenise_corpus
from autointerp.errors import InputError, StoreError, expected
from autointerp.inspect_sae import FitReport, check_fit
from autointerp.records import FeatureSample
from autointerp.reporting import Reporter
from autointerp.sae import SparseAutoencoder, load_sae, sae_fingerprint
from autointerp.settings_hash import settings_differences
from autointerp.subject_model import load_subject_model

log = logging.getLogger(__name__)
DEFAULT_CONTEXT_SIZE = 128


@dataclass
class Inputs:
    sae: SparseAutoencoder
    model: object
    fit: FitReport
    sae_fingerprint: str
    tokens_NL: torch.Tensor | None = None
    first_position: int = 1
    special_ids: list[int] | None = None


def load_inputs(cfg: RunConfig, with_corpus: bool = True) -> Inputs:
    """SAE, subject model (checked to fit the SAE's hook) and, optionally, the tokenised corpus."""
    sae = load_sae(resolve_sae_path(cfg.sae))
    fingerprint = sae_fingerprint(sae)  # before any dtype cast, so CPU and GPU runs agree
    model_name = cfg.model or sae.cfg.model_name
    if not model_name:
        raise InputError(
            expected(f"SAE {sae.cfg.path}", "no metadata.model_name", "a model name in cfg.json", "Pass --model NAME.")
        )
    model = load_subject_model(model_name, cfg.device, cfg.dtype, sae.cfg.model_from_pretrained_kwargs)
    sae.to(device=model.cfg.device, dtype=model.cfg.dtype)
    fit = check_fit(sae, model)
    inputs = Inputs(
        sae=sae,
        model=model,
        fit=fit,
        sae_fingerprint=fingerprint,
        first_position=1 if sae.cfg.prepend_bos else 0,
        special_ids=special_token_ids(model.tokenizer),
    )
    if with_corpus:
        context_size = cfg.sampler.context_size or sae.cfg.context_size or DEFAULT_CONTEXT_SIZE
        context_size = min(context_size, model.cfg.n_ctx)
        inputs.tokens_NL = tokenise_corpus(
            cfg.corpus, model.tokenizer, context_size, sae.cfg.prepend_bos, max_tokens=cfg.sampler.n_tokens
        )
    return inputs


def corpus_fingerprint(tokens_NL: torch.Tensor) -> str:
    return hashlib.sha256(tokens_NL.numpy().tobytes()).hexdigest()[:16]


def default_run_dir(cfg: RunConfig) -> Path:
    name = Path(str(resolve_sae_path(cfg.sae))).name if cfg.sae != "demo" else "demo"
    return Path("scores") / name


def sample(cfg: RunConfig, inputs: Inputs, reporter: Reporter | None = None) -> tuple[list[FeatureSample], int]:
    """Choose features and stream the corpus; returns (samples, number of dead features)."""
    from autointerp.sampler import hook_activations, sample_features
    from autointerp.selection import choose_features, probe_log10_density

    sae, model, tokens = inputs.sae, inputs.model, inputs.tokens_NL
    density = sae.log10_density
    if density is None and not cfg.selection.features:
        n_probe = max(1, cfg.selection.density_probe_tokens // tokens.shape[1])
        density = probe_log10_density(
            model,
            sae,
            tokens[:n_probe],
            inputs.special_ids,
            inputs.first_position,
            cfg.sampler.batch_size,
            hook_activations,
        )
    features, n_dead = choose_features(cfg.selection, density, sae.cfg.d_sae)
    with (reporter or Reporter()).progress() as bar:
        task = bar.add_task("sampling", total=tokens.numel())
        done = 0

        def progress(n: int, seconds: float) -> None:
            nonlocal done
            done += n
            bar.advance(task, n, info=f"{done / max(seconds, 1e-9):,.0f} tok/s")

        samples = sample_features(
            model, sae, tokens, features, cfg.sampler, inputs.special_ids, inputs.first_position, progress
        )
    return samples, n_dead


def open_run(cfg: RunConfig, create: bool = True):
    """The run's store and run id; refuses a run directory made with settings that change results."""
    from autointerp.store import RunStore

    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
    store = RunStore.open(run_dir, create=create)
    run_id = store.latest_run_id()
    if run_id is not None:
        stored = store.get_run(run_id)["results_key"]
        wanted = json.loads(json.dumps(cfg.results_key()))
        # LLM settings and scorers left open by `autointerp sample` may be settled now; decided ones may not change.
        later = ("llm.", "scoring.scorers")
        diffs = [d for d in settings_differences(stored, wanted) if not (d[0].startswith(later) and d[1] is None)]
        found = store.get_run(run_id)["sae_fingerprint"]
        if found != sae_fingerprint(load_sae(resolve_sae_path(cfg.sae))):
            diffs.append(("SAE weights", f"fingerprint {found}", "another SAE's"))
        if diffs:
            listed = "; ".join(f"{k}: stored {a!r}, now {b!r}" for k, a, b in diffs[:6])
            raise StoreError(
                f"Run directory {run_dir} holds a run made with other settings ({listed}). Resuming would mix "
                f"results; expected the same settings, or a new --run-dir for the new ones."
            )
        if stored != wanted:
            store.update_run_config(run_id, cfg)
    return store, run_id, run_dir


def with_model_name(cfg: RunConfig) -> RunConfig:
    """`cfg` with `model` taken from the SAE's metadata when not given, so the stored config names it."""
    if cfg.model:
        return cfg
    sae = load_sae(resolve_sae_path(cfg.sae))
    if not sae.cfg.model_name:
        raise InputError(
            expected(f"SAE {sae.cfg.path}", "no metadata.model_name", "a model name in cfg.json", "Pass --model NAME.")
        )
    return cfg.model_copy(update={"model": sae.cfg.model_name})


def sample_stage(cfg: RunConfig, reporter: Reporter | None = None):
    """Sample (once) into the run's store; returns (store, run_id)."""
    reporter = reporter or Reporter()
    cfg = with_model_name(cfg)
    store, run_id, run_dir = open_run(cfg)
    if run_id is not None and store.load_samples(run_id):
        reporter.note(f"Samples already stored in {run_dir} (run {run_id}); skipping sampling.")
        return store, run_id
    inputs = load_inputs(cfg)
    started = time.time()
    samples, n_dead = sample(cfg, inputs, reporter)
    if run_id is None:
        run_id = time.strftime("%Y%m%d-%H%M%S") + f"-{random.randrange(16**4):04x}"
        store.create_run(run_id, run_dir.name, cfg, inputs.sae_fingerprint, corpus_fingerprint(inputs.tokens_NL))
    store.save_samples(run_id, samples)
    seconds = time.time() - started
    reporter.note(
        f"Sampled {len(samples)} features over {inputs.tokens_NL.numel():,} tokens in {seconds:.0f}s "
        f"({inputs.tokens_NL.numel() / seconds:,.0f} tok/s); {n_dead} dead features never chosen. Stored in {run_dir}."
    )
    return store, run_id


def run(cfg: RunConfig, retry_failed: bool = False, reporter: Reporter | None = None) -> dict:
    """The main job. Returns the run's summary (`run_summary`); features that failed are recorded in it,
    not raised."""
    from autointerp.interpret import interpret_run, settle_scorers
    from autointerp.llm.spec import default_backend_spec

    reporter = reporter or Reporter()
    if cfg.llm.explainer is None:  # settled before anything is stored, so the stored config says what ran
        spec, why = default_backend_spec()
        cfg = cfg.model_copy(update={"llm": cfg.llm.model_copy(update={"explainer": spec})})
        reporter.note(f"No --explainer given: using {spec} ({why}).")
    cfg = settle_scorers(with_model_name(cfg))  # the stored config says which scorers run
    store, run_id = sample_stage(cfg, reporter)
    return asyncio.run(interpret_run(store, run_id, cfg, retry_failed=retry_failed, reporter=reporter))
