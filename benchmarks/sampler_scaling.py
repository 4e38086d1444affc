"""Sampling past one process, on CPU: 1 vs 2 gloo ranks, the merge's cost, state bytes per feature
(the float32 layout this replaced vs now), and peak memory with 65,536 features tracked.

    python benchmarks/sampler.py --scaling [--tokens 16384] [--n-chosen 500] [--wide-tokens 4096]

- ranks: SmolLM2-135M + the demo SAE on the built-in corpus, `--n-chosen` features; each rank is a
  process with ONE torch thread (so 2 ranks use 2 cores, 1 rank one), streams its share (contexts
  i % world == rank), then the states are tree-merged onto rank 0 over gloo. Reported: streaming
  seconds (slowest rank), merge seconds (gather + merge on rank 0), records built, and whether the
  2-rank records equal the 1-rank ones (hard negatives aside, see autointerp/sampler_state.py).
- merge share of a 1M-token pass: merge seconds / (1M tokens / the 2-rank tokens/s).
- wide: a random topk SAE with 65,536 features on SmolLM2's layer-8 residual (d_in 576), every
  feature tracked, in a fresh process; peak RSS (ru_maxrss) after the model is loaded and at the
  end, in one pass and with --max-state-gb 1.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LEGACY_BYTES_PER_FEATURE = 83_652  # the float32 layout at commit 4f35d8b, default settings (measured)


def _builtin(n_tokens: int):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from autointerp.assets import resolve_sae_path
    from autointerp.corpus import CorpusSpec, special_token_ids, tokenise_corpus
    from autointerp.sae import load_sae
    from autointerp.subject_model import load_subject_model

    model = load_subject_model("smollm2-135m", "cpu", "float32")
    sae = load_sae(resolve_sae_path("demo"))
    tokens = tokenise_corpus(CorpusSpec(), model.tokenizer, 128, True, max_tokens=n_tokens)
    return model, sae, tokens, special_token_ids(model.tokenizer)


def rank_worker(rank: int, world: int, port: int, n_tokens: int, n_features: int, out: str) -> None:
    import torch

    torch.set_num_threads(1)
    from autointerp.config import SamplerConfig
    from autointerp.sampler import TensorContexts, run_pass, token_decoder
    from autointerp.sampler_results import finish_records

    model, sae, tokens, special = _builtin(n_tokens)
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    from autointerp.sampling_distributed import gather_and_merge

    cfg = SamplerConfig(batch_size=16)
    features = list(range(n_features))
    contexts = TensorContexts(tokens)
    t0 = time.perf_counter()
    state = run_pass(model, sae, contexts, features, cfg, special, 1, rank=rank, world=world)
    streamed = time.perf_counter() - t0
    merge_s = 0.0
    if world > 1:
        dist.barrier()  # the merge is timed from the moment every rank has streamed its share
        t1 = time.perf_counter()
        state = gather_and_merge(state, cfg)
        merge_s = time.perf_counter() - t1
    result = {"rank": rank, "stream_s": streamed, "merge_s": merge_s, "tokens": int(tokens.numel())}
    if state is not None:
        t2 = time.perf_counter()
        samples = finish_records(state, cfg, cfg.window_size, contexts.tokens_of, token_decoder(model.tokenizer))
        result["finish_s"] = time.perf_counter() - t2
        result["records"] = [
            {**s.model_dump(), "windows": [w.model_dump() for w in s.windows if w.group != "hard_negative"]}
            for s in samples
        ]
    Path(out, f"w{world}-r{rank}.json").write_text(json.dumps(result))


def run_ranks(world: int, n_tokens: int, n_features: int, folder: str) -> list[dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=rank_worker, args=(r, world, port, n_tokens, n_features, folder)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"rank {procs.index(p)} of {world} exited with {p.exitcode}")
    return [json.loads(Path(folder, f"w{world}-r{r}.json").read_text()) for r in range(world)]


class PeakRSS:
    """Peak resident memory of this process while the `with` block runs (polled every 20 ms)."""

    def __enter__(self) -> PeakRSS:
        import threading

        import psutil

        self.process, self.peak, self.running = psutil.Process(), 0, True
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.02)

    def __exit__(self, *exc) -> None:
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def wide_worker(n_features: int, n_tokens: int, max_state_gb: float | None) -> dict:
    """Run in a fresh process: peak RSS of sampling every feature of a 65,536-wide SAE, while streaming
    (state + batch work) and in all (the records of 65,536 features are Python objects too)."""
    import torch

    from autointerp.config import SamplerConfig
    from autointerp.sae import SAEConfig, SparseAutoencoder
    from autointerp.sampler import TensorContexts, run_pass
    from autointerp.sampler_memory import plan_passes
    from autointerp.sampler_results import finish_records

    model, _, tokens, special = _builtin(n_tokens)
    gen = torch.Generator().manual_seed(0)
    d_in = 576
    cfg_sae = SAEConfig(architecture="topk", d_in=d_in, d_sae=n_features, hook_name="blocks.8.hook_resid_post", k=32)
    weights = {
        "W_enc": torch.randn(d_in, n_features, generator=gen) / d_in**0.5,
        "W_dec": torch.randn(n_features, d_in, generator=gen) / d_in**0.5,
        "b_dec": torch.zeros(d_in),
        "b_enc": torch.zeros(n_features),
    }
    sae = SparseAutoencoder.from_weights(cfg_sae, weights)
    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cfg = SamplerConfig(batch_size=16, max_state_gb=max_state_gb)
    contexts = TensorContexts(tokens)
    passes, _ = plan_passes(list(range(n_features)), cfg, contexts.context_size)
    t0 = time.perf_counter()
    stream_peak, windows = 0, 0
    for features in passes:
        with PeakRSS() as rss:
            state = run_pass(model, sae, contexts, features, cfg, special, 1)
        stream_peak = max(stream_peak, rss.peak)
        samples = finish_records(state, cfg, cfg.window_size, contexts.tokens_of, lambda ids: list(map(str, ids)))
        del state
        windows += sum(len(s.windows) for s in samples)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "features": n_features,
        "tokens": int(tokens.numel()),
        "max_state_gb": max_state_gb,
        "passes": len(passes),
        "seconds": seconds,
        "rss_after_load_mb": base_mb,
        "streaming_peak_rss_mb": stream_peak / (1 << 20),
        "peak_rss_mb": peak_mb,
        "windows": windows,
    }


def run_wide(n_features: int, n_tokens: int, max_state_gb: float | None) -> dict:
    code = (
        "import json, sys; sys.path.insert(0, 'benchmarks'); import sampler_scaling as s; "
        f"print(json.dumps(s.wide_worker({n_features}, {n_tokens}, {max_state_gb!r})))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(n_tokens: int, n_features: int, wide_tokens: int) -> dict:
    from autointerp.config import SamplerConfig
    from autointerp.sampler_memory import bytes_per_feature

    state, work = bytes_per_feature(SamplerConfig(), 128)
    state_gpu, work_gpu = bytes_per_feature(SamplerConfig(), 128, sync_free=True)
    report: dict = {
        "bytes_per_feature": {"legacy": LEGACY_BYTES_PER_FEATURE, "now": state, "work_cpu": work, "work_gpu": work_gpu}
    }
    with tempfile.TemporaryDirectory() as folder:
        one = run_ranks(1, n_tokens, n_features, folder)
        two = run_ranks(2, n_tokens, n_features, folder)
    tokens = one[0]["tokens"]
    report["ranks"] = {
        "tokens": tokens,
        "features": n_features,
        "one_stream_s": one[0]["stream_s"],
        "two_stream_s": max(r["stream_s"] for r in two),
        "two_merge_s": two[0]["merge_s"],
        "finish_s": one[0]["finish_s"],
        "equal": one[0]["records"] == two[0]["records"],
    }
    r = report["ranks"]
    r["one_tok_s"] = tokens / r["one_stream_s"]
    r["two_tok_s"] = tokens / (r["two_stream_s"] + r["two_merge_s"])
    r["merge_share_of_1m_pass"] = r["two_merge_s"] / (1e6 / r["two_tok_s"])
    report["merge"] = time_merge(16_384)
    report["wide"] = [run_wide(65_536, wide_tokens, None), run_wide(65_536, wide_tokens, 1.0)]
    return report


def time_merge(n_features: int) -> dict:
    """Seconds to merge two full-width states in one process (one thread), per 1,000 features."""
    import torch

    from autointerp.config import SamplerConfig
    from autointerp.sampler_state import empty_state, merge

    torch.set_num_threads(1)
    cfg = SamplerConfig()
    a, b = empty_state(list(range(n_features)), cfg), empty_state(list(range(n_features)), cfg)
    b.bound_F.fill_(2.0)  # b's grid is coarser: a's cells are re-binned first, as in a real merge
    a.bound_F.fill_(1.0)
    t0 = time.perf_counter()
    merge(a, b, cfg)
    seconds = time.perf_counter() - t0
    return {"features": n_features, "seconds": seconds, "seconds_per_1000": seconds * 1000 / n_features}


def markdown(report: dict) -> str:
    b, r, m = report["bytes_per_feature"], report["ranks"], report["merge"]
    merge_wide = m["seconds_per_1000"] * 65.536
    wide_rate = report["wide"][0]["tokens"] / report["wide"][0]["seconds"]
    lines = [
        "| state bytes per feature (defaults) | float32 layout (before) | now | batch work, CPU steps | "
        "batch work, sync-free (GPU) steps |",
        "|---|---|---|---|---|",
        f"| | {b['legacy']:,} | {b['now']:,} | {b['work_cpu']:,} | {b['work_gpu']:,} |",
        "",
        f"| ranks (1 thread each), {r['tokens']:,} tokens, {r['features']} features | tok/s | streaming s | "
        "merge s | equal to 1 rank |",
        "|---|---|---|---|---|",
        f"| 1 | {r['one_tok_s']:,.0f} | {r['one_stream_s']:.1f} | - | - |",
        f"| 2 | {r['two_tok_s']:,.0f} | {r['two_stream_s']:.1f} | {r['two_merge_s']:.2f} | "
        f"{'yes' if r['equal'] else 'NO'} |",
        "",
        f"merge = {100 * r['merge_share_of_1m_pass']:.3f} % of a 1M-token pass at the 2-rank rate.",
        f"Two {m['features']:,}-feature states merge in {m['seconds']:.2f} s on one CPU thread "
        f"({m['seconds_per_1000']:.3f} s per 1,000 features); at 65,536 features that is {merge_wide:.0f} s, "
        f"{100 * merge_wide / (1e6 / wide_rate):.2f} % of a 1M-token pass at the 65,536-feature rate below "
        f"({wide_rate:,.0f} tok/s, one pass).",
        "",
        "| 65,536 features tracked | tokens | passes limit | passes | seconds | RSS after model load MB | "
        "peak RSS while streaming MB | peak RSS with records MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for w in report["wide"]:
        limit = f"{w['max_state_gb']:g} GiB" if w["max_state_gb"] else "none (1 pass)"
        lines.append(
            f"| {w['features']:,} | {w['tokens']:,} | {limit} | {w['passes']} | {w['seconds']:.0f} | "
            f"{w['rss_after_load_mb']:,.0f} | {w['streaming_peak_rss_mb']:,.0f} | {w['peak_rss_mb']:,.0f} |"
        )
    return "\n".join(lines)
