"""Backend spec strings ("anthropic:claude-haiku-5-5", "openai:gpt-4o-mini@http://127.0.0.1:8000/v1",
"local", "baseline"), the registry of backend factories, and `make_backend`.

This module owns the registry: every kind is registered here, under its name, with a factory
`(spec: BackendSpec, options: BackendOptions) -> LLMBackend` that imports the backend's module on
first use. So the backend modules never import this one (no cycle), and commands that never call an
LLM do not pay for importing the SDKs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlparse

from autointerp.errors import InputError, expected
from autointerp.llm.base import BackendOptions, BackendSpec, LLMBackend
from autointerp.llm.pricing import Price, load_overrides
from autointerp.llm.retry import RetryPolicy
from autointerp.registry import Registry

ACCEPTED_FORMS = (
    "anthropic:<model>, openai:<model>, openai:<model>@http://host:port/v1 (any OpenAI-compatible server; "
    "anthropic:<model>@<url> likewise), vllm:<model>@http://host:port/v1 (vLLM: all-at-once simulation from "
    "prompt logprobs), local, local:<model>, baseline"
)
REMOTE_KINDS = ("anthropic", "openai", "vllm")  # need a model name
OFFLINE_KINDS = ("local", "baseline")  # no URL; model optional (local) or none (baseline)

# Defaults: entries of the model table (autointerp/llm/models.toml), which holds their prices and rules.
DEFAULT_ANTHROPIC_MODEL = "claude-haiku-5-5"  # current small Claude (2026-10); thinking turned off per request
# Small, gives logprobs, accepts temperature 0. Shuts down 2027-01-14 (the backend warns); its announced
# successor gpt-6-luna gives no logprobs as far as the table knows, so the simulator would run sampled.
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"

# Requests in flight when the caller gives no number. Remote APIs: enough to hide latency, few enough
# for a new account's rate limit. local: one model on one machine.
DEFAULT_MAX_IN_FLIGHT = {"anthropic": 8, "openai": 8, "local": 1, "baseline": 64}


def _bad(spec: str, found: str) -> InputError:
    return InputError(expected(f"LLM backend spec {spec!r}", found, f"one of: {ACCEPTED_FORMS}"))


def parse_backend_spec(spec: str) -> BackendSpec:
    """Parse `kind[:model][@url]`. The model may contain ':' and '@' (ollama tags, Vertex versions);
    only an '@' followed by http:// or https:// starts the URL."""
    text = spec.strip()
    if not text:
        raise _bad(spec, "an empty string")
    kind, colon, rest = text.partition(":")
    kind = kind.lower()
    known = (*REMOTE_KINDS, *OFFLINE_KINDS, *(k for k in BACKENDS if k not in REMOTE_KINDS + OFFLINE_KINDS))
    if kind not in known:
        raise _bad(spec, f"unknown backend kind {kind!r}")
    base_url: str | None = None
    cut = max(rest.rfind("@http://"), rest.rfind("@https://"))
    if cut >= 0:
        rest, base_url = rest[:cut], rest[cut + 1 :]
        parsed = urlparse(base_url)
        if not parsed.netloc or any(c.isspace() for c in base_url):
            raise _bad(spec, f"a URL without a host ({base_url!r})")
    elif "@" in rest and "://" in rest:
        raise _bad(spec, "a URL that is not http:// or https://")
    model = rest or None
    if model is not None and any(c.isspace() for c in model):
        raise _bad(spec, f"whitespace in the model name {model!r}")
    if kind in REMOTE_KINDS and model is None:
        raise _bad(spec, f"'{kind}' without a model name")
    if kind == "vllm" and base_url is None:
        raise _bad(spec, "'vllm' without the server's URL")
    if kind in OFFLINE_KINDS and base_url is not None:
        raise _bad(spec, f"a URL for '{kind}', which runs on this machine")
    if kind == "baseline" and (colon or model is not None):
        raise _bad(spec, "a model name for 'baseline', which uses no LLM")
    return BackendSpec(kind=kind, model=model, base_url=base_url)


BackendFactory = Callable[[BackendSpec, BackendOptions], LLMBackend]
BACKENDS: Registry[BackendFactory] = Registry("LLM backend")


@BACKENDS.register("anthropic")
def _anthropic(spec: BackendSpec, options: BackendOptions) -> LLMBackend:
    from autointerp.llm.anthropic_backend import AnthropicBackend

    return AnthropicBackend(spec, options)


@BACKENDS.register("openai")
def _openai(spec: BackendSpec, options: BackendOptions) -> LLMBackend:
    from autointerp.llm.openai_backend import OpenAIBackend

    return OpenAIBackend(spec, options)


@BACKENDS.register("vllm")
def _vllm(spec: BackendSpec, options: BackendOptions) -> LLMBackend:
    from autointerp.llm.openai_backend import VLLMBackend

    return VLLMBackend(spec, options)


@BACKENDS.register("local")
def _local(spec: BackendSpec, options: BackendOptions) -> LLMBackend:
    from autointerp.llm.local_backend import LocalBackend

    backend = LocalBackend(spec, options)
    backend.bills = False  # runs on this machine: its calls cost nothing
    return backend


@BACKENDS.register("baseline")
def _baseline(spec: BackendSpec, options: BackendOptions) -> LLMBackend:
    from autointerp.llm.baseline import BaselineBackend

    backend = BaselineBackend(spec, options)
    backend.bills = False  # no LLM at all
    return backend


def make_backend(
    spec: str | BackendSpec,
    *,
    max_in_flight: int | None = None,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
    timeout_s: float = 120.0,
    max_attempts: int = 6,
    retry_initial_wait_s: float = 0.5,
    retry_max_wait_s: float = 30.0,
    retry_after_cap_s: float = 60.0,
    prices: Mapping[str, Price | Mapping[str, float]] | str | Path | None = None,
    api_key: str | None = None,
) -> LLMBackend:
    """Build the backend a spec names.

    max_in_flight: concurrent requests (default per kind, see DEFAULT_MAX_IN_FLIGHT).
    requests_per_minute / tokens_per_minute: optional client-side rate limits.
    timeout_s: per attempt. max_attempts: tries in all, the first included.
    retry_*: backoff (seconds): exponential from `retry_initial_wait_s` up to `retry_max_wait_s`;
        a server's retry-after is obeyed up to `retry_after_cap_s`.
    prices: user price overrides (dict or JSON/TOML file), USD per million tokens.
    api_key: overrides the SDK's environment variable (ANTHROPIC_API_KEY / OPENAI_API_KEY).
    """
    parsed = spec if isinstance(spec, BackendSpec) else parse_backend_spec(spec)
    factory = BACKENDS.get(parsed.kind)
    try:
        options = BackendOptions(
            max_in_flight=DEFAULT_MAX_IN_FLIGHT.get(parsed.kind, 8) if max_in_flight is None else max_in_flight,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
            timeout_s=timeout_s,
            retry=RetryPolicy(
                max_attempts=max_attempts,
                initial_wait_s=retry_initial_wait_s,
                max_wait_s=retry_max_wait_s,
                retry_after_cap_s=retry_after_cap_s,
            ),
            prices=load_overrides(prices),
            api_key=api_key,
        )
    except ValueError as exc:
        raise InputError(f"LLM backend {parsed}: {exc}.") from None
    return factory(parsed, options)


def default_backend_spec(env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(spec, reason) for a user who named no backend: Claude if an Anthropic key is set, else OpenAI if an
    OpenAI key is set, else the offline local model. The reason names the variable, never its value."""
    env = os.environ if env is None else env
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"):
        if env.get(var):
            return (
                f"anthropic:{DEFAULT_ANTHROPIC_MODEL}",
                f"{var} is set, so Anthropic's {DEFAULT_ANTHROPIC_MODEL} explains and simulates",
            )
    if env.get("OPENAI_API_KEY"):
        where = f" at {env['OPENAI_BASE_URL']}" if env.get("OPENAI_BASE_URL") else ""
        return (
            f"openai:{DEFAULT_OPENAI_MODEL}",
            f"OPENAI_API_KEY is set (no ANTHROPIC_API_KEY), so OpenAI's {DEFAULT_OPENAI_MODEL}{where} "
            "explains and simulates",
        )
    reason = (
        "neither ANTHROPIC_API_KEY nor OPENAI_API_KEY is set, so the small local model runs offline "
        "(fine for trying the pipeline; its explanations are poor). Set a key or pass --explainer for real runs"
    )
    return "local", reason
