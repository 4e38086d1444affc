"""Claude through the official `anthropic` SDK (Messages API), with the model's rules from the model table.

- Prompt caching: the system prompt and the few-shot prefix are sent as content blocks with a
  `cache_control: {"type": "ephemeral"}` breakpoint on the system block and one on the last block of the
  few-shot prefix (two of the four allowed): requests that share only the system prompt still share its
  cache entry. Anthropic caches nothing shorter than the model's minimum (`min_cache_tokens`, 512-4,096);
  `LLMBackend.check_prefix` warns when the prefix is below it.
- Usage: `input_tokens` (already uncached), `cache_read_input_tokens` -> cached_input_tokens,
  `cache_creation_input_tokens` -> cache_write_tokens, `output_tokens` (thinking included).
- Thinking: a model that thinks by default (Haiku 5.5, Sonnet 5.x, Opus 5.x, Fable) would spend the
  answer's `max_tokens` on it. Where the model accepts it, the request turns thinking off (`thinking:
  {"type": "disabled"}` or `"between_tools"`); where it cannot be turned off, the request asks for the
  table's `effort` (low) and adds `thinking_budget_tokens` to max_tokens, so the answer keeps its own room.
- Sampling and prefill: models that reject a non-default `temperature` or a trailing assistant message
  with a 400 are marked so in the table; temperature is then left out and `supports_prefill` is False
  (a prefilled request fails before it is sent).
- No logprobs. The SDK's own retries are off (`max_retries=0`): autointerp.llm.retry decides.
"""

from __future__ import annotations

import os
from typing import Any

import anthropic

from autointerp.errors import InputError
from autointerp.llm.base import BackendOptions, BackendSpec, LLMBackend, LLMRequest, LLMResponse
from autointerp.llm.retry import TransientError, first_line, sdk_errors_translated
from autointerp.records import Usage

EPHEMERAL = {"type": "ephemeral"}

_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


class AnthropicBackend(LLMBackend):
    supports_logprobs = False
    provider = "anthropic"

    def __init__(self, spec: BackendSpec, options: BackendOptions) -> None:
        assert spec.model is not None
        super().__init__(str(spec), spec.model, options)
        assert self.info is not None
        self.base_url = spec.base_url
        self.supports_prefill = self.info.prefill
        self.supports_temperature = self.info.temperature
        # Build one client now so missing credentials surface here, not on the first feature.
        self._spare: anthropic.AsyncAnthropic | None = self._build_client()

    def _build_client(self) -> anthropic.AsyncAnthropic:
        common: dict[str, Any] = {
            "base_url": self.base_url,
            "max_retries": 0,
            "timeout": self.options.timeout_s,
        }
        try:
            client = anthropic.AsyncAnthropic(api_key=self.options.api_key, **common)
        except anthropic.CredentialsError as exc:  # a named profile or config that cannot be read
            raise InputError(f"LLM backend {self.name}: Anthropic credentials could not be loaded: {exc}") from None
        if client.api_key is None and client.auth_token is None and client.credentials is None:
            if self.base_url or os.environ.get("ANTHROPIC_BASE_URL"):
                # A self-hosted or proxy endpoint may need no key; the SDK insists on one.
                return anthropic.AsyncAnthropic(api_key="not-needed", **common)
            raise InputError(
                f"LLM backend {self.name}: found no Anthropic credentials; expected ANTHROPIC_API_KEY (or "
                "ANTHROPIC_AUTH_TOKEN, or an Anthropic profile) in the environment. Or choose another "
                "backend with --explainer / --simulator (openai:<model>, local)."
            )
        return client

    def _make_client(self) -> anthropic.AsyncAnthropic:
        client, self._spare = self._spare, None
        return client or self._build_client()

    def request_body(self, request: LLMRequest) -> dict[str, Any]:
        """The Messages API JSON body for a request, exactly as sent (also a batch request's `params`)."""
        info = self.info
        assert info is not None
        system: list[dict[str, Any]] = (
            [{"type": "text", "text": request.system, "cache_control": EPHEMERAL}] if request.system else []
        )
        messages: list[dict[str, Any]] = [
            {"role": m.role, "content": [{"type": "text", "text": m.content}]} for m in request.prefix
        ]
        if messages:
            messages[-1]["content"][-1]["cache_control"] = EPHEMERAL
        messages += [{"role": m.role, "content": m.content} for m in request.messages]
        if request.assistant_prefill:
            # The API rejects a final assistant turn that ends in whitespace.
            messages.append({"role": "assistant", "content": request.assistant_prefill.rstrip()})
        body: dict[str, Any] = {"model": self.model, "max_tokens": request.max_tokens, "messages": messages}
        if system:
            body["system"] = system
        if info.thinks_by_default:
            if info.thinking_off is not None:
                body["thinking"] = {"type": info.thinking_off}
            else:  # always thinks: keep it short, and give it room of its own
                body["output_config"] = {"effort": info.effort}
                body["max_tokens"] = request.max_tokens + info.thinking_budget_tokens
        if self.supports_temperature:
            body["temperature"] = request.temperature
        if request.stop:
            body["stop_sequences"] = list(request.stop)
        return body

    def build_params(self, request: LLMRequest) -> dict[str, Any]:
        """`messages.create` keyword arguments for a request (exposed for golden tests)."""
        params = self.request_body(request)
        if "temperature" in params:
            # This SDK version no longer has a `temperature` argument; older models still take the field.
            params["extra_body"] = {"temperature": params.pop("temperature")}
        return params

    async def _call(self, request: LLMRequest) -> LLMResponse:
        params = self.build_params(request)
        with sdk_errors_translated(anthropic, _describe):
            message = await self.client.messages.create(**params)
        return self.parse_message(message)

    def parse_message(self, message: Any) -> LLMResponse:
        """An LLMResponse from a Message (an SDK object, or the same as a dict from a batch's results)."""
        content = _get(message, "content")
        usage = _get(message, "usage")
        if not isinstance(content, list) or usage is None:
            raise TransientError("malformed response: no content list or no usage")
        # Thinking blocks (on newer models that cannot turn thinking off) are not the answer.
        text = "".join(_get(block, "text") or "" for block in content if _get(block, "type") == "text")
        stop_reason = _get(message, "stop_reason")
        return LLMResponse(
            text=text,
            logprobs=None,
            usage=Usage(
                input_tokens=_get(usage, "input_tokens") or 0,
                cached_input_tokens=_get(usage, "cache_read_input_tokens") or 0,
                cache_write_tokens=_get(usage, "cache_creation_input_tokens") or 0,
                output_tokens=_get(usage, "output_tokens") or 0,
            ),
            model=_get(message, "model") or self.model,
            finish_reason=_FINISH.get(stop_reason, stop_reason) if stop_reason else None,
        )


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _describe(exc: anthropic.APIStatusError) -> str:
    kind = getattr(exc, "type", None)
    detail = getattr(exc, "api_message", None) or first_line(exc.message)
    return f"HTTP {exc.status_code}" + (f" {kind}" if kind else "") + f": {detail}"
