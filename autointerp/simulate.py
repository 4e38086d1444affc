"""Simulate one feature: from an explanation alone, predict a 0..10 activation for every token of the
feature's held-out (score-split) windows.

Windows are shown in a seeded shuffle (`shuffle_order`, recorded in the call records) and the
predictions come back in the caller's order. Nothing in the prompt says how many windows fire.
The request is `system` + worked examples (prompts/simulate_fewshot.json, as user/assistant turns,
identical for every feature) + one user turn with the explanation and the windows.

Modes, chosen from the backend:
- "baseline": the baseline backend, no LLM (autointerp.baseline.baseline_simulation).
- "logprob" (backend.supports_logprobs): the answer is the listing `Excerpt N:` then `token<TAB>value`
  lines. A prediction is the expected value of the distribution over the levels '0'..'10' at each value
  slot, normalised over those 11 outcomes (`expected_level`).
    * A backend with `judge_tokens` (the local model) judges each token from the explanation alone,
      without its window (`TokenJudge`, autointerp.llm.local_judge): a 135M model cannot follow the
      listing prompt, and context-free judging is what it can do (benchmarks/local_simulator.py).
    * A backend with `score_value_slots` teacher-forces the whole listing in one forward pass and
      returns the level distribution at every slot (`SlotScorer`).
    * Otherwise (OpenAI-compatible servers) the model writes the listing with top_logprobs and each
      slot's distribution is read from the token that carries its value (`parse_listing`).
- "sampled" (no logprobs, e.g. Anthropic): a compact sparse answer, one line
  `Activations: 2:5=7, 3:1=10` (excerpt:token=value, both 1-based, only tokens above 0) or
  `Activations: none`, validated strictly (`parse_sparse`).
An unreadable answer is asked again with the error shown, at most SIMULATION_ATTEMPTS answers in all;
then `SimulationFailure` (with the calls made) is raised. It is recorded as a failure, never as zeros.
"""

from __future__ import annotations

import bisect
import math
import random
import re
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Literal, Protocol, cast, runtime_checkable

from autointerp.baseline import baseline_simulation
from autointerp.config import RunConfig
from autointerp.llm.base import LLMBackend, LLMCallError, LLMRequest, LLMResponse, Message, TokenLogprob
from autointerp.llm.baseline import BaselineBackend
from autointerp.llm_calls import LLMStageFailure, ask_until_valid, failed_call, record_call, total_usage
from autointerp.prompts import (
    escape_token,
    excerpt_header,
    excerpts_block,
    load_text,
    render_file,
    simulate_fewshot,
    token_lines,
)
from autointerp.records import CallRecord, Simulation, Window

SimulationMode = Literal["logprob", "sampled"]

SPARSE_PREFIX = "Activations:"  # the sparse answer format the prompt asks for and the parser reads
SPARSE_NONE = "none"
SIMULATION_ATTEMPTS = 3  # answers asked for: the first and two re-asks after a bad answer
TOP_LOGPROBS = 5  # alternatives per answer token: the likeliest levels at a value slot (see docs/benchmarks.md)
LEVELS = tuple(str(level) for level in range(11))

_SPARSE_ITEM = re.compile(r"^(\d+)\s*:\s*(\d+)\s*=\s*(\d+)$")
_HEADER = re.compile(r"^Excerpt (\d+):$")
_SLOT = re.compile(r"\t *(\d+)")


class SimulationFailure(LLMStageFailure):
    stage = "simulate"


@runtime_checkable
class SlotScorer(Protocol):
    """A backend that reads the level distribution at every value slot of a teacher-forced answer.

    `slot_prefixes[i]` is the answer text between value slot i-1 and slot i (the first one starts the
    answer). The response has one TokenLogprob per slot whose `top` maps each level '0'..'10' to its
    log-probability (any normalisation), plus the usage of the call.
    """

    async def score_value_slots(self, request: LLMRequest, slot_prefixes: Sequence[str]) -> LLMResponse: ...


@runtime_checkable
class TokenJudge(Protocol):
    """A backend that gives every token a level distribution from the explanation alone, without its
    window (context-free). The response has one TokenLogprob per token of `token_lists` (flattened, in
    order) whose `top` maps levels '0'..'10' to log-probabilities, plus the usage of the call. Preferred
    over `score_value_slots` when a backend has both.
    """

    async def judge_tokens(self, explanation: str, token_lists: Sequence[Sequence[str]]) -> LLMResponse: ...


# --------------------------------------------------------------------------------------------------
# Layout


def shuffle_order(n: int, seed: int, feature: int) -> list[int]:
    """order[k] = index (in the caller's list) of the window shown k-th. Seeded by run seed and feature."""
    order = list(range(n))
    random.Random(f"simulate:{seed}:{feature}").shuffle(order)
    return order


def one_line(text: str) -> str:
    return " ".join(text.split())


def listing_slot_prefixes(token_lists: Sequence[Sequence[str]]) -> list[str]:
    """The listing answer cut at its value slots: prefixes[i] is the text before slot i (after the
    value of slot i-1). Excerpts are numbered from 1 and separated by a blank line."""
    prefixes: list[str] = []
    for e, tokens in enumerate(token_lists):
        for t, token in enumerate(tokens):
            if t == 0:
                lead = ("\n\n" if e else "") + excerpt_header(e + 1) + "\n"
            else:
                lead = "\n"
            prefixes.append(f"{lead}{escape_token(token)}\t")
    return prefixes


def listing_answer(token_lists: Sequence[Sequence[str]], levels: Sequence[Sequence[int]]) -> str:
    values = [v for row in levels for v in row]
    return "".join(f"{p}{v}" for p, v in zip(listing_slot_prefixes(token_lists), values, strict=True))


def sparse_answer(levels: Sequence[Sequence[int]]) -> str:
    items = [f"{e + 1}:{t + 1}={v}" for e, row in enumerate(levels) for t, v in enumerate(row) if v > 0]
    return f"{SPARSE_PREFIX} {', '.join(items) if items else SPARSE_NONE}"


def simulate_user_message(explanation: str, token_lists: Sequence[Sequence[str]], mode: SimulationMode) -> str:
    blocks = [token_lines(tokens, numbered=mode == "sampled") for tokens in token_lists]
    return render_file("simulate_user.md", explanation=one_line(explanation), excerpts=excerpts_block(blocks))


@cache
def simulate_shared_prefix(mode: SimulationMode) -> tuple[str, tuple[Message, ...]]:
    """System prompt and the worked examples for a mode: the same bytes for every feature."""
    prefix: list[Message] = []
    for example in simulate_fewshot():
        tokens = [excerpt.tokens for excerpt in example.excerpts]
        levels = [excerpt.levels for excerpt in example.excerpts]
        answer = listing_answer(tokens, levels) if mode == "logprob" else sparse_answer(levels)
        prefix.append(Message(role="user", content=simulate_user_message(example.explanation, tokens, mode)))
        prefix.append(Message(role="assistant", content=answer))
    system = load_text("simulate_system_logprob.md" if mode == "logprob" else "simulate_system_sparse.md")
    return system, tuple(prefix)


def build_simulation_request(explanation: str, windows: Sequence[Window], mode: SimulationMode) -> LLMRequest:
    """The simulator request for windows in the order given (already shuffled by the caller)."""
    if not one_line(explanation):
        raise ValueError("build_simulation_request: the explanation is empty; expected some text")
    token_lists = [w.tokens for w in windows]
    system, prefix = simulate_shared_prefix(mode)
    n_tokens = sum(len(tokens) for tokens in token_lists)
    if mode == "logprob":
        # The listing repeats every token: ~3 tokens a line plus headers, with room to spare.
        extra = {
            "max_tokens": 8 * n_tokens + 16 * len(windows) + 32,
            "logprobs": True,
            "top_logprobs": TOP_LOGPROBS,
        }
    else:
        extra = {"max_tokens": min(8192, 64 + 8 * n_tokens)}
    return LLMRequest(
        system=system,
        prefix=prefix,
        messages=(Message(role="user", content=simulate_user_message(explanation, token_lists, mode)),),
        **extra,
    )


# --------------------------------------------------------------------------------------------------
# Reading answers


def parse_sparse(text: str, lengths: Sequence[int]) -> list[list[float]]:
    """Predictions from a sparse answer, one list per excerpt (lengths[i] tokens each), 0 where unlisted.

    Accepts exactly one line `Activations: none` or `Activations: e:t=v, ...` (e, t 1-based, v 0..10,
    each e:t at most once), possibly wrapped in markdown emphasis or a code fence. Anything else raises
    ValueError naming the problem, so the model can be asked again.
    """
    lines = [line.strip().strip("`*_").strip() for line in text.strip().splitlines()]
    lines = [line for line in lines if line and not line.startswith("```") and line != "```"]
    answers = [line for line in lines if line.lower().startswith(SPARSE_PREFIX.lower())]
    if len(answers) != 1:
        found = "no line" if not answers else f"{len(answers)} lines"
        raise ValueError(f'found {found} starting with "{SPARSE_PREFIX}"; expected exactly one')
    extra = [line for line in lines if line is not answers[0]]
    if extra:
        raise ValueError(f"found other text besides the answer line ({extra[0][:60]!r}); expected the one line only")
    body = answers[0][len(SPARSE_PREFIX) :].strip().strip("`*_").strip()
    predictions = [[0.0] * n for n in lengths]
    if body.rstrip(".").lower() == SPARSE_NONE:
        return predictions
    if not body:
        raise ValueError(f'found nothing after "{SPARSE_PREFIX}"; expected items like 2:5=7, or {SPARSE_NONE}')
    seen: set[tuple[int, int]] = set()
    for item in body.rstrip(".").split(","):
        match = _SPARSE_ITEM.match(item.strip())
        if match is None:
            raise ValueError(f"item {item.strip()!r} is not excerpt:token=value (e.g. 2:5=7)")
        e, t, v = (int(g) for g in match.groups())
        if not 1 <= e <= len(lengths):
            raise ValueError(f"item {item.strip()!r}: there is no excerpt {e}; excerpts are 1..{len(lengths)}")
        if not 1 <= t <= lengths[e - 1]:
            raise ValueError(f"item {item.strip()!r}: excerpt {e} has tokens 1..{lengths[e - 1]}, not {t}")
        if not 0 <= v <= 10:
            raise ValueError(f"item {item.strip()!r}: value {v} is outside 0..10")
        if (e, t) in seen:
            raise ValueError(f"item {item.strip()!r}: excerpt {e} token {t} is given twice")
        seen.add((e, t))
        predictions[e - 1][t - 1] = float(v)
    return predictions


def level_distribution(top: Mapping[str, float]) -> dict[int, float]:
    """Probabilities of the levels 0..10 among `top` (token -> logprob; whitespace around a token is
    ignored, e.g. '\\t7' counts as 7), normalised over the levels found. ValueError if none is there."""
    mass: dict[int, float] = {}
    for token, logprob in top.items():
        key = token.strip()
        if key in LEVELS and math.isfinite(logprob):
            mass[int(key)] = mass.get(int(key), 0.0) + math.exp(logprob)
    total = sum(mass.values())
    if not mass or total <= 0:
        raise ValueError(f"no level 0..10 among the alternatives {sorted(top)[:8]}")
    return {level: p / total for level, p in mass.items()}


def expected_level(top: Mapping[str, float]) -> float:
    """Expected value over the levels 0..10 at one slot, normalised over those outcomes; in [0, 10]."""
    dist = level_distribution(top)
    return min(10.0, max(0.0, sum(level * p for level, p in dist.items())))


def _split_one_ten(slot: TokenLogprob, following: TokenLogprob | None) -> dict[str, float]:
    """For tokenizers that write 10 as '1' '0': when the chosen value starts with '1' and the next
    token's alternatives are known, split the mass of '1' into 1 and 10. Otherwise '1' counts as 1."""
    top = dict(slot.top) or {slot.token: slot.logprob}
    one = next((lp for tok, lp in top.items() if tok.strip() == "1"), None)
    if one is None or following is None or slot.token.strip() != "1" or "10" in {t.strip() for t in top}:
        return top
    after = following.top or {following.token: following.logprob}
    p_zero = sum(math.exp(lp) for tok, lp in after.items() if tok.startswith("0"))
    p_zero = min(max(p_zero, 1e-12), 1 - 1e-12)
    top = {tok: lp for tok, lp in top.items() if tok.strip() != "1"}
    top["1"] = one + math.log(1 - p_zero)
    top["10"] = one + math.log(p_zero)
    return top


def parse_listing(response: LLMResponse, token_lists: Sequence[Sequence[str]]) -> list[list[float]]:
    """Expected levels from a generated listing with logprobs, one list per excerpt.

    The text must hold every excerpt in order ("Excerpt N:"), every token line (the token as shown,
    compared without surrounding whitespace) and an integer 0..10 after its tab. The value slots are
    then found in the logprob token stream (a tab, then the value's first digit; tokens are escaped so
    no other raw tab occurs) and each slot's level distribution is read from the token carrying it.
    Token texts are not used to locate anything else: providers may split non-ASCII characters into
    byte fragments there. ValueError on any mismatch.
    """
    values = _listing_values(response.text, token_lists)
    if not response.logprobs:
        raise ValueError("the answer came without logprobs; expected logprobs for every answer token")
    pieces = [entry.token for entry in response.logprobs]
    starts = [0]
    for piece in pieces:
        starts.append(starts[-1] + len(piece))
    slots = list(_SLOT.finditer("".join(pieces)))
    flat = [v for row in values for v in row]
    if len(slots) != len(flat) or any(m.group(1) != str(v) for m, v in zip(slots, flat)):
        raise ValueError(
            f"the logprob tokens hold {len(slots)} values after tabs and the text {len(flat)}; expected the same"
        )
    levels = []
    for match in slots:
        k = bisect.bisect_right(starts, match.start(1)) - 1
        following = response.logprobs[k + 1] if k + 1 < len(response.logprobs) else None
        levels.append(expected_level(_split_one_ten(response.logprobs[k], following)))
    it = iter(levels)
    return [[next(it) for _ in row] for row in values]


def _listing_values(text: str, token_lists: Sequence[Sequence[str]]) -> list[list[int]]:
    """The integer values of a listing answer, checked line by line against the excerpts' tokens."""
    values: list[list[int]] = [[] for _ in token_lists]
    excerpt = -1
    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped:
            continue
        header = _HEADER.match(stripped)
        if header:
            number = int(header.group(1))
            if number != excerpt + 2 or number > len(token_lists):
                raise ValueError(
                    f"found {stripped!r} after excerpt {excerpt + 1}; expected excerpts 1..{len(token_lists)} in order"
                )
            excerpt = number - 1
            continue
        if "\t" not in line or excerpt < 0:
            raise ValueError(f"line {stripped[:60]!r} is neither an excerpt header nor token<TAB>value")
        token_text, _, value = line.rpartition("\t")
        row, tokens = values[excerpt], token_lists[excerpt]
        where = f"excerpt {excerpt + 1} line {len(row) + 1}"
        if len(row) >= len(tokens):
            raise ValueError(f"excerpt {excerpt + 1} has more lines than its {len(tokens)} tokens")
        if token_text.strip() != escape_token(tokens[len(row)]).strip():
            raise ValueError(f"{where}: token {token_text!r}; expected {escape_token(tokens[len(row)])!r}")
        if value.strip() not in LEVELS:
            raise ValueError(f"{where}: value {value!r} is not an integer 0..10")
        row.append(int(value.strip()))
    for e, (row, tokens) in enumerate(zip(values, token_lists, strict=True)):
        if len(row) != len(tokens):
            raise ValueError(f"excerpt {e + 1} has {len(row)} token lines; expected {len(tokens)}")
    return values


# --------------------------------------------------------------------------------------------------
# One feature


def simulation_mode(backend: LLMBackend) -> Literal["baseline", "logprob", "sampled"]:
    if isinstance(backend, BaselineBackend):
        return "baseline"
    return "logprob" if backend.supports_logprobs else "sampled"


async def simulate_feature(
    backend: LLMBackend,
    explanation_text: str,
    windows: Sequence[Window],
    feature: int,
    source: str,
    cfg: RunConfig,
) -> tuple[Simulation, list[CallRecord]]:
    """Predict 0..10 activations for every token of `windows` from `explanation_text` alone.

    source: which explanation this is ('llm', 'baseline', 'other:<feature>'), recorded as is.
    cfg: the run config (sampler.seed seeds the shuffle).
    Returns the Simulation (predictions in the order of `windows`) and the calls made; raises
    SimulationFailure (with the calls) when no valid prediction comes back.
    """
    if not windows or any(not w.tokens for w in windows):
        raise SimulationFailure(
            f"simulate: feature {feature}: found no windows or an empty window; expected tokens to predict"
        )
    mode = simulation_mode(backend)
    if mode == "baseline":
        try:
            predictions = baseline_simulation(explanation_text, windows)
        except ValueError as exc:
            raise SimulationFailure(
                f"simulate: feature {feature}: the baseline simulator reads only baseline explanations: {exc}"
            ) from None
        simulation = Simulation(
            feature=feature,
            explanation_source=source,
            backend=backend.name,
            mode="baseline",
            predictions=predictions,
        )
        return simulation, []
    if not one_line(explanation_text):
        raise SimulationFailure(f"simulate: feature {feature}: the explanation is empty; nothing to simulate")

    order = shuffle_order(len(windows), cfg.sampler.seed, feature)
    shown = [windows[i] for i in order]
    token_lists = [w.tokens for w in shown]
    detail = {"mode": mode, "source": source, "shuffle_order": order}
    request = build_simulation_request(explanation_text, shown, mode)

    if mode == "logprob" and isinstance(backend, TokenJudge | SlotScorer):
        shown_predictions, calls = await _score_slots(backend, request, explanation_text, token_lists, feature, detail)
    else:
        lengths = [len(tokens) for tokens in token_lists]
        shown_predictions, _, calls = await ask_until_valid(
            backend,
            request,
            (lambda r: parse_listing(r, token_lists))
            if mode == "logprob"
            else (lambda r: parse_sparse(r.text, lengths)),
            stage="simulate",
            feature=feature,
            retry_template="simulate_retry.md",
            failure=SimulationFailure,
            max_answers=SIMULATION_ATTEMPTS,
            detail=detail,
        )

    predictions: list[list[float]] = [[] for _ in windows]
    for position, index in enumerate(order):
        predictions[index] = shown_predictions[position]
    usage, cost = total_usage(calls)
    simulation = Simulation(
        feature=feature,
        explanation_source=source,
        backend=backend.name,
        mode=mode,
        predictions=predictions,
        usage=usage,
        cost_usd=cost,
    )
    return simulation, calls


async def _score_slots(
    backend: LLMBackend,
    request: LLMRequest,
    explanation: str,
    token_lists: list[list[str]],
    feature: int,
    detail: dict,
) -> tuple[list[list[float]], list[CallRecord]]:
    """Teacher-forced logprob mode: one call, one level distribution per token (no re-asks: nothing
    is generated, so nothing can come back malformed but a wrong number of slots). A TokenJudge is
    recorded with `request` (the listing it did not read) and detail["judge"] saying so."""
    try:
        if isinstance(backend, TokenJudge):
            detail = {**detail, "judge": "per-token, context-free: the listing request was not sent"}
            response = await backend.judge_tokens(explanation, token_lists)
        else:
            response = await cast(SlotScorer, backend).score_value_slots(request, listing_slot_prefixes(token_lists))
    except LLMCallError as exc:
        call = failed_call("simulate", feature, backend, request, exc, detail)
        raise SimulationFailure(f"simulate: feature {feature}: {exc}", [call]) from exc
    n_tokens = sum(len(tokens) for tokens in token_lists)
    try:
        flat = [expected_level(slot.top) for slot in response.logprobs or []]
        if len(flat) != n_tokens:
            raise ValueError(f"{backend.name} returned {len(flat)} slot distributions for {n_tokens} tokens")
    except ValueError as exc:
        call = record_call("simulate", feature, backend, request, response, error=str(exc), detail=detail)
        raise SimulationFailure(f"simulate: feature {feature}: {exc}", [call]) from None
    it = iter(flat)
    predictions = [[next(it) for _ in tokens] for tokens in token_lists]
    return predictions, [record_call("simulate", feature, backend, request, response, detail=detail)]
