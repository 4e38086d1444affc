"""Python API for training loops: score an SAE checkpoint in memory and append a row per step.

    from autointerp.api import score_checkpoint

    for step in range(n_steps):
        train_step(sae)
        if step % 5000 == 0:
            row = score_checkpoint(sae, model, "my_corpus.jsonl", db="scores/my-sae", training_run="run-7",
                                   step=step, n_features=50, explainer="openai:gpt-4o-mini")
            print(step, row["correlation_mean"], row["lift_mean"])

`sae` is ours (`autointerp.sae.SparseAutoencoder`) or any object with SAELens's interface: `encode(x)`
returning every feature, `cfg.d_sae`, and the hook in `cfg.metadata.hook_name` or `cfg.hook_name`
(pass `hook_name=` otherwise). Each call adds one run, tagged with `training_run` and `step`, to the
database in `db`; `autointerp table DB` then shows one row per step. Runs carry the SAE's fingerprint
(`autointerp.sae.sae_fingerprint`, the same as `autointerp run` stores), so `autointerp compare` pairs a
checkpoint's run with a command-line run of the same SAE.

Nothing is printed: notes go to the `autointerp` loggers. Pass `reporter=TerminalReporter()` (from
`autointerp.terminal`) to see what the command line shows, progress bars included.
"""

import asyncio
import time
from pathlib import Path

import torch

from autointerp.config import LLMConfig, RunConfig, SamplerConfig, SelectionConfig
from autointerp.corpus import CorpusSpec, special_token_ids, tokenise_corpus
from autointerp.errors import InputError, expected
from autointerp.reporting import Reporter
from autointerp.sae import SparseAutoencoder, sae_fingerprint


class ForeignSAE:
    """Adapts an SAE with SAELens's `encode` (all features at once) to what the sampler calls."""

    def __init__(self, sae, hook_name: str | None) -> None:
        cfg = getattr(sae, "cfg", None)
        metadata = getattr(cfg, "metadata", None)
        hook = hook_name or getattr(metadata, "hook_name", None) or getattr(cfg, "hook_name", None)
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
        self.cfg = type("Cfg", (), {"hook_name": hook, "d_sae": int(d_sae), "prepend_bos": True})()
        self.log10_density = None
        parameters = list(sae.parameters()) if hasattr(sae, "parameters") else []
        self.device = parameters[0].device if parameters else torch.device("cpu")

    @torch.no_grad()
    def encode(self, x_ND: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        acts = self.inner.encode(x_ND)
        return acts if features is None else acts[..., features]


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
    context_size: int = 128,
    explainer: str = "baseline",
    simulator: str | None = None,
    hook_name: str | None = None,
    seed: int = 0,
    sampler: SamplerConfig | None = None,
    reporter: Reporter | None = None,
) -> dict:
    """Sample, explain, simulate and score `n_features` live features of `sae`; returns the run's summary row.

    corpus: a path, a CorpusSpec, or token contexts [n, L] already made. explainer/simulator: backend
    specs as on the command line ('baseline' costs nothing and needs no LLM). reporter: where notes and
    progress go (default: notes logged, no progress shown).
    """
    from autointerp.interpret import interpret_run
    from autointerp.pipeline import corpus_fingerprint
    from autointerp.sampler import hook_activations, sample_features
    from autointerp.selection import choose_features, probe_log10_density
    from autointerp.store import RunStore

    wrapped = sae if isinstance(sae, SparseAutoencoder) else ForeignSAE(sae, hook_name)
    prepend_bos = bool(getattr(wrapped.cfg, "prepend_bos", True))
    if isinstance(corpus, torch.Tensor):
        tokens = corpus
        spec = CorpusSpec(source="<tokens in memory>")
    else:
        spec = corpus if isinstance(corpus, CorpusSpec) else CorpusSpec(source=str(corpus))
        tokens = tokenise_corpus(spec, model.tokenizer, context_size, prepend_bos, max_tokens=n_tokens)
    sampler = sampler or SamplerConfig(n_tokens=n_tokens, context_size=tokens.shape[1], seed=seed)
    cfg = RunConfig(
        sae=f"<in memory: {type(sae).__name__}>",
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
    run_id = f"{training_run}-step{step}-{time.strftime('%Y%m%d%H%M%S')}"
    fingerprints = (sae_fingerprint(sae), corpus_fingerprint(tokens.cpu()))
    store.create_run(run_id, training_run, cfg, *fingerprints, training_run=training_run, step=step)
    store.save_samples(run_id, samples)
    return asyncio.run(interpret_run(store, run_id, cfg, reporter=reporter))
