"""What a sampling pass reads: the SAE, the subject model (checked to fit the SAE's hook) and the corpus as
a stream of token contexts (corpus.StreamedContexts: documents are read and tokenised as each pass goes, so
a 10M-token run never holds the corpus), loaded once per process; and the corpus fingerprint that every
score's settings hash carries."""

import hashlib
from dataclasses import dataclass

import torch

from autointerp.config import RunConfig
from autointerp.corpus import StreamedContexts, special_token_ids
from autointerp.errors import InputError, expected
from autointerp.inspect_sae import FitReport, check_fit
from autointerp.preflight import check_device
from autointerp.sae import SparseAutoencoder, load_sae, sae_fingerprint
from autointerp.subject_model import load_subject_model

DEFAULT_CONTEXT_SIZE = 128


@dataclass
class Inputs:
    sae: SparseAutoencoder
    model: object
    fit: FitReport
    sae_fingerprint: str
    contexts: StreamedContexts | None = None
    first_position: int = 1
    special_ids: list[int] | None = None


def load_inputs(cfg: RunConfig, with_corpus: bool = True) -> Inputs:
    """SAE, subject model (checked to fit the SAE's hook) and, optionally, the corpus's context stream."""
    check_device(cfg.device)
    sae = load_sae(cfg.sae)
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
        inputs.contexts = StreamedContexts(
            cfg.corpus, model.tokenizer, context_size_of(cfg, sae, model), sae.cfg.prepend_bos, cfg.sampler.n_tokens
        )
    return inputs


def context_size_of(cfg: RunConfig, sae: SparseAutoencoder, model) -> int:
    """Tokens per context: --context-size, else the SAE's, else 128; never more than the model takes."""
    return min(cfg.sampler.context_size or sae.cfg.context_size or DEFAULT_CONTEXT_SIZE, model.cfg.n_ctx)


def corpus_fingerprint(tokens_NL: torch.Tensor) -> str:
    """sha256 prefix of the contexts' bytes (StreamedContexts.fingerprint gives the same without holding them)."""
    return hashlib.sha256(tokens_NL.numpy().tobytes()).hexdigest()[:16]
