"""The explainer: token layout, quantisation, escaping, answer parsing, the golden prompt, and
explain_feature against the real Anthropic SDK talking to a loopback server. The baseline explanation is
tested in tests/test_baseline.py, best-of-n in tests/test_best_of.py."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import pytest
from golden.golden_helpers import assert_golden, golden_explain_windows, render_request
from helpers_windows import make_sample, make_window
from loopback_llm import LoopbackServer, start_loopback

from autointerp.config import RunConfig
from autointerp.explain import (
    EXPLAIN_ATTEMPTS,
    MAX_EXPLANATION_CHARS,
    ExplanationFailure,
    build_explain_request,
    excerpt_lines,
    explain_feature,
    explain_prompt_hash,
    explain_shared_prefix,
    parse_explanation,
)
from autointerp.llm import make_backend
from autointerp.prompts import escape_token, explain_fewshot, render, token_lines

pytestmark = pytest.mark.usefixtures("no_llm_keys")


def cfg(**llm) -> RunConfig:
    return RunConfig(sae="demo", llm=llm)


def anthropic_backend(server: LoopbackServer):
    return make_backend(
        f"anthropic:claude-haiku-4-5@{server.url}", max_attempts=1, timeout_s=10.0, retry_initial_wait_s=0.01
    )


# ------------------------------------------------------------------------------------------- layout
@pytest.mark.parametrize(
    ("token", "shown"),
    [
        (" the", " the"),
        ("\n", "↵"),
        ("\n\n", "↵↵"),
        ("\t", "⇥"),
        ("\r\n", "␍↵"),
        ("   ", "␣␣␣"),
        ("", "∅"),
        ("a\x00b", "a\\x00b"),
        ("end\n", "end↵"),
        (" ↵", " ↵"),
    ],
)
def test_escape_token_keeps_every_token_on_one_visible_line(token: str, shown: str) -> None:
    assert escape_token(token) == shown
    assert "\n" not in escape_token(token) and "\t" not in escape_token(token)


def test_excerpt_lines_quantise_against_the_feature_max_with_the_rule() -> None:
    window = make_window(["a", " b", " c", " d", " e", "\n"], [0.0, 0.5, 2.0, 3.99, 4.0, -1.0])
    assert excerpt_lines(window, 4.0, "floor") == "a\t0\n b\t1\n c\t5\n d\t9\n e\t10\n↵\t0"
    assert excerpt_lines(window, 4.0, "ceil") == "a\t0\n b\t2\n c\t5\n d\t10\n e\t10\n↵\t0"
    # the feature's max, not the window's: a weaker window never reaches 10
    assert excerpt_lines(window, 8.0, "floor").split("\n")[4] == " e\t5"


def test_token_lines_layouts() -> None:
    assert token_lines(["x", "\n"]) == "x\n↵"
    assert token_lines(["x", "\n"], [3, 0]) == "x\t3\n↵\t0"
    assert token_lines(["x", "\n"], numbered=True) == "1\tx\n2\t↵"
    with pytest.raises(ValueError, match="2 tokens but 1 values"):
        token_lines(["x", "y"], [1])


def test_render_fills_every_placeholder_and_nothing_else() -> None:
    assert render("a {{x}} b {{y}}", x="1", y="{{x}}") == "a 1 b {{x}}"
    with pytest.raises(ValueError, match="differ"):
        render("a {{x}}", x="1", y="2")
    with pytest.raises(ValueError, match="differ"):
        render("a {{x}} {{y}}", x="1")


def test_fewshot_data_has_eight_kinds_of_feature_with_levels_in_range() -> None:
    examples = explain_fewshot()
    kinds = {example.kind for example in examples}
    # Variety of feature kinds in the worked examples matters for explanation quality (issue 12).
    assert {"single token", "multi-token phrase", "topic", "syntax", "code", "long-range dependency"} <= kinds
    assert {"weak, diffuse", "formatting"} <= kinds and len(examples) >= 8
    for example in examples:
        assert example.explanation and all(0 <= v <= 10 for e in example.excerpts for v in e.levels)
        assert any(v == 10 for e in example.excerpts for v in e.levels)


# ------------------------------------------------------------------------------------------- request
def test_explain_request_matches_golden() -> None:
    windows = golden_explain_windows()
    request = build_explain_request(windows, 4.0, "floor", max_tokens=120)
    assert_golden("explain_request.txt", render_request(request))


def test_system_and_prefix_are_byte_identical_across_features() -> None:
    a = build_explain_request(golden_explain_windows(), 4.0, "floor")
    b = build_explain_request([make_window(["x", " y"], [1.0, 0.0], feature=99)], 1.0, "ceil")
    assert (a.system, a.prefix) == (b.system, b.prefix) == explain_shared_prefix()
    assert a.messages != b.messages
    n = len(explain_fewshot())
    assert len(a.prefix) == 2 * n and [m.role for m in a.prefix] == ["user", "assistant"] * n


def test_prompt_hash_covers_the_request_and_the_rule() -> None:
    # levels that are exact multiples quantise the same under both rules: same text, different hash
    windows = [make_window(["a", " b"], [0.0, 2.0])]
    floor = build_explain_request(windows, 4.0, "floor")
    ceil = build_explain_request(windows, 4.0, "ceil")
    assert floor == ceil
    assert explain_prompt_hash(floor, "floor") != explain_prompt_hash(ceil, "ceil")
    other = build_explain_request([make_window(["a", " b"], [0.0, 3.0])], 4.0, "floor")
    assert explain_prompt_hash(other, "floor") != explain_prompt_hash(floor, "floor")
    assert re.fullmatch(r"[0-9a-f]{64}", explain_prompt_hash(floor, "floor"))


# ------------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    ("answer", "parsed"),
    [
        ("Explanation: the word dog", "the word dog"),
        ("Explanation: the word dog.", "the word dog"),
        ('**Explanation:** the word "dog" in pet stories.', 'the word "dog" in pet stories'),
        ("Sure! Here it is.\nExplanation: closing brackets\nThey end calls.", "closing brackets"),
        ('"closing brackets in code"', "closing brackets in code"),
        ("“words about money”", "words about money"),
        ("<think>it is about cash</think>\nExplanation: money words", "money words"),
        ("Explanation:\n   words about money  ", "words about money"),
        ("- Explanation: `)` after an argument list", ") after an argument list"),
        ("Explanation: money words. The feature also fires on prices.", "money words"),
        ("EXPLANATION: Money words", "Money words"),
        ("explanation :  ' the' after on/in/at", "' the' after on/in/at"),
        ("The word dog, e.g. in pet stories", "The word dog, e.g. in pet stories"),
    ],
)
def test_parse_explanation_reads_messy_answers(answer: str, parsed: str) -> None:
    assert parse_explanation(answer) == parsed


def test_parse_explanation_caps_length_at_a_word() -> None:
    text = parse_explanation("Explanation: " + "word " * 100)
    assert len(text) <= MAX_EXPLANATION_CHARS and text.endswith("word")


@pytest.mark.parametrize("answer", ["", "   \n  ", "Explanation:", "**Explanation:**", '""', "<think>x</think>"])
def test_parse_explanation_rejects_empty_answers(answer: str) -> None:
    with pytest.raises(ValueError):
        parse_explanation(answer)


# ------------------------------------------------------------------------------------------- failures without a call
def test_a_feature_that_never_fires_is_an_explanation_failure() -> None:
    sample = make_sample([make_window(["a", " b"], [0.0, 0.0])], max_activation=0.0)
    with pytest.raises(ExplanationFailure, match="fires on no token"):
        asyncio.run(explain_feature(make_backend("baseline"), sample, cfg()))


# ------------------------------------------------------------------------------------------- with an LLM
@pytest.fixture
def scripted() -> Iterator[tuple[LoopbackServer, list[str]]]:
    answers: list[str] = []
    server = start_loopback(responder=lambda kind, body: answers.pop(0))
    yield server, answers
    server.stop()


def test_explain_feature_parses_the_answer_and_records_the_call(scripted) -> None:
    server, answers = scripted
    answers.append("Sure.\n**Explanation:** the word dog, mostly as a pet.\nMore text.")
    sample = make_sample(golden_explain_windows())
    explanation, calls = asyncio.run(explain_feature(anthropic_backend(server), sample, cfg()))
    assert explanation.text == "the word dog, mostly as a pet"
    assert explanation.raw_completion.startswith("Sure.")
    assert explanation.backend == "anthropic:claude-haiku-4-5@" + server.url
    request = build_explain_request(golden_explain_windows(), 4.0, "floor", max_tokens=120)
    assert explanation.prompt_hash == explain_prompt_hash(request, "floor")
    assert len(calls) == 1 and calls[0].ok and calls[0].usage.output_tokens > 0
    assert explanation.usage == calls[0].usage
    body = server.requests[0].body
    assert body["messages"][-1]["content"] == request.messages[-1].content


def test_unreadable_answer_is_asked_again_with_the_error(scripted) -> None:
    server, answers = scripted
    answers += ["", "Explanation: closing brackets"]
    explanation, calls = asyncio.run(
        explain_feature(anthropic_backend(server), make_sample(golden_explain_windows()), cfg())
    )
    assert explanation.text == "closing brackets"
    assert [c.ok for c in calls] == [False, True] and "empty" in (calls[0].error or "")
    retry = server.requests[1].body["messages"]
    assert retry[-2]["role"] == "assistant" and "could not be used" in retry[-1]["content"]


def test_explanation_failure_after_every_answer_is_unreadable(scripted) -> None:
    server, answers = scripted
    answers += ["   "] * EXPLAIN_ATTEMPTS
    with pytest.raises(ExplanationFailure) as info:
        asyncio.run(explain_feature(anthropic_backend(server), make_sample(golden_explain_windows()), cfg()))
    assert len(info.value.calls) == EXPLAIN_ATTEMPTS and not any(c.ok for c in info.value.calls)


def test_a_failed_call_is_an_explanation_failure_with_its_record() -> None:
    server = start_loopback(faults=["401"])
    try:
        with pytest.raises(ExplanationFailure, match="401") as info:
            asyncio.run(explain_feature(anthropic_backend(server), make_sample(golden_explain_windows()), cfg()))
    finally:
        server.stop()
    assert len(info.value.calls) == 1 and info.value.calls[0].error and info.value.calls[0].response_text is None
