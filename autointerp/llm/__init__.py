"""LLM backends behind one small async interface (see autointerp.llm.base).

    backend = make_backend("anthropic:claude-haiku-5-5", max_in_flight=8)
    response = await backend.complete(LLMRequest(system=..., prefix=[...], messages=[...]))
    response.text, response.usage, backend.cost(response.usage)

Model ids, prices, cache minimums and request rules: the model table (autointerp.llm.models, data in
models.toml). Provider batch APIs: autointerp.llm.batch (`batch_client(backend)`).

The SDKs are imported only when a backend of theirs is made.
"""

from autointerp.llm.base import (
    BackendOptions,
    BackendSpec,
    LLMBackend,
    LLMCallError,
    LLMRequest,
    LLMResponse,
    Message,
    TokenLogprob,
    redact,
)
from autointerp.llm.models import ModelInfo, find_price, load_table, model_info
from autointerp.llm.pricing import Price, load_overrides
from autointerp.llm.retry import PermanentError, RetryPolicy, TransientError
from autointerp.llm.spec import BACKENDS, default_backend_spec, make_backend, parse_backend_spec

__all__ = [
    "BACKENDS",
    "BackendOptions",
    "BackendSpec",
    "LLMBackend",
    "LLMCallError",
    "LLMRequest",
    "LLMResponse",
    "ModelInfo",
    "Message",
    "PermanentError",
    "Price",
    "RetryPolicy",
    "TokenLogprob",
    "TransientError",
    "default_backend_spec",
    "find_price",
    "load_overrides",
    "load_table",
    "make_backend",
    "model_info",
    "parse_backend_spec",
    "redact",
]
