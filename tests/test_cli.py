"""The command line: bad input gives one paragraph on stderr, a non-zero status and no traceback."""

import json

import pytest
from helpers_sae import write_sae

from autointerp.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_error(code, err, *needles):
    assert code != 0
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("autointerp: error: ")  # the paragraph closes stderr
    for needle in needles:
        assert needle in err, err


def test_missing_sae_folder(capsys, tmp_path):
    code, _, err = run_cli(capsys, "info", "--sae", str(tmp_path / "nope"), "--model", "smollm2-135m")
    assert_clean_error(code, err, "nope")


def test_truncated_weights(capsys, tmp_path):
    sae_dir = write_sae(tmp_path, "standard")
    weights = sae_dir / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    code, _, err = run_cli(capsys, "info", "--sae", str(sae_dir))
    assert_clean_error(code, err, "sae_weights.safetensors")


def test_wrong_shape_and_unknown_architecture(capsys, tmp_path):
    sae_dir = write_sae(tmp_path, "standard")
    cfg = json.loads((sae_dir / "cfg.json").read_text())
    (sae_dir / "cfg.json").write_text(json.dumps({**cfg, "d_sae": 65}))
    code, _, err = run_cli(capsys, "info", "--sae", str(sae_dir))
    assert_clean_error(code, err, "W_enc", "65")
    (sae_dir / "cfg.json").write_text(json.dumps({**cfg, "architecture": "wavelet"}))
    code, _, err = run_cli(capsys, "info", "--sae", str(sae_dir))
    assert_clean_error(code, err, "wavelet", "cfg.json")


def test_debug_shows_the_traceback(tmp_path):
    from autointerp.errors import InputError

    with pytest.raises(InputError):
        main(["--debug", "info", "--sae", str(tmp_path / "nope"), "--model", "smollm2-135m"])


def test_bad_job_file_and_bad_setting(capsys, tmp_path):
    job = tmp_path / "job.toml"
    job.write_text("sae = 'demo'\n[sampler]\nn_tokens = 'many'\n")
    code, _, err = run_cli(capsys, "run", "--job", str(job))
    assert_clean_error(code, err, "sampler.n_tokens", "'many'")
    job.write_text("sae = [unclosed")
    code, _, err = run_cli(capsys, "run", "--job", str(job))
    assert_clean_error(code, err, "job.toml", "invalid TOML")


@pytest.mark.slow
def test_sae_that_does_not_fit_the_model(capsys, tmp_path):
    wide = write_sae(
        tmp_path / "a", "standard", d_in=16, hook_name="blocks.3.hook_resid_post", model_name="smollm2-135m"
    )
    code, _, err = run_cli(capsys, "info", "--sae", str(wide))
    assert_clean_error(code, err, "d_in", "16", "576")
    lost = write_sae(
        tmp_path / "b", "standard", d_in=576, hook_name="blocks.31.hook_resid_post", model_name="smollm2-135m"
    )
    code, _, err = run_cli(capsys, "info", "--sae", str(lost))
    assert_clean_error(code, err, "blocks.31.hook_resid_post", "no such hook")


def test_shipped_demo_job_parses_and_flags_override_it():
    from pathlib import Path

    from autointerp.cli import build_config, parser

    job = Path(__file__).parents[1] / "jobs" / "demo.toml"
    cfg = build_config(parser().parse_args(["run", "--job", str(job), "--n-features", "7", "--quantise", "ceil"]))
    assert cfg.sae == "demo" and cfg.llm.explainer == "local" and cfg.sampler.n_tokens == 60000
    assert cfg.selection.n_features == 7 and cfg.scoring.quantise_rule == "ceil"
