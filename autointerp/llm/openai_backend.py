"""OpenAI and OpenAI-compatible servers (vLLM, llama.cpp server, ollama) through the `openai` SDK.

- Messages: system, prefix..., messages..., byte-identical prefix across features, which is what
  OpenAI's automatic prompt caching (and vLLM's prefix caching) needs.
- Usage: `prompt_tokens` counts cached tokens too, so input_tokens = prompt_tokens - cached - cache
  writes; cached_input_tokens = `prompt_tokens_details.cached_tokens`; cache_write_tokens =
  `prompt_tokens_details.cache_write_tokens` where reported. Same meaning as for Anthropic.
- logprobs / top_logprobs are passed when asked.
- On api.openai.com the token cap is sent as `max_completion_tokens` (reasoning models reject
  `max_tokens`); other servers get `max_tokens`, which every compatible server understands.
- Reasoning models (o1/o3/o4, gpt-5 families) accept neither temperature nor logprobs: temperature is
  left out and `supports_logprobs` is False for them.
- Assistant prefill: api.openai.com does not continue a trailing assistant message, so
  `supports_prefill` is False there; other servers get the trailing message plus vLLM's
  `continue_final_message` flag (llama.cpp continues a trailing assistant message by itself).
- The SDK's own retries are off (`max_retries=0`): autointerp.llm.retry decides.
"""

from __future__ import annotations

import os
import re
from typing import Any

import openai

from autointerp.errors import InputError
from autointerp.llm.base import BackendOptions, BackendSpec, LLMBackend, LLMRequest, LLMResponse, TokenLogprob
from autointerp.llm.retry import TransientError, first_line, sdk_errors_translated
from autointerp.records import Usage

OFFICIAL_HOST = "api.openai.com"
PLACEHOLDER_KEY = "not-needed"  # local servers ignore the key; the SDK insists on one
_REASONING = re.compile(r"^(o\d|gpt-5)")


class OpenAIBackend(LLMBackend):
    def __init__(self, spec: BackendSpec, options: BackendOptions) -> None:
        assert spec.model is not None
        super().__init__(str(spec), spec.model, options)
        self.base_url = spec.base_url
        self._spare: openai.AsyncOpenAI | None = self._build_client()
        self.official = self._spare.base_url.host == OFFICIAL_HOST
        reasoning = bool(_REASONING.match(spec.model))
        self.supports_logprobs = not reasoning
        self.supports_temperature = not reasoning
        self.supports_prefill = not self.official

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

    def build_params(self, request: LLMRequest) -> dict[str, Any]:
        """The Chat Completions arguments for a request (exposed for golden tests)."""
        messages: list[dict[str, Any]] = [{"role": "system", "content": request.system}] if request.system else []
        messages += [{"role": m.role, "content": m.content} for m in (*request.prefix, *request.messages)]
        params: dict[str, Any] = {"model": self.model, "messages": messages}
        params["max_completion_tokens" if self.official else "max_tokens"] = request.max_tokens
        if self.supports_temperature:
            params["temperature"] = request.temperature
        if request.logprobs and self.supports_logprobs:
            params["logprobs"] = True
            if request.top_logprobs:
                params["top_logprobs"] = request.top_logprobs
        if request.stop:
            params["stop"] = list(request.stop)
        if request.assistant_prefill:
            messages.append({"role": "assistant", "content": request.assistant_prefill})
            params["extra_body"] = {"continue_final_message": True, "add_generation_prompt": False}
        return params

    async def _call(self, request: LLMRequest) -> LLMResponse:
        params = self.build_params(request)
        with sdk_errors_translated(openai, _describe):
            completion = await self.client.chat.completions.create(**params)
        return self._parse(completion, request)

    def _parse(self, completion: Any, request: LLMRequest) -> LLMResponse:
        choices = getattr(completion, "choices", None)
        if not choices or getattr(choices[0], "message", None) is None:
            raise TransientError("malformed response: no choices")
        choice = choices[0]
        logprobs = None
        content = getattr(getattr(choice, "logprobs", None), "content", None)
        if request.logprobs and content is not None:
            logprobs = []
            for item in content:
                top: dict[str, float] = {}
                for alt in item.top_logprobs or []:
                    top.setdefault(alt.token, alt.logprob)  # keep the first (likeliest) of duplicate strings
                logprobs.append(TokenLogprob(token=item.token, logprob=item.logprob, top=top))
        return LLMResponse(
            text=choice.message.content or "",
            logprobs=logprobs,
            usage=_usage(getattr(completion, "usage", None)),
            model=getattr(completion, "model", None) or self.model,
            finish_reason=choice.finish_reason,
        )


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
