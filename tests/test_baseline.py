"""The baseline (autointerp/baseline.py): top-token explanations, their text format, the baseline
simulation, and explain_feature with the baseline backend (no LLM call)."""

from __future__ import annotations

import asyncio

import pytest
from helpers_windows import make_sample, make_window

from autointerp.baseline import (
    BASELINE_LABEL,
    baseline_explanation,
    baseline_simulation,
    format_baseline,
    parse_baseline,
    top_tokens,
)
from autointerp.config import RunConfig
from autointerp.explain import explain_feature
from autointerp.llm import make_backend

pytestmark = pytest.mark.usefixtures("no_llm_keys")


def cfg(**llm) -> RunConfig:
    return RunConfig(sae="demo", llm=llm)


def baseline_windows():
    return [
        make_window(["The", " king", " and", " the", " lord", "\n"], [0, 8.0, 0, 0.5, 6.0, 0]),
        make_window(["A", " king", "'s", " Duke", " said"], [0, 10.0, 1.0, 5.0, 0]),
        make_window([" the", " queen", " and", " a", " king"], [0, 0, 0, 0, 6.0]),
    ]


def test_baseline_explanation_ranks_tokens_by_mean_activation_and_is_labelled() -> None:
    windows = baseline_windows()
    text = baseline_explanation(windows, 10.0, "floor")
    assert text == f"{BASELINE_LABEL} ' king' (8), ' lord' (6), ' Duke' (5), \"'s\" (1), ' the' (1)"
    assert baseline_explanation(list(windows), 10.0, "floor") == text  # deterministic
    assert top_tokens(windows, 10.0, "floor", n=2) == [(" king", 8), (" lord", 6)]


def test_baseline_text_round_trips_any_token() -> None:
    pairs = [("\n", 3), ("it's", 7), ('say "hi"', 1), (" ", 10), ("back\\slash", 2)]
    assert parse_baseline(format_baseline(pairs)) == pairs
    assert parse_baseline(format_baseline([])) == []


@pytest.mark.parametrize(
    "text",
    ["the word dog", f"{BASELINE_LABEL} ' king' 8", f"{BASELINE_LABEL} ' king' (11)", f"{BASELINE_LABEL}"],
)
def test_parse_baseline_rejects_other_text(text: str) -> None:
    with pytest.raises(ValueError):
        parse_baseline(text)


def test_baseline_simulation_gives_listed_tokens_their_level() -> None:
    text = baseline_explanation(baseline_windows(), 10.0, "floor")
    held = [make_window(["My", " king", " lord", " King"], [0, 0, 0, 0], split="score")]
    assert baseline_simulation(text, held) == [[0.0, 8.0, 6.0, 0.0]]


def test_explain_feature_with_the_baseline_backend_makes_no_call() -> None:
    sample = make_sample(baseline_windows())
    backend = make_backend("baseline")
    explanation, calls = asyncio.run(explain_feature(backend, sample, cfg()))
    assert calls == [] and backend.n_calls == 0
    assert explanation.text.startswith(BASELINE_LABEL) and explanation.backend == "baseline"
    again, _ = asyncio.run(explain_feature(backend, sample, cfg()))
    assert again == explanation
