"""Detection scoring and the scorer interface: the metrics against scikit-learn, the baseline judge on
windows whose truth is known, strict answer parsing, the golden prompt, batching and shuffling, the
sampled mode through the real Anthropic SDK and the logprob mode through the real OpenAI SDK (both
against a loopback server), re-asks and failures, the teacher-forced mode's contract."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Sequence

import numpy as np
import pytest
from golden.golden_helpers import assert_golden, golden_score_windows, render_request
from helpers_windows import make_sample, make_window
from loopback_llm import LoopbackServer, start_loopback
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from autointerp.baseline import baseline_explanation
from autointerp.config import RunConfig
from autointerp.errors import InputError
from autointerp.llm import LLMRequest, LLMResponse, TokenLogprob, make_backend
from autointerp.llm.base import BackendOptions, LLMBackend
from autointerp.records import FeatureSample, Usage, Window
from autointerp.scorers import (
    DetectionFailure,
    DetectionResult,
    ScoringItem,
    SimulationResult,
    make_scorer,
)
from autointerp.scorers.detection import (
    COLUMNS,
    DETECTION_ATTEMPTS,
    DetectionScorer,
    detection_order,
    prompt_batches,
    token_match_probability,
)
from autointerp.scorers.detection_prompt import (
    answer_slot_prefixes,
    answer_text,
    build_detection_request,
    detect_fewshot,
    detect_shared_prefix,
    excerpt_text,
    parse_answer_logprobs,
    parse_answers,
    yes_probability,
)
from autointerp.scorers.simulation import score_simulation
from autointerp.scoring import detection_scores
from autointerp.simulate import simulate_feature

CFG = RunConfig(sae="demo")

pytestmark = pytest.mark.usefixtures("no_llm_keys")


# A feature that fires exactly on " dog". Six score windows fire (top, interval and random ones), six
# do not; " cat" sits in half of each, so an explanation about cats is right exactly half the time.
SCORE_WINDOWS: list[tuple[list[str], list[float], str, int | None]] = [
    (["Her", " dog", " sleeps"], [0, 9, 0], "top", None),
    (["The", " cat", " and", " the", " dog"], [0, 0, 0, 0, 7], "top", None),
    ([" dog", " food"], [3, 0], "interval", 0),
    (["One", " cat", " one", " dog"], [0, 0, 0, 2], "interval", 1),
    (["walk", " the", " dog"], [0, 0, 4], "random", None),
    (["a", " cat", " saw", " a", " dog"], [0, 0, 0, 0, 5], "random", None),
    (["Rain", " again", "\n"], [0, 0, 0], "random", None),
    (["The", " cat", " purrs"], [0, 0, 0], "random", None),
    (["Stocks", " fell", "."], [0, 0, 0], "nonactivating", None),
    (["A", " cat", " nap"], [0, 0, 0], "nonactivating", None),
    (["def", " f", "():"], [0, 0, 0], "nonactivating", None),
    (["cat", "s", " and", " a", " cat"], [0, 0, 0, 0, 0], "nonactivating", None),
]


def dog_sample(extra: Sequence[Window] = ()) -> FeatureSample:
    explain = [
        make_window(["The", " dog", " barked"], [0, 8, 0], context_id=100),
        make_window(["A", " dog", " ran", " home"], [0, 6, 0, 0], context_id=101),
        make_window(["My", " cat", " slept"], [0, 0, 0], group="nonactivating", context_id=102),
    ]
    score = [
        make_window(tokens, acts, group=group, interval=interval, split="score", context_id=i)  # type: ignore[arg-type]
        for i, (tokens, acts, group, interval) in enumerate(SCORE_WINDOWS)
    ]
    return make_sample(explain + score + list(extra))


def cat_explanation() -> str:
    """Another feature's baseline explanation: the top tokens of a feature that fires on ' cat'."""
    windows = [make_window(["My", " cat", " slept"], [0, 6, 0]), make_window([" cat", "s"], [5, 1])]
    return baseline_explanation(windows, 6.0, "floor")


def run(coro):
    return asyncio.run(coro)


def detect(backend: LLMBackend, sample: FeatureSample, explanation: str, per_prompt: int = 8, source: str = "llm"):
    scorer = DetectionScorer(backend, CFG, windows_per_prompt=per_prompt)
    return run(scorer.score(ScoringItem(sample=sample, explanation=explanation, source=source)))


# ------------------------------------------------------------------------------------------- metrics
@pytest.mark.parametrize("seed", range(3))
def test_detection_metrics_agree_with_scikit_learn(seed: int) -> None:
    """The scorer's metrics come from autointerp.scoring.detection_scores; checked here where it is used."""
    rng = np.random.default_rng(seed)
    labels = rng.random(40) < 0.4
    p_yes = np.clip(labels * 0.3 + rng.random(40) * 0.7, 0, 1)
    said = p_yes >= 0.5
    got = detection_scores(labels, said, p_yes)
    assert got.balanced_accuracy == pytest.approx(balanced_accuracy_score(labels, said))
    assert got.precision == pytest.approx(precision_score(labels, said))
    assert got.recall == pytest.approx(recall_score(labels, said))
    assert got.f1 == pytest.approx(f1_score(labels, said))
    assert got.auroc == pytest.approx(roc_auc_score(labels, p_yes))


# ------------------------------------------------------------------------------------------- baseline judge
def test_baseline_detection_of_the_right_explanation_is_perfect() -> None:
    sample = dog_sample()
    right = baseline_explanation(sample.split("explain"), sample.stats.max_activation, "floor")
    assert "' dog'" in right and "' cat'" not in right
    result = detect(make_backend("baseline"), sample, right, source="baseline")
    assert isinstance(result, DetectionResult) and result.mode == "baseline" and result.calls == []
    assert result.labels == [acts != [0] * len(acts) and max(acts) > 0 for _, acts, _, _ in SCORE_WINDOWS]
    assert sum(result.labels) == 6  # random windows that fire count as positives
    assert result.said_yes == result.labels
    m = result.metrics
    assert (m.balanced_accuracy, m.precision, m.recall, m.f1, m.auroc) == (1.0, 1.0, 1.0, 1.0, 1.0)
    assert result.yes_rates["top"] == 1.0 and result.yes_rates["nonactivating"] == 0.0
    assert result.yes_rates["hard_negative"] is None and result.explanation_source == "baseline"


def test_baseline_detection_of_another_features_explanation_is_chance() -> None:
    result = detect(make_backend("baseline"), dog_sample(), cat_explanation(), source="other:3")
    assert result.metrics.balanced_accuracy == pytest.approx(0.5) and result.metrics.auroc == pytest.approx(0.5)
    assert result.metrics.precision == pytest.approx(0.5) and result.metrics.recall == pytest.approx(0.5)


def test_hard_negatives_expose_a_token_only_explanation() -> None:
    hard = [
        make_window(["Hot", " dog", " stand"], [0, 0, 0], group="hard_negative", split="score", context_id=50),
        make_window(["the", " dog", " days"], [0, 0, 0], group="hard_negative", split="score", context_id=51),
    ]
    sample = dog_sample(hard)
    right = baseline_explanation(sample.split("explain"), sample.stats.max_activation, "floor")
    result = detect(make_backend("baseline"), sample, right)
    assert result.yes_rates["hard_negative"] == 1.0  # the top token is there, the feature is not firing
    assert result.metrics.balanced_accuracy == pytest.approx((1.0 + 6 / 8) / 2)
    assert result.metrics.precision == pytest.approx(6 / 8)


def test_the_baseline_judge_reads_only_baseline_explanations() -> None:
    with pytest.raises(DetectionFailure, match="only baseline explanations"):
        detect(make_backend("baseline"), dog_sample(), "the word dog")


# ------------------------------------------------------------------------------------------- answers
@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("1: yes\n2: no\n3: yes", [True, False, True]),
        ("1: Yes\n2: NO.\n3:yes", [True, False, True]),
        ("**1: yes**\n**2: no**\n**3: no**", [True, False, False]),
        ("```\n1: no\n2: no\n3: no\n```", [False, False, False]),
        ("  1 : yes \n\n2: no\n3: no\n", [True, False, False]),
    ],
)
def test_parse_answers_accepts_valid_answers(answer: str, expected: list[bool]) -> None:
    assert parse_answers(answer, 3) == expected


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("", "answers for 0 excerpt"),
        ("1: yes\n2: no", "answers for 2 excerpt"),
        ("1: yes\n2: no\n3: no\n4: yes", "only excerpts 1..3"),
        ("1: yes\n3: no\n2: no", "found excerpt 3 after line 1"),
        ("1: yes\n1: no\n2: no", "found excerpt 1 after line 1"),
        ("2: yes\n1: no\n3: no", "found excerpt 2 first"),
        ("1: maybe\n2: no\n3: no", "found 'maybe'"),
        ("1: yes\n2: no\n3: no\nThese are my answers.", "is not 'N: yes'"),
        ("Matches: 1", "is not 'N: yes'"),
        ("1: yes, 2: no, 3: no", "is not 'N: yes'"),
        ("1: 1\n2: 0\n3: 0", "is not 'N: yes'"),
    ],
)
def test_parse_answers_rejects_each_invalid_answer(answer: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_answers(answer, 3)


def test_answer_text_is_the_slot_prefixes_with_words() -> None:
    verdicts = [True, False, False, True]
    words = [" yes" if v else " no" for v in verdicts]
    assert "".join(p + w for p, w in zip(answer_slot_prefixes(4), words)) == answer_text(verdicts)
    assert parse_answers(answer_text(verdicts), 4) == verdicts


def test_yes_probability_is_normalised_over_yes_and_no() -> None:
    top = {" yes": math.log(0.6), " Yes": math.log(0.1), " no": math.log(0.1), " maybe": math.log(0.2)}
    assert yes_probability(top) == pytest.approx(0.7 / 0.8)
    assert yes_probability({"no": 0.0}) == 0.0
    with pytest.raises(ValueError, match="neither yes nor no"):
        yes_probability({" maybe": 0.0})


def logprob_entries(verdicts: Sequence[bool], p_yes: Sequence[float]) -> list[dict]:
    """The answer as OpenAI-style tokens; the yes/no token carries both alternatives."""
    entries: list[dict] = []
    for i, (said, p) in enumerate(zip(verdicts, p_yes, strict=True)):
        if i:
            entries.append({"token": "\n", "logprob": 0.0, "top": {"\n": 0.0}})
        entries += [{"token": str(i + 1), "logprob": 0.0, "top": {}}, {"token": ":", "logprob": 0.0, "top": {}}]
        top = {" yes": math.log(p), " no": math.log(1 - p)}
        word = " yes" if said else " no"
        entries.append({"token": word, "logprob": top[word], "top": top})
    return entries


def as_response(entries: list[dict]) -> LLMResponse:
    return LLMResponse(
        text="".join(e["token"] for e in entries),
        logprobs=[TokenLogprob(**e) for e in entries],
        usage=Usage(),
        model="m",
    )


def test_parse_answer_logprobs_reads_p_yes_at_every_word() -> None:
    entries = logprob_entries([True, False, True], [0.9, 0.3, 0.6])
    said, p = parse_answer_logprobs(as_response(entries), 3)
    assert said == [True, False, True] and p == pytest.approx([0.9, 0.3, 0.6])


def test_parse_answer_logprobs_rejects_mismatches() -> None:
    entries = logprob_entries([True, False], [0.9, 0.3])
    with pytest.raises(ValueError, match="without logprobs"):
        parse_answer_logprobs(as_response(entries).model_copy(update={"logprobs": None}), 2)
    with pytest.raises(ValueError, match="do not spell"):
        parse_answer_logprobs(as_response(entries).model_copy(update={"text": "1: yes\n2: yes"}), 2)
    split = entries[:2] + [{"token": " y", "logprob": 0.0, "top": {}}, {"token": "es", "logprob": 0.0, "top": {}}]
    with pytest.raises(ValueError, match="answer token is ' y'"):
        parse_answer_logprobs(as_response(split + entries[3:]), 2)


# ------------------------------------------------------------------------------------------- prompt
def test_detection_request_matches_golden() -> None:
    windows = golden_score_windows()
    request = build_detection_request("the word dog", [w.tokens for w in windows], logprobs=True)
    extra = {"answer slot prefixes": repr(answer_slot_prefixes(len(windows)))}
    assert_golden("detect_request.txt", render_request(request, extra))


def test_detection_prompt_never_sees_activations_and_shares_its_prefix() -> None:
    windows = golden_score_windows()
    silent = [w.model_copy(update={"activations": [0.0] * len(w.tokens)}) for w in windows]
    a = build_detection_request("dogs", [w.tokens for w in windows], logprobs=False)
    b = build_detection_request("cats", [w.tokens for w in silent], logprobs=False)
    assert (a.system, a.prefix) == (b.system, b.prefix) == detect_shared_prefix()
    assert a.messages[0].content.replace("dogs", "cats") == b.messages[0].content


def test_excerpt_text_keeps_every_window_on_one_line() -> None:
    assert excerpt_text(["def", " f", "():", "\n", "\t", "return", "\r\n", "\x00"]) == "def f():↵⇥return␍↵\\x00"


def test_detection_order_depends_on_seed_and_feature_only() -> None:
    assert detection_order(12, 0, 3) == detection_order(12, 0, 3)
    assert detection_order(12, 0, 3) != detection_order(12, 1, 3)
    assert detection_order(12, 0, 3) != detection_order(12, 0, 4)
    assert sorted(detection_order(12, 0, 3)) == list(range(12))


def test_prompt_batches_are_balanced() -> None:
    assert [len(b) for b in prompt_batches(list(range(20)), 8)] == [7, 6, 7]
    assert [len(b) for b in prompt_batches(list(range(8)), 8)] == [8]
    assert sum(prompt_batches(list(range(9, 0, -1)), 4), []) == list(range(9, 0, -1))
    with pytest.raises(ValueError, match="at least 1"):
        prompt_batches([1, 2], 0)


# ------------------------------------------------------------------------------------------- through the SDKs
def excerpts_of(body: dict) -> list[str]:
    """The excerpts of the feature's turn (the last user turn with an explanation; re-asks come after it)."""
    texts = [
        m["content"] if isinstance(m["content"], str) else "".join(b.get("text", "") for b in m["content"])
        for m in body["messages"]
        if m["role"] == "user"
    ]
    user = [text for text in texts if text.startswith("Explanation:")][-1]
    return [line.split(": ", 1)[1] for line in user.split("\n") if line.startswith("Excerpt ")]


def dog_judge(kind: str, body: dict) -> str:
    """A judge that says yes to every excerpt with the word dog in it."""
    return answer_text([" dog" in text for text in excerpts_of(body)])


def anthropic_backend(server: LoopbackServer) -> LLMBackend:
    return make_backend(f"anthropic:claude-haiku-4-5@{server.url}", max_attempts=1, timeout_s=10.0)


def openai_backend(server: LoopbackServer) -> LLMBackend:
    return make_backend(f"openai:gpt-4o-mini@{server.openai_url}", max_attempts=1, timeout_s=10.0)


def test_sampled_mode_through_the_anthropic_sdk() -> None:
    sample = dog_sample()
    server = start_loopback(responder=dog_judge)
    try:
        result = detect(anthropic_backend(server), sample, "the word dog", per_prompt=5)
        bodies = [r.body for r in server.requests]
    finally:
        server.stop()
    windows = sample.split("score")
    assert result.mode == "sampled" and result.p_yes is None and len(bodies) == 3 == len(result.calls)
    assert sorted(len(excerpts_of(b)) for b in bodies) == [4, 4, 4]
    # every window was shown once, in the seeded order, and the verdicts land on the right windows
    order = detection_order(len(windows), CFG.sampler.seed, sample.feature)
    assert result.shown_order == order and order != sorted(order)
    shown = sorted((c.detail["batch"], c.detail["shown"]) for c in result.calls)
    assert sum((s for _, s in shown), []) == order
    assert result.said_yes == [" dog" in w.tokens for w in windows] == result.labels
    assert result.metrics.balanced_accuracy == 1.0 and result.metrics.auroc is None
    assert result.metrics.undefined["auroc"].startswith("no P(yes)")
    assert all(c.stage == "detect" and c.ok and c.detail["mode"] == "sampled" for c in result.calls)
    assert result.usage.input_tokens + result.usage.cached_input_tokens > 0
    columns = result.columns()
    assert set(columns) == {"scorer", "explanation_source", "backend", *COLUMNS, "balanced_accuracy"}
    assert columns["n_positive"] == 6 and columns["n_said_yes"] == 6 and columns["yes_rate_random"] == 0.5
    assert DetectionResult.model_validate_json(result.model_dump_json()) == result


def logprob_judge(kind: str, body: dict) -> dict:
    """An OpenAI-compatible judge: P(yes) 0.8 for excerpts with dog, 0.3 for cat, 0.1 otherwise."""
    assert body["logprobs"] is True and body["top_logprobs"] >= 2
    p = [0.8 if " dog" in t else 0.3 if " cat" in t else 0.1 for t in excerpts_of(body)]
    entries = logprob_entries([q >= 0.5 for q in p], p)
    return {"text": "".join(e["token"] for e in entries), "logprobs": entries}


def test_logprob_mode_through_the_openai_sdk() -> None:
    sample = dog_sample()
    server = start_loopback(responder=logprob_judge)
    try:
        result = detect(openai_backend(server), sample, "the word dog", per_prompt=8)
    finally:
        server.stop()
    windows = sample.split("score")
    expected = [0.8 if " dog" in w.tokens else 0.3 if " cat" in w.tokens else 0.1 for w in windows]
    assert result.mode == "logprob" and len(result.calls) == 2
    assert result.p_yes == pytest.approx(expected)
    assert result.said_yes == result.labels and result.metrics.auroc == 1.0


def test_malformed_answers_are_asked_again_then_fail() -> None:
    server = start_loopback(responder=lambda kind, body: "Matches: 1, 3")
    try:
        with pytest.raises(DetectionFailure, match="could not be read") as info:
            detect(anthropic_backend(server), dog_sample(), "dogs", per_prompt=12)
        bodies = [r.body for r in server.requests]
    finally:
        server.stop()
    calls = info.value.calls
    assert len(calls) == DETECTION_ATTEMPTS == len(bodies) and not any(c.ok for c in calls)
    first = 2 * len(detect_fewshot()) + 1  # worked examples, then the feature's turn
    assert [len(b["messages"]) for b in bodies] == [first, first + 2, first + 4]  # each re-ask: answer + error
    assert bodies[1]["messages"][first] == {"role": "assistant", "content": "Matches: 1, 3"}
    assert "is not 'N: yes'" in bodies[1]["messages"][first + 1]["content"]


def test_a_bad_answer_then_a_good_one_succeeds() -> None:
    answers = ["Excerpt 1 matches.", None]
    server = start_loopback(responder=lambda kind, body: answers.pop(0) or dog_judge(kind, body))
    try:
        result = detect(anthropic_backend(server), dog_sample(), "dogs", per_prompt=12)
    finally:
        server.stop()
    assert [c.ok for c in result.calls] == [False, True] and result.metrics.balanced_accuracy == 1.0
    assert result.usage == result.calls[0].usage + result.calls[1].usage


def test_one_failed_prompt_fails_the_feature_and_keeps_every_call() -> None:
    server = start_loopback(responder=dog_judge, faults=["ok", "500"])
    try:
        with pytest.raises(DetectionFailure, match=r"1 of 3 prompts failed") as info:
            detect(anthropic_backend(server), dog_sample(), "dogs", per_prompt=4)
    finally:
        server.stop()
    assert sorted(c.ok for c in info.value.calls) == [False, True, True]


def test_no_windows_or_no_explanation_fail_before_any_call() -> None:
    backend = make_backend("anthropic:claude-haiku-4-5@http://127.0.0.1:9")
    with pytest.raises(DetectionFailure, match="empty"):
        detect(backend, dog_sample(), "  \n")
    with pytest.raises(DetectionFailure, match="no windows"):
        detect(backend, make_sample([make_window(["a"], [1.0])]), "dogs")


# ------------------------------------------------------------------------------------------- forced mode
class FakeYesNo(LLMBackend):
    """In-process stand-in for a backend with `score_yes_no` (the contract the local model implements):
    P(yes) 0.7 for excerpts with dog, 0.2 otherwise."""

    supports_logprobs = True

    def __init__(self) -> None:
        super().__init__("fake-yes-no", "fake", BackendOptions())
        self.seen: list[tuple[LLMRequest, list[str]]] = []

    async def _call(self, request: LLMRequest) -> LLMResponse:
        raise AssertionError("forced detection must use score_yes_no")

    async def score_yes_no(self, request: LLMRequest, slot_prefixes: Sequence[str]) -> LLMResponse:
        self.seen.append((request, list(slot_prefixes)))
        lines = request.messages[-1].content.split("\n")
        p_yes = [0.7 if " dog" in line else 0.2 for line in lines if line.startswith("Excerpt ")]
        tops = [{"yes": math.log(p), "no": math.log(1 - p)} for p in p_yes]
        return LLMResponse(
            text="",
            logprobs=[TokenLogprob(token="no", logprob=0.0, top=top) for top in tops],
            usage=Usage(input_tokens=50),
            model="fake",
        )


def test_forced_mode_reads_p_yes_at_every_slot() -> None:
    backend = FakeYesNo()
    sample = dog_sample()
    result = detect(backend, sample, "the word dog", per_prompt=6)
    request, prefixes = backend.seen[0]
    order = detection_order(12, CFG.sampler.seed, sample.feature)
    windows = sample.split("score")
    assert prefixes == answer_slot_prefixes(6) and len(backend.seen) == 2
    assert request == build_detection_request("the word dog", [windows[i].tokens for i in order[:6]], logprobs=False)
    assert result.mode == "forced" and result.p_yes == pytest.approx([0.7 if lab else 0.2 for lab in result.labels])
    assert result.said_yes == result.labels and result.usage.input_tokens == 100


# ------------------------------------------------------------------------------------------- per-token mode
class FakeTokenJudge(LLMBackend):
    """In-process stand-in for a backend with `judge_tokens` and no `score_yes_no` (the contract the local
    model implements, autointerp.llm.local_judge): P(match) 0.9 for ' dog', 0.01 for anything else, as the
    levels {'0': log(1 - p), '10': log p}."""

    def __init__(self) -> None:
        super().__init__("fake-token-judge", "fake", BackendOptions())
        self.seen: list[tuple[str, list[list[str]]]] = []

    async def _call(self, request: LLMRequest) -> LLMResponse:
        raise AssertionError("per-token detection must use judge_tokens")

    async def judge_tokens(self, explanation: str, token_lists: Sequence[Sequence[str]]) -> LLMResponse:
        self.seen.append((explanation, [list(t) for t in token_lists]))
        p = [0.9 if token == " dog" else 0.01 for tokens in token_lists for token in tokens]
        tops = [{"0": math.log(1 - q), "10": math.log(q)} for q in p]
        return LLMResponse(
            text="",
            logprobs=[TokenLogprob(token="0", logprob=0.0, top=t) for t in tops],
            usage=Usage(input_tokens=9),
            model="fake",
        )


def test_token_mode_reads_a_windows_p_yes_as_its_highest_token_match() -> None:
    backend = FakeTokenJudge()
    sample = dog_sample()
    result = detect(backend, sample, "the word dog")
    windows = sample.split("score")
    assert result.mode == "tokens" and len(backend.seen) == 1  # one call for every window
    assert backend.seen[0] == ("the word dog", [w.tokens for w in windows])
    assert result.p_yes == pytest.approx([0.9 if " dog" in w.tokens else 0.01 for w in windows])
    assert result.said_yes == result.labels
    assert (result.metrics.balanced_accuracy, result.metrics.auroc) == (1.0, 1.0)
    assert result.calls[0].stage == "detect" and result.usage.input_tokens == 9


def test_token_match_probability_normalises_the_levels() -> None:
    assert token_match_probability({"0": math.log(0.3), "10": math.log(0.1)}) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="level '0'"):
        token_match_probability({"10": 0.0})


@pytest.mark.slow
def test_local_backend_detects_offline_with_the_right_explanation_above_the_wrong_one() -> None:
    backend = make_backend("local")
    sample = dog_sample()
    right = detect(backend, sample, 'the word "dog"')
    wrong = detect(backend, sample, 'the word "stocks"')
    assert right.mode == "tokens" and right.metrics.auroc is not None and wrong.metrics.auroc is not None
    assert right.metrics.auroc >= 0.9 and right.metrics.auroc > wrong.metrics.auroc + 0.3


# ------------------------------------------------------------------------------------------- the interface
def test_simulation_scorer_gives_what_simulate_and_score_give() -> None:
    sample = dog_sample()
    backend = make_backend("baseline")
    text = baseline_explanation(sample.split("explain"), sample.stats.max_activation, "floor")
    result = run(make_scorer("simulation", backend, CFG).score(ScoringItem(sample=sample, explanation=text)))
    windows = sample.split("score")
    simulation, _ = run(simulate_feature(backend, text, windows, sample.feature, "llm", CFG))
    direct = score_simulation(sample, simulation, CFG)  # the run's own scoring: threshold per mode, null
    assert direct.n_permutations == CFG.scoring.n_permutations > 0
    assert isinstance(result, SimulationResult) and result.simulation == simulation and result.scores == direct
    assert result.columns()["correlation"] == direct.correlation and result.columns()["scorer"] == "simulation"


def test_make_scorer_knows_its_scorers() -> None:
    backend = make_backend("baseline")
    assert isinstance(make_scorer("detection", backend, CFG), DetectionScorer)
    with pytest.raises(InputError, match="detection, simulation"):
        make_scorer("fuzzing", backend, CFG)
