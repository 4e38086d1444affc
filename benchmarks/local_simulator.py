"""Does the offline simulator (SmolLM2-135M-Instruct, spec "local") use the explanation? Measured on
features whose truth is known by construction.

Known truth: autointerp.known_truth.token_feature_sae builds an SAE on SmolLM2-135M's
`blocks.0.hook_resid_pre` (the token embedding) whose feature i fires, with activation 1, exactly on
the token t_i (' king', ' love', ...). It is saved in the SAELens layout and loaded back; the real
sampler draws each feature's windows from the built-in Shakespeare corpus, and every window is checked
against the construction (no firing off t_i, no silence on it).

Each feature is then simulated from five explanations:
- right-word:      'the word "king"' (what a good explainer would say);
- right-baseline:  the baseline explanation of its explanation windows ("[baseline] top tokens: ' king' (10)");
- local-explainer: SmolLM2's own explanation of its explanation windows (autointerp.explain, spec "local"):
                   the whole offline default, explainer included;
- other-word:      the next feature's right-word explanation (a wrong explanation of the same kind);
- other-baseline:  the next feature's baseline explanation;
by each simulation method of the local backend:
- judge:   per-token likelihood judging (LocalBackend.judge_tokens, autointerp.llm.local_judge);
- listing: the simulator's listing prompt teacher-forced in one pass (LocalBackend.score_value_slots,
           the method `simulate_feature` used before the judge), windows shuffled as simulate does;
- detect:  the detection scorer on the local backend (autointerp.scorers.detection, mode "tokens": the
           judge's per-token P(match), a window's P(yes) its highest token's), scored by balanced accuracy
           and AUROC from P(yes) with truth = the feature fired in the window;
and scored with autointerp.scoring.score_feature (pooled Pearson correlation over every scoring token;
an undefined correlation, from a constant prediction, counts as 0 and is counted).
Target (issue 11): mean correlation >= 0.6 for the right explanation, <= 0.1 for another feature's.

    HF_HUB_OFFLINE=1 python benchmarks/local_simulator.py [--features N] [--n-tokens N]
                                                        [--methods judge,listing] [--out results.json]

CPU only (the local backend runs on the CPU). Results: docs/benchmarks.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from autointerp.baseline import baseline_explanation  # noqa: E402
from autointerp.config import RunConfig, SamplerConfig  # noqa: E402
from autointerp.corpus import CorpusSpec, special_token_ids, tokenise_corpus  # noqa: E402
from autointerp.explain import explain_feature  # noqa: E402
from autointerp.known_truth import (  # noqa: E402
    SHAKESPEARE_TOKENS,
    single_token_ids,
    token_feature_sae,
    truth_violations,
    word_explanation,
)
from autointerp.llm import make_backend  # noqa: E402
from autointerp.records import FeatureSample, Window  # noqa: E402
from autointerp.sae import load_sae, save_sae  # noqa: E402
from autointerp.sampler import sample_features  # noqa: E402
from autointerp.scorers import DetectionScorer, ScoringItem  # noqa: E402
from autointerp.scoring import score_feature, summarise  # noqa: E402
from autointerp.simulate import build_simulation_request, expected_level, listing_slot_prefixes, shuffle_order  # noqa: E402
from autointerp.subject_model import load_subject_model  # noqa: E402

KINDS = ("right-word", "right-baseline", "local-explainer", "other-word", "other-baseline")
METHODS = ("judge", "listing", "detect")
CONTEXT = 128
RULE = "floor"
SEED = 0


def sample_known_truth(tokens: tuple[str, ...], n_tokens: int, directory: Path) -> tuple[list[FeatureSample], float]:
    """The known-truth SAE saved and reloaded, and its features' windows from the real sampler."""
    model = load_subject_model("smollm2-135m", device="cpu", dtype=torch.float32)
    sae_dir = save_sae(token_feature_sae(model, tokens, model_name="smollm2-135m", context_size=CONTEXT), directory)
    sae = load_sae(sae_dir)
    tokens_NL = tokenise_corpus(CorpusSpec(), model.tokenizer, CONTEXT, prepend_bos=True, max_tokens=n_tokens)
    cfg = SamplerConfig(n_tokens=n_tokens, context_size=CONTEXT, seed=SEED)
    started = time.perf_counter()
    samples = sample_features(
        model, sae, tokens_NL, list(range(len(tokens))), cfg, special_token_ids(model.tokenizer), first_position=1
    )
    seconds = time.perf_counter() - started
    ids = single_token_ids(model.tokenizer, tokens)
    for sample, token_id, token in zip(samples, ids, tokens, strict=True):
        bad = truth_violations(sample.windows, token_id)
        if bad:
            sys.exit(f"feature for {token!r}: {bad} tokens disagree with the construction; the SAE is not known-truth")
    return samples, seconds


async def simulate(backend, method: str, explanation: str, windows: list[Window], feature: int) -> list[list[float]]:
    """Predictions (0..10 expected levels), one list per window in the caller's order."""
    if method == "judge":
        response = await backend.judge_tokens(explanation, [w.tokens for w in windows])
        flat = [expected_level(slot.top) for slot in response.logprobs]
        it = iter(flat)
        return [[next(it) for _ in w.tokens] for w in windows]
    order = shuffle_order(len(windows), SEED, feature)
    shown = [windows[i] for i in order]
    request = build_simulation_request(explanation, shown, "logprob")
    response = await backend.score_value_slots(request, listing_slot_prefixes([w.tokens for w in shown]))
    it = iter(expected_level(slot.top) for slot in response.logprobs)
    shown_predictions = [[next(it) for _ in w.tokens] for w in shown]
    predictions: list[list[float]] = [[] for _ in windows]
    for position, index in enumerate(order):
        predictions[index] = shown_predictions[position]
    return predictions


async def measure(
    samples: list[FeatureSample], tokens: tuple[str, ...], methods: list[str], kinds: list[str]
) -> list[dict]:
    backend = make_backend("local")
    n = len(samples)
    baselines = [
        baseline_explanation(s.split("explain"), s.stats.max_activation, RULE) for s in samples
    ]  # from the explanation split only, as the pipeline does
    local = []
    if "local-explainer" in kinds:
        cfg = RunConfig(sae="known-truth", scoring={"quantise_rule": RULE})
        local = [(await explain_feature(backend, s, cfg))[0].text for s in samples]
    explanations = {
        "right-word": [word_explanation(t) for t in tokens],
        "right-baseline": baselines,
        "local-explainer": local,
        "other-word": [word_explanation(tokens[(i + 1) % n]) for i in range(n)],
        "other-baseline": [baselines[(i + 1) % n] for i in range(n)],
    }
    # Load the model once, outside the timings.
    await backend.judge_tokens("warm-up", [["x"]])
    rows = []
    for method in methods:
        for kind in kinds:
            for i, sample in enumerate(samples):
                windows = sample.split("score")
                started = time.perf_counter()
                if method == "detect":
                    item = ScoringItem(sample=sample, explanation=explanations[kind][i], source=kind)
                    result = await DetectionScorer(backend, RunConfig(sae="known-truth")).score(item)
                    rows.append(
                        {
                            "method": method,
                            "kind": kind,
                            "feature": sample.feature,
                            "token": tokens[i],
                            "explanation": explanations[kind][i],
                            "balanced_accuracy": result.metrics.balanced_accuracy,
                            "auroc": result.metrics.auroc,
                            "precision": result.metrics.precision,
                            "recall": result.metrics.recall,
                            "n_windows": len(windows),
                            "n_tokens": sum(len(w.tokens) for w in windows),
                            "seconds": time.perf_counter() - started,
                        }
                    )
                    continue
                predictions = await simulate(backend, method, explanations[kind][i], windows, sample.feature)
                seconds = time.perf_counter() - started
                scores = score_feature(
                    [w.activations for w in windows],
                    predictions,
                    [w.group for w in windows],
                    [w.interval for w in windows],
                    sample.stats.max_activation,
                    rule=RULE,
                )
                rows.append(
                    {
                        "method": method,
                        "kind": kind,
                        "feature": sample.feature,
                        "token": tokens[i],
                        "explanation": explanations[kind][i],
                        "correlation": scores.correlation,
                        "auroc": scores.auroc,
                        "n_windows": scores.n_windows,
                        "n_tokens": scores.n_tokens,
                        "n_firing_tokens": int(sum(a > 0 for w in windows for a in w.activations)),
                        "seconds": seconds,
                    }
                )
    return rows


def _mean(group: list[dict], key: str) -> float:
    values = [r[key] for r in group if r[key] is not None]
    return float(np.mean(values)) if values else float("nan")


def detection_table(rows: list[dict], kinds: list[str]) -> str:
    header = ("method", "explanation", "bal.acc", "AUROC", "prec", "recall", "n", "s/sim")
    lines = ["{:8} {:15} {:>7} {:>6} {:>6} {:>6} {:>3} {:>6}".format(*header)]
    for kind in kinds:
        group = [r for r in rows if r["method"] == "detect" and r["kind"] == kind]
        if group:
            means = [_mean(group, k) for k in ("balanced_accuracy", "auroc", "precision", "recall")]
            lines.append(
                f"{'detect':8} {kind:15} {means[0]:7.3f} {means[1]:6.3f} {means[2]:6.3f} {means[3]:6.3f} "
                f"{len(group):3d} {_mean(group, 'seconds'):6.2f}"
            )
    return "\n".join(lines)


def table(rows: list[dict], methods: list[str], kinds: list[str]) -> str:
    methods = [m for m in methods if m != "detect"]
    lines = [
        f"{'method':8} {'explanation':15} {'mean r':>7} {'min r':>6} {'max r':>6} {'n':>3} {'undef':>5} "
        f"{'mean AUROC':>10} {'tokens/sim':>10} {'s/sim':>6}"
    ]
    for method in methods:
        for kind in kinds:
            group = [r for r in rows if r["method"] == method and r["kind"] == kind]
            stats = summarise([r["correlation"] for r in group], n_boot=0)
            values = [r["correlation"] or 0.0 for r in group]
            aurocs = [r["auroc"] for r in group if r["auroc"] is not None]
            lines.append(
                f"{method:8} {kind:15} {stats['mean']:7.3f} {min(values):6.3f} {max(values):6.3f} "
                f"{stats['n']:3d} {stats['n_undefined_as_zero']:5d} "
                f"{(np.mean(aurocs) if aurocs else float('nan')):10.3f} "
                f"{np.mean([r['n_tokens'] for r in group]):10.0f} {np.mean([r['seconds'] for r in group]):6.2f}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", type=int, default=6, help="known-truth features (at most 8)")
    parser.add_argument("--n-tokens", type=int, default=131_072, help="corpus tokens streamed by the sampler")
    parser.add_argument("--methods", default=",".join(METHODS), help="judge, listing, detect (comma-separated)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="explanations to simulate (comma-separated)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=None, help="write the per-simulation rows as JSON")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = [m for m in args.methods.split(",") if m]
    kinds = [k for k in args.kinds.split(",") if k]
    if not set(methods) <= set(METHODS) or not set(kinds) <= set(KINDS):
        parser.error(f"--methods from {METHODS}, --kinds from {KINDS}")
    if not 1 <= args.features <= len(SHAKESPEARE_TOKENS):
        parser.error(f"--features 1..{len(SHAKESPEARE_TOKENS)}")
    tokens = SHAKESPEARE_TOKENS[: args.features]
    with tempfile.TemporaryDirectory() as tmp:
        samples, sample_seconds = sample_known_truth(tokens, args.n_tokens, Path(tmp) / "sae")
    firing = [int(sum(a > 0 for w in s.split("score") for a in w.activations)) for s in samples]
    print(
        f"known-truth SAE: {len(tokens)} token features on smollm2-135m blocks.0.hook_resid_pre, "
        f"{args.n_tokens:,} Shakespeare tokens sampled in {sample_seconds:.1f} s; every window matches the "
        f"construction; scoring windows per feature {[len(s.split('score')) for s in samples]}, "
        f"firing tokens among them {firing}"
    )
    load_before = os.getloadavg()[0]
    rows = asyncio.run(measure(samples, tokens, methods, kinds))
    # Seconds are wall time on a CPU that may be shared: the load average says how much it was.
    print(
        f"{platform.machine()} CPU, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, load average "
        f"{load_before:.1f} before / {os.getloadavg()[0]:.1f} after the simulations; s/sim of the first kind "
        "includes the null prompt for words not seen before"
    )
    if any(m != "detect" for m in methods):
        print(table(rows, methods, kinds))
    if "detect" in methods:
        print(detection_table(rows, kinds))
    for i, token in enumerate(tokens):
        row = next((r for r in rows if r["kind"] == "local-explainer" and r["feature"] == i), None)
        if row:
            print(f"local explainer, {token!r}: {row['explanation']!r}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
