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


def test_every_run_flag_is_a_documented_run_config_field_and_shows_its_description(capsys):
    import types
    import typing

    from pydantic import BaseModel

    from autointerp.cli import RUN_FLAGS, field_description
    from autointerp.config import RunConfig

    for flag, (dotted, kind) in RUN_FLAGS.items():
        model: type[BaseModel] = RunConfig
        *parents, last = dotted.split(".")
        for name in parents:
            model = model.model_fields[name].annotation
        assert last in model.model_fields, f"{flag} -> {dotted}: no such RunConfig field"
        field = model.model_fields[last]
        assert field.description and field_description(dotted) == field.description, flag
        # the flag's type is one the field takes (a Literal field: every allowed value has that type)
        union = typing.get_origin(field.annotation) in (typing.Union, types.UnionType)
        options = typing.get_args(field.annotation) if union else (field.annotation,)
        assert any(
            option is kind
            or (
                typing.get_origin(option) is typing.Literal
                and all(isinstance(v, kind) for v in typing.get_args(option))
            )
            or (kind is str and typing.get_origin(option) is list)  # comma-separated, split by the field's validator
            for option in options
        ), f"{flag} takes {kind.__name__}; {dotted} is {field.annotation}"

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    shown = " ".join(capsys.readouterr().out.split())  # argparse wraps help lines
    for flag, (dotted, _) in RUN_FLAGS.items():
        description = " ".join(field_description(dotted).split())
        assert f"{flag} " in shown and description in shown, flag
        assert f"{flag} {flag.lstrip('-').replace('-', '_').upper()} {description}" in shown or (
            f"{flag} {description}" in shown  # a switch takes no value
        ), flag


def test_table_needs_neither_torch_nor_the_run_config():
    """Commands that only read a run directory start fast: building the parser imports nothing heavy."""
    import subprocess
    import sys

    code = "import sys; from autointerp.cli import parser; parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# Modules that may talk to the terminal: the command line, its reporter, and the maintainers' script that
# trains the demo SAE (`python -m autointerp.train_sae`, a face of its own that no other module imports).
TERMINAL_MODULES = {"cli.py", "terminal.py", "train_sae.py"}


def terminal_uses(source: str) -> list[str]:
    """What in `source` writes to the terminal: print(), sys.stdout/stderr, progress-bar libraries, a rich
    Console not given a file to write to."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            found.append(f"print() at line {node.lineno}")
        elif isinstance(node, ast.Attribute) and node.attr in ("stdout", "stderr") and ast.unparse(node.value) == "sys":
            found.append(f"sys.{node.attr} at line {node.lineno}")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            found += [f"import {n} at line {node.lineno}" for n in names if n.startswith(("rich.progress", "tqdm"))]
        elif isinstance(node, ast.Call) and ast.unparse(node.func).endswith("Console"):
            if not any(k.arg == "file" for k in node.keywords):
                found.append(f"Console() at line {node.lineno}")
    return sorted(found, key=lambda use: int(use.rsplit(" ", 1)[1]))


def test_only_the_command_line_talks_to_the_terminal():
    from pathlib import Path

    import autointerp

    root = Path(autointerp.__file__).parent
    offenders = {
        str(path.relative_to(root)): uses
        for path in sorted(root.rglob("*.py"))
        if path.name not in TERMINAL_MODULES and (uses := terminal_uses(path.read_text(encoding="utf-8")))
    }
    assert not offenders, f"library code writing to the terminal (report through autointerp.reporting): {offenders}"
    # the checker sees what it is meant to see
    assert terminal_uses("import sys\nprint(1)\nsys.stderr.write('x')\nfrom rich.progress import Progress\n") == [
        "print() at line 2",
        "sys.stderr at line 3",
        "import rich.progress at line 4",
    ]
    assert terminal_uses("from rich.console import Console\nConsole().print(1)\nConsole(file=b)") == [
        "Console() at line 2"
    ]


def test_scorers_and_redraws_flags_reach_the_config():
    from autointerp.cli import build_config, parser
    from autointerp.errors import InputError

    args = parser().parse_args(["run", "--sae", "demo", "--scorers", "detection, simulation", "--redraws", "3"])
    cfg = build_config(args)
    assert cfg.scoring.scorers == ["detection", "simulation"] and cfg.scoring.redraws == 3
    assert "redraws" not in cfg.results_key()["scoring"]  # redraws add rows of their own, no stored score changes
    with pytest.raises(InputError, match="scoring.scorers"):
        build_config(parser().parse_args(["run", "--sae", "demo", "--scorers", "fuzzing"]))
