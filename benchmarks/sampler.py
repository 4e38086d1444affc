"""Sampler throughput against the bare forward pass to the hook, and against delphi's activation cache.

For each configuration (model + SAE + tokens) this times, in one process and interleaved so that a
shared machine's drift hits every measurement alike:

- forward: `hook_activations` over the batches (the model run to the SAE's hook and no further),
- ours: `sample_features` over the same tokens, once with `--n-chosen` features and once with all
  features tracked; split into streaming (state set-up + every batch) and finish (building records),
- delphi: EleutherAI delphi's `LatentCache.run` (eai-delphi 0.1.3) on the same model, SAE and tokens,
  with the same chosen features as its filter and with none, plus its host-memory (RSS) growth.

A ratio is the sampler's tokens/s over the forward pass's, the forward figure being the mean of the
two forward timings either side of it. Configurations:

- builtin: SmolLM2-135M (the built-in model) + the demo SAE (topk, 4,096 features), or a random topk
  SAE of the same shape while the demo SAE is not there, on the built-in Shakespeare corpus;
- gpt2: a random-weight GPT-2-small-sized model (hook blocks.6.hook_resid_post) + a random standard
  SAE with 24,576 features, on random tokens;
- 1b: a random-weight Llama-3.2-1B-sized model (hook blocks.8.hook_resid_post) + a random jumprelu
  SAE with 65,536 features, on random tokens.

Speed does not depend on weight values, but the sampler's and delphi's work depends on how many
features fire, so the random SAEs' thresholds are calibrated on the first batch to log-uniform
firing densities in [1e-5, 1e-2] (L0 ~ 35 for 24,576 features, ~ 95 for 65,536 on that batch; about
twice that on later batches); the L0 measured on the second batch is reported. Standard and jumprelu
SAEs encode only the chosen columns; topk must encode all features.

delphi is loaded from its file `delphi/latents/cache.py` alone, with stand-in `delphi`,
`delphi.config` and `delphi.latents` modules (the real package pulls faiss, sentence-transformers and
sparsify). It is given the same truncated forward as ours (its own pipeline runs the whole model body,
which is slower still); only its caching pass is timed, not the later writing of splits to disk and
building of examples that it needs before it has what `sample_features` returns.

    python benchmarks/sampler.py [--device cuda|cpu] [--tokens N] [--configs builtin,gpt2,1b]
                                 [--skip-delphi] [--threads N] [--out results.json]
    python benchmarks/sampler.py --scaling   # ranks, merge, bytes per feature, 65,536 features (CPU)

Needs psutil, and for delphi `pip install --no-deps eai-delphi==0.1.3` plus jaxtyping. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # delphi's progress bar

import argparse  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import psutil  # noqa: E402
import torch  # noqa: E402

from autointerp.config import SamplerConfig  # noqa: E402
from autointerp.hooks import hook_stop_layer  # noqa: E402
from autointerp.sae import SAEConfig, SparseAutoencoder  # noqa: E402
from autointerp.sampler import TensorContexts, hook_activations, run_pass  # noqa: E402
from autointerp.sampler_results import finish_records  # noqa: E402

CONFIGS = ("builtin", "gpt2", "1b")

# Per device: (tokens, batch size, context size) per configuration; delphi's token cap.
DEFAULTS = {
    "cpu": {"builtin": (8192, 8, 128), "gpt2": (4096, 8, 128), "1b": (512, 4, 64), "delphi_tokens": None},
    "cuda": {
        "builtin": (1 << 20, 32, 256),
        "gpt2": (1 << 20, 32, 256),
        "1b": (1 << 20, 32, 256),
        "delphi_tokens": 1 << 17,
    },
}

GPT2_SMALL = dict(
    n_layers=12,
    d_model=768,
    n_heads=12,
    d_head=64,
    d_mlp=3072,
    d_vocab=50257,
    n_ctx=1024,
    act_fn="gelu_new",
    normalization_type="LN",
    positional_embedding_type="standard",
)
LLAMA_1B = dict(
    n_layers=16,
    d_model=2048,
    n_heads=32,
    d_head=64,
    n_key_value_heads=8,
    d_mlp=8192,
    d_vocab=128256,
    n_ctx=2048,
    act_fn="silu",
    normalization_type="RMS",
    positional_embedding_type="rotary",
    rotary_dim=64,
    rotary_base=500000.0,
    rotary_adjacent_pairs=False,
    gated_mlp=True,
    final_rms=True,
    original_architecture="LlamaForCausalLM",
)
# name -> (model dims, hook, SAE architecture, d_sae)
RANDOM_MODELS = {
    "gpt2": (GPT2_SMALL, "blocks.6.hook_resid_post", "standard", 24_576),
    "1b": (LLAMA_1B, "blocks.8.hook_resid_post", "jumprelu", 65_536),
}


def no_decode(ids: list[int]) -> list[str]:
    return list(map(str, ids))


# ---- timing helpers ------------------------------------------------------------------------------


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class RSSWatch:
    """Host RSS before, at its peak during (sampled every 20 ms), and after a block."""

    def __init__(self) -> None:
        self.process = psutil.Process()

    def __enter__(self) -> RSSWatch:
        gc.collect()
        self.before = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.after = self.process.memory_info().rss
        self.peak = max(self.peak, self.after)

    def report(self) -> dict[str, float]:
        return {
            "rss_before_mb": self.before / 2**20,
            "rss_peak_growth_mb": (self.peak - self.before) / 2**20,
            "rss_retained_mb": (self.after - self.before) / 2**20,
        }


def device_memory_start(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def device_memory_peak_mb(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None


# ---- models, SAEs, tokens ------------------------------------------------------------------------


@dataclass
class Setup:
    name: str
    model: object
    sae: SparseAutoencoder
    tokens_NL: torch.Tensor
    special_ids: list[int]
    decode: object  # None: the model's tokenizer
    batch_size: int
    notes: list[str] = field(default_factory=list)


def random_model(dims: dict, hook: str, device: str, dtype: torch.dtype, full_depth: bool):
    """A HookedTransformer of these dimensions with cheap random weights (normal, std 0.02)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    dims = dict(dims)
    if not full_depth:  # no pass here runs past the hook's block; the rest would only take memory
        dims["n_layers"] = hook_stop_layer(hook)
    cfg = HookedTransformerConfig(**dims, device=device, dtype=dtype, init_weights=False)
    gen = torch.Generator(device=device).manual_seed(0)
    with warnings.catch_warnings(), torch.device(device):
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(cfg, move_to_device=False)
    with torch.no_grad():
        for name, param in model.named_parameters():
            # W_* (and GQA's _W_K/_W_V) are left uninitialised; biases and norm scales are 0 and 1
            if name.split(".")[-1].lstrip("_").startswith("W_"):
                param.normal_(0.0, 0.02, generator=gen)
    return model.eval()


def calibrated_sae(
    architecture: str, d_in: int, d_sae: int, hook: str, resid_ND: torch.Tensor, device: str, dtype: torch.dtype
) -> SparseAutoencoder:
    """Random SAE whose features fire at log-uniform densities in [1e-5, 1e-2] on inputs like resid_ND.

    A threshold is mean + alpha * z(1 - density) * std of the feature's pre-activation on resid_ND (a
    handful of calibration tokens cannot place 1e-5 quantiles), one alpha for all features chosen so
    that the calibration tokens' L0 is the sum of the densities (tails are heavier than normal)."""
    gen = torch.Generator().manual_seed(0)
    W_dec = torch.randn(d_sae, d_in, generator=gen)
    W_dec /= W_dec.norm(dim=-1, keepdim=True)
    weights = {
        "W_enc": (torch.randn(d_in, d_sae, generator=gen) / d_in**0.5).to(device),
        "W_dec": W_dec.to(device),
        "b_dec": torch.zeros(d_in, device=device),
        "b_enc": torch.zeros(d_sae, device=device),
    }
    pre_NS = resid_ND.float().to(device) @ weights["W_enc"]
    density_S = 10 ** torch.empty(d_sae).uniform_(-5, -2, generator=gen)
    z_S = torch.special.ndtri(1 - density_S).to(device)
    mean_S, std_S = pre_NS.mean(0), pre_NS.std(0)
    target_l0, low, high = float(density_S.sum()), 0.5, 8.0
    for _ in range(25):  # bisection on alpha: L0 falls as alpha grows
        alpha = (low + high) / 2
        l0 = float((pre_NS > mean_S + alpha * z_S * std_S).sum()) / len(pre_NS)
        low, high = (alpha, high) if l0 > target_l0 else (low, alpha)
    threshold_S = (mean_S + high * z_S * std_S).clamp_min(1e-6)
    del pre_NS
    if architecture == "jumprelu":
        weights["threshold"] = threshold_S
    else:  # standard: fires where pre > threshold
        weights["b_enc"] = -threshold_S
    cfg = SAEConfig(architecture=architecture, d_in=d_in, d_sae=d_sae, hook_name=hook)
    return SparseAutoencoder.from_weights(cfg, weights).to(device=device, dtype=dtype)


def random_topk_sae(d_in: int, d_sae: int, k: int, hook: str, device: str, dtype: torch.dtype) -> SparseAutoencoder:
    gen = torch.Generator().manual_seed(0)
    W_dec = torch.randn(d_sae, d_in, generator=gen)
    weights = {
        "W_enc": torch.randn(d_in, d_sae, generator=gen) / d_in**0.5,
        "W_dec": W_dec / W_dec.norm(dim=-1, keepdim=True),
        "b_dec": torch.zeros(d_in),
        "b_enc": 0.1 * torch.randn(d_sae, generator=gen),
    }
    cfg = SAEConfig(architecture="topk", d_in=d_in, d_sae=d_sae, k=k, hook_name=hook)
    return SparseAutoencoder.from_weights(cfg, weights).to(device=device, dtype=dtype)


def setup_builtin(device: str, n_tokens: int, batch: int, ctx: int) -> Setup:
    from autointerp.assets import resolve_sae_path
    from autointerp.corpus import CorpusSpec, special_token_ids, tokenise_corpus
    from autointerp.sae import load_sae
    from autointerp.subject_model import load_subject_model

    model = load_subject_model("smollm2-135m", device)
    notes = []
    demo = resolve_sae_path("demo")
    if (demo / "cfg.json").is_file():
        sae = load_sae(demo)
        notes.append(f"demo SAE ({sae.cfg.architecture}, d_sae {sae.cfg.d_sae}, hook {sae.cfg.hook_name})")
    else:
        sae = random_topk_sae(576, 4096, 32, "blocks.8.hook_resid_post", device, model.cfg.dtype)
        notes.append(
            "demo SAE not built yet: random-weight topk SAE of its shape (d_in 576, d_sae 4096, k 32, "
            "blocks.8.hook_resid_post)"
        )
    sae.to(device=model.cfg.device, dtype=model.cfg.dtype)
    tokens = tokenise_corpus(CorpusSpec(), model.tokenizer, ctx, prepend_bos=True, max_tokens=n_tokens)
    tokens = tokens[: len(tokens) // batch * batch]
    return Setup("builtin", model, sae, tokens, special_token_ids(model.tokenizer), None, batch, notes)


def setup_random(name: str, device: str, n_tokens: int, batch: int, ctx: int, full_depth: bool) -> Setup:
    from autointerp.subject_model import default_dtype

    dims, hook, architecture, d_sae = RANDOM_MODELS[name]
    dtype = default_dtype(device)
    model = random_model(dims, hook, device, dtype, full_depth)
    gen = torch.Generator().manual_seed(1)
    n_contexts = max(batch, n_tokens // ctx // batch * batch)
    bos = 0
    tokens = torch.randint(1, dims["d_vocab"], (n_contexts, ctx), generator=gen)
    tokens[:, 0] = bos
    resid = hook_activations(model, tokens[:batch].to(device), hook)[:, 1:].flatten(0, 1)
    sae = calibrated_sae(architecture, dims["d_model"], d_sae, hook, resid, device, dtype)
    depth = dims["n_layers"] if full_depth else hook_stop_layer(hook)
    notes = [f"random weights, {depth} of {dims['n_layers']} layers built; random tokens; random {architecture} SAE"]
    return Setup(name, model, sae, tokens, [bos], no_decode, batch, notes)


def measured_l0(setup: Setup) -> float:
    """Mean L0 on the second batch (the first calibrated the random SAEs), BOS excluded."""
    second = setup.tokens_NL[setup.batch_size : 2 * setup.batch_size]
    tokens = (second if len(second) else setup.tokens_NL[: setup.batch_size]).to(setup.model.cfg.device)
    resid = hook_activations(setup.model, tokens, setup.sae.cfg.hook_name)[:, 1:]
    return float((setup.sae.encode(resid) > 0).sum(-1).float().mean())


# ---- the timed passes ----------------------------------------------------------------------------


def time_forward(setup: Setup, device: str) -> dict:
    device_memory_start(device)
    hook = setup.sae.cfg.hook_name
    sync(device)
    started, cpu_started = time.perf_counter(), time.process_time()
    for start in range(0, len(setup.tokens_NL), setup.batch_size):
        hook_activations(setup.model, setup.tokens_NL[start : start + setup.batch_size].to(device), hook)
    sync(device)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    n = setup.tokens_NL.numel()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "tokens": n,
        "tok_s": n / seconds,
        "tok_per_cpu_s": n / cpu_seconds,
        "peak_device_mb": device_memory_peak_mb(device),
    }


def time_ours(setup: Setup, features: list[int], device: str, tokens_NL: torch.Tensor | None = None) -> dict:
    tokens_NL = setup.tokens_NL if tokens_NL is None else tokens_NL
    cfg = SamplerConfig(n_tokens=tokens_NL.numel(), context_size=tokens_NL.shape[1], batch_size=setup.batch_size)
    contexts = TensorContexts(tokens_NL)
    last_batch_done = [0.0, 0.0]  # wall, process CPU

    device_memory_start(device)
    with RSSWatch() as rss:
        sync(device)
        started, cpu_started = time.perf_counter(), time.process_time()
        # Streaming is timed up to the device finishing the last batch (one sync at the end: the
        # sampling loop itself never waits for the device), then finish builds the records.
        state = run_pass(setup.model, setup.sae, contexts, features, cfg, setup.special_ids, 1)
        sync(device)
        last_batch_done[:] = time.perf_counter(), time.process_time()
        samples = finish_records(state, cfg, cfg.window_size, contexts.tokens_of, setup.decode)
        del state
        sync(device)
        ended, cpu_ended = time.perf_counter(), time.process_time()
    n_windows = sum(len(s.windows) for s in samples)
    del samples
    streaming, finish = last_batch_done[0] - started, ended - last_batch_done[0]
    cpu_streaming = last_batch_done[1] - cpu_started
    n = tokens_NL.numel()
    return {
        "features": len(features),
        "tokens": n,
        "stream_seconds": streaming,
        "finish_seconds": finish,
        "stream_cpu_seconds": cpu_streaming,
        "finish_cpu_seconds": cpu_ended - last_batch_done[1],
        "stream_tok_s": n / streaming,
        "stream_tok_per_cpu_s": n / cpu_streaming,
        "end_to_end_tok_s": n / (ended - started),
        "windows": n_windows,
        "peak_device_mb": device_memory_peak_mb(device),
        **rss.report(),
    }


def load_delphi_cache():
    """delphi/latents/cache.py as a module, with stand-ins for the package modules it imports from."""
    spec = importlib.util.find_spec("delphi")  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("delphi is not installed: pip install --no-deps eai-delphi==0.1.3")
    root = Path(spec.submodule_search_locations[0])
    if "delphi" not in sys.modules:
        package = types.ModuleType("delphi")
        package.__path__ = [str(root)]
        package.logger = logging.getLogger("delphi")
        sys.modules["delphi"] = package
    if "delphi.config" not in sys.modules:
        config = types.ModuleType("delphi.config")
        config.CacheConfig = type("CacheConfig", (), {})  # only named in a type hint of save_config
        sys.modules["delphi.config"] = config
    if "delphi.latents" not in sys.modules:  # its __init__ imports faiss & co; cache.py needs only the path
        latents = types.ModuleType("delphi.latents")
        latents.__path__ = [str(root / "latents")]
        sys.modules["delphi.latents"] = latents
    file_spec = importlib.util.spec_from_file_location("delphi.latents.cache", root / "latents" / "cache.py")
    module = importlib.util.module_from_spec(file_spec)
    sys.modules["delphi.latents.cache"] = module
    file_spec.loader.exec_module(module)
    return module


class DelphiModelView:
    """What delphi's LatentCache uses of a model (.device, named_modules to hook, a call), running the
    HookedTransformer only to the hook's block, as `hook_activations` does."""

    def __init__(self, model, hook_name: str) -> None:
        self.model, self.stop = model, hook_stop_layer(hook_name)

    @property
    def device(self) -> torch.device:
        return torch.device(self.model.cfg.device)

    def named_modules(self):
        return self.model.named_modules()

    def __call__(self, tokens):
        return self.model(tokens, stop_at_layer=self.stop)


def time_delphi(cache_module, setup: Setup, features: list[int] | None, device: str, n_tokens: int) -> dict:
    hook = setup.sae.cfg.hook_name
    filters = None if features is None else {hook: torch.tensor(features, device=device)}
    sae = setup.sae
    cache = cache_module.LatentCache(
        DelphiModelView(setup.model, hook),
        {hook: lambda x: sae.encode(x)},
        batch_size=setup.batch_size,
        filters=filters,
    )
    tokens_NL = setup.tokens_NL[: max(1, n_tokens // setup.tokens_NL.shape[1] // setup.batch_size) * setup.batch_size]
    device_memory_start(device)
    with RSSWatch() as rss:
        sync(device)
        started, cpu_started = time.perf_counter(), time.process_time()
        cache.run(tokens_NL.numel(), tokens_NL)
        sync(device)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    kept = cache.cache
    n_nonzero = int(kept.latent_locations[hook].shape[0])
    kept_bytes = sum(t[hook].nbytes for t in (kept.latent_locations, kept.latent_activations, kept.tokens))
    del cache, kept
    out = {
        "features": setup.sae.cfg.d_sae if features is None else len(features),
        "tokens": tokens_NL.numel(),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "tok_s": tokens_NL.numel() / seconds,
        "tok_per_cpu_s": tokens_NL.numel() / cpu_seconds,
        "nonzeros_kept": n_nonzero,
        "kept_mb_per_1m_tokens": kept_bytes / 2**20 / tokens_NL.numel() * 1e6,
        "peak_device_mb": device_memory_peak_mb(device),
        **rss.report(),
    }
    out["rss_peak_growth_mb_per_1m_tokens"] = out["rss_peak_growth_mb"] / tokens_NL.numel() * 1e6
    return out


def run_config(setup: Setup, args, device: str, delphi) -> dict:
    d_sae = setup.sae.cfg.d_sae
    gen = torch.Generator().manual_seed(0)
    chosen = sorted(torch.randperm(d_sae, generator=gen)[: args.n_chosen].tolist())
    everything = list(range(d_sae))
    delphi_tokens = args.delphi_tokens or DEFAULTS[device]["delphi_tokens"] or setup.tokens_NL.numel()
    delphi_tokens = min(delphi_tokens, setup.tokens_NL.numel())
    log = lambda msg: print(f"  [{setup.name}] {msg}", file=sys.stderr, flush=True)  # noqa: E731

    # Warm-up: one batch through each path (kernels, allocator, lazily built state).
    warm = setup.tokens_NL[: setup.batch_size]
    hook_activations(setup.model, warm.to(device), setup.sae.cfg.hook_name)
    time_ours(setup, chosen[:8], device, warm)
    if delphi is not None:
        time_delphi(delphi, setup, chosen[:8], device, warm.numel())
    l0 = measured_l0(setup)
    log(f"L0 {l0:.1f}, {setup.tokens_NL.numel()} tokens, batch {setup.batch_size} x {setup.tokens_NL.shape[1]}")

    forwards, rows = [], []
    forwards.append(time_forward(setup, device))
    log(f"forward {forwards[-1]['tok_s']:,.0f} tok/s")
    passes = [("ours", chosen), ("ours", everything)]
    if delphi is not None:
        passes += [("delphi", chosen), ("delphi", None)]
    for kind, features in passes:
        if kind == "ours":
            row = time_ours(setup, features, device)
            rate, cpu_rate = row["stream_tok_s"], row["stream_tok_per_cpu_s"]
        else:
            row = time_delphi(delphi, setup, features, device, delphi_tokens)
            rate, cpu_rate = row["tok_s"], row["tok_per_cpu_s"]
        forwards.append(time_forward(setup, device))
        reference = (forwards[-2]["tok_s"] + forwards[-1]["tok_s"]) / 2
        cpu_reference = (forwards[-2]["tok_per_cpu_s"] + forwards[-1]["tok_per_cpu_s"]) / 2
        row.update(
            kind=kind,
            forward_tok_s=reference,
            ratio=rate / reference,
            forward_tok_per_cpu_s=cpu_reference,
            cpu_ratio=cpu_rate / cpu_reference,
        )
        if kind == "ours":
            row["end_to_end_ratio"] = row["end_to_end_tok_s"] / reference
        rows.append(row)
        log(
            f"{kind} {row['features']} features: {rate:,.0f} tok/s, ratio {row['ratio']:.3f} "
            f"(CPU time {row['cpu_ratio']:.3f}); "
            f"forward {forwards[-1]['tok_s']:,.0f} tok/s"
        )
        gc.collect()
    return {
        "config": setup.name,
        "hook": setup.sae.cfg.hook_name,
        "architecture": setup.sae.cfg.architecture,
        "d_sae": d_sae,
        "d_model": setup.model.cfg.d_model,
        "l0": l0,
        "tokens": setup.tokens_NL.numel(),
        "batch": setup.batch_size,
        "context": setup.tokens_NL.shape[1],
        "dtype": str(setup.model.cfg.dtype),
        "notes": setup.notes,
        "forward": forwards,
        "passes": rows,
    }


# ---- report --------------------------------------------------------------------------------------


def hardware(device: str) -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads_torch": torch.get_num_threads(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        info["cpu_model"] = next(
            (ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")),
            platform.processor(),
        )
    except OSError:
        info["cpu_model"] = platform.processor()
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    from importlib.metadata import PackageNotFoundError, version

    for package in ("transformer-lens", "eai-delphi"):
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            info[package] = None
    return info


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def markdown(results: list[dict], device: str) -> str:
    """Two tables: ours against the forward pass; delphi against the forward pass and against ours.

    On CPU the ratios are also given in process CPU time, which a shared machine disturbs far less than
    wall time; "ours / delphi" compares the two ratios (CPU time on CPU), each against its own forwards."""
    gpu = device.startswith("cuda")
    ours_rows, delphi_rows = [], []
    for result in results:
        ours = {row["features"]: row for row in result["passes"] if row["kind"] == "ours"}
        for row in result["passes"]:
            memory = [f"{row['peak_device_mb']:,.0f}"] if gpu else []
            cpu_ratio = [] if gpu else [f"{row['cpu_ratio']:.2f}"]
            if row["kind"] == "ours":
                ours_rows.append([
                    result["config"], f"{result['d_sae']:,}", f"{result['l0']:.0f}",
                    f"{result['tokens']:,} ({result['batch']} x {result['context']})", f"{row['features']:,}",
                    fmt_rate(row["forward_tok_s"]), fmt_rate(row["stream_tok_s"]), f"{row['ratio']:.2f}", *cpu_ratio,
                    f"{row['finish_seconds']:.1f}", f"{row['end_to_end_ratio']:.2f}",
                    f"{row['rss_peak_growth_mb']:,.0f}", *memory,
                ])  # fmt: skip
                continue
            mine = ours.get(row["features"])
            key = "ratio" if gpu else "cpu_ratio"
            filtered = "" if row["features"] == result["d_sae"] else " (filter)"
            delphi_rows.append([
                result["config"], f"{row['features']:,}{filtered}", f"{row['tokens']:,}", fmt_rate(row["tok_s"]),
                f"{row['ratio']:.2f}", *cpu_ratio,
                (f"{mine['ratio']:.2f}" + ("" if gpu else f" / {mine['cpu_ratio']:.2f}")) if mine else "-",
                f"{mine[key] / row[key]:.1f}x" if mine else "-",
                f"{row['rss_peak_growth_mb']:,.0f}", f"{row['kept_mb_per_1m_tokens']:,.0f}", *memory,
            ])  # fmt: skip
    gpu_head = ["peak GPU MB"] if gpu else []
    cpu_head = [] if gpu else ["ratio (CPU time)"]
    lines = table(
        ["config", "d_sae", "L0", "tokens (batch x ctx)", "features tracked", "forward tok/s",
         "sampler tok/s (streaming)", "ratio", *cpu_head, "finish s", "end-to-end ratio",
         "host RSS peak growth MB", *gpu_head],
        ours_rows,
    )  # fmt: skip
    if delphi_rows:
        lines += [""] + table(
            ["config", "features", "tokens", "delphi tok/s", "delphi ratio", *cpu_head,
             "our ratio" + ("" if gpu else " (wall / CPU time)"), "ours / delphi", "host RSS peak growth MB",
             "host MB kept per 1M tokens", *gpu_head],
            delphi_rows,
        )  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tokens", type=int, default=None, help="tokens per configuration (default: per device)")
    parser.add_argument("--batch-size", type=int, default=None, help="contexts per batch (default: per device)")
    parser.add_argument("--context-size", type=int, default=None, help="tokens per context (default: per device)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated: " + ", ".join(CONFIGS))
    parser.add_argument("--n-chosen", type=int, default=500, help="features in the 'chosen' passes")
    parser.add_argument("--skip-delphi", action="store_true")
    parser.add_argument(
        "--delphi-tokens",
        type=int,
        default=None,
        help="tokens for delphi's passes (default: all on CPU, 131,072 on GPU, where it runs far slower)",
    )
    parser.add_argument(
        "--full-depth",
        action="store_true",
        help="build every layer of the random models (default: on GPU only; none past the hook runs)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="instead: 1 vs 2 gloo ranks on CPU, merge cost, bytes per feature, 65,536-feature peak memory "
        "(benchmarks/sampler_scaling.py)",
    )
    parser.add_argument("--wide-tokens", type=int, default=4096, help="tokens for the 65,536-feature run (--scaling)")
    args = parser.parse_args()
    if args.scaling:
        sys.path.insert(0, str(Path(__file__).parent))
        import sampler_scaling

        report = sampler_scaling.main(args.tokens or 16_384, args.n_chosen, args.wide_tokens)
        print(sampler_scaling.markdown(report))
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=1))
        return
    device = args.device
    full_depth = args.full_depth or device == "cuda"
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {unknown}; choose from {', '.join(CONFIGS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    delphi = None if args.skip_delphi else load_delphi_cache()

    started = time.perf_counter()
    results = []
    for name in names:
        n_tokens, batch, ctx = DEFAULTS[device][name]
        n_tokens, batch, ctx = args.tokens or n_tokens, args.batch_size or batch, args.context_size or ctx
        t0 = time.perf_counter()
        with torch.no_grad():
            if name == "builtin":
                setup = setup_builtin(device, n_tokens, batch, ctx)
            else:
                setup = setup_random(name, device, n_tokens, batch, ctx, full_depth)
            print(f"[{name}] set up in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            result = run_config(setup, args, device, delphi)
        result["setup_seconds"] = time.perf_counter() - t0
        results.append(result)
        del setup
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()

    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "device": device,
        "hardware": hardware(device),
        "n_chosen": args.n_chosen,
        "total_seconds": time.perf_counter() - started,
        "results": results,
    }
    print(markdown(results, device))
    print(f"\n{json.dumps(report['hardware'])}\ntotal {report['total_seconds']:.0f} s")
    if args.out:
        Path(args.out).write_text(
            json.dumps(report, indent=1, default=lambda x: None if isinstance(x, float) and math.isnan(x) else str(x))
        )


if __name__ == "__main__":
    main()
