"""The settings hash: one short digest of everything that changes a score, stored on every score row so that
`table` and `compare` can say when two runs' scores were made differently, and which settings differ.

Pipeline choices move autointerp scores more than SAE architecture does, so two scores are only comparable
when these match:

- ``sampler``: every SamplerConfig field (window size and placement, example counts, intervals, seed, tokens
  streamed, context size) except ``batch_size``, which groups the same contexts into forward passes and
  changes no draw;
- ``corpus_fingerprint``: the tokenised corpus itself (so the same file under another name is the same);
- ``prompts``: sha256 of the bytes of every prompt file the run's LLM stages read (``explain_*`` unless the
  explainer is the no-LLM baseline, and the scorer's own: ``simulate_*`` for simulation), so editing a
  template or a few-shot example changes the hash;
- ``scorer`` and ``scoring``: the scorer's name and its settings (quantisation rule, detection threshold,
  permutation draws);
- ``explainer``, ``simulator`` (backend specs without a server address: the same model served elsewhere is
  the same), ``explainer_max_tokens``, ``best_of``.

Not in it: the SAE and its subject model (what is being evaluated: `compare` pairs features by the SAE
fingerprint), which features were chosen (a feature's windows do not depend on the others), the share of
features given controls (which features get them, not their scores), device, dtype, rate limits and prices.

The maths is pure (:func:`score_settings`, :func:`settings_hash`, :func:`settings_differences`); only
:func:`prompt_digests` reads files.
"""

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from autointerp.prompts import prompts_dir

HASH_LENGTH = 16  # hex digits kept: 64 bits, plenty to tell a run's few settings apart
# Prompt files each stage reads, by file-name prefix.
EXPLAIN_PROMPTS = "explain_"
SCORER_PROMPTS = {"simulation": "simulate_", "detection": "detect_"}
_NOT_SCORE_CHANGING_SAMPLER = ("batch_size",)
_NOT_SCORE_CHANGING_SCORING = ("controls_share",)


def prompt_digests() -> dict[str, str]:
    """File name -> sha256 (hex) of the bytes of every file in the prompts folder, by name."""
    folder = prompts_dir()
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def score_settings(
    results_key: Mapping[str, Any],
    corpus_fingerprint: str,
    prompts: Mapping[str, str],
    scorer: str = "simulation",
) -> dict[str, Any]:
    """The settings that change a score, as a JSON-able dict (what :func:`settings_hash` digests).

    Args:
        results_key: ``RunConfig.results_key()`` (or a stored run's ``results_key``), with ``llm.explainer``
            settled (None is kept as None); ``llm.simulator`` None means the explainer's.
        corpus_fingerprint: the run's corpus fingerprint (inputs.corpus_fingerprint).
        prompts: file name -> digest (:func:`prompt_digests`); only the files this run's stages read are kept.
        scorer: the scorer's registered name ('simulation', 'detection').
    """
    sampler = dict(results_key.get("sampler") or {})
    llm = dict(results_key.get("llm") or {})
    scoring = dict(results_key.get("scoring") or {})
    for key in _NOT_SCORE_CHANGING_SAMPLER:
        sampler.pop(key, None)
    for key in _NOT_SCORE_CHANGING_SCORING:
        scoring.pop(key, None)
    explainer = llm.get("explainer")
    simulator = llm.get("simulator") or explainer
    read = []  # the no-LLM baseline reads no prompt
    if explainer != "baseline":
        read.append(EXPLAIN_PROMPTS)
    if simulator != "baseline":
        read.append(SCORER_PROMPTS.get(scorer, f"{scorer}_"))
    return {
        "scorer": scorer,
        "scoring": scoring,
        "sampler": sampler,
        "corpus_fingerprint": corpus_fingerprint,
        "explainer": explainer,
        "simulator": simulator,
        "explainer_max_tokens": llm.get("explainer_max_tokens"),
        "best_of": llm.get("best_of"),
        "prompts": {name: digest for name, digest in sorted(prompts.items()) if name.startswith(tuple(read))},
    }


def settings_hash(settings: Mapping[str, Any]) -> str:
    """sha256 of the settings as canonical JSON (sorted keys, no spaces), first HASH_LENGTH hex digits."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]


def settings_differences(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, value in a, value in b) for every leaf where two settings dicts differ, sorted by key;
    a key missing on one side reads as None there."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out: list[tuple[str, Any, Any]] = []
        for key in sorted(set(a) | set(b)):
            out += settings_differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [(prefix.rstrip("."), a, b)]
