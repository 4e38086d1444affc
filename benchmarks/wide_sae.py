"""A 1,048,576-feature SAE sampled in passes: measured on this machine, and the plan for one 80 GB GPU.

    python benchmarks/wide_sae.py [--device cpu|cuda] [--d-sae 1048576] [--max-state-gb GiB] [--n-tokens 1024]
                                  [--model tiny|gpt2|1b] [--out wide.json]

What runs (for real, every feature tracked):
- a random-weight subject model (`--model`: default `tiny`, the 2-layer d_model-16 shape of the tests' model,
  built only up to the SAE's hook; `gpt2` and `1b` are benchmarks/sampler.py's GPT-2-small and
  Llama-3.2-1B shapes) on random tokens, and a random jumprelu SAE with `--d-sae` features at its hook whose
  thresholds are calibrated to log-uniform firing densities in [1e-5, 1e-2] (benchmarks/sampler.py's
  `setup_random` / `calibrated_sae`; jumprelu encodes only a pass's columns, topk would need all 2^20);
- `plan_passes` splits the features by `--max-state-gb` and its sentence is printed before any pass;
- each pass is `run_pass` over all `--n-tokens` tokens, timed (one device sync at the end of the pass),
  with the pass's state bytes and peak host RSS; the state is dropped after the pass. Records are built
  (`finish_records`, timed) for the first `--records-passes` passes only and then dropped too: the pipeline
  stores each pass's records before the next pass; this benchmark has no store, so it keeps none.

Then the arithmetic (printed, not measured) for a real wide SAE on one 80 GB GPU: Gemma-2-2B's layer-12
residual (d_in 2304), 2^20 features, bf16, context 1024, the sampler's default settings: weights and model
memory, what plan_passes would get (80 % of the free memory when --max-state-gb is not given), bytes per
feature of the sync-free (GPU) steps, passes, and a total time from an ASSUMED tokens/s per pass
(`--gpu-tok-s`), to be replaced by a measured one. On the first GPU, measure with:

    python benchmarks/sampler.py --device cuda
    python benchmarks/wide_sae.py --device cuda --model 1b --context-size 1024 --n-tokens 262144

Results: docs/benchmarks.md, "1M-feature SAE in passes".
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import sampler as bench  # noqa: E402  (benchmarks/sampler.py: random models and SAEs, timing and memory helpers)

from autointerp.config import SamplerConfig  # noqa: E402
from autointerp.sae.architectures import ARCHITECTURES  # noqa: E402
from autointerp.sampler import TensorContexts, run_pass  # noqa: E402
from autointerp.sampler_memory import ENCODE_BLOCK, GB, bytes_per_feature, plan_passes, sae_bytes  # noqa: E402
from autointerp.sampler_results import finish_records  # noqa: E402

# The tests' tiny model (tests/helpers_sae.py): 2 layers, d_model 16, vocabulary 300.
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from helpers_sae import TINY_MODEL as TINY  # noqa: E402

MODELS = {
    "tiny": (TINY, "blocks.0.hook_resid_post"),
    "gpt2": (bench.GPT2_SMALL, "blocks.6.hook_resid_post"),
    "1b": (bench.LLAMA_1B, "blocks.8.hook_resid_post"),
}
CALIBRATION_TOKENS = 256  # the random SAE's thresholds are set on ~this many tokens: [tokens, d_sae] float32

# The 80 GB plan: Gemma-2-2B (2,614,341,888 parameters) and a Gemma Scope-like layer-12 residual SAE.
GPU_PLAN = dict(gpu_gb=80, model="Gemma-2-2B", params=2_614_341_888, d_in=2304, context=1024, n_tokens=10_000_000)
FORWARD_ALLOWANCE_GB = 4.0  # activations of the forward pass to the hook, the allocator's slack: an allowance


def build(args) -> bench.Setup:
    """Model, random tokens and the calibrated random jumprelu SAE, through benchmarks/sampler.py's setup."""
    dims, hook = MODELS[args.model]
    dims = dims | {"n_ctx": max(dims["n_ctx"], args.context_size)}
    name = f"{args.model}-{args.d_sae}"
    bench.RANDOM_MODELS[name] = (dims, hook, "jumprelu", args.d_sae)
    # setup_random calibrates on its first batch: a batch of ~CALIBRATION_TOKENS keeps [tokens, d_sae] small.
    calibration_batch = max(1, CALIBRATION_TOKENS // args.context_size)
    n_tokens = max(args.n_tokens, args.batch_size * args.context_size)
    setup = bench.setup_random(name, args.device, n_tokens, calibration_batch, args.context_size, args.device == "cuda")
    n = args.n_tokens // args.context_size or 1
    setup.tokens_NL = setup.tokens_NL[:n]
    return setup


def weights_bytes(sae) -> int:
    return sum(w.numel() * w.element_size() for w in sae.weights.values())


def run(args) -> dict:
    t_start = time.perf_counter()
    with torch.no_grad():
        setup = build(args)
        l0 = bench.measured_l0(setup)
    device, sae = args.device, setup.sae
    setup_s = time.perf_counter() - t_start
    cfg = SamplerConfig(batch_size=args.batch_size, max_state_gb=args.max_state_gb)
    contexts = TensorContexts(setup.tokens_NL)
    features = list(range(sae.cfg.d_sae))
    state_pf, work_pf = bytes_per_feature(cfg, contexts.context_size, sync_free=device == "cuda")
    columns_pf, fixed = sae_bytes(sae, cfg, contexts.context_size)
    passes, sentence = plan_passes(features, cfg, contexts.context_size, device, sae)
    n_tokens = setup.tokens_NL.numel()
    print(
        f"{args.model} model ({setup.model.cfg.n_layers} layer(s) built, d_model {setup.model.cfg.d_model}), "
        f"random jumprelu SAE d_sae {sae.cfg.d_sae:,} at {sae.cfg.hook_name} ({sae.dtype}, "
        f"{weights_bytes(sae) / GB:.2f} GiB of weights), L0 {l0:.1f}; {n_tokens:,} tokens "
        f"({len(setup.tokens_NL)} x {contexts.context_size}), batch {cfg.batch_size}, {device}; "
        f"set up in {setup_s:.0f} s",
        flush=True,
    )
    print(sentence, flush=True)

    rows, records = [], None
    for p, pass_features in enumerate(passes):
        bench.device_memory_start(device)
        with bench.RSSWatch() as rss:
            bench.sync(device)
            t0 = time.perf_counter()
            state = run_pass(setup.model, sae, contexts, pass_features, cfg, setup.special_ids, 1)
            bench.sync(device)
            seconds = time.perf_counter() - t0
        row = {
            "pass": p,
            "features": len(pass_features),
            "seconds": seconds,
            "tok_s": n_tokens / seconds,
            "state_bytes": state.nbytes(),
            # what plan_passes counted: every feature's state and columns, one block's batch work
            "estimate_bytes": len(pass_features) * (state_pf + columns_pf)
            + min(len(pass_features), ENCODE_BLOCK) * work_pf
            + fixed,
            "rss_peak_mb": rss.peak / 2**20,
            "rss_growth_mb": (rss.peak - rss.before) / 2**20,
            "peak_device_mb": bench.device_memory_peak_mb(device),
        }
        if p < args.records_passes:
            t1 = time.perf_counter()
            samples = finish_records(state, cfg, cfg.window_size, contexts.tokens_of, bench.no_decode)
            row["records_s"] = time.perf_counter() - t1
            row["windows"] = sum(len(s.windows) for s in samples)
            row["firing"] = sum(s.stats.n_active > 0 for s in samples)
            records = records or row
            del samples
        del state  # a pass's state goes before the next pass's is made
        gc.collect()
        rows.append(row)
        print(
            f"  pass {p + 1}/{len(passes)}: {row['features']:,} features, {seconds:.1f} s, {row['tok_s']:,.0f} tok/s, "
            f"state {row['state_bytes'] / GB:.2f} GiB, peak RSS {row['rss_peak_mb']:,.0f} MB"
            + (f", records {row['records_s']:.1f} s" if "records_s" in row else ""),
            flush=True,
        )
    total_s = time.perf_counter() - t_start
    streaming_s = sum(r["seconds"] for r in rows)
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "model": args.model,
        "device": device,
        "dtype": str(sae.dtype),
        "d_in": sae.cfg.d_in,
        "d_sae": sae.cfg.d_sae,
        "l0": l0,
        "tokens": n_tokens,
        "context": contexts.context_size,
        "batch": cfg.batch_size,
        "max_state_gb": args.max_state_gb,
        "plan": sentence,
        "state_bytes_per_feature": state_pf,
        "work_bytes_per_feature": work_pf,
        "columns_bytes_per_feature": columns_pf,
        "weights_gb": weights_bytes(sae) / GB,
        "setup_s": setup_s,
        "passes": rows,
        "records": records,
        "streaming_s": streaming_s,
        "total_s": total_s,
        "tokens_x_passes": n_tokens * len(rows),
        "feature_tokens_per_s": n_tokens * sae.cfg.d_sae / streaming_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_threads": torch.get_num_threads(),
    }


def markdown(report: dict) -> str:
    gpu = report["device"] == "cuda"
    head = ["pass", "features", "seconds", "tok/s", "state GiB",
            "estimate GiB (state + columns + one block's batch work)", "RSS growth in the pass GiB",
            "peak RSS MB"]  # fmt: skip
    rows = [
        [
            str(r["pass"] + 1),
            f"{r['features']:,}",
            f"{r['seconds']:.1f}",
            f"{r['tok_s']:,.0f}",
            f"{r['state_bytes'] / GB:.2f}",
            f"{r['estimate_bytes'] / GB:.2f}",
            f"{r['rss_growth_mb'] / 1024:.2f}",
            f"{r['rss_peak_mb']:,.0f}",
            *([f"{r['peak_device_mb']:,.0f}"] if gpu else []),
        ]
        for r in report["passes"]
    ]
    lines = bench.table(head + (["peak GPU MB"] if gpu else []), rows)
    n_passes, rec = len(report["passes"]), report["records"]
    lines += [
        "",
        f"total {report['total_s']:.0f} s wall ({report['setup_s']:.0f} s set-up, {report['streaming_s']:.0f} s "
        f"streaming in {n_passes} passes); tokens x passes {report['tokens_x_passes']:,}; "
        f"{report['feature_tokens_per_s']:,.0f} feature-tokens/s; peak RSS {report['peak_rss_mb']:,.0f} MB "
        f"(ru_maxrss); torch threads {report['torch_threads']}.",
    ]
    if rec:
        lines.append(
            f"records built for pass {rec['pass'] + 1} only: {rec['features']:,} features ({rec['firing']:,} fired), "
            f"{rec['windows']:,} windows in {rec['records_s']:.1f} s; {n_passes} passes would take ~"
            f"{rec['records_s'] * report['d_sae'] / rec['features']:.0f} s of record building (then dropped: no store)."
        )
    else:
        lines.append("records: not built (--records-passes 0).")
    return "\n".join(lines)


def gpu_plan(tok_s: float, batch_sizes: tuple[int, ...] = (16, 8, 4)) -> str:
    """The 80 GB arithmetic, one row per batch size (batch work per feature grows with batch x context)."""
    g = GPU_PLAN
    d_sae, d_in, bf16 = 1 << 20, g["d_in"], 2
    weights = (2 * d_in * d_sae + 2 * d_sae + d_in) * bf16  # W_enc, W_dec; b_enc, threshold; b_dec
    model = g["params"] * bf16
    free = g["gpu_gb"] * 1e9 - weights - model - FORWARD_ALLOWANCE_GB * GB
    limit = 0.8 * free  # plan_passes on a GPU without --max-state-gb: 80 % of the free memory
    # What plan_passes needs of the SAE (sampler_memory.sae_bytes): a jumprelu encodes only the pass's columns.
    sae = SimpleNamespace(
        cfg=SimpleNamespace(d_in=d_in, d_sae=d_sae), dtype=torch.bfloat16, architecture=ARCHITECTURES.get("jumprelu")
    )
    columns_pf = sae_bytes(sae, SamplerConfig(), g["context"])[0]
    lines = [
        f"80 GB GPU plan (arithmetic, NOT measured): {g['model']} layer-12 residual, d_in {d_in}, d_sae {d_sae:,}, "
        f"bf16, context {g['context']}, sampler defaults, {g['n_tokens']:,} tokens.",
        f"  SAE weights (W_enc + W_dec + b_enc + threshold + b_dec, bf16): {weights / GB:.2f} GiB; "
        f"model ({g['params']:,} parameters, bf16): {model / GB:.2f} GiB; "
        f"forward activations and slack (allowance): {FORWARD_ALLOWANCE_GB:.0f} GiB.",
        f"  free for the sampler: 80 GB (80e9 bytes) - those = {free / GB:.2f} GiB; plan_passes takes 80 % of it: "
        f"{limit / GB:.2f} GiB per pass, holding every feature's state and its encoder columns ({columns_pf:,} B) "
        "and one block of 4,096 features' batch work at a time.",
        f"  total time = passes x {g['n_tokens']:,} tokens / tok/s per pass, at an ASSUMED {tok_s:,.0f} tok/s per pass "
        "(not measured; replace with `--gpu-tok-s` once the GPU commands in this file's docstring have run).",
    ]
    rows = []
    for batch in batch_sizes:
        cfg = SamplerConfig(batch_size=batch, max_state_gb=limit / GB)
        state, work = bytes_per_feature(cfg, g["context"], sync_free=True)
        # plan_passes itself (whole encode blocks included); any non-CPU device plans the sync-free steps,
        # and with max_state_gb set it asks no GPU for its free memory.
        passes, _ = plan_passes(list(range(d_sae)), cfg, g["context"], "meta", sae)
        hours = len(passes) * g["n_tokens"] / tok_s / 3600
        whole = (state + columns_pf) * d_sae + ENCODE_BLOCK * work
        rows.append([
            str(batch), f"{state:,}", f"{work:,}", f"{whole / GB:,.1f}", f"{len(passes[0]):,}",
            str(len(passes)), f"{hours:.1f}",
        ])  # fmt: skip
    head = ["batch (x 1024)", "state B/feature", "batch work B/feature, one block at a time (sync-free)",
            "GiB for 2^20 features in one pass", "features per pass", "passes", "estimated hours"]  # fmt: skip
    return "\n".join(lines + bench.table(head, rows))


def compare_blocks(args, repeats: int = 3) -> dict:
    """One pass over the same features and tokens folded in blocks of ENCODE_BLOCK vs as one block (the
    update before blocks), interleaved so a shared machine's drift hits both alike; the states must be
    equal bit for bit."""
    import autointerp.sampler_memory as sampler_module

    with torch.no_grad():
        setup = build(args)
    cfg = SamplerConfig(batch_size=args.batch_size)
    contexts = TensorContexts(setup.tokens_NL)
    features = list(range(setup.sae.cfg.d_sae))
    sizes = (ENCODE_BLOCK, len(features))
    seconds: dict[int, list[float]] = {size: [] for size in sizes}
    states = {}
    try:
        for _ in range(repeats):
            for size in sizes:
                sampler_module.ENCODE_BLOCK = size
                t0 = time.perf_counter()
                state = run_pass(setup.model, setup.sae, contexts, features, cfg, setup.special_ids, 1)
                seconds[size].append(time.perf_counter() - t0)
                states.setdefault(size, state.tensors())
    finally:
        sampler_module.ENCODE_BLOCK = ENCODE_BLOCK
    equal = all(torch.equal(states[sizes[0]][k], states[sizes[1]][k]) for k in states[sizes[0]])
    median = {size: sorted(v)[len(v) // 2] for size, v in seconds.items()}
    print(
        f"{len(features):,} features, {setup.tokens_NL.numel():,} tokens, {args.device}: blocks of {sizes[0]:,} "
        f"{median[sizes[0]]:.2f} s, one block of {sizes[1]:,} {median[sizes[1]]:.2f} s (median of {repeats}, "
        f"interleaved; ratio {median[sizes[1]] / median[sizes[0]]:.2f}x); states equal bit for bit: {equal}"
    )
    return {"features": len(features), "seconds": {str(k): v for k, v in seconds.items()}, "states_equal": equal}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--model", choices=list(MODELS), default="tiny")
    parser.add_argument("--d-sae", type=int, default=1 << 20, help="SAE features, all tracked (default 2^20)")
    parser.add_argument(
        "--max-state-gb",
        type=float,
        default=None,
        help="sampler memory per pass, GiB (default: 4 on cpu, several passes well inside 24 GiB; on cuda "
        "plan_passes's own 80 %% of the free GPU memory)",
    )
    parser.add_argument("--n-tokens", type=int, default=1024, help="tokens streamed by every pass")
    parser.add_argument("--context-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--records-passes", type=int, default=1, help="build (and time) records for this many passes")
    parser.add_argument("--gpu-tok-s", type=float, default=20_000, help="ASSUMED tokens/s per pass for the GPU plan")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument(
        "--compare-blocks", action="store_true", help="time one pass in blocks of 4,096 vs one block (use --d-sae)"
    )
    args = parser.parse_args(argv)
    if args.max_state_gb is None and args.device == "cpu":
        args.max_state_gb = 4.0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compare_blocks:
        report = compare_blocks(args)
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=1))
        return report
    report = run(args)
    print(markdown(report))
    print()
    print(gpu_plan(args.gpu_tok_s))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
