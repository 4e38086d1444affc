"""Python API for training loops: score an SAE checkpoint in memory and append a row per step.

    from autointerp.api import score_checkpoint

    for step in range(n_steps):
        train_step(sae)
        if step % 5000 == 0:
            row = score_checkpoint(sae, model, "my_corpus.jsonl", db="scores/my-sae", training_run="run-7",
                                   step=step, n_features=50, explainer="openai:gpt-4o-mini")
            print(step, row["correlation_mean"], row["lift_mean"])

`sae` is ours (`autointerp.sae.SparseAutoencoder`), a SAELens SAE (training or inference; converted with
`autointerp.sae.in_memory.from_saelens`, so it encodes as the same SAE saved to a folder would), or any
object with SAELens's interface: `encode(x)` returning every feature, `cfg.d_sae`, and the hook in
`cfg.metadata.hook_name` or `cfg.hook_name` (pass `hook_name=` otherwise). The SAE's own `prepend_bos` and
`context_size` (SAELens: `cfg.metadata`) shape the contexts unless `context_size=` is given; its
normalisation is applied as SAELens applies it, and a mid-training 'expected_average_only_in' SAE needs
the trainer's `activation_scaler`.

Each call adds one run, tagged with `training_run` and `step`, to the database in `db`, and closes it;
`autointerp table DB` then shows one row per step. Runs carry the SAE's fingerprint
(`autointerp.sae.sae_fingerprint`, the one `autointerp run` stores), so `autointerp compare` pairs a
checkpoint's run with a command-line run of the same SAE.

Works from plain scripts and inside a running event loop (Jupyter): there the LLM stages run on a
worker thread's own loop; `await score_checkpoint_async(...)` runs them on the caller's loop instead.
Nothing is printed: notes go to the `autointerp` loggers. Pass `reporter=TerminalReporter()` (from
`autointerp.terminal`) to see what the command line shows, progress bars included.
"""

import asyncio
import concurrent.futures
import logging
import time
from pathlib import Path
from typing import Any

import torch

from autointerp.config import LLMConfig, RunConfig, SamplerConfig, SelectionConfig
from autointerp.corpus import CorpusSpec, special_token_ids, tokenise_corpus
from autointerp.errors import InputError, expected
from autointerp.logits import save_run_logits
from autointerp.reporting import Reporter
from autointerp.sae import ARCHITECTURES, SparseAutoencoder, sae_fingerprint
from autointerp.sae.in_memory import from_saelens

log = logging.getLogger(__name__)
DEFAULT_CONTEXT_SIZE = 128  # tokens per context when neither the call nor the SAE names one


class ForeignSAE:
    """Adapts an SAE with SAELens's `encode` (all features at once) to what the sampler calls; for SAEs
    `from_saelens` cannot convert (an architecture we do not implement)."""

    def __init__(self, sae, hook_name: str | None, input_scale: float | None = None) -> None:
        cfg = getattr(sae, "cfg", None)
        metadata = getattr(cfg, "metadata", None)

        def fact(key: str, default: Any = None) -> Any:
            value = getattr(metadata, key, None)
            return getattr(cfg, key, default) if value is None else value

        hook = hook_name or fact("hook_name")
        d_sae = getattr(cfg, "d_sae", None)
        if not hook or not d_sae or not callable(getattr(sae, "encode", None)):
            raise InputError(
                expected(
                    "score_checkpoint sae",
                    type(sae).__name__,
                    "an autointerp SparseAutoencoder or an object with encode(x), cfg.d_sae and a hook name",
                )
            )
        self.inner = sae
        self.input_scale = input_scale
        prepend_bos = fact("prepend_bos", True)
        self.cfg = type(
            "Cfg",
            (),
            {
                "hook_name": hook,
                "d_sae": int(d_sae),
                "prepend_bos": True if prepend_bos is None else bool(prepend_bos),
                "context_size": fact("context_size"),
            },
        )()
        self.log10_density = None
        parameters = list(sae.parameters()) if hasattr(sae, "parameters") else []
        self.device = parameters[0].device if parameters else torch.device("cpu")

    @torch.no_grad()
    def encode(self, x_ND: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        if self.input_scale is not None:  # the trainer's scaler; SAELens's encode does the per-token norms itself
            x_ND = x_ND * self.input_scale
        acts = self.inner.encode(x_ND)
        return acts if features is None else acts[..., features]


def as_scored_sae(
    sae, hook_name: str | None = None, activation_scaler=None, input_scale: float | None = None
) -> tuple[Any, str]:
    """(the SAE the sampler runs, its fingerprint) for anything score_checkpoint takes.

    activation_scaler: SAELens's `ActivationScaler` (trainer.activation_scaler); its `scaling_factor`
    is the input scale of an SAE trained with 'expected_average_only_in'.
    """
    if input_scale is None and activation_scaler is not None:
        input_scale = getattr(activation_scaler, "scaling_factor", None)
    if isinstance(sae, SparseAutoencoder):
        if hook_name and hook_name != sae.cfg.hook_name:
            cfg = sae.cfg.model_copy(update={"hook_name": hook_name})
            sae = SparseAutoencoder(cfg, sae.weights, log10_density=sae.log10_density, source="api")
        return sae, sae_fingerprint(sae)
    cfg = getattr(sae, "cfg", None)
    to_dict = getattr(cfg, "to_dict", None)
    if callable(to_dict) and to_dict().get("architecture") in ARCHITECTURES:
        ours = from_saelens(sae, input_scale)
        if hook_name and hook_name != ours.cfg.hook_name:
            cfg = ours.cfg.model_copy(update={"hook_name": hook_name})
            ours = SparseAutoencoder(cfg, ours.weights, source="api")
        return ours, sae_fingerprint(ours)
    log.info("score_checkpoint: %s is run through its own encode (architecture not converted)", type(sae).__name__)
    return ForeignSAE(sae, hook_name, input_scale), sae_fingerprint(sae)


def prepare_checkpoint_run(
    sae,
    model,
    corpus: str | Path | CorpusSpec | torch.Tensor,
    *,
    db: str | Path,
    training_run: str,
    step: int,
    n_features: int = 20,
    n_tokens: int = 50_000,
    context_size: int | None = None,
    explainer: str = "baseline",
    simulator: str | None = None,
    hook_name: str | None = None,
    seed: int = 0,
    sampler: SamplerConfig | None = None,
    activation_scaler=None,
    sae_name: str | None = None,
):
    """Sample the checkpoint into a new run of the store in `db`; returns (store, run_id, cfg). The
    model-bound half of score_checkpoint, separate so the LLM half can run on any event loop."""
    from autointerp.inputs import corpus_fingerprint
    from autointerp.sampler import hook_activations, sample_features
    from autointerp.selection import choose_features, probe_log10_density
    from autointerp.store import RunStore

    wrapped, fingerprint = as_scored_sae(sae, hook_name, activation_scaler)
    prepend_bos = bool(getattr(wrapped.cfg, "prepend_bos", True))
    if isinstance(corpus, torch.Tensor):
        tokens = corpus
        spec = CorpusSpec(source="<tokens in memory>")
    else:
        spec = corpus if isinstance(corpus, CorpusSpec) else CorpusSpec(source=str(corpus))
        length = context_size or getattr(wrapped.cfg, "context_size", None) or DEFAULT_CONTEXT_SIZE
        n_ctx = getattr(model.cfg, "n_ctx", None)
        length = min(length, n_ctx) if n_ctx else length
        tokens = tokenise_corpus(spec, model.tokenizer, length, prepend_bos, max_tokens=n_tokens)
    sampler = sampler or SamplerConfig(n_tokens=n_tokens, context_size=tokens.shape[1], seed=seed)
    cfg = RunConfig(
        sae=sae_name or f"<in memory: {type(sae).__name__}>",
        model=model.cfg.model_name,
        corpus=spec,
        sampler=sampler,
        selection=SelectionConfig(n_features=n_features, seed=seed),
        llm=LLMConfig(explainer=explainer, simulator=simulator),
    )
    special = special_token_ids(model.tokenizer) if model.tokenizer is not None else []
    first = 1 if prepend_bos else 0
    density = getattr(wrapped, "log10_density", None)
    if density is None:
        density = probe_log10_density(model, wrapped, tokens, special, first, sampler.batch_size, hook_activations)
    features, _ = choose_features(cfg.selection, density, wrapped.cfg.d_sae)
    decode = None if model.tokenizer is not None else (lambda ids: [str(i) for i in ids])
    samples = sample_features(model, wrapped, tokens, features, sampler, special, first, decode=decode)

    store = RunStore.open(Path(db), create=True)
    try:
        run_id = f"{training_run}-step{step}-{time.strftime('%Y%m%d%H%M%S')}"
        store.create_run(
            run_id,
            training_run,
            cfg,
            fingerprint,
            corpus_fingerprint(tokens.cpu()),
            training_run=training_run,
            step=step,
        )
        store.save_samples(run_id, samples)
        save_run_logits(store, run_id, wrapped, model, [int(f) for f in features])
    except BaseException:
        store.close()
        raise
    return store, run_id, cfg


async def score_checkpoint_async(sae, model, corpus, *, reporter: Reporter | None = None, **options) -> dict:
    """score_checkpoint as a coroutine, for code already in an event loop (`await` it in Jupyter)."""
    from autointerp.batch_run import run_batched
    from autointerp.interpret import interpret_run

    store, run_id, cfg = prepare_checkpoint_run(sae, model, corpus, **options)
    llm_stages = run_batched if cfg.llm.batch else interpret_run  # --batch: the providers' batch APIs
    try:
        return await llm_stages(store, run_id, cfg, reporter=reporter)
    finally:
        store.close()


def score_checkpoint(
    sae,
    model,
    corpus: str | Path | CorpusSpec | torch.Tensor,
    *,
    db: str | Path,
    training_run: str,
    step: int,
    n_features: int = 20,
    n_tokens: int = 50_000,
    context_size: int | None = None,
    explainer: str = "baseline",
    simulator: str | None = None,
    hook_name: str | None = None,
    seed: int = 0,
    sampler: SamplerConfig | None = None,
    reporter: Reporter | None = None,
    activation_scaler=None,
    sae_name: str | None = None,
) -> dict:
    """Sample, explain, simulate and score `n_features` live features of `sae`; returns the run's summary row.

    corpus: a path, a CorpusSpec, or token contexts [n, L] already made. context_size: tokens per context
    (default: the SAE's training context size, else 128; capped at the model's n_ctx).
    explainer/simulator: backend specs as on the command line ('baseline' costs nothing and needs no LLM).
    reporter: where notes and progress go (default: notes logged, nothing printed). activation_scaler:
    the SAELens trainer's, for SAEs trained with 'expected_average_only_in'. sae_name: what the stored
    run config names as its SAE (a folder or 'release/sae_id' lets exports read its cfg.json).
    """
    options = {
        "db": db,
        "training_run": training_run,
        "step": step,
        "n_features": n_features,
        "n_tokens": n_tokens,
        "context_size": context_size,
        "explainer": explainer,
        "simulator": simulator,
        "hook_name": hook_name,
        "seed": seed,
        "sampler": sampler,
        "activation_scaler": activation_scaler,
        "sae_name": sae_name,
    }
    coroutine = score_checkpoint_async(sae, model, corpus, reporter=reporter, **options)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    # A loop already runs in this thread (Jupyter): asyncio.run would refuse, so the whole call runs on a
    # worker thread with a loop of its own, and this thread waits for it.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="autointerp") as pool:
        return pool.submit(asyncio.run, coroutine).result()
