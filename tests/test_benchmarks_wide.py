"""benchmarks/wide_sae.py end to end from its command line, at a small width: a plan of several passes,
every pass streamed, the table and the 80 GB plan printed."""

import importlib.util
import re
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "wide_sae.py"


def load_script():
    spec = importlib.util.spec_from_file_location("wide_sae_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wide_sae_benchmark_runs_in_passes(capsys, tmp_path, monkeypatch):
    # The script puts benchmarks/ on sys.path to import benchmarks/sampler.py as `sampler`: undone after the test.
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in ("HF_HUB_OFFLINE", "TQDM_DISABLE"):  # the scripts setdefault these: restored after the test
        monkeypatch.setenv(name, "1")
    had_sampler = "sampler" in sys.modules
    try:
        wide = load_script()
    finally:
        if not had_sampler:
            sys.modules.pop("sampler", None)
    # 4,096 features at ~48 KB each (state + columns + batch work, batch 4 x 64, fewer features than an encode
    # block, so each brings its batch work) need ~0.19 GiB: 0.15 GiB gives 2 passes.
    argv = ["--d-sae", "4096", "--max-state-gb", "0.15", "--n-tokens", "256", "--batch-size", "4"]
    report = wide.main([*argv, "--out", str(tmp_path / "wide.json")])
    out = capsys.readouterr().out

    sizes = [r["features"] for r in report["passes"]]
    fit = sizes[0]
    assert sizes == [fit, 4096 - fit]  # every feature in exactly one of 2 passes
    per_feature = sum(report[f"{part}_bytes_per_feature"] for part in ("state", "work", "columns"))
    assert fit * per_feature <= 0.15 * (1 << 30) < (fit + 1) * per_feature  # as many as the limit allows
    assert report["tokens"] == 256 and report["tokens_x_passes"] == 512
    assert all(r["seconds"] > 0 and r["state_bytes"] > 0 for r in report["passes"])
    # the state held is what the plan counted as state (the estimate adds the batch work on top)
    for r in report["passes"]:
        assert r["state_bytes"] <= r["estimate_bytes"]
        assert r["state_bytes"] >= r["features"] * report["state_bytes_per_feature"]
    assert report["records"]["features"] == fit and report["records"]["windows"] > 0
    assert report["total_s"] >= report["streaming_s"] > 0

    assert f"2 pass(es) of up to {fit:,} features" in out  # plan_passes's sentence, printed before the passes
    assert out.index("pass(es)") < out.index("pass 1/2")
    assert re.search(rf"^\| 2 \| {4096 - fit:,} \|", out, re.MULTILINE)  # the per-pass table
    assert "tokens x passes 512" in out
    assert "NOT measured" in out and "ASSUMED 20,000 tok/s" in out  # the 80 GB arithmetic says what it is
    assert (tmp_path / "wide.json").is_file()
