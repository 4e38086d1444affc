"""Throughput of the LLM layer against the loopback server at a fixed per-request latency.

For each in-flight limit, sends `waves x limit` requests and reports requests/minute as a share of the
ideal `limit / latency` (what a perfect client would reach). The gap is our overhead: the SDK, the
semaphore, the retry wrapper, and the stdlib test server's threads on a shared machine.

    python benchmarks/llm_throughput.py [--latency 0.1] [--limits 1 8 32] [--waves 10] [--kind openai]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from loopback_llm import start_loopback

from autointerp.llm import LLMCallError, LLMRequest, Message, make_backend


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.1, help="server latency per request, seconds")
    parser.add_argument("--limits", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--waves", type=int, default=10, help="requests per limit = waves x limit")
    parser.add_argument("--kind", choices=["openai", "anthropic"], default="openai")
    args = parser.parse_args()
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
