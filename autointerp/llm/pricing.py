"""What LLM calls cost: a price table in USD per million tokens, looked up by model name.

Usage semantics (the same for every backend, see autointerp.records.Usage): `input_tokens` are the
uncached input tokens only; `cached_input_tokens` were read from the provider's prompt cache;
`cache_write_tokens` were written to it; `output_tokens` include any hidden reasoning/thinking tokens.
The four never overlap, so cost = sum(tokens x price) / 1e6.

The built-in prices are list prices as of 2026-11, collected from the providers' pricing pages and
model overviews (platform.claude.com/docs, developers.openai.com/api/docs/pricing) as mirrored in public
docs; they could not be checked live from here. Prices change: override them (`--prices FILE`, or
`prices=` in `make_backend`) rather than trusting this table for a budget. Not modelled: batch
discounts, 1-hour cache writes (priced as 5-minute writes), Haiku 5.5's higher rates for prompts over
100k tokens, regional (`inference_geo`) surcharges.

An unknown model has no price (`find_price` returns None): its backend charges 0.0 and says so with
`price_known`; a missing price never stops a run.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from autointerp.errors import InputError
from autointerp.records import Usage


class Price(BaseModel, frozen=True):
    """USD per million tokens."""

    input: float = Field(ge=0, description="uncached input tokens")
    cached_input: float | None = Field(default=None, ge=0, description="cache reads; default: the input price")
    cache_write: float | None = Field(default=None, ge=0, description="cache writes; default: the input price")
    output: float = Field(ge=0, description="output tokens, reasoning included")

    def cost(self, usage: Usage) -> float:
        cached = self.input if self.cached_input is None else self.cached_input
        write = self.input if self.cache_write is None else self.cache_write
        total = (
            usage.input_tokens * self.input
            + usage.cached_input_tokens * cached
            + usage.cache_write_tokens * write
            + usage.output_tokens * self.output
        )
        return total / 1_000_000


def _p(input: float, cached_input: float, cache_write: float, output: float) -> Price:
    return Price(input=input, cached_input=cached_input, cache_write=cache_write, output=output)


# List prices as of 2026-11 (see module docstring); user-overridable. (input, cache read, cache write, output)
PRICES: dict[str, Price] = {
    # Anthropic: cache write = 5-minute write (1.25x input); cache read = "cache hits and refreshes".
    "claude-haiku-5-5": _p(0.10, 0.01, 0.125, 0.50),  # prompts up to 100k tokens
    "claude-sonnet-5-5": _p(2.00, 0.10, 2.50, 10.00),  # cache reads cut from 0.20 on 2026-10-07
    "claude-sonnet-5": _p(2.00, 0.20, 2.50, 10.00),
    "claude-opus-5-5": _p(4.00, 0.20, 5.00, 20.00),
    "claude-opus-5": _p(5.00, 0.50, 6.25, 25.00),
    "claude-fable-5-1": _p(10.00, 0.25, 12.50, 50.00),
    "claude-fable-5": _p(10.00, 1.00, 12.50, 50.00),
    "claude-opus-4-8": _p(5.00, 0.50, 6.25, 25.00),
    "claude-opus-4-7": _p(5.00, 0.50, 6.25, 25.00),
    "claude-opus-4-6": _p(5.00, 0.50, 6.25, 25.00),
    "claude-opus-4-5": _p(5.00, 0.50, 6.25, 25.00),
    "claude-opus-4-1": _p(15.00, 1.50, 18.75, 75.00),
    "claude-opus-4-0": _p(15.00, 1.50, 18.75, 75.00),
    "claude-opus-4": _p(15.00, 1.50, 18.75, 75.00),
    "claude-sonnet-4-6": _p(3.00, 0.30, 3.75, 15.00),
    "claude-sonnet-4-5": _p(3.00, 0.30, 3.75, 15.00),
    "claude-sonnet-4-0": _p(3.00, 0.30, 3.75, 15.00),
    "claude-sonnet-4": _p(3.00, 0.30, 3.75, 15.00),
    "claude-haiku-4-5": _p(1.00, 0.10, 1.25, 5.00),
    "claude-3-5-haiku": _p(0.80, 0.08, 1.00, 4.00),
    "claude-3-haiku": _p(0.25, 0.03, 0.30, 1.25),
    # OpenAI: caching is automatic and writes cost the normal input price.
    "gpt-5.5": _p(5.00, 0.50, 5.00, 30.00),
    "gpt-5.4": _p(2.50, 0.25, 2.50, 15.00),
    "gpt-5.4-mini": _p(0.75, 0.075, 0.75, 4.50),
    "gpt-5.4-nano": _p(0.20, 0.02, 0.20, 1.25),
    "gpt-4.1": _p(2.00, 0.50, 2.00, 8.00),
    "gpt-4.1-mini": _p(0.40, 0.10, 0.40, 1.60),
    "gpt-4.1-nano": _p(0.10, 0.025, 0.10, 0.40),
    "gpt-4o": _p(2.50, 1.25, 2.50, 10.00),
    "gpt-4o-mini": _p(0.15, 0.075, 0.15, 0.60),
}

# What may follow a table name in a real model id: a date snapshot, "-latest", a "[1m]" context tag, or
# a provider's "@version". Anything else ("gpt-4o" vs "gpt-4o-audio") is another model, not priced.
_SUFFIX = re.compile(r"(-\d{4}-?\d{2}-?\d{2}|-latest|\[[^\]]*\]|@.*)*")


PriceOverrides = Mapping[str, Price | Mapping[str, float]] | str | Path


def load_overrides(overrides: PriceOverrides | None) -> dict[str, Price]:
    """Read user prices: a dict `{model: {input, cached_input?, cache_write?, output}}` or a JSON/TOML file
    of the same shape (TOML: one table per model). Bad input -> InputError naming the file and model."""
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


def find_price(model: str, overrides: Mapping[str, Price] | None = None) -> Price | None:
    """The price of `model`: an exact or snapshot match in the overrides first, then the built-in table;
    the longest matching name wins ("gpt-4o-mini-2024-07-18" -> "gpt-4o-mini")."""
    for table in (overrides or {}, PRICES):
        best: str | None = None
        for name in table:
            matches = model.startswith(name) and _SUFFIX.fullmatch(model[len(name) :])
            if matches and (best is None or len(name) > len(best)):
                best = name
        if best is not None:
            return table[best]
    return None
