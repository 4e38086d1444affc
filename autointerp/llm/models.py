"""Today's models and their rules, read from the data file autointerp/llm/models.toml.

One `ModelInfo` per model id: provider, `Price` (with the batch discount), the minimum cacheable prefix,
whether it gives logprobs (and at which reasoning setting), whether it thinks by default and how to stop
it, which sampling fields it accepts. The table carries the day its figures were checked; `load_table`
warns when that day is too long ago. A model the table does not name gets its provider's defaults and no
price: `find_price` returns None ("unknown"), and the caller says so, never $0.

Look-up: the longest table name that the model id starts with, where the rest is only a date snapshot,
"-latest", a "[1m]" context tag or a provider "@version" ("gpt-4o-mini-2024-07-18" -> "gpt-4o-mini", but
"gpt-4o-audio-preview" is not "gpt-4o").
"""

from __future__ import annotations

import datetime
import logging
import re
import tomllib
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from autointerp.errors import InputError
from autointerp.llm.pricing import Price

logger = logging.getLogger("autointerp.llm")

TABLE_FILE = "models.toml"
Provider = Literal["anthropic", "openai"]
ThinkingOff = Literal["disabled", "between_tools"]

# What may follow a table name in a real model id (see the module docstring).
_SUFFIX = re.compile(r"(-\d{4}-?\d{2}-?\d{2}|-latest|\[[^\]]*\]|@.*)*")


class ProviderDefaults(BaseModel, frozen=True, extra="forbid"):
    """Rules for a model of a known provider that the table does not name."""

    batch_discount: float = Field(ge=0, lt=1)
    min_cache_tokens: int = Field(ge=0)
    temperature: bool = True
    prefill: bool = True
    logprobs: bool = False
    max_top_logprobs: int = 20


class ModelInfo(BaseModel, frozen=True, extra="forbid"):
    """What the code needs to know about one model to call it well and to bill it."""

    name: str
    provider: Provider
    price: Price | None = Field(description="None: unknown (a model the table does not name)")
    min_cache_tokens: int = Field(ge=0, description="shortest prompt prefix (tokens) the provider caches")
    logprobs: bool = Field(description="gives per-token logprobs (the simulator's logprob mode)")
    max_top_logprobs: int = Field(default=20, ge=0, description="cap on top_logprobs the API accepts")
    reasoning_effort: str | None = Field(
        default=None,
        description="OpenAI reasoning_effort sent with every request (the setting at which logprobs and "
        "temperature work, where that applies)",
    )
    temperature: bool = Field(default=True, description="accepts a non-default temperature")
    prefill: bool = Field(default=True, description="continues a trailing assistant message")
    thinks_by_default: bool = False
    thinking_off: ThinkingOff | None = Field(
        default=None, description="how a request turns thinking off; None with thinks_by_default: it cannot"
    )
    effort: str | None = Field(default=None, description="Anthropic output_config.effort when thinking stays on")
    thinking_budget_tokens: int = Field(
        default=0, ge=0, description="tokens reserved for thinking that cannot be turned off, on top of max_tokens"
    )
    shutdown: datetime.date | None = Field(default=None, description="the provider's announced shutdown day")
    known: bool = Field(default=True, description="False: the provider's defaults for an unnamed model")


class ModelTable(BaseModel, frozen=True):
    checked: datetime.date
    stale_after_days: int = Field(gt=0)
    providers: dict[Provider, ProviderDefaults]
    models: dict[str, ModelInfo]

    def age_days(self, today: datetime.date | None = None) -> int:
        return ((today or datetime.date.today()) - self.checked).days


_MODEL_KEYS = {"input", "cached_input", "cache_write", "output", "batch_discount", "long_prompt_tokens", "long_prompt"}


def parse_table(raw: Mapping[str, Any], source: str = TABLE_FILE) -> ModelTable:
    """Validate the table's TOML content; InputError naming the model and field on a bad entry."""
    if not isinstance(raw.get("checked"), datetime.date):
        raise InputError(
            f"{source}: found checked = {raw.get('checked')!r}; expected the day the figures were checked "
            "as a TOML date (checked = 2026-12-04)."
        )
    try:
        providers = {name: ProviderDefaults.model_validate(v) for name, v in raw.get("providers", {}).items()}
    except ValidationError as exc:
        raise InputError(f"{source}: [providers] is invalid: {exc.errors()[0]['msg']}.") from None
    models: dict[str, ModelInfo] = {}
    for name, entry in raw.get("models", {}).items():
        entry = dict(entry)
        provider = entry.get("provider")
        if provider not in providers:
            raise InputError(
                f"{source}: model {name!r} has provider {provider!r}; expected one of {sorted(providers)}."
            )
        defaults = providers[provider]
        price_fields = {k: entry.pop(k) for k in list(entry) if k in _MODEL_KEYS}
        price_fields.setdefault("batch_discount", defaults.batch_discount)
        aliases = entry.pop("aliases", [])
        entry.setdefault("min_cache_tokens", defaults.min_cache_tokens)
        entry.setdefault("logprobs", defaults.logprobs)
        entry.setdefault("temperature", defaults.temperature)
        entry.setdefault("prefill", defaults.prefill)
        entry.setdefault("max_top_logprobs", defaults.max_top_logprobs)
        try:
            info = ModelInfo.model_validate({**entry, "name": name, "price": Price.model_validate(price_fields)})
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise InputError(f"{source}: model {name!r}, field {where!r}: {err['msg']}.") from None
        if info.thinks_by_default and info.thinking_off is None and info.effort is None:
            raise InputError(
                f"{source}: model {name!r} thinks by default and cannot turn it off, but names no effort; "
                'expected effort = "low" (and thinking_budget_tokens) so thinking cannot eat the answer.'
            )
        for key in (name, *aliases):
            models[key] = info
    try:
        return ModelTable(
            checked=raw["checked"],
            stale_after_days=raw.get("stale_after_days", 120),
            providers=providers,
            models=models,
        )
    except ValidationError as exc:
        raise InputError(f"{source}: {exc.errors()[0]['msg']}.") from None


@cache
def load_table() -> ModelTable:
    """The packaged table (read once). Warns when its `checked` day is older than `stale_after_days`."""
    text = resources.files("autointerp.llm").joinpath(TABLE_FILE).read_text(encoding="utf-8")
    table = parse_table(tomllib.loads(text))
    note = staleness(table)
    if note is not None:
        logger.warning(note)
    return table


def staleness(table: ModelTable, today: datetime.date | None = None) -> str | None:
    """A warning when the table's figures were checked more than `stale_after_days` ago (or in the future,
    which means a mistyped date); None when they are fresh."""
    age = table.age_days(today)
    if age < 0:
        return f"The model table (autointerp/llm/{TABLE_FILE}) says it was checked on {table.checked}, in the future."
    if age > table.stale_after_days:
        return (
            f"The model table (autointerp/llm/{TABLE_FILE}) was checked on {table.checked}, {age} days ago: "
            "prices and model rules may have changed. Check them, or pass your own prices with --prices FILE."
        )
    return None


def _match(model: str, names: Mapping[str, Any]) -> str | None:
    best: str | None = None
    for name in names:
        if model.startswith(name) and _SUFFIX.fullmatch(model[len(name) :]):
            if best is None or len(name) > len(best):
                best = name
    return best


def model_info(model: str, provider: Provider | None = None) -> ModelInfo | None:
    """The table's entry for `model` (snapshot ids match their family); None if the table does not name it.
    With `provider`, an unnamed model gets that provider's defaults (known=False, price None) instead."""
    table = load_table()
    name = _match(model, table.models)
    if name is not None and (provider is None or table.models[name].provider == provider):
        return table.models[name]
    if provider is None:
        return None
    d = table.providers[provider]
    return ModelInfo(
        name=model,
        provider=provider,
        price=None,
        min_cache_tokens=d.min_cache_tokens,
        logprobs=d.logprobs,
        max_top_logprobs=d.max_top_logprobs,
        temperature=d.temperature,
        prefill=d.prefill,
        known=False,
    )


def find_price(model: str, overrides: Mapping[str, Price] | None = None) -> Price | None:
    """The price of `model`: the user's overrides first (exact or snapshot match), then the table; None if
    neither knows it. An override without a batch discount takes the table's discount for that model."""
    table_info = model_info(model)
    table_price = table_info.price if table_info is not None else None
    overrides = overrides or {}
    name = _match(model, overrides)
    if name is not None:
        price = overrides[name]
        if price.batch_discount is None and table_price is not None:
            price = price.model_copy(update={"batch_discount": table_price.batch_discount})
        return price
    return table_price


def table_prices() -> dict[str, Price]:
    """Every priced model of the table (for benchmarks and docs)."""
    return {name: info.price for name, info in load_table().models.items() if info.price is not None}
