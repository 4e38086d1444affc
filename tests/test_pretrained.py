"""SAELens pretrained names (`--sae release/sae_id`) resolve through the catalogue to the local Hugging Face
cache, built here in a temporary folder laid out as huggingface_hub lays it out, and load offline."""

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch
from helpers_sae import write_sae

from autointerp.assets import BUILTIN_SAES
from autointerp.errors import InputError
from autointerp.sae import load_sae, sae_fingerprint
from autointerp.sae.load import read_sae_cfg
from autointerp.sae.pretrained import _carried, catalogue_from_saelens, find_pretrained

COMMIT = "0123456789abcdef0123456789abcdef01234567"
# A release with SAELens's own files whose catalogue overrides change what the model is loaded with.
JB = "gpt2-small-res-jb/blocks.8.hook_resid_pre"
# One whose only override is the Neuronpedia id.
AJT = "gpt2-small-res_sce-ajt/blocks.10.hook_resid_pre"


def put_in_hub_cache(cache: Path, repo_id: str, folder: str, source: Path) -> Path:
    """Copy SAE folder `source` to where huggingface_hub keeps `repo_id`'s `folder` at revision main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    target = repo / "snapshots" / COMMIT / folder
    shutil.copytree(source, target)
    return target


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_a_pretrained_name_loads_from_the_cache_with_the_catalogues_overrides(hub_cache, tmp_path):
    entry = find_pretrained(JB)
    assert (entry.repo_id, entry.folder) == ("jbloom/GPT2-Small-SAEs-Reformatted", "blocks.8.hook_resid_pre")
    source = write_sae(tmp_path, "standard", d_in=16, d_sae=32, hook_name="blocks.8.hook_resid_pre", model_name="gpt2")
    put_in_hub_cache(hub_cache, entry.repo_id, entry.folder, source)

    sae = load_sae(JB)
    assert sae.cfg.hook_name == "blocks.8.hook_resid_pre" and sae.cfg.d_sae == 32
    assert sae.cfg.model_from_pretrained_kwargs == {"center_writing_weights": True}  # from the catalogue
    plain = load_sae(source)
    assert plain.cfg.model_from_pretrained_kwargs == {}
    x = torch.randn(4, 16)
    assert torch.equal(sae.encode(x), plain.encode(x))
    raw, facts = read_sae_cfg(JB)
    assert raw["neuronpedia_id"] == "gpt2-small/8-res-jb" and facts["hook_name"] == "blocks.8.hook_resid_pre"


def test_a_catalogue_norm_scaling_factor_is_folded_in_as_saelens_folds_it(hub_cache, tmp_path):
    name = "gpt2-small-mlp-tm/blocks.0.hook_mlp_out"
    entry = find_pretrained(name)
    assert entry.norm_scaling_factor == pytest.approx(1.049317316132615)
    source = write_sae(tmp_path, "standard", d_in=16, d_sae=32, hook_name="blocks.0.hook_mlp_out")
    cfg = json.loads((source / "cfg.json").read_text())
    (source / "cfg.json").write_text(json.dumps(cfg | {"normalize_activations": "expected_average_only_in"}))
    put_in_hub_cache(hub_cache, entry.repo_id, entry.folder, source)

    from sae_lens import SAE

    lens = SAE.load_from_disk(source)
    lens.fold_activation_norm_scaling_factor(entry.norm_scaling_factor)
    x = torch.randn(6, 16)
    torch.testing.assert_close(load_sae(name).encode(x), lens.encode(x), atol=1e-5, rtol=1e-5)


def test_missing_files_offline_say_how_to_fetch_them(hub_cache):
    with pytest.raises(InputError, match="huggingface-cli download jbloom/GPT2-Small-SAEs-Reformatted"):
        load_sae(JB)


def test_unknown_ids_and_other_formats_are_refused_by_name(hub_cache):
    with pytest.raises(InputError, match="no SAE id 'blocks.99.hook_resid_pre'"):
        load_sae("gpt2-small-res-jb/blocks.99.hook_resid_pre")
    with pytest.raises(InputError, match="another format"):
        find_pretrained("gemma-scope-2b-pt-res-canonical/layer_0/width_16k/canonical")
    assert find_pretrained("no-such-release/x") is None
    assert find_pretrained("demo") is None


def test_the_carried_catalogue_is_the_installed_saelens_catalogue():
    """The table that travels with the package says what the installed sae_lens says, release by release
    (a release added in a later sae_lens is found through sae_lens itself)."""
    carried, installed = _carried(), catalogue_from_saelens()
    shared = set(carried["releases"]) & set(installed["releases"])
    assert len(shared) >= 20
    for release in shared:
        assert carried["releases"][release] == installed["releases"][release], release
    for release in set(carried["other_formats"]) & set(installed["other_formats"]):
        assert carried["other_formats"][release] == installed["other_formats"][release]


@pytest.mark.slow  # two runs of the built-in model
def test_a_cli_run_on_a_pretrained_name_pairs_with_the_same_sae_given_as_a_folder(hub_cache, tmp_path, capsys):
    """`--sae release/sae_id` runs end to end offline, its run carries the same fingerprint as the same
    files given as `--sae demo`, and the Neuronpedia export takes model and source from the catalogue."""
    from autointerp.cli import main
    from autointerp.tables import compare_runs

    entry = find_pretrained(AJT)
    put_in_hub_cache(hub_cache, entry.repo_id, entry.folder, BUILTIN_SAES["demo"])
    common = ["--explainer", "baseline", "--simulator", "baseline", "--n-tokens", "1500", "--n-features", "3"]
    assert main(["run", "--sae", AJT, *common, "--run-dir", str(tmp_path / "named")]) == 0
    assert main(["run", "--sae", "demo", *common, "--run-dir", str(tmp_path / "demo")]) == 0
    prints = []
    for name in ("named", "demo"):
        with sqlite3.connect(tmp_path / name / "autointerp.sqlite") as db:
            prints += [row[0] for row in db.execute("SELECT sae_fingerprint FROM runs")]
    assert prints[0] == prints[1] == sae_fingerprint(load_sae("demo"))
    assert compare_runs(tmp_path / "demo", tmp_path / "named")["same_sae"]

    from autointerp.export.context import run_context
    from autointerp.store import RunStore

    with RunStore.open(tmp_path / "named", create=False) as store:
        context = run_context(store, store.latest_run_id())
    assert context.neuronpedia_id == "gpt2-small/10-res_sce-ajt"
    assert context.hook_name == "blocks.8.hook_resid_post"  # the files' own hook (the demo SAE's)
