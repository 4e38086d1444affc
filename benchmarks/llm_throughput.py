"""Throughput of the LLM layer against the loopback server at a fixed per-request latency.

Bare requests: for each in-flight limit, sends `waves x limit` requests and reports requests/minute as a
share of the ideal `limit / latency` (what a perfect client would reach). The gap is our overhead: the
SDK, the semaphore, the retry wrapper, and the stdlib test server's threads on a shared machine.

    python benchmarks/llm_throughput.py [--latency 0.1] [--limits 1 8 32] [--waves 10] [--kind openai]

A whole run's LLM stages (`--features N`): N features' explanations (`explain_feature`, all of them
first, as `autointerp.interpret` orders the stages so that requests sharing a prefix arrive together),
then their detection scores (`DetectionScorer`, 20 windows in prompts of 10), through the real SDK with
the real prompts, from ONE process that also hosts the loopback server (threads, one GIL). The server
answers every request after `--latency` seconds with a valid answer. Reports wall time, calls, calls in
flight and CPU. Issue 12's target: 20,000 features at 1 s latency in under 10 minutes.

    python benchmarks/llm_throughput.py --features 20000 --latency 1.0 --limit 256 [--kind anthropic]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from loopback_llm import start_loopback

from autointerp.llm import LLMCallError, LLMRequest, Message, make_backend

_EXCERPT = re.compile(r"^Excerpt (\d+):", re.MULTILINE)


def measure(kind: str, limit: int, latency_s: float, waves: int) -> dict[str, float]:
    server = start_loopback(responder=lambda k, body: "a short explanation", latency_s=latency_s)
    try:
        url = server.url if kind == "anthropic" else server.openai_url
        model = "claude-haiku-4-5" if kind == "anthropic" else "gpt-4o-mini"
        backend = make_backend(f"{kind}:{model}@{url}", max_in_flight=limit, api_key="sk-bench-not-a-key")
        requests = [
            LLMRequest(system="bench", messages=[Message(role="user", content=f"feature {i}")])
            for i in range(waves * limit)
        ]
        started = time.monotonic()
        results = asyncio.run(backend.complete_all(requests))
        elapsed = time.monotonic() - started
        failures = sum(isinstance(r, LLMCallError) for r in results)
    finally:
        server.stop()
    per_minute = len(requests) / elapsed * 60
    ideal = limit / latency_s * 60
    return {
        "limit": limit,
        "requests": len(requests),
        "seconds": elapsed,
        "per_minute": per_minute,
        "ideal_per_minute": ideal,
        "ratio": per_minute / ideal,
        "max_concurrent_seen": server.max_in_flight,
        "failures": failures,
    }


def stage_responder(kind: str, body: dict) -> str:
    """Valid answers without looking anything up: an explanation, or one yes/no line per excerpt shown."""
    content = body["messages"][-1]["content"]
    text = content if isinstance(content, str) else "".join(part.get("text", "") for part in content)
    if not text.startswith("Explanation:"):
        return "Explanation: the word the after a preposition"
    n = len(_EXCERPT.findall(text))
    return "\n".join(f"{i + 1}: {'yes' if i % 3 == 0 else 'no'}" for i in range(n))


def measure_run(kind: str, n_features: int, limit: int, latency_s: float) -> dict[str, float]:
    """Explanations then detection scores for n_features, as a run makes them (see the module docstring)."""
    from llm import handmade_samples, relabel

    from autointerp.config import RunConfig
    from autointerp.explain import explain_feature
    from autointerp.llm_calls import LLMStageFailure
    from autointerp.scorers import DetectionScorer, ScoringItem

    cfg = RunConfig(sae="demo")
    pool, _ = handmade_samples(20, cfg)
    samples = [relabel(pool[i % len(pool)], i) for i in range(n_features)]
    server = start_loopback(responder=stage_responder, latency_s=latency_s)
    url = server.url if kind == "anthropic" else server.openai_url
    model = "claude-haiku-5-5" if kind == "anthropic" else "gpt-4o-mini"
    backend = make_backend(f"{kind}:{model}@{url}", max_in_flight=limit, api_key="sk-bench-not-a-key", timeout_s=60)
    scorer = DetectionScorer(backend, cfg)
    failures = {"explain": 0, "detect": 0}
    stage_s: dict[str, float] = {}

    async def run() -> None:
        async def explain(sample):
            try:
                return (await explain_feature(backend, sample, cfg))[0].text
            except LLMStageFailure:
                failures["explain"] += 1
                return None

        async def detect(sample, text):
            try:
                await scorer.score(ScoringItem(sample=sample, explanation=text, source="llm"))
            except LLMStageFailure:
                failures["detect"] += 1

        t0 = time.monotonic()
        texts = await asyncio.gather(*(explain(s) for s in samples))
        stage_s["explain"] = time.monotonic() - t0
        t1 = time.monotonic()
        await asyncio.gather(*(detect(s, t) for s, t in zip(samples, texts, strict=True) if t is not None))
        stage_s["detect"] = time.monotonic() - t1

    cpu0, load0, started = time.process_time(), os.getloadavg()[0], time.monotonic()
    try:
        asyncio.run(run())
    finally:
        elapsed = time.monotonic() - started
        cpu = time.process_time() - cpu0
        server.stop()
    calls = server.count
    usage = backend.total_usage
    return {
        "features": n_features,
        "limit": limit,
        "latency_s": latency_s,
        "seconds": elapsed,
        "explain_s": stage_s.get("explain", float("nan")),
        "detect_s": stage_s.get("detect", float("nan")),
        "calls": calls,
        "ideal_seconds": calls * latency_s / limit,
        "max_in_flight_seen": server.max_in_flight,
        "cpu_s": cpu,
        "load_at_start": load0,
        "load_at_end": os.getloadavg()[0],
        "failed_explain": failures["explain"],
        "failed_detect": failures["detect"],
        "cached_share": usage.cached_input_tokens / max(1, usage.input_tokens + usage.cached_input_tokens),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.1, help="server latency per request, seconds")
    parser.add_argument("--limits", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--waves", type=int, default=10, help="requests per limit = waves x limit")
    parser.add_argument("--kind", choices=["openai", "anthropic"], default="openai")
    parser.add_argument("--features", type=int, default=0, help="time a run's LLM stages for this many features")
    parser.add_argument("--limit", type=int, default=256, help="in-flight limit for --features")
    args = parser.parse_args()
    if args.features:
        row = measure_run(args.kind, args.features, args.limit, args.latency)
        print(
            f"{args.kind} SDK, {row['features']:,} features (explanation + detection), limit {row['limit']}, server "
            f"latency {row['latency_s']:g} s, client and server in one process\n"
            f"  wall {row['seconds']:.0f} s (explain {row['explain_s']:.0f} s, detect {row['detect_s']:.0f} s); "
            f"{row['calls']:,} calls, ideal {row['ideal_seconds']:.0f} s; max in flight {row['max_in_flight_seen']}; "
            f"process CPU {row['cpu_s']:.0f} s ({1000 * row['cpu_s'] / max(1, row['calls']):.1f} ms a call); "
            f"load average {row['load_at_start']:.1f} -> {row['load_at_end']:.1f}; failed: explain "
            f"{row['failed_explain']}, detect {row['failed_detect']}; cached share of input {row['cached_share']:.2f}"
        )
        return
    print(f"{args.kind} SDK, server latency {args.latency:g} s")
    print(f"{'limit':>5} {'requests':>8} {'seconds':>8} {'req/min':>9} {'ideal':>9} {'ratio':>6} {'max seen':>8}")
    for limit in args.limits:
        row = measure(args.kind, limit, args.latency, args.waves)
        print(
            f"{row['limit']:>5} {row['requests']:>8} {row['seconds']:>8.2f} {row['per_minute']:>9.0f} "
            f"{row['ideal_per_minute']:>9.0f} {row['ratio']:>6.2f} {row['max_concurrent_seen']:>8}"
            + (f"  ({row['failures']} failed)" if row["failures"] else "")
        )


if __name__ == "__main__":
    main()
