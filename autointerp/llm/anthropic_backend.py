"""Claude through the official `anthropic` SDK (Messages API).

- Prompt caching: the system prompt and the few-shot prefix are sent as content blocks, with one
  `cache_control: {"type": "ephemeral"}` breakpoint on the last block of the prefix (on the system block
  when there is no prefix). Anthropic caches nothing shorter than the model's minimum (1k-4k tokens).
- Usage: `input_tokens` (already uncached), `cache_read_input_tokens` -> cached_input_tokens,
  `cache_creation_input_tokens` -> cache_write_tokens, `output_tokens` (thinking included).
- No logprobs.
- The SDK's own retries are off (`max_retries=0`): autointerp.llm.retry decides.

Newer Claude models reject some request fields with a 400 (per Anthropic's migration guides, 2026-11):
non-default `temperature` on Opus 4.7+ and the 5.x families, and an assistant prefill on 4.6+ models.
For those models temperature is left out (the provider's default sampling applies: answers vary from
call to call) and `supports_prefill` is False, so a prefilled request fails before it is sent.
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

# Model-name prefixes (aliases and dated snapshots alike) of families that refuse `temperature`.
_NO_SAMPLING_PARAMS = (
    "claude-opus-4-7",
    "claude-opus-4-8",
    "claude-opus-5",
    "claude-sonnet-5",
    "claude-haiku-5",
    "claude-fable",
    "claude-mythos",
)
# ... and of those that refuse a trailing assistant message (prefill).
_NO_PREFILL = (*_NO_SAMPLING_PARAMS, "claude-opus-4-6", "claude-sonnet-4-6")

_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


def accepts_temperature(model: str) -> bool:
    return not model.startswith(_NO_SAMPLING_PARAMS)


def accepts_prefill(model: str) -> bool:
    return not model.startswith(_NO_PREFILL)


class AnthropicBackend(LLMBackend):
    supports_logprobs = False

    def __init__(self, spec: BackendSpec, options: BackendOptions) -> None:
        assert spec.model is not None
        super().__init__(str(spec), spec.model, options)
        self.base_url = spec.base_url
        self.supports_prefill = accepts_prefill(spec.model)
        self.supports_temperature = accepts_temperature(spec.model)
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
                "backend with --backend (openai:<model>, local)."
            )
        return client

    def _make_client(self) -> anthropic.AsyncAnthropic:
        client, self._spare = self._spare, None
        return client or self._build_client()

    def build_params(self, request: LLMRequest) -> dict[str, Any]:
        """The Messages API arguments for a request (exposed for golden tests)."""
        system: list[dict[str, Any]] = [{"type": "text", "text": request.system}] if request.system else []
        messages: list[dict[str, Any]] = [
            {"role": m.role, "content": [{"type": "text", "text": m.content}]} for m in request.prefix
        ]
        if messages:
            messages[-1]["content"][-1]["cache_control"] = EPHEMERAL
        elif system:
            system[-1]["cache_control"] = EPHEMERAL
        messages += [{"role": m.role, "content": m.content} for m in request.messages]
        if request.assistant_prefill:
            # The API rejects a final assistant turn that ends in whitespace.
            messages.append({"role": "assistant", "content": request.assistant_prefill.rstrip()})
        params: dict[str, Any] = {"model": self.model, "max_tokens": request.max_tokens, "messages": messages}
        if system:
            params["system"] = system
        if self.supports_temperature:
            # This SDK version no longer has a `temperature` argument; older models still take the field.
            params["extra_body"] = {"temperature": request.temperature}
        if request.stop:
            params["stop_sequences"] = list(request.stop)
        return params

    async def _call(self, request: LLMRequest) -> LLMResponse:
        params = self.build_params(request)
        with sdk_errors_translated(anthropic, _describe):
            message = await self.client.messages.create(**params)
        return self._parse(message)

    def _parse(self, message: Any) -> LLMResponse:
        content = getattr(message, "content", None)
        usage = getattr(message, "usage", None)
        if not isinstance(content, list) or usage is None:
            raise TransientError("malformed response: no content list or no usage")
        # Thinking blocks (adaptive thinking is on by default on newer models) are not the answer.
        text = "".join(getattr(block, "text", "") for block in content if getattr(block, "type", None) == "text")
        stop_reason = getattr(message, "stop_reason", None)
        return LLMResponse(
            text=text,
            logprobs=None,
            usage=Usage(
                input_tokens=usage.input_tokens or 0,
                cached_input_tokens=usage.cache_read_input_tokens or 0,
                cache_write_tokens=usage.cache_creation_input_tokens or 0,
                output_tokens=usage.output_tokens or 0,
            ),
            model=getattr(message, "model", None) or self.model,
            finish_reason=_FINISH.get(stop_reason, stop_reason) if stop_reason else None,
        )


def _describe(exc: anthropic.APIStatusError) -> str:
    kind = getattr(exc, "type", None)
    detail = getattr(exc, "api_message", None) or first_line(exc.message)
    return f"HTTP {exc.status_code}" + (f" {kind}" if kind else "") + f": {detail}"
