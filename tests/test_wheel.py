"""The package as a user installs it: build the wheel, install it into a fresh virtual environment outside
the checkout, run a short demo from there. Catches package data left out of the wheel (the prompts once
were: `prompts_dir()` raised in every LLM stage) and dependency metadata that does not fit a library.

The virtual environment reuses the heavy packages already installed here (torch, transformers, the data
packages) through a plain path line in a .pth file. `--system-site-packages` would also run the .pth
hooks of that site, among them the editable install's, which puts a finder for the checkout in front of
every path entry: the venv would then import the checkout, not the wheel, and the test would prove nothing.
"""

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PROMPTS = REPO / "autointerp" / "assets" / "prompts"


def _run(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["HF_HUB_OFFLINE"] = "1"
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args} exited {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the sources (a build in place would leave build/ and egg-info in the
    checkout, under other people's feet)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "autointerp", source / "autointerp", ignore=ignore)
    out = root / "dist"
    # No build isolation: the build backend (setuptools) is installed here, and isolation would fetch it.
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), "."],
        cwd=source,
    )
    (built,) = out.glob("autointerp-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv outside the checkout with the wheel installed (and nothing else of autointerp)."""
    root = tmp_path_factory.mktemp("venv")
    env_dir = root / "env"
    _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], cwd=root)
    python = env_dir / "bin" / "python"
    purelib = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root).stdout.strip()
    )
    outer = [p for p in [*site.getsitepackages(), site.getusersitepackages()] if Path(p).is_dir()]
    (purelib / "outer_site_packages.pth").write_text("".join(f"{p}\n" for p in outer), encoding="utf-8")
    # --ignore-installed: the editable autointerp of the outer site is visible on the path and has the same
    # version; pip must install the wheel anyway (into the venv, leaving the outer one alone).
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--ignore-installed",
            str(wheel),
        ],
        cwd=root,
    )
    return env_dir


def test_wheel_metadata_fits_a_library(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(name).decode("utf-8"))
        files = set(archive.namelist())
    requirements = [Requirement(r) for r in metadata.get_all("Requires-Dist")]
    runtime = {r.name.lower(): r for r in requirements if r.marker is None}
    # torch: a floor, never an exact pin (a library installs beside the user's own CUDA or CPU build).
    assert "torch" in runtime and not any(s.operator in ("==", "===") for s in runtime["torch"].specifier)
    assert runtime["torch"].specifier.contains("2.13.0") and runtime["torch"].specifier.contains("2.4.1")
    # Parquet and saved-dataset corpora need `datasets` at run time.
    assert "datasets" in runtime
    # The local LLM's engine is an extra, not a requirement of every install.
    assert "xllamacpp" not in runtime
    local = [r for r in requirements if r.name.lower() == "xllamacpp"]
    assert local and all(r.marker is not None and r.marker.evaluate({"extra": "local"}) for r in local)
    # Package data: every prompt file and the demo SAE.
    for path in PROMPTS.iterdir():
        assert f"autointerp/assets/prompts/{path.name}" in files
    assert "autointerp/assets/demo_sae/cfg.json" in files and "autointerp/export/browser_template.html" in files


def test_installed_wheel_has_its_prompts(venv: Path, tmp_path: Path) -> None:
    script = (
        "import json, autointerp\n"
        "from autointerp.prompts import prompts_dir, explain_fewshot, simulate_fewshot, load_text\n"
        "explain_fewshot(); simulate_fewshot(); load_text('explain_system.md')\n"
        "folder = prompts_dir()\n"
        "print(json.dumps({'package': autointerp.__file__, 'prompts': str(folder),\n"
        "    'files': {p.name: p.read_text(encoding='utf-8') for p in folder.iterdir()}}))\n"
    )
    found = json.loads(_run([str(venv / "bin" / "python"), "-c", script], cwd=tmp_path).stdout)
    assert Path(found["package"]).resolve().is_relative_to(venv.resolve()), found["package"]
    assert Path(found["prompts"]).resolve().is_relative_to(venv.resolve()), found["prompts"]
    assert found["files"] == {p.name: p.read_text(encoding="utf-8") for p in PROMPTS.iterdir()}


def test_installed_wheel_runs_the_demo(venv: Path, tmp_path: Path) -> None:
    assert not tmp_path.resolve().is_relative_to(REPO)
    autointerp = str(venv / "bin" / "autointerp")
    run_dir = tmp_path / "run"
    _run(
        [
            autointerp,
            "run",
            "--sae",
            "demo",
            "--explainer",
            "baseline",
            "--n-features",
            "2",
            "--n-tokens",
            "2000",
            "--run-dir",
            str(run_dir),
        ],
        cwd=tmp_path,
    )
    assert (run_dir / "autointerp.sqlite").is_file()
    _run([autointerp, "export", str(run_dir), "--format", "jsonl", "--out", str(tmp_path / "out")], cwd=tmp_path)
    records = [json.loads(line) for line in (tmp_path / "out" / "features.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["explanation"]["backend"] == "baseline" for r in records)
