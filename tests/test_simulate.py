"""The simulator: sparse answers, logprob maths, listing parsing, shuffling, golden prompts, failures;
the sampled mode through the real Anthropic SDK and the logprob mode through the real OpenAI SDK, both
talking to a loopback server."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

import pytest
from golden.golden_helpers import assert_golden, golden_score_windows, render_request
from helpers_windows import make_window
from loopback_llm import LoopbackServer, start_loopback

from autointerp.baseline import BASELINE_LABEL
from autointerp.config import RunConfig
from autointerp.llm import LLMRequest, LLMResponse, TokenLogprob, make_backend
from autointerp.llm.base import BackendOptions, LLMBackend
from autointerp.prompts import simulate_fewshot, token_lines
from autointerp.records import Usage, Window
from autointerp.scoring import score_feature
from autointerp.simulate import (
    SIMULATION_ATTEMPTS,
    TOP_LOGPROBS,
    SimulationFailure,
    build_simulation_request,
    expected_level,
    listing_answer,
    listing_slot_prefixes,
    parse_listing,
    parse_sparse,
    shuffle_order,
    simulate_feature,
    simulate_shared_prefix,
)

CFG = RunConfig(sae="demo")


pytestmark = pytest.mark.usefixtures("no_llm_keys")


def anthropic_backend(server: LoopbackServer) -> LLMBackend:
    return make_backend(f"anthropic:claude-haiku-4-5@{server.url}", max_attempts=1, timeout_s=10.0)


def openai_backend(server: LoopbackServer) -> LLMBackend:
    return make_backend(f"openai:gpt-4o-mini@{server.openai_url}", max_attempts=1, timeout_s=10.0)


def dog_windows() -> list[Window]:
    """Six held-out windows; ' dog' sits at a different position in each, so order mistakes show."""
    texts = [
        ["A", " dog", " ran"],
        ["no", " pets", " here", "\n"],
        ["my", " old", " dog"],
        [" dog"],
        ["cats", " and", " a", " dog", "."],
        ["rain", "\t"],
    ]
    return [
        make_window(t, [5.0 if tok == " dog" else 0.0 for tok in t], split="score", context_id=i)
        for i, t in enumerate(texts)
    ]


# ------------------------------------------------------------------------------------------- sparse answers
LENGTHS = [3, 4]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Activations: none", [[0, 0, 0], [0, 0, 0, 0]]),
        ("Activations: None.", [[0, 0, 0], [0, 0, 0, 0]]),
        ("Activations: 1:2=7", [[0, 7, 0], [0, 0, 0, 0]]),
        ("Activations: 1:2=7, 2:4=10, 2:1=1", [[0, 7, 0], [1, 0, 0, 10]]),
        ("activations:1:1=3,1:3 = 0", [[3, 0, 0], [0, 0, 0, 0]]),
        ("**Activations:** 2:2=5", [[0, 0, 0], [0, 5, 0, 0]]),
        ("```\nActivations: 2:2=5\n```", [[0, 0, 0], [0, 5, 0, 0]]),
        ("  Activations: 1:3=4.  \n\n", [[0, 0, 4], [0, 0, 0, 0]]),
    ],
)
def test_parse_sparse_accepts_valid_answers(answer: str, expected: list[list[float]]) -> None:
    assert parse_sparse(answer, LENGTHS) == expected


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("Activations: 3:1=5", "no excerpt 3"),
        ("Activations: 0:1=5", "no excerpt 0"),
        ("Activations: 1:4=5", "tokens 1..3"),
        ("Activations: 1:0=5", "tokens 1..3"),
        ("Activations: 1:1=11", "outside 0..10"),
        ("Activations: 1:1=-1", "not excerpt:token=value"),
        ("Activations: 1:1=2.5", "not excerpt:token=value"),
        ("Activations: 1:1=5, 1:1=6", "given twice"),
        ("Activations: dog=5", "not excerpt:token=value"),
        ("Activations: 1:1=5,, 1:2=3", "not excerpt:token=value"),
        ("Activations:", "nothing after"),
        ("1:1=5", "no line"),
        ("", "no line"),
        ("Activations: 1:1=5\nActivations: none", "2 lines"),
        ("Here you go.\nActivations: 1:1=5", "other text"),
        ('{"1": {"1": 5}}', "no line"),
    ],
)
def test_parse_sparse_rejects_each_invalid_answer(answer: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_sparse(answer, LENGTHS)


# ------------------------------------------------------------------------------------------- logprob maths
def test_expected_level_is_normalised_over_the_eleven_levels() -> None:
    assert expected_level({"0": math.log(0.5), "10": math.log(0.5)}) == pytest.approx(5.0)
    # other tokens are ignored and the levels renormalised
    assert expected_level({"3": math.log(0.2), "x": math.log(0.6), "5": math.log(0.2)}) == pytest.approx(4.0)
    # whitespace around a level token counts as that level; duplicates add up
    assert expected_level({"\t7": math.log(0.25), "7": math.log(0.25), " 1": math.log(0.5)}) == pytest.approx(4.0)
    assert expected_level({"9": -0.01}) == pytest.approx(9.0)
    with pytest.raises(ValueError, match="no level"):
        expected_level({"dog": -0.1, "11": -1.0})


def listing_response(token_lists: Sequence[Sequence[str]], tops: Sequence[dict[str, float]]) -> LLMResponse:
    """A generated listing as a provider returns it: one logprob entry per piece, the value pieces
    carrying `tops` (their chosen token is the likeliest level)."""
    entries: list[TokenLogprob] = []
    slots = iter(tops)
    for prefix in listing_slot_prefixes(token_lists):
        entries += [
            TokenLogprob(token=piece, logprob=-0.01)
            for piece in prefix.replace("\t", "\x00\t\x00").split("\x00")
            if piece
        ]
        top = next(slots)
        best = max(top, key=top.__getitem__)
        entries.append(TokenLogprob(token=best, logprob=top[best], top=top))
    text = "".join(e.token for e in entries)
    return LLMResponse(text=text, logprobs=entries, usage=Usage(), model="m")


def test_parse_listing_reads_the_distribution_at_every_value() -> None:
    tokens = [["A", " dog"], ["\n"]]
    tops = [{"0": math.log(0.9), "5": math.log(0.1)}, {"8": math.log(0.5), "10": math.log(0.5)}, {"0": 0.0}]
    assert parse_listing(listing_response(tokens, tops), tokens) == [
        [pytest.approx(0.5), pytest.approx(9.0)],
        [0.0],
    ]


def test_parse_listing_splits_one_and_ten_for_digit_tokenizers() -> None:
    # the model wrote "10" as "1" "0": the mass of '1' is split by P('0' | '1') at the next token
    tokens = [[" dog"]]
    entries = [
        TokenLogprob(token="Excerpt 1:\n dog", logprob=-0.1),
        TokenLogprob(token="\t", logprob=-0.1),
        TokenLogprob(token="1", logprob=math.log(0.6), top={"1": math.log(0.6), "2": math.log(0.4)}),
        TokenLogprob(token="0", logprob=math.log(0.5), top={"0": math.log(0.5), "\n": math.log(0.5)}),
    ]
    response = LLMResponse(text="Excerpt 1:\n dog\t10", logprobs=entries, usage=Usage(), model="m")
    assert parse_listing(response, tokens) == [[pytest.approx(0.3 * 1 + 0.3 * 10 + 0.4 * 2)]]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("Excerpt 1:\nA\t0\n dog\t3", "excerpt 2 has 0 token lines"),
        ("Excerpt 1:\nA\t0\n cat\t3\n\nExcerpt 2:\n↵\t0", "token ' cat'"),
        ("Excerpt 1:\nA\t0\n dog\t11\n\nExcerpt 2:\n↵\t0", "not an integer 0..10"),
        ("Excerpt 2:\n↵\t0", "expected excerpts 1..2 in order"),
        ("Excerpt 1:\nA\t0\n dog\t3\n x\t1\n\nExcerpt 2:\n↵\t0", "more lines"),
        ("Sure:\nExcerpt 1:\nA\t0", "neither an excerpt header"),
    ],
)
def test_parse_listing_rejects_answers_that_do_not_match_the_excerpts(text: str, problem: str) -> None:
    tokens = [["A", " dog"], ["\n"]]
    response = LLMResponse(text=text, logprobs=[TokenLogprob(token=text, logprob=-0.1)], usage=Usage(), model="m")
    with pytest.raises(ValueError, match=problem):
        parse_listing(response, tokens)


def test_parse_listing_needs_logprobs() -> None:
    response = LLMResponse(text="Excerpt 1:\nA\t0", usage=Usage(), model="m")
    with pytest.raises(ValueError, match="without logprobs"):
        parse_listing(response, [["A"]])


# ------------------------------------------------------------------------------------------- prompts
def test_listing_answer_is_the_slot_prefixes_with_values() -> None:
    tokens = [["A", " dog"], ["\n"]]
    assert listing_answer(tokens, [[0, 7], [0]]) == "Excerpt 1:\nA\t0\n dog\t7\n\nExcerpt 2:\n↵\t0"
    assert listing_slot_prefixes(tokens) == ["Excerpt 1:\nA\t", "\n dog\t", "\n\nExcerpt 2:\n↵\t"]


@pytest.mark.parametrize("mode", ["logprob", "sampled"])
def test_simulation_request_matches_golden(mode: str) -> None:
    windows = golden_score_windows()
    request = build_simulation_request("the word dog, as a pet", windows, mode)
    extra = {}
    if mode == "logprob":
        prefixes = listing_slot_prefixes([w.tokens for w in windows])
        extra["teacher-forced answer (␟ marks a value slot)"] = "␟".join(prefixes) + "␟"
    assert_golden(f"simulate_{mode}_request.txt", render_request(request, extra))


def test_simulation_prefix_is_byte_identical_across_features() -> None:
    for mode in ("logprob", "sampled"):
        a = build_simulation_request("dogs", golden_score_windows(), mode)
        b = build_simulation_request("money words", dog_windows(), mode)
        assert (a.system, a.prefix) == (b.system, b.prefix) == simulate_shared_prefix(mode)
        assert a.messages != b.messages


def test_prompt_never_says_how_many_windows_fire() -> None:
    windows = dog_windows()
    silent = [make_window(w.tokens, [0.0] * len(w.tokens), split="score") for w in windows]
    for mode in ("logprob", "sampled"):
        assert build_simulation_request("dogs", windows, mode) == build_simulation_request("dogs", silent, mode)


def test_explanation_is_put_on_one_line() -> None:
    request = build_simulation_request("the word\n\ndog  ", golden_score_windows(), "sampled")
    assert request.messages[0].content.startswith("Explanation: the word dog\n")


# ------------------------------------------------------------------------------------------- sampled mode
def mark_named_token(kind: str, body: dict) -> str:
    """A simulator that predicts 8 on every token equal to the explanation's last word."""
    user = body["messages"][-1]["content"]
    if body["messages"][-1]["role"] != "user" or len(body["messages"]) != 2 * len(simulate_fewshot()) + 1:
        raise AssertionError("expected the worked examples and one feature turn")
    named = user.split("\n", 1)[0].split()[-1]
    items = []
    for block in user.split("Excerpt ")[1:]:
        number = int(block.split(":", 1)[0])
        for line in block.split("\n")[1:]:
            if "\t" in line and line.split("\t", 1)[1].strip() == named:
                items.append(f"{number}:{line.split(chr(9))[0]}=8")
    return "Activations: " + (", ".join(items) or "none")


def test_sampled_mode_returns_predictions_in_the_callers_order() -> None:
    windows = dog_windows()
    order = shuffle_order(len(windows), CFG.sampler.seed, 7)
    assert order != sorted(order)  # the shuffle really moves windows in this test
    server = start_loopback(responder=mark_named_token)
    try:
        simulation, calls = asyncio.run(
            simulate_feature(anthropic_backend(server), "the word dog", windows, 7, "llm", CFG)
        )
        body = server.requests[0].body
    finally:
        server.stop()
    assert simulation.mode == "sampled" and simulation.explanation_source == "llm" and simulation.feature == 7
    assert simulation.predictions == [[8.0 if t == " dog" else 0.0 for t in w.tokens] for w in windows]
    assert calls[0].detail["shuffle_order"] == order and calls[0].ok
    shown_first = body["messages"][-1]["content"].split("Excerpt 1:\n", 1)[1].split("\n\n", 1)[0]
    assert shown_first == token_lines(windows[order[0]].tokens, numbered=True)
    # the predictions score without complaint (floats on 0..10, one per token)
    scores = score_feature(
        [w.activations for w in windows], simulation.predictions, [w.group for w in windows], [None] * 6, 5.0
    )
    assert scores.correlation == pytest.approx(1.0)


def test_shuffle_is_seeded_by_run_seed_and_feature() -> None:
    assert shuffle_order(10, 0, 3) == shuffle_order(10, 0, 3)
    assert shuffle_order(10, 0, 3) != shuffle_order(10, 1, 3)
    assert shuffle_order(10, 0, 3) != shuffle_order(10, 0, 4)
    assert sorted(shuffle_order(10, 0, 3)) == list(range(10))


def test_malformed_answers_are_retried_then_raise_simulation_failure() -> None:
    server = start_loopback(responder=lambda kind, body: "Activations: 9:9=99")
    try:
        with pytest.raises(SimulationFailure, match="could not be read") as info:
            asyncio.run(simulate_feature(anthropic_backend(server), "dogs", dog_windows(), 7, "llm", CFG))
        bodies = [r.body for r in server.requests]
    finally:
        server.stop()
    calls = info.value.calls
    assert len(calls) == SIMULATION_ATTEMPTS == len(bodies) and not any(c.ok for c in calls)
    assert all("no excerpt 9" in (c.error or "") for c in calls)
    # each re-ask shows the model its answer and what was wrong with it
    first = 2 * len(simulate_fewshot()) + 1  # worked examples, then the feature's turn
    assert [len(b["messages"]) for b in bodies] == [first, first + 2, first + 4]
    assert bodies[1]["messages"][first] == {"role": "assistant", "content": "Activations: 9:9=99"}
    assert "there is no excerpt 9" in bodies[1]["messages"][first + 1]["content"]


def test_a_bad_answer_then_a_good_one_succeeds() -> None:
    answers = ["I think token 2 fires.", "Activations: none"]
    server = start_loopback(responder=lambda kind, body: answers.pop(0))
    try:
        simulation, calls = asyncio.run(
            simulate_feature(anthropic_backend(server), "dogs", dog_windows(), 7, "llm", CFG)
        )
    finally:
        server.stop()
    assert [c.ok for c in calls] == [False, True]
    assert all(p == 0.0 for row in simulation.predictions for p in row)
    assert simulation.usage == calls[0].usage + calls[1].usage


def test_a_failed_call_is_a_simulation_failure() -> None:
    server = start_loopback(faults=["500"])
    try:
        with pytest.raises(SimulationFailure, match="500") as info:
            asyncio.run(simulate_feature(anthropic_backend(server), "dogs", dog_windows(), 7, "llm", CFG))
    finally:
        server.stop()
    assert len(info.value.calls) == 1 and not info.value.calls[0].ok


def test_empty_explanation_or_windows_fail_before_any_call() -> None:
    backend = make_backend("anthropic:claude-haiku-4-5@http://127.0.0.1:9")
    with pytest.raises(SimulationFailure, match="empty"):
        asyncio.run(simulate_feature(backend, "  \n", dog_windows(), 7, "llm", CFG))
    with pytest.raises(SimulationFailure, match="no windows"):
        asyncio.run(simulate_feature(backend, "dogs", [], 7, "llm", CFG))


# ------------------------------------------------------------------------------------------- logprob mode
def listing_responder(kind: str, body: dict) -> dict:
    """An OpenAI-compatible simulator that copies the listing, 9 on ' dog' tokens, with top_logprobs."""
    assert body["logprobs"] is True and body["top_logprobs"] == TOP_LOGPROBS == 5  # only what scoring reads
    user = body["messages"][-1]["content"]
    token_lists = [[line for line in block.split("\n")[1:] if line] for block in user.split("\n\n")[1:]]
    entries = []
    for prefix in listing_slot_prefixes([[t.replace("↵", "\n").replace("⇥", "\t") for t in ts] for ts in token_lists]):
        entries += [
            {"token": p, "logprob": -0.01, "top": {p: -0.01}} for p in prefix.replace("\t", "\x00\t").split("\x00") if p
        ]
        line = prefix.rstrip("\t").rsplit("\n", 1)[-1]
        top = {"9": math.log(0.8), "8": math.log(0.2)} if line == " dog" else {"0": math.log(0.7), "1": math.log(0.3)}
        best = max(top, key=top.__getitem__)
        entries.append({"token": best, "logprob": top[best], "top": top})
    return {"text": "".join(e["token"] for e in entries), "logprobs": entries}


def test_logprob_mode_through_the_openai_sdk() -> None:
    windows = dog_windows()
    server = start_loopback(responder=listing_responder)
    try:
        simulation, calls = asyncio.run(
            simulate_feature(openai_backend(server), "the word dog", windows, 7, "llm", CFG)
        )
    finally:
        server.stop()
    assert simulation.mode == "logprob" and len(calls) == 1
    expected = [[pytest.approx(8.8) if t == " dog" else pytest.approx(0.3) for t in w.tokens] for w in windows]
    assert simulation.predictions == expected


class FakeSlotScorer(LLMBackend):
    """In-process stand-in for a backend with `score_value_slots` (the local model has the real one):
    gives every slot whose token line is ' dog' a sure 10, others a 50/50 of 0 and 2."""

    supports_logprobs = True

    def __init__(self) -> None:
        super().__init__("fake-scorer", "fake", BackendOptions())
        self.seen: list[tuple[LLMRequest, list[str]]] = []

    async def _call(self, request: LLMRequest) -> LLMResponse:
        raise AssertionError("the simulator must use score_value_slots")

    async def score_value_slots(self, request: LLMRequest, slot_prefixes: Sequence[str]) -> LLMResponse:
        self.seen.append((request, list(slot_prefixes)))
        tops = [
            {"10": 0.0} if prefix.endswith("\n dog\t") else {"0": math.log(0.5), "2": math.log(0.5)}
            for prefix in slot_prefixes
        ]
        return LLMResponse(
            text="",
            logprobs=[TokenLogprob(token="0", logprob=0.0, top=top) for top in tops],
            usage=Usage(input_tokens=100),
            model="fake",
        )


def test_slot_scoring_backends_are_teacher_forced_and_unshuffled() -> None:
    windows = dog_windows()
    backend = FakeSlotScorer()
    simulation, calls = asyncio.run(simulate_feature(backend, "the word dog", windows, 7, "other:3", CFG))
    request, prefixes = backend.seen[0]
    order = shuffle_order(len(windows), CFG.sampler.seed, 7)
    assert prefixes == listing_slot_prefixes([windows[i].tokens for i in order])
    assert request == build_simulation_request("the word dog", [windows[i] for i in order], "logprob")
    assert simulation.predictions == [[10.0 if t == " dog" else 1.0 for t in w.tokens] for w in windows]
    assert simulation.explanation_source == "other:3" and calls[0].usage.input_tokens == 100


class FakeTokenJudge(FakeSlotScorer):
    """A backend with both `judge_tokens` and `score_value_slots`: ' dog' gets a sure 10, others 0."""

    def __init__(self) -> None:
        super().__init__()
        self.judged: list[tuple[str, list[list[str]]]] = []

    async def judge_tokens(self, explanation: str, token_lists: Sequence[Sequence[str]]) -> LLMResponse:
        self.judged.append((explanation, [list(tokens) for tokens in token_lists]))
        tops = [{"10": 0.0} if token == " dog" else {"0": 0.0} for tokens in token_lists for token in tokens]
        return LLMResponse(
            text="",
            logprobs=[TokenLogprob(token="0", logprob=0.0, top=top) for top in tops],
            usage=Usage(input_tokens=40),
            model="fake",
        )


def test_a_token_judge_is_preferred_and_gets_the_explanation_and_every_token() -> None:
    windows = dog_windows()
    backend = FakeTokenJudge()
    simulation, calls = asyncio.run(simulate_feature(backend, "the word dog", windows, 7, "llm", CFG))
    order = shuffle_order(len(windows), CFG.sampler.seed, 7)
    assert backend.judged == [("the word dog", [windows[i].tokens for i in order])] and backend.seen == []
    assert simulation.predictions == [[10.0 if t == " dog" else 0.0 for t in w.tokens] for w in windows]
    assert simulation.mode == "logprob" and len(calls) == 1 and calls[0].usage.input_tokens == 40
    assert "context-free" in calls[0].detail["judge"]


# ------------------------------------------------------------------------------------------- baseline
def test_baseline_backend_simulates_baseline_explanations_only() -> None:
    backend = make_backend("baseline")
    text = f"{BASELINE_LABEL} ' dog' (9)"
    simulation, calls = asyncio.run(simulate_feature(backend, text, dog_windows(), 7, "baseline", CFG))
    assert calls == [] and simulation.mode == "baseline"
    assert simulation.predictions == [[9.0 if t == " dog" else 0.0 for t in w.tokens] for w in dog_windows()]
    with pytest.raises(SimulationFailure, match="only baseline explanations"):
        asyncio.run(simulate_feature(backend, "the word dog", dog_windows(), 7, "llm", CFG))


def test_an_llm_simulator_accepts_a_baseline_explanation() -> None:
    server = start_loopback(responder=lambda kind, body: "Activations: none")
    try:
        text = f"{BASELINE_LABEL} ' dog' (9), '\\n' (2)"
        simulation, _ = asyncio.run(
            simulate_feature(anthropic_backend(server), text, dog_windows(), 7, "baseline", CFG)
        )
        user = server.requests[0].body["messages"][-1]["content"]
    finally:
        server.stop()
    assert user.startswith(f"Explanation: {text}\n") and simulation.mode == "sampled"
