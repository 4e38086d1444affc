"""What the detection judge reads and writes: the request for a batch of windows, and strict readers of
its answer (text, or text with logprobs).

The request is `system` + worked examples (prompts/detect_fewshot.json, identical for every feature)
+ one user turn: `Explanation: ...`, then one line per window, `Excerpt N: <text>`. The text is the
window's tokens joined, with newlines, tabs and other control characters made visible, so every window
is one line. The answer is one line per window, in order:

    1: yes
    2: no

`answer_slot_prefixes` cuts that answer before each yes/no word (`"1:"`, `"\\n2:"`, ...), the form a
teacher-forcing backend (`YesNoScorer`) needs; the word after a prefix is " yes" or " no".
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Mapping, Sequence
from functools import cache

from pydantic import BaseModel, Field

from autointerp.errors import InputError, expected
from autointerp.llm.base import LLMRequest, LLMResponse, Message
from autointerp.prompts import excerpt_header, load_json, load_text, render_file, visible_text

YES, NO = "yes", "no"
TOP_LOGPROBS = 5  # yes and no are the two likeliest answers at a slot; a few alternatives suffice

_LINE = re.compile(r"^(\d+)\s*:\s*([A-Za-z]+)\.?$")
_SLOT = re.compile(r"(?:^|\n)[ \t]*\d+[ \t]*:[ \t]*")  # where a yes/no word starts in an answer


def excerpt_text(tokens: Sequence[str]) -> str:
    """A window as one line: its tokens joined, newline/tab/CR shown as ↵ ⇥ ␍, other control characters
    as \\xNN (spaces stay spaces: the judge reads running text, not token boundaries)."""
    return visible_text("".join(tokens))


def one_line(text: str) -> str:
    return " ".join(text.split())


def detect_user_message(explanation: str, texts: Sequence[str]) -> str:
    lines = "\n".join(f"{excerpt_header(i + 1)} {text}" for i, text in enumerate(texts))
    return render_file("detect_user.md", explanation=one_line(explanation), excerpts=lines)


def answer_text(matches: Sequence[bool]) -> str:
    """The answer the judge should give for these verdicts (also the worked example's answer)."""
    return "\n".join(f"{i + 1}: {YES if match else NO}" for i, match in enumerate(matches))


def answer_slot_prefixes(n: int) -> list[str]:
    """The answer for n windows cut before each yes/no word: prefixes[i] precedes the word of window i+1.
    `"".join(p + " " + word ...)` is `answer_text`."""
    return [f"{'' if i == 0 else chr(10)}{i + 1}:" for i in range(n)]


# --------------------------------------------------------------------------------------------------
# Few-shot data and requests


class DetectExample(BaseModel):
    text: str = Field(min_length=1, description="the excerpt as plain text (control characters are shown as marks)")
    match: bool = Field(description="the answer the judge should give: does the explanation describe it")


class DetectFewShot(BaseModel):
    explanation: str = Field(min_length=1)
    excerpts: list[DetectExample] = Field(min_length=2)


@cache
def detect_fewshot() -> tuple[DetectFewShot, ...]:
    """The judge's worked examples (prompts/detect_fewshot.json), in the order they are shown."""
    raw = load_json("detect_fewshot.json")
    try:
        return tuple(DetectFewShot(explanation=e["explanation"], excerpts=e["excerpts"]) for e in raw["examples"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(
            expected(
                "Few-shot data prompts/detect_fewshot.json",
                f"an example that does not fit ({exc})",
                '{"examples": [{"explanation": text, "excerpts": [{"text": text, "match": true or false}, ...]}, '
                "...]} with 2+ excerpts each",
            )
        ) from None


@cache
def detect_shared_prefix() -> tuple[str, tuple[Message, ...]]:
    """System prompt and worked examples: the same bytes for every feature (provider prompt caching)."""
    prefix: list[Message] = []
    for example in detect_fewshot():
        texts = [excerpt_text([e.text]) for e in example.excerpts]
        prefix.append(Message(role="user", content=detect_user_message(example.explanation, texts)))
        prefix.append(Message(role="assistant", content=answer_text([e.match for e in example.excerpts])))
    return load_text("detect_system.md"), tuple(prefix)


def build_detection_request(explanation: str, token_lists: Sequence[Sequence[str]], *, logprobs: bool) -> LLMRequest:
    """The judge's request for windows in the order given (already shuffled by the caller)."""
    if not one_line(explanation):
        raise ValueError("build_detection_request: the explanation is empty; expected some text")
    if not token_lists:
        raise ValueError("build_detection_request: found no windows; expected at least one")
    system, prefix = detect_shared_prefix()
    user = detect_user_message(explanation, [excerpt_text(tokens) for tokens in token_lists])
    extra = {"logprobs": True, "top_logprobs": TOP_LOGPROBS} if logprobs else {}
    return LLMRequest(
        system=system,
        prefix=prefix,
        messages=(Message(role="user", content=user),),
        max_tokens=16 + 8 * len(token_lists),  # "12: yes\n" is ~5 tokens; room for a stray space or two
        **extra,
    )


# --------------------------------------------------------------------------------------------------
# Reading answers


def parse_answers(text: str, n: int) -> list[bool]:
    """The verdicts of an answer for n windows: exactly the lines `1: yes|no` .. `n: yes|no`, in order.

    Case, markdown emphasis, a code fence and a final period are tolerated; anything else (a missing,
    repeated or extra line, a word other than yes/no, other text) raises ValueError naming it, so the
    judge can be asked again.
    """
    lines = [line.strip().strip("`*_").strip() for line in text.strip().splitlines()]
    lines = [line for line in lines if line and not line.startswith("```")]
    verdicts: list[bool] = []
    for line in lines:
        match = _LINE.match(line.replace("*", "").replace("_", ""))
        if match is None:
            raise ValueError(f"line {line[:60]!r} is not 'N: yes' or 'N: no'; expected one such line per excerpt")
        number, word = int(match.group(1)), match.group(2).lower()
        if number != len(verdicts) + 1:
            where = f"after line {len(verdicts)}" if verdicts else "first"
            raise ValueError(f"found excerpt {number} {where}; expected the excerpts 1..{n} in order, once each")
        if number > n:
            raise ValueError(f"found a line for excerpt {number}; there are only excerpts 1..{n}")
        if word not in (YES, NO):
            raise ValueError(f"excerpt {number}: found {match.group(2)!r}; expected yes or no")
        verdicts.append(word == YES)
    if len(verdicts) != n:
        raise ValueError(f"found answers for {len(verdicts)} excerpt(s); expected one line for each of the {n}")
    return verdicts


def yes_probability(top: Mapping[str, float]) -> float:
    """P(yes) normalised over yes and no among `top` (token -> logprob; case, surrounding whitespace and
    a leading colon are ignored, so ' Yes' and ':yes' count). ValueError if neither word is there."""
    mass = {YES: 0.0, NO: 0.0}
    for token, logprob in top.items():
        key = token.strip().lstrip(":").strip().lower()
        if key in mass and math.isfinite(logprob):
            mass[key] += math.exp(logprob)
    total = mass[YES] + mass[NO]
    if total <= 0:
        raise ValueError(f"neither yes nor no among the alternatives {sorted(top)[:8]}")
    return mass[YES] / total


def parse_answer_logprobs(response: LLMResponse, n: int) -> tuple[list[bool], list[float]]:
    """Verdicts and P(yes) per window from an answer generated with logprobs.

    The text must pass `parse_answers`; the logprob tokens must spell the same text, and the token
    where each yes/no word starts carries that window's alternatives (`yes_probability`). ValueError
    on any mismatch.
    """
    verdicts = parse_answers(response.text, n)
    if not response.logprobs:
        raise ValueError("the answer came without logprobs; expected logprobs for every answer token")
    pieces = [entry.token for entry in response.logprobs]
    joined = "".join(pieces)
    if joined != response.text:
        raise ValueError("the logprob tokens do not spell the answer text; expected the same characters")
    starts = [0]
    for piece in pieces:
        starts.append(starts[-1] + len(piece))
    p_yes: list[float] = []
    for slot in _SLOT.finditer(joined):
        entry = response.logprobs[bisect.bisect_right(starts, slot.end()) - 1]  # the token holding the word
        if entry.token.strip().lstrip(":").strip().lower() not in (YES, NO):
            raise ValueError(f"excerpt {len(p_yes) + 1}: the answer token is {entry.token!r}; expected yes or no")
        top = dict(entry.top)
        top.setdefault(entry.token, entry.logprob)  # the chosen token counts even when not listed
        p_yes.append(yes_probability(top))
    if len(p_yes) != n:
        raise ValueError(f"found {len(p_yes)} answer slots in the logprob tokens; expected {n}")
    return verdicts, p_yes
