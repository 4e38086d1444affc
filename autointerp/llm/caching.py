"""Will a request's shared prefix be cached? Its size in tokens against its model's minimum.

Providers cache a prompt prefix only from a model-dependent length on (autointerp/llm/models.toml,
`min_cache_tokens`: 512 to 4,096); below it every request pays the full input price and nothing says so
but zero cache counters. `prefix_report` estimates the shared prefix (system prompt + few-shot turns, the
part byte-identical across features) and compares.

The estimate is characters / 4 (OpenAI's rule of thumb for English), counted without tokenizers: none of
the providers' tokenizers ships offline for every model. On our prompts it undercounts: token<TAB>value
listings and numbers are denser than prose (cl100k counts ~3.3 characters a token on the simulator's
few-shot prefix), and Claude 4.7+ tokenizers count ~30% more than older ones. An undercount errs on the
safe side: it warns about a prefix that may in fact be cached, never stays silent about one that is not.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from autointerp.llm.base import LLMRequest

CHARS_PER_TOKEN = 4.0
# A message's role marker and separators, in tokens (chat templates add a few per turn).
TOKENS_PER_MESSAGE = 4


class PrefixReport(BaseModel, frozen=True):
    """The cacheable prefix of a request against its model's minimum."""

    model: str
    prefix_tokens: int = Field(description="approximate tokens of system prompt + few-shot turns")
    min_cache_tokens: int = Field(description="the model's minimum cacheable prefix, tokens")
    method: str = Field(default=f"characters / {CHARS_PER_TOKEN:g} + {TOKENS_PER_MESSAGE} a message")

    @property
    def cacheable(self) -> bool:
        return self.prefix_tokens >= self.min_cache_tokens

    def message(self) -> str:
        verdict = "at or above" if self.cacheable else "BELOW"
        return (
            f"shared prompt prefix of ~{self.prefix_tokens:,} tokens ({self.method}) is {verdict} the "
            f"{self.min_cache_tokens:,}-token minimum that {self.model} caches"
        )


def approx_tokens(text: str) -> int:
    """Rough token count of `text` (see the module docstring for how rough)."""
    return int(len(text) / CHARS_PER_TOKEN + 0.5) if text else 0


def shared_prefix_tokens(request: LLMRequest) -> int:
    """Approximate tokens of the request's shared prefix: system prompt and few-shot turns."""
    tokens = approx_tokens(request.system) + (TOKENS_PER_MESSAGE if request.system else 0)
    return tokens + sum(approx_tokens(m.content) + TOKENS_PER_MESSAGE for m in request.prefix)


def prefix_report(request: LLMRequest, model: str, min_cache_tokens: int) -> PrefixReport:
    return PrefixReport(model=model, prefix_tokens=shared_prefix_tokens(request), min_cache_tokens=min_cache_tokens)


def prefix_key(request: LLMRequest) -> str:
    """Identifies a shared prefix (to report each one once)."""
    digest = hashlib.sha256(request.system.encode())
    for m in request.prefix:
        digest.update(b"\0" + m.role.encode() + b"\0" + m.content.encode())
    return digest.hexdigest()
