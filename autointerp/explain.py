"""Explain one feature: show the explainer LLM the feature's explanation-split windows, read back a
short explanation.

The request is `system` (prompts/explain_system.md) + `prefix` (eight worked features of different kinds
from prompts/explain_fewshot.json, as user/assistant turns) + one user turn with this feature's windows.
System and prefix are byte-identical for every feature, so providers serve them from their prompt
cache. Each window is one token per line, `token<TAB>level`, the level being the raw activation
quantised to 0..10 against the feature's max (`scoring.quantise`, rule from the run config); tokens are
escaped so each stays on one line (autointerp.prompts.escape_token).

The answer is one line, "Explanation: <short phrase>"; `parse_explanation` reads it robustly and an
unreadable answer is asked again with the problem stated (at most `EXPLAIN_ATTEMPTS` answers in all).
A feature whose explanation fails raises `ExplanationFailure`, which carries the calls made so their
cost is still recorded; the caller records the failure, never a score.

The baseline backend (autointerp.llm.baseline) makes no call: its explanation is the feature's top
tokens (autointerp.baseline). One explanation per call here; best-of-n, which also needs the simulator
to judge its candidates, composes this stage with simulate one floor up, in autointerp.best_of.
Asking, re-asking and recording the calls is shared with the other stages (autointerp.llm_calls).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from functools import cache

from autointerp.baseline import baseline_explanation, baseline_input_hash
from autointerp.config import RunConfig
from autointerp.llm.base import LLMBackend, LLMRequest, Message
from autointerp.llm.baseline import BaselineBackend
from autointerp.llm_calls import LLMStageFailure, ask_until_valid, total_usage
from autointerp.prompts import excerpts_block, explain_fewshot, load_text, render_file, token_lines
from autointerp.records import CallRecord, Explanation, FeatureSample, Window
from autointerp.scoring import QuantiseRule, quantise

EXPLANATION_PREFIX = "Explanation:"  # the answer format the prompt asks for and the parser looks for
MAX_EXPLANATION_CHARS = 200
EXPLAIN_ATTEMPTS = 3  # answers asked for per explanation: the first and two re-asks after a bad answer


class ExplanationFailure(LLMStageFailure):
    stage = "explain"


# --------------------------------------------------------------------------------------------------
# The prompt


def excerpt_lines(window: Window, max_activation: float, rule: QuantiseRule) -> str:
    """One window as `token<TAB>level` lines, levels 0..10 against the feature's max (raw scale)."""
    levels = quantise(window.activations, max_activation, rule).tolist()
    return token_lines(window.tokens, levels)


@cache
def explain_shared_prefix() -> tuple[str, tuple[Message, ...]]:
    """System prompt and few-shot turns: the same bytes for every feature (cacheable)."""
    prefix: list[Message] = []
    for example in explain_fewshot():
        blocks = [token_lines(excerpt.tokens, excerpt.levels) for excerpt in example.excerpts]
        prefix.append(Message(role="user", content=render_file("explain_user.md", excerpts=excerpts_block(blocks))))
        prefix.append(Message(role="assistant", content=f"{EXPLANATION_PREFIX} {example.explanation}"))
    return load_text("explain_system.md"), tuple(prefix)


def build_explain_request(
    sample_windows: Sequence[Window],
    max_activation: float,
    rule: QuantiseRule,
    *,
    max_tokens: int = 120,
    temperature: float = 0.0,
) -> LLMRequest:
    """The explainer request for one feature's explanation windows (in the given order).

    max_activation: the feature's max, raw scale; every level is quantised against it.
    """
    if not sample_windows:
        raise ValueError("build_explain_request: found no windows; expected at least one explanation window")
    system, prefix = explain_shared_prefix()
    blocks = [excerpt_lines(window, max_activation, rule) for window in sample_windows]
    user = render_file("explain_user.md", excerpts=excerpts_block(blocks))
    return LLMRequest(
        system=system,
        prefix=prefix,
        messages=(Message(role="user", content=user),),
        max_tokens=max_tokens,
        temperature=temperature,
    )


def explain_prompt_hash(request: LLMRequest, rule: QuantiseRule) -> str:
    """sha256 of the request JSON plus the quantisation rule (two rules can give the same levels)."""
    return hashlib.sha256(f"{request.model_dump_json()}\nquantise_rule={rule}".encode()).hexdigest()


# --------------------------------------------------------------------------------------------------
# Reading the answer

_THINK = re.compile(r"<think(?:ing)?>.*?</think(?:ing)?>", re.DOTALL | re.IGNORECASE)
_LABELLED = re.compile(r"^[\W_]*explanation[\s*_]*[:：]\s*(.*)$", re.IGNORECASE)
_BULLET = re.compile(r"^(?:[-*•>#]+|\d+[.)])\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'“])")
_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "`": "`"}


def _clean(text: str) -> str:
    text = text.replace("**", "").replace("__", "").replace("`", "")
    text = _BULLET.sub("", text.strip())
    text = " ".join(text.split())
    for _ in range(2):  # "'...'" inside "\"...\"" happens
        if len(text) >= 2 and text[0] in _QUOTES and text[-1] == _QUOTES[text[0]] and text[0] not in text[1:-1]:
            text = text[1:-1].strip()
    return text


def parse_explanation(text: str) -> str:
    """The explanation in an answer: the text after "Explanation:" (else the first line), without
    markdown, bullets or wrapping quotes, its first sentence only, at most MAX_EXPLANATION_CHARS.

    Raises ValueError for an answer with nothing usable in it.
    """
    body = _THINK.sub("", text)
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    if not lines:
        raise ValueError("the answer was empty")
    chosen: str | None = None
    for i, line in enumerate(lines):
        match = _LABELLED.match(line)
        if match:
            rest = _clean(match.group(1))
            chosen = rest if rest else (_clean(lines[i + 1]) if i + 1 < len(lines) else "")
            break
    if chosen is None:
        chosen = _clean(lines[0])
    chosen = _SENTENCE_END.split(chosen, maxsplit=1)[0].strip()
    if len(chosen) > MAX_EXPLANATION_CHARS:
        cut = chosen[:MAX_EXPLANATION_CHARS]
        chosen = cut[: cut.rfind(" ")] if " " in cut else cut
    chosen = chosen.rstrip(" .;:,").strip()
    if not chosen:
        raise ValueError(f'no explanation found in the answer; expected one line "{EXPLANATION_PREFIX} <pattern>"')
    return chosen


# --------------------------------------------------------------------------------------------------
# One feature


def feature_max(sample: FeatureSample, windows: Sequence[Window]) -> float:
    """The max every level is quantised against: the feature's max over the corpus (raw scale), or the
    windows' own max when the stats carry none."""
    stat = sample.stats.max_activation
    return stat if stat > 0 else max((w.max_activation for w in windows), default=0.0)


def explanation_windows(sample: FeatureSample) -> tuple[list[Window], float]:
    """The feature's explanation-split windows and the max (raw scale) their levels are quantised
    against. Raises ExplanationFailure when there are none or the feature fires on none of them."""
    feature = sample.feature
    windows = sample.split("explain")
    if not windows:
        raise ExplanationFailure(f"explain: feature {feature} has no explanation windows; nothing to explain")
    max_act = feature_max(sample, windows)
    if max_act <= 0 or all(w.max_activation <= 0 for w in windows):
        raise ExplanationFailure(
            f"explain: feature {feature} fires on no token of its {len(windows)} explanation windows; "
            "nothing to explain"
        )
    return windows, max_act


async def explain_feature(
    backend: LLMBackend, sample: FeatureSample, cfg: RunConfig
) -> tuple[Explanation, list[CallRecord]]:
    """Explain one feature from its explanation-split windows: one explanation, asked at temperature 0.
    `cfg.llm.best_of` is not read here: the run sends best-of-n through autointerp.best_of instead.

    cfg: the run config (llm.explainer_max_tokens, scoring.quantise_rule).
    Raises ExplanationFailure (with the calls made) when no usable explanation comes back.
    """
    feature = sample.feature
    windows, max_act = explanation_windows(sample)
    rule = cfg.scoring.quantise_rule
    if isinstance(backend, BaselineBackend):
        text = baseline_explanation(windows, max_act, rule)
        explanation = Explanation(
            feature=feature,
            text=text,
            raw_completion=text,
            backend=backend.name,
            prompt_hash=baseline_input_hash(windows, max_act, rule),
        )
        return explanation, []

    shown = windows[: getattr(backend, "max_explain_windows", None) or len(windows)]  # top windows come first
    request = build_explain_request(shown, max_act, rule, max_tokens=cfg.llm.explainer_max_tokens)
    prefill = getattr(backend, "explanation_prefill", None)  # a backend's own start of the answer, if any
    if prefill:
        request = request.model_copy(update={"assistant_prefill": prefill, "stop": ("\n",)})
    text, response, calls = await ask_until_valid(
        backend,
        request,
        lambda r: parse_explanation((prefill or "") + r.text),
        stage="explain",
        feature=feature,
        retry_template="explain_retry.md",
        failure=ExplanationFailure,
        max_answers=EXPLAIN_ATTEMPTS,
    )
    usage, cost = total_usage(calls)
    explanation = Explanation(
        feature=feature,
        text=text,
        raw_completion=(prefill or "") + response.text,
        backend=backend.name,
        prompt_hash=explain_prompt_hash(request, rule),
        usage=usage,
        cost_usd=cost,
    )
    return explanation, calls
