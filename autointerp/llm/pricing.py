"""What LLM calls cost: a `Price` in USD per million tokens, and the user's own prices (`--prices FILE`).

Usage semantics (the same for every backend, see autointerp.records.Usage): `input_tokens` are the
uncached input tokens only; `cached_input_tokens` were read from the provider's prompt cache;
`cache_write_tokens` were written to it; `output_tokens` include any hidden reasoning/thinking tokens.
The four never overlap, so cost = sum(tokens x price) / 1e6, times (1 - batch_discount) for a request
that went through a provider's batch API.

The built-in prices live in the model table (autointerp/llm/models.toml, read by autointerp.llm.models,
which also does the look-up: `find_price`). A model with no price is "unknown": its cost is None, never
$0. Not modelled: 1-hour cache writes (priced as 5-minute writes), regional surcharges.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from autointerp.errors import InputError
from autointerp.records import Usage


class Rates(BaseModel, frozen=True):
    """USD per million tokens of each kind."""

    input: float = Field(ge=0, description="uncached input tokens")
    cached_input: float | None = Field(default=None, ge=0, description="cache reads; default: the input price")
    cache_write: float | None = Field(default=None, ge=0, description="cache writes; default: the input price")
    output: float = Field(ge=0, description="output tokens, reasoning included")

    def raw_cost(self, usage: Usage) -> float:
        cached = self.input if self.cached_input is None else self.cached_input
        write = self.input if self.cache_write is None else self.cache_write
        total = (
            usage.input_tokens * self.input
            + usage.cached_input_tokens * cached
            + usage.cache_write_tokens * write
            + usage.output_tokens * self.output
        )
        return total / 1_000_000


class Price(Rates, frozen=True):
    """A model's rates, its batch discount, and the rates that apply to long prompts where they differ."""

    batch_discount: float | None = Field(
        default=None,
        ge=0,
        lt=1,
        description="share taken off by the provider's batch API (0.5 = half price); None: the model table's "
        "figure for the model, or no discount",
    )
    long_prompt_tokens: int | None = Field(
        default=None, gt=0, description="a request whose prompt (input + cache reads + writes) exceeds this..."
    )
    long_prompt: Rates | None = Field(default=None, description="...pays these rates on all its tokens")

    def cost(self, usage: Usage, *, batch: bool = False) -> float:
        """USD for one request's `usage` (`batch`: it went through the provider's batch API)."""
        prompt = usage.input_tokens + usage.cached_input_tokens + usage.cache_write_tokens
        rates: Rates = self
        if self.long_prompt_tokens is not None and self.long_prompt is not None and prompt > self.long_prompt_tokens:
            rates = self.long_prompt
        total = rates.raw_cost(usage)
        return total * (1.0 - (self.batch_discount or 0.0)) if batch else total


PriceOverrides = Mapping[str, Price | Mapping[str, Any]] | str | Path


def load_overrides(overrides: PriceOverrides | None) -> dict[str, Price]:
    """Read user prices: a dict `{model: {input, cached_input?, cache_write?, output, batch_discount?}}` or a
    JSON/TOML file of the same shape (TOML: one table per model). Bad input -> InputError naming the file and
    model."""
    if overrides is None:
        return {}
    source = "prices"
    if isinstance(overrides, str | Path):
        path = Path(overrides)
        source = str(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise InputError(
                f"Price file {path}: cannot be read ({exc.strerror}); expected a JSON or TOML file."
            ) from None
        try:
            raw: Any = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise InputError(
                f"Price file {path}: not valid {path.suffix.lstrip('.').upper() or 'JSON'} ({exc})."
            ) from None
    else:
        raw = overrides
    if not isinstance(raw, Mapping):
        raise InputError(f"{source}: found {type(raw).__name__}; expected a mapping of model name -> prices.")
    table: dict[str, Price] = {}
    for model, value in raw.items():
        if isinstance(value, Price):
            table[model] = value
            continue
        try:
            table[model] = Price.model_validate(value)
        except ValidationError as exc:
            fields = ", ".join(sorted(Price.model_fields))
            raise InputError(
                f"{source}: prices for model {model!r} are invalid ({exc.error_count()} error(s): "
                f"{exc.errors()[0]['msg']}); expected USD per million tokens with keys {fields} "
                "(input and output required)."
            ) from None
    return table
