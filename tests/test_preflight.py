"""Settings are checked before the first token is sampled (autointerp.preflight), job files with unknown keys
are refused, and an LLM setting no stored result depends on yet may change on resume."""

import time

import pytest
import torch

from autointerp.cli import main
from autointerp.config import LLMConfig, RunConfig
from autointerp.errors import EXIT_INPUT, StoreError
from autointerp.pipeline import open_run
from autointerp.records import Explanation
from autointerp.sae import load_sae, sae_fingerprint
from autointerp.store import RunStore

DEMO = ["--sae", "demo", "--n-tokens", "2048", "--n-features", "2"]


def refused_before_sampling(capsys, tmp_path, command: str, *flags: str) -> str:
    """Run `command` with `flags` on a fresh run directory; assert it failed with bad input (exit 2), no
    traceback, within seconds, and before anything was sampled (the run directory was never made)."""
    run_dir = tmp_path / "run"
    started = time.monotonic()
    code = main([command, *DEMO, "--run-dir", str(run_dir), *flags])
    seconds = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == EXIT_INPUT, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("autointerp: error: ")
    assert not run_dir.exists(), "sampling started (or the run directory was made) before the setting was checked"
    assert seconds < 60, seconds  # sampling 2,048 tokens with the model loaded would take longer on this machine
    return err


@pytest.mark.parametrize(
    "flags, needles",
    [
        (["--explainer", "nonsense:x"], ["nonsense:x", "unknown backend kind"]),
        (["--explainer", "baseline", "--simulator", "openai"], ["openai", "without a model name"]),
        (["--explainer", "anthropic:claude-haiku-5-5"], ["ANTHROPIC_API_KEY", "--explainer / --simulator"]),
        (["--explainer", "baseline", "--simulator", "openai:gpt-4o-mini"], ["OPENAI_API_KEY"]),
        (["--explainer", "local:/nowhere/model.gguf"], ["/nowhere/model.gguf", "no such .gguf file"]),
        (["--explainer", "baseline", "--max-in-flight", "0"], ["--max-in-flight", "greater than 0"]),
        (["--explainer", "baseline", "--prices", "/nowhere/prices.toml"], ["/nowhere/prices.toml"]),
        (["--explainer", "baseline", "--features", "3,x"], ["'x'", "not a number or range"]),
    ],
)
def test_a_bad_llm_setting_is_refused_before_sampling(capsys, tmp_path, no_llm_keys, flags, needles):
    err = refused_before_sampling(capsys, tmp_path, "run", *flags)
    for needle in needles:
        assert needle in err, err
    assert "--backend" not in err  # no such flag


def test_sample_checks_the_llm_settings_it_is_given(capsys, tmp_path, no_llm_keys):
    err = refused_before_sampling(capsys, tmp_path, "sample", "--explainer", "anthropic:claude-haiku-5-5")
    assert "ANTHROPIC_API_KEY" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without a usable CUDA device")
def test_cuda_on_a_cpu_only_torch_is_bad_input_not_a_traceback(capsys, tmp_path):
    err = refused_before_sampling(capsys, tmp_path, "run", "--explainer", "baseline", "--device", "cuda")
    assert "--device cuda" in err and "--device cpu" in err
    code = main(["info", "--sae", "demo", "--device", "cuda:1"])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT and "Traceback" not in err and "--device cuda:1" in err


@pytest.mark.parametrize(
    "text, key, nearest",
    [
        ("sae = 'demo'\n[sampler]\nn_token = 2048\n", "sampler.n_token", "sampler.n_tokens"),
        ("sae = 'demo'\nn_tokens = 2048\n", "n_tokens", "sampler.n_tokens"),
        ("sae = 'demo'\n[llm]\nexplaner = 'baseline'\n", "llm.explaner", "llm.explainer"),
        ("sae = 'demo'\n[scoring]\nquantize_rule = 'ceil'\n", "scoring.quantize_rule", "scoring.quantise_rule"),
        ("sea = 'demo'\n", "sea", "sae"),
    ],
)
def test_unknown_job_file_keys_are_refused_with_the_nearest_setting(capsys, tmp_path, text, key, nearest):
    job = tmp_path / "job.toml"
    job.write_text(text)
    code = main(["info", "--job", str(job)])  # every command that reads a job file checks its keys
    err = capsys.readouterr().err
    assert code == EXIT_INPUT and "Traceback" not in err
    assert f"unknown key {key!r}" in err and f"Did you mean {nearest!r}?" in err, err


def test_llm_settings_may_change_until_an_llm_explanation_is_stored(tmp_path):
    """After sampling, a run whose explain calls all failed stored no LLM explanation: its LLM and scoring
    settings may change (the stored config follows); once one is stored they may not."""
    first = RunConfig(sae="demo", run_dir=str(tmp_path), llm=LLMConfig(explainer="anthropic:claude-haiku-5-5"))
    with RunStore.open(tmp_path, create=True) as store:
        store.create_run("r1", "demo", first, sae_fingerprint(load_sae("demo")), "corpus")
    fixed = first.model_copy(update={"llm": LLMConfig(explainer="baseline", simulator="baseline", best_of=2)})
    store, run_id, _ = open_run(fixed)
    with store:
        assert run_id == "r1"
        assert store.get_run(run_id)["config"]["llm"]["explainer"] == "baseline"
        assert store.get_run(run_id)["config"]["llm"]["best_of"] == 2
        explanation = Explanation(feature=0, text="x", raw_completion="x", backend="baseline", prompt_hash="0")
        store.save_explanation(run_id, explanation, "llm")
    changed = fixed.model_copy(update={"llm": LLMConfig(explainer="local", simulator="baseline", best_of=2)})
    with pytest.raises(StoreError, match="llm.explainer: stored 'baseline', now 'local'"):
        open_run(changed)
    changed = fixed.model_copy(update={"sampler": fixed.sampler.model_copy(update={"window_size": 16})})
    with pytest.raises(StoreError, match="sampler.window_size"):
        open_run(changed)  # a sampling setting never may
