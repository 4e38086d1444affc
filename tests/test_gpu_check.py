"""benchmarks/gpu_check.py and gpu_check.sh, the prepared GPU run, exercised on the CPU: the checks run and
pass, the comparison of check b finds a changed activation, and the shell script parses, names every step,
and counts the steps it could not run."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
SHELL = REPO / "benchmarks" / "gpu_check.sh"


def run_checks(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "gpu_check.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--out", str(out), "--work", str(tmp_path), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    return done, json.loads(out.read_text()) if out.is_file() else {}


def test_the_checks_run_on_the_cpu_and_their_verdicts_follow_their_figures(tmp_path):
    """Checks b and e must pass. Check a's verdict must follow its counts: whether the sampling loop is free of
    per-batch syncs is tests/test_sampler_dense.py's to assert (its recorder is the one used here on CPU)."""
    done, report = run_checks(tmp_path, "--checks", "a,b,e")
    checks = report["checks"]
    assert set(checks) == {"no_sync_per_batch", "device_vs_cpu", "passes_bitwise"}, done.stdout + done.stderr
    failed = [name for name, c in checks.items() if c["result"] == "FAIL"]
    assert done.returncode == len(failed), done.stdout + done.stderr
    assert checks["device_vs_cpu"]["result"] == "PASS" and checks["passes_bitwise"]["result"] == "PASS"
    assert checks["device_vs_cpu"]["windows_compared"] > 100 and checks["device_vs_cpu"]["n_mismatches"] == 0
    assert checks["passes_bitwise"]["plan"] == [8, 8, 6]
    syncs = checks["no_sync_per_batch"]
    assert syncs["control_item_syncs"] == 1  # the counter sees a sync where there is one
    equal = []
    for architecture in ("topk", "jumprelu"):
        few, many = syncs[architecture]["few_batches"], syncs[architecture]["many_batches"]
        assert many["batches"] >= 4 * few["batches"] and few["syncs"] >= 1  # the SAE's once-per-pass check
        equal.append(few["syncs"] == many["syncs"])
    assert syncs["result"] == ("PASS" if all(equal) else "FAIL")
    assert f"{3 - len(failed)} of 3 passed" in done.stdout


@pytest.mark.slow
def test_the_bf16_cli_check_stores_samples_with_the_stand_in_model(tmp_path):
    done, report = run_checks(tmp_path, "--checks", "c", "--cli-model", "stand-in", "--cli-tokens", "512")
    assert done.returncode == 0, done.stdout + done.stderr
    check = report["checks"]["bf16_cli"]
    assert check["result"] == "PASS" and check["samples"] == 64 and check["fired"] > 0
    assert check["tok_s"] > 0 and "tok/s" in done.stdout


def test_the_device_comparison_names_what_differs():
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_check

    reference = gpu_check.sampled("cpu", [1, 4, 9])
    assert gpu_check.compare(copy.deepcopy(reference), reference)[0] == []
    changed = copy.deepcopy(reference)
    fired = [s for s in changed if s.stats.n_active > 0]
    fired[0].stats.n_active += 1
    window = next(w for w in fired[-1].windows if w.group == "top")
    window.activations[window.activations.index(max(window.activations))] *= 1.001  # 10x the tolerance
    problems, figures = gpu_check.compare(changed, reference)
    assert len(problems) == 2, problems
    assert f"feature {fired[0].feature}: n_active" in problems[0]
    assert f"feature {fired[-1].feature}: top window {window.context_id}:{window.start}" in problems[1]
    assert figures["features_firing"] == len(fired)


def dry_run(**env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "OUT"} | {"GPU_CHECK_DRY_RUN": "1", **env}
    return subprocess.run(["bash", str(SHELL)], capture_output=True, text=True, env=environment, timeout=60)


def test_the_shell_script_parses_and_names_every_step():
    assert subprocess.run(["bash", "-n", str(SHELL)], capture_output=True).returncode == 0
    existed = (REPO / "gpu_out").exists()
    done = dry_run()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OUT=./gpu_out" in done.stdout  # $OUT unset: the default
    assert "benchmarks/gpu_check.py --device cuda --out ./gpu_out/gpu_check.json" in done.stdout
    for config in ("gpt2", "1b"):
        assert f"benchmarks/sampler.py --device cuda --configs {config} --tokens 262144" in done.stdout
    assert "nvidia-smi" in done.stdout
    assert (REPO / "gpu_out").exists() == existed  # a dry run writes nothing


def test_the_shell_script_counts_steps_it_had_no_time_for():
    done = dry_run(GPU_CHECK_BUDGET="25", OUT="/nonexistent/out")
    skipped = done.stdout.count(": SKIPPED")
    assert skipped >= 6 and done.returncode == skipped, done.stdout
