"""The baseline: explanations and simulations without an LLM, the control every LLM explanation must beat.

Explanation: the feature's most characteristic tokens, i.e. the distinct tokens of its explanation
windows ranked by their mean raw activation where they occur, each with its mean quantised level:

    [baseline] top tokens: ' king' (9), ' lord' (7), ' Duke' (6)

Tokens are written as Python string literals (so any token, newline included, reads back exactly).
Simulation: a token equal to a listed one gets that token's level, every other token 0.

It is plain text, so an LLM simulator can also score a baseline explanation (the "baseline explanation
scored by the simulator" control). The "baseline" backend (autointerp.llm.baseline.BaselineBackend)
never answers a request: autointerp.explain and autointerp.simulate see it and call the pure functions
here. They sit at the stages' floor, not in llm/, because they quantise with `scoring`.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from autointerp.records import Window
from autointerp.scoring import QuantiseRule, quantise

BASELINE_LABEL = "[baseline] top tokens:"
BASELINE_METHOD = "baseline-top-tokens-v1"  # part of the input hash: a change of method changes it
N_TOP_TOKENS = 5

_ITEM = re.compile(r"""\s*('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")\s*\((\d+)\)\s*(?:,|$)""")


def top_tokens(
    windows: Sequence[Window], max_activation: float, rule: QuantiseRule, n: int = N_TOP_TOKENS
) -> list[tuple[str, int]]:
    """The `n` distinct tokens with the highest mean raw activation over their occurrences (only tokens
    with a mean above 0), each with its mean quantised level rounded half up, at least 1.

    Ties: more occurrences first, then the token string, so the result is deterministic.
    """
    raw: dict[str, list[float]] = defaultdict(list)
    for window in windows:
        for token, act in zip(window.tokens, window.activations, strict=True):
            raw[token].append(act)
    ranked = sorted(
        ((float(np.mean(acts)), len(acts), token) for token, acts in raw.items()),
        key=lambda item: (-item[0], -item[1], item[2]),
    )
    out = []
    for mean, _, token in ranked[:n]:
        if mean <= 0:
            break
        levels = quantise(raw[token], max_activation, rule)
        out.append((token, max(1, int(np.floor(levels.mean() + 0.5)))))
    return out


def format_baseline(tokens: Sequence[tuple[str, int]]) -> str:
    if not tokens:
        return f"{BASELINE_LABEL} none"
    return f"{BASELINE_LABEL} " + ", ".join(f"{token!r} ({level})" for token, level in tokens)


def parse_baseline(text: str) -> list[tuple[str, int]]:
    """The (token, level) pairs of a baseline explanation; ValueError for any other text."""
    if not text.startswith(BASELINE_LABEL):
        raise ValueError(f"not a baseline explanation (expected it to start with {BASELINE_LABEL!r}): {text[:80]!r}")
    rest = text[len(BASELINE_LABEL) :].strip()
    if rest == "none":
        return []
    pairs: list[tuple[str, int]] = []
    pos = 0
    while pos < len(rest):
        match = _ITEM.match(rest, pos)
        if match is None:
            raise ValueError(
                f"baseline explanation: cannot read the tokens from position {pos}: {rest[pos : pos + 40]!r}"
            )
        level = int(match.group(2))
        if not 0 <= level <= 10:
            raise ValueError(f"baseline explanation: level {level} of {match.group(1)}; expected 0..10")
        pairs.append((ast.literal_eval(match.group(1)), level))
        pos = match.end()
    if not pairs:
        raise ValueError("baseline explanation: no tokens listed (expected 'none' or token (level) items)")
    return pairs


def baseline_explanation(windows: Sequence[Window], max_activation: float, rule: QuantiseRule) -> str:
    """The baseline explanation of a feature from its explanation windows (max_activation: raw scale)."""
    return format_baseline(top_tokens(windows, max_activation, rule))


def baseline_simulation(explanation_text: str, windows: Sequence[Window]) -> list[list[float]]:
    """0..10 predictions, one list per window (same order): a listed token gets its level, others 0.
    ValueError if the text is not a baseline explanation."""
    levels = dict(parse_baseline(explanation_text))
    return [[float(levels.get(token, 0)) for token in window.tokens] for window in windows]


def baseline_input_hash(windows: Sequence[Window], max_activation: float, rule: QuantiseRule) -> str:
    """sha256 of everything a baseline explanation depends on (the analogue of an LLM prompt hash)."""
    payload = {
        "method": BASELINE_METHOD,
        "quantise_rule": rule,
        "max_activation": max_activation,
        "n_top_tokens": N_TOP_TOKENS,
        "windows": [[w.tokens, w.activations] for w in windows],
    }
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()
