"""OpenAI and OpenAI-compatible servers (vLLM, SGLang, llama.cpp server, ollama) through the `openai` SDK.

- Messages: system, prefix..., messages..., byte-identical prefix across features, which is what
  OpenAI's automatic prompt caching (and vLLM's / SGLang's prefix caching) needs.
- Usage: `prompt_tokens` counts cached tokens too, so input_tokens = prompt_tokens - cached - cache
  writes; cached_input_tokens = `prompt_tokens_details.cached_tokens`; cache_write_tokens =
  `prompt_tokens_details.cache_write_tokens` where reported (GPT-5.6+). Same meaning as for Anthropic.
- Model rules come from the model table (autointerp.llm.models) on api.openai.com: a model whose
  logprobs need a reasoning setting gets it (`reasoning_effort`, e.g. "none" on GPT-5.4); a model that
  gives no logprobs has `supports_logprobs` False, so the simulator uses its sampled mode (logged once);
  temperature is left out where the model rejects it. A model the table does not name keeps the old
  rule on api.openai.com (o-series and gpt-5* are reasoning models: no logprobs, no temperature).
- A self-hosted model (a name the table does not know, on a server other than api.openai.com: vLLM,
  SGLang...) gets logprobs and temperature, and `chat_template_kwargs: {"enable_thinking": false}` so
  templates of thinking models (Qwen3) answer directly; `top_logprobs` is capped at 20 (OpenAI's limit
  and vLLM's default --max-logprobs). Such servers cache any shared prefix (no minimum).
- On api.openai.com the token cap is sent as `max_completion_tokens` (reasoning models reject
  `max_tokens`); other servers get `max_tokens`, which every compatible server understands.
- Assistant prefill: api.openai.com does not continue a trailing assistant message, so
  `supports_prefill` is False there; other servers get the trailing message plus vLLM's / SGLang's
  `continue_final_message` flag (llama.cpp continues a trailing assistant message by itself).
- Prompt logprobs (`LLMRequest.prompt_logprobs`, vLLM's extension): sent as `prompt_logprobs` to servers
  other than api.openai.com; the response's top-level `prompt_logprobs` (one {token id: {logprob, rank,
  decoded_token}} per prompt token) is parsed into `LLMResponse.prompt_logprobs`.
- vLLM (`vllm:<model>@<url>`, `VLLMBackend`): the same, plus the simulator's listing scored all at once
  from prompt logprobs (`score_value_slots`): the listing is written into the prompt as a prefilled
  answer with `SLOT_FILLER` in every value slot, one request with `max_tokens` 1 and `prompt_logprobs`,
  and each slot's level distribution is read from the alternatives at the filler's position (the model's
  next-token distribution right after the slot's tab). One forward pass instead of generating ~2,600
  tokens. Later slots see the fillers, not the values (no guessed level leaks into the next prediction).
  A tokenizer that writes 10 as "1" "0" shows level 10 as "1" at a slot, which then counts as 1.
- The SDK's own retries are off (`max_retries=0`): autointerp.llm.retry decides.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from typing import Any

import openai

from autointerp.errors import InputError
from autointerp.llm.base import BackendOptions, BackendSpec, LLMBackend, LLMRequest, LLMResponse, TokenLogprob
from autointerp.llm.retry import PermanentError, TransientError, first_line, sdk_errors_translated
from autointerp.records import Usage

logger = logging.getLogger("autointerp.llm")

OFFICIAL_HOST = "api.openai.com"
# Written into every value slot of a teacher-forced listing. A symbol, not a word: byte-level BPE
# pre-tokenisers keep a tab apart from a following symbol but may glue it to a following word ("\tunknown").
SLOT_FILLER = "?"
SLOT_TOP_LOGPROBS = 5  # alternatives per prompt token: vLLM returns them for EVERY prompt token
LEVELS = frozenset(str(level) for level in range(11))
PLACEHOLDER_KEY = "not-needed"  # local servers ignore the key; the SDK insists on one
_REASONING = re.compile(r"^(o\d|gpt-5|gpt-6)")


class OpenAIBackend(LLMBackend):
    provider = "openai"

    def __init__(self, spec: BackendSpec, options: BackendOptions) -> None:
        assert spec.model is not None
        super().__init__(str(spec), spec.model, options)
        assert self.info is not None
        self.base_url = spec.base_url
        self._spare: openai.AsyncOpenAI | None = self._build_client()
        self.official = self._spare.base_url.host == OFFICIAL_HOST
        self.reasoning_effort: str | None = None
        if self.info.known:  # an OpenAI model, on api.openai.com or behind a proxy: the table's rules
            self.supports_logprobs = self.info.logprobs
            self.supports_temperature = self.info.temperature
            self.reasoning_effort = self.info.reasoning_effort
        elif self.official:  # a model newer than the table: reasoning families take neither
            reasoning = bool(_REASONING.match(spec.model))
            self.supports_logprobs = not reasoning
            self.supports_temperature = not reasoning
        else:  # a self-hosted model (vLLM, SGLang...): the server takes both, and caches any shared prefix
            self.supports_logprobs = True
            self.supports_temperature = True
            self.min_cache_tokens = 0
        self.self_hosted = not self.official and not self.info.known
        self.supports_prefill = not self.official
        self.supports_prompt_logprobs = not self.official
        self.max_top_logprobs = self.info.max_top_logprobs
        if not self.supports_logprobs:
            effort = f" (even at reasoning_effort={self.reasoning_effort!r})" if self.reasoning_effort else ""
            text = (
                f"{self.name}: {self.model} gives no logprobs{effort}, so the simulator uses its sampled mode "
                "(predictions written as text) instead of the expected value over logprobs."
            )
            self.startup_notes.append(text)
            logger.info(text)

    def _build_client(self) -> openai.AsyncOpenAI:
        key = self.options.api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if self.base_url or os.environ.get("OPENAI_BASE_URL"):
                key = PLACEHOLDER_KEY
            else:
                raise InputError(
                    f"LLM backend {self.name}: found no OPENAI_API_KEY in the environment; expected a key for "
                    "api.openai.com, or a server URL (openai:<model>@http://host:port/v1) for a local server."
                )
        kwargs: dict[str, Any] = {"api_key": key, "max_retries": 0, "timeout": self.options.timeout_s}
        if self.base_url:
            kwargs["base_url"] = self.base_url
        return openai.AsyncOpenAI(**kwargs)

    def _make_client(self) -> openai.AsyncOpenAI:
        client, self._spare = self._spare, None
        return client or self._build_client()

    def request_body(self, request: LLMRequest) -> dict[str, Any]:
        """The Chat Completions JSON body for a request, exactly as sent (also a batch file's `body`)."""
        messages: list[dict[str, Any]] = [{"role": "system", "content": request.system}] if request.system else []
        messages += [{"role": m.role, "content": m.content} for m in (*request.prefix, *request.messages)]
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        body["max_completion_tokens" if self.official else "max_tokens"] = request.max_tokens
        if self.reasoning_effort is not None:
            body["reasoning_effort"] = self.reasoning_effort
        if self.supports_temperature:
            body["temperature"] = request.temperature
        if request.logprobs and self.supports_logprobs:
            body["logprobs"] = True
            if request.top_logprobs:
                body["top_logprobs"] = min(request.top_logprobs, self.max_top_logprobs)
        if request.stop:
            body["stop"] = list(request.stop)
        if request.assistant_prefill:
            messages.append({"role": "assistant", "content": request.assistant_prefill})
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        if self.self_hosted:
            # Qwen3-style chat templates think unless told not to; templates without the switch ignore it.
            body["chat_template_kwargs"] = {"enable_thinking": False}
        if request.prompt_logprobs and self.supports_prompt_logprobs:
            body["prompt_logprobs"] = min(request.prompt_logprobs, self.max_top_logprobs)
            body["return_token_ids"] = True  # vLLM: prompt_token_ids, to tell the prompt's token from the top-k
        return body

    def build_params(self, request: LLMRequest) -> dict[str, Any]:
        """`chat.completions.create` keyword arguments (exposed for golden tests): fields the SDK does not
        know (vLLM's / SGLang's extensions) travel in `extra_body`."""
        params = self.request_body(request)
        extra = {k: params.pop(k) for k in _EXTENSIONS if k in params}
        if extra:
            params["extra_body"] = extra
        return params

    async def _call(self, request: LLMRequest) -> LLMResponse:
        params = self.build_params(request)
        with sdk_errors_translated(openai, _describe):
            completion = await self.client.chat.completions.create(**params)
        return self.parse_completion(
            completion, logprobs=request.logprobs, prompt_logprobs=bool(request.prompt_logprobs)
        )

    def parse_completion(self, completion: Any, *, logprobs: bool = True, prompt_logprobs: bool = True) -> LLMResponse:
        """An LLMResponse from a chat completion (an SDK object, or a dict from a batch's output file);
        `logprobs` / `prompt_logprobs`: read them when the server sent them."""
        want_logprobs, want_prompt_logprobs = logprobs, prompt_logprobs
        if isinstance(completion, dict):
            completion = openai.types.chat.ChatCompletion.model_validate(completion)
        choices = getattr(completion, "choices", None)
        if not choices or getattr(choices[0], "message", None) is None:
            raise TransientError("malformed response: no choices")
        choice = choices[0]
        logprobs = None
        content = getattr(getattr(choice, "logprobs", None), "content", None)
        if want_logprobs and content is not None:
            logprobs = []
            for item in content:
                top: dict[str, float] = {}
                for alt in item.top_logprobs or []:
                    top.setdefault(alt.token, alt.logprob)  # keep the first (likeliest) of duplicate strings
                logprobs.append(TokenLogprob(token=item.token, logprob=item.logprob, top=top))
        prompt_logprobs = None
        extra = completion.model_extra or {}
        if want_prompt_logprobs and extra.get("prompt_logprobs") is not None:
            prompt_logprobs = parse_prompt_logprobs(extra["prompt_logprobs"], extra.get("prompt_token_ids"))
        return LLMResponse(
            text=choice.message.content or "",
            logprobs=logprobs,
            prompt_logprobs=prompt_logprobs,
            usage=_usage(getattr(completion, "usage", None)),
            model=getattr(completion, "model", None) or self.model,
            finish_reason=choice.finish_reason,
        )


# Request fields of vLLM / SGLang that are not in OpenAI's Chat Completions API.
_EXTENSIONS = (
    "continue_final_message",
    "add_generation_prompt",
    "chat_template_kwargs",
    "prompt_logprobs",
    "return_token_ids",
)


def parse_prompt_logprobs(raw: list[Any], token_ids: list[int] | None = None) -> list[TokenLogprob | None]:
    """vLLM's prompt_logprobs: per prompt token None or {token id: {"logprob", "rank", "decoded_token"}}, the
    top-k alternatives plus the prompt's own token when it is not among them.

    The prompt's own token is found by id in `token_ids` (vLLM's `prompt_token_ids`, returned when the
    request says `return_token_ids`). Without ids: the entry ranked below the others when there is one (it
    was added because it is outside the top-k), else the rank-1 entry (ambiguous; ask for the ids)."""
    out: list[TokenLogprob | None] = []
    for i, entry in enumerate(raw):
        if not entry:
            out.append(None)
            continue
        alts = sorted(((str(k), v) for k, v in entry.items()), key=lambda kv: kv[1].get("rank") or 10**9)
        top: dict[str, float] = {}
        for _, alt in alts:
            top.setdefault(alt.get("decoded_token") or "", alt["logprob"])
        by_id = dict(alts)
        chosen = by_id.get(str(token_ids[i])) if token_ids is not None and i < len(token_ids) else None
        if chosen is None:
            last_rank = alts[-1][1].get("rank") or 0
            chosen = alts[-1][1] if len(alts) > 1 and last_rank > len(alts) - 1 else alts[0][1]
        out.append(TokenLogprob(token=chosen.get("decoded_token") or "", logprob=chosen["logprob"], top=top))
    return out


def _usage(usage: Any) -> Usage:
    if usage is None:  # some compatible servers omit it
        return Usage()
    details = getattr(usage, "prompt_tokens_details", None)
    cached = (getattr(details, "cached_tokens", None) or 0) if details is not None else 0
    written = (getattr(details, "cache_write_tokens", None) or 0) if details is not None else 0
    prompt = usage.prompt_tokens or 0
    return Usage(
        input_tokens=max(0, prompt - cached - written),
        cached_input_tokens=cached,
        cache_write_tokens=written,
        output_tokens=usage.completion_tokens or 0,
    )


def _describe(exc: openai.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body) if isinstance(body.get("error", body), dict) else {}
    detail = error.get("message") or first_line(exc.message)
    kind = error.get("type") or error.get("code")
    return f"HTTP {exc.status_code}" + (f" {kind}" if kind else "") + f": {detail}"


class VLLMBackend(OpenAIBackend):
    """vLLM's OpenAI-compatible server: everything OpenAIBackend sends, plus all-at-once simulation from
    prompt logprobs (a `SlotScorer` for autointerp.simulate; see the module docstring)."""

    def __init__(self, spec: BackendSpec, options: BackendOptions) -> None:
        super().__init__(spec, options)
        if self.official:
            raise InputError(
                f"LLM backend {self.name}: found api.openai.com; expected the URL of a vLLM server "
                "(vllm:<model>@http://host:8000/v1). For OpenAI's API use openai:<model>."
            )
        self.supports_prompt_logprobs = True

    async def score_value_slots(self, request: LLMRequest, slot_prefixes: Sequence[str]) -> LLMResponse:
        """Level distributions at every value slot of the listing, from one teacher-forced request.

        Returns one TokenLogprob per slot whose `top` maps the levels found among the alternatives ('0'..'10')
        to log-probabilities, with the call's usage. LLMCallError when the server sends no prompt logprobs
        (not vLLM: SGLang ignores the field) or the slots cannot be found."""
        forced = request.model_copy(
            update={
                "assistant_prefill": "".join(prefix + SLOT_FILLER for prefix in slot_prefixes),
                "max_tokens": 1,
                "logprobs": False,
                "top_logprobs": 0,
                "prompt_logprobs": SLOT_TOP_LOGPROBS,
            }
        )
        response = await self.complete(forced)
        try:
            if response.prompt_logprobs is None:
                raise PermanentError(
                    "the server sent no prompt_logprobs; expected vLLM's OpenAI-compatible server (SGLang and "
                    "others ignore the field: use openai:<model>@<url> there, which generates the listing)"
                )
            slots = slot_distributions(response.prompt_logprobs, len(slot_prefixes))
        except PermanentError as exc:
            self.n_failed += 1
            raise self._call_error(exc, response.attempts) from None
        return response.model_copy(update={"text": "", "logprobs": slots})


def slot_distributions(prompt: Sequence[TokenLogprob | None], n_slots: int) -> list[TokenLogprob]:
    """The level distributions at the last `n_slots` value slots of a teacher-forced listing, in order.

    A slot is a prompt token that starts with SLOT_FILLER right after a token that ends with a tab (the
    listing escapes tabs inside tokens, so a raw tab only ever precedes a value). Its alternatives are the
    model's next-token distribution after the tab; the levels among them are kept. PermanentError when fewer
    slots are found or a slot has no level among its alternatives."""
    found: list[int] = []
    for i in range(len(prompt) - 1, 0, -1):
        here, before = prompt[i], prompt[i - 1]
        if here is None or before is None:
            break
        if here.token.startswith(SLOT_FILLER) and before.token.endswith("\t"):
            found.append(i)
            if len(found) == n_slots:
                break
    if len(found) != n_slots:
        raise PermanentError(
            f"found {len(found)} value slots in the prompt logprobs; expected {n_slots} (a tab, then "
            f"{SLOT_FILLER!r}, as its own token)"
        )
    slots = []
    for k, i in enumerate(reversed(found)):
        entry = prompt[i]
        assert entry is not None
        top: dict[str, float] = {}
        for token, logprob in entry.top.items():
            if token.strip() in LEVELS:
                top.setdefault(token.strip(), logprob)
        if not top:
            raise PermanentError(
                f"slot {k + 1}: no level 0..10 among the {len(entry.top)} alternatives {sorted(entry.top)[:5]}; "
                "expected digits (is the model following the listing?)"
            )
        best = max(top, key=top.__getitem__)
        slots.append(TokenLogprob(token=best, logprob=top[best], top=top))
    return slots
