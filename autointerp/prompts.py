"""Prompt templates and few-shot examples: find, load, check and fill them; lay out tokens.

The text the LLMs read lives in data files in `autointerp/assets/prompts/` (package data, so an installed
wheel has them; the repository's top-level `prompts` is a link to that folder; see its README): `*.md`
templates with `{{name}}` placeholders and `*.json` few-shot examples. This module only loads them and
renders tokens, one per line, with whitespace made visible:

    "\\n" -> "↵"   "\\t" -> "⇥"   "\\r" -> "␍"   "   " (only spaces) -> "␣␣␣"   "" -> "∅"
    other control characters -> "\\xNN"; a leading space stays a real space (" the").

so that every token is exactly one line and nothing the model needs to see is invisible.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator

from autointerp.errors import InputError

_PLACEHOLDER = re.compile(r"\{\{([a-z_]+)\}\}")
_VISIBLE = {"\n": "↵", "\t": "⇥", "\r": "␍"}
_INVISIBLE = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")  # what visible_text marks


def prompts_dir() -> Path:
    """The prompts folder shipped inside the package (`autointerp/assets/prompts`).

    One location for a checkout, an editable install and a wheel alike: the files are package data,
    so nothing depends on a source tree being next to the installed code.
    """
    folder = Path(str(resources.files("autointerp") / "assets" / "prompts"))
    if folder.is_dir():
        return folder
    raise InputError(
        f"Prompt templates: found no folder at {folder}; expected the package's `assets/prompts/` data "
        "(reinstall autointerp: the installation is missing its package data)."
    )


@cache
def load_text(name: str) -> str:
    """A template's text, without the file's final newline."""
    path = prompts_dir() / name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(
            f"Prompt template {path}: found no such file; expected one of the files in prompts/."
        ) from None
    return text.removesuffix("\n")


@cache
def load_json(name: str) -> Any:
    path = prompts_dir() / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"Prompt data {path}: found no such file; expected one of the files in prompts/.") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"Prompt data {path}: found invalid JSON ({exc}); expected a JSON object.") from None


def render(template: str, **values: str) -> str:
    """Fill `{{name}}` placeholders. Every placeholder must get a value and every value a placeholder."""
    wanted = set(_PLACEHOLDER.findall(template))
    if wanted != set(values):
        raise ValueError(
            f"template placeholders {sorted(wanted)} and given values {sorted(values)} differ; expected the same names"
        )
    # One pass, so a value that itself contains "{{x}}" is left alone.
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def render_file(name: str, **values: str) -> str:
    return render(load_text(name), **values)


# --------------------------------------------------------------------------------------------------
# Tokens


def escape_token(token: str) -> str:
    """One token as one visible line (see the module docstring for the marks)."""
    if token == "":
        return "∅"
    if token.strip(" ") == "":
        return "␣" * len(token)
    return visible_text(token)


def visible_text(text: str) -> str:
    """`text` on one line: newline/tab/CR as ↵ ⇥ ␍, other control characters as \\xNN, the rest as is."""
    if _INVISIBLE.search(text) is None:  # most tokens: nothing to mark (a character loop costs ~1 ms a prompt)
        return text
    out = []
    for ch in text:
        if ch in _VISIBLE:
            out.append(_VISIBLE[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F or ch in "\u2028\u2029\x85":
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def excerpt_header(index: int) -> str:
    """The line that opens excerpt `index` (1-based) in every prompt and answer."""
    return f"Excerpt {index}:"


def token_lines(tokens: Sequence[str], values: Sequence[int] | None = None, *, numbered: bool = False) -> str:
    """Tokens one per line: `token<TAB>value` when values are given, `n<TAB>token` when numbered
    (n from 1), else the bare token."""
    if values is not None and len(values) != len(tokens):
        raise ValueError(f"token_lines: {len(tokens)} tokens but {len(values)} values; expected equal lengths")
    lines = []
    for i, token in enumerate(tokens):
        shown = escape_token(token)
        if values is not None:
            lines.append(f"{shown}\t{values[i]}")
        elif numbered:
            lines.append(f"{i + 1}\t{shown}")
        else:
            lines.append(shown)
    return "\n".join(lines)


def excerpts_block(blocks: Sequence[str]) -> str:
    """Excerpts (already laid out as lines) under their headers, separated by blank lines."""
    return "\n\n".join(f"{excerpt_header(i + 1)}\n{body}" for i, body in enumerate(blocks))


# --------------------------------------------------------------------------------------------------
# Few-shot data


class FewShotExcerpt(BaseModel):
    """One excerpt of a made-up feature: tokens and their 0..10 levels."""

    pairs: list[tuple[str, int]] = Field(min_length=1, description="[token, level 0..10] pairs")

    @field_validator("pairs")
    @classmethod
    def _levels_in_range(cls, pairs: list[tuple[str, int]]) -> list[tuple[str, int]]:
        bad = [level for _, level in pairs if not 0 <= level <= 10]
        if bad:
            raise ValueError(f"levels {bad}: expected integers 0..10")
        return pairs

    @property
    def tokens(self) -> list[str]:
        return [token for token, _ in self.pairs]

    @property
    def levels(self) -> list[int]:
        return [level for _, level in self.pairs]


class FewShotFeature(BaseModel):
    excerpts: list[FewShotExcerpt] = Field(min_length=1)
    explanation: str = Field(min_length=1)
    kind: str | None = Field(default=None, description="what sort of feature it shows (for readers of the data)")


def _feature(raw: dict[str, Any], source: str) -> FewShotFeature:
    try:
        return FewShotFeature(
            excerpts=[FewShotExcerpt(pairs=pairs) for pairs in raw["excerpts"]],
            explanation=raw["explanation"],
            kind=raw.get("kind"),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(
            f"Few-shot data {source}: found an example that does not fit ({exc}); expected "
            '{"excerpts": [[[token, level], ...], ...], "explanation": text}.'
        ) from None


def _features(name: str) -> tuple[FewShotFeature, ...]:
    source = f"prompts/{name}"
    data = load_json(name)
    examples = data.get("examples") if isinstance(data, dict) else None
    if not isinstance(examples, list) or not examples:
        raise InputError(
            f'Few-shot data {source}: found no list under "examples"; expected '
            '{"examples": [{"excerpts": ..., "explanation": ...}, ...]} with at least one example.'
        )
    return tuple(_feature(raw, source) for raw in examples)


@cache
def explain_fewshot() -> tuple[FewShotFeature, ...]:
    """The explainer's worked examples (prompts/explain_fewshot.json), in the order they are shown."""
    return _features("explain_fewshot.json")


@cache
def simulate_fewshot() -> tuple[FewShotFeature, ...]:
    """The simulator's worked examples (prompts/simulate_fewshot.json), in the order they are shown."""
    return _features("simulate_fewshot.json")
