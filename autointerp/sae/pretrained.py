"""SAELens's pretrained SAEs by name (`release/sae_id`), read from the local Hugging Face cache.

SAELens names its published SAEs in a catalogue (`sae_lens/pretrained_saes.yaml`, read by
`sae_lens/loading/pretrained_saes_directory.py`): a release maps to a Hugging Face repo, and each SAE id
in it to a folder of that repo. Releases whose `conversion_func` is null hold SAELens's own files
(`<folder>/cfg.json`, `sae_weights.safetensors`, optional `sparsity.safetensors`), which `load_sae` reads;
the catalogue's `config_overrides` and `neuronpedia` id are merged into the cfg.json on top, as SAELens does
(`get_sae_lens_config_from_disk`: overrides replace top-level keys).

The catalogue travels with the package (`assets/saelens_pretrained.json`, built from sae_lens 6.54.12 by
`catalogue_from_saelens`, see SOURCE) so names resolve without sae_lens installed; a release missing from
it is looked up in the installed sae_lens's directory, if there is one. Releases in another format
(Gemma Scope's npz, dictionary_learning, ...) are refused with a way round.
"""

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from autointerp.assets import BUILTIN_SAES
from autointerp.errors import InputError, expected

CATALOGUE_FILE = Path(__file__).resolve().parent.parent / "assets" / "saelens_pretrained.json"
SAELENS_FILES = ("cfg.json", "sae_weights.safetensors")
OPTIONAL_FILES = ("sparsity.safetensors",)


class PretrainedSAE(BaseModel):
    """One SAE of SAELens's catalogue: where its files are on the Hugging Face Hub and what to merge in."""

    release: str = Field(description="SAELens release name, e.g. 'gpt2-small-res-jb'")
    sae_id: str = Field(description="SAE id inside the release, e.g. 'blocks.8.hook_resid_pre'")
    repo_id: str = Field(description="Hugging Face model repo holding the release")
    folder: str = Field(description="folder of the repo holding this SAE's files")
    model: str = Field(description="model the release was trained on (TransformerLens name)")
    conversion: str | None = Field(default=None, description="SAELens conversion_func; None = SAELens's own files")
    config_overrides: dict[str, Any] = Field(
        default_factory=dict, description="keys SAELens merges over the cfg.json (release overrides + neuronpedia_id)"
    )
    norm_scaling_factor: float | None = Field(
        default=None, description="dataset-wide input scale SAELens folds into the weights (expected_average_only_in)"
    )

    @property
    def name(self) -> str:
        return f"{self.release}/{self.sae_id}"


@cache
def _carried() -> dict[str, Any]:
    return json.loads(CATALOGUE_FILE.read_text(encoding="utf-8"))


def catalogue_from_saelens() -> dict[str, Any]:
    """The catalogue in our JSON shape, from the installed sae_lens (ImportError without it). The
    carried file is this, dumped; a test checks the two agree wherever both have a release."""
    from importlib.metadata import version

    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    releases: dict[str, Any] = {}
    other_formats: dict[str, str] = {}
    for release, lookup in get_pretrained_saes_directory().items():
        if lookup.conversion_func is not None:
            other_formats[release] = lookup.conversion_func
            continue
        saes: dict[str, Any] = {}
        for sae_id, folder in lookup.saes_map.items():
            entry: dict[str, Any] = {"path": folder}
            if lookup.neuronpedia_id.get(sae_id):
                entry["neuronpedia"] = lookup.neuronpedia_id[sae_id]
            if sae_id in lookup.norm_scaling_factor:
                entry["norm_scaling_factor"] = lookup.norm_scaling_factor[sae_id]
            saes[sae_id] = entry
        releases[release] = {
            "repo_id": lookup.repo_id,
            "model": lookup.model,
            "config_overrides": dict(lookup.config_overrides or {}),
            "saes": saes,
        }
    return {
        "source": f"sae_lens {version('sae-lens')}: sae_lens/pretrained_saes.yaml (releases with conversion_func null)",
        "releases": releases,
        "other_formats": other_formats,
    }


@cache
def _installed() -> dict[str, Any] | None:
    try:
        return catalogue_from_saelens()
    except ImportError:
        return None


def find_pretrained(name: str) -> PretrainedSAE | None:
    """The catalogue entry for `name` = 'release/sae_id'; None if no release matches its first part.

    A known release with an unknown SAE id, or a release in another file format, is an InputError.
    """
    release, sep, sae_id = str(name).partition("/")
    if not sep or not sae_id:
        return None
    catalogues = [_carried()]
    if release not in catalogues[0]["releases"] and release not in catalogues[0]["other_formats"]:
        installed = _installed()  # a release newer than the carried table
        catalogues = [installed] if installed else []
    for catalogue in catalogues:
        if release in catalogue["other_formats"]:
            raise InputError(
                expected(
                    f"--sae {name}",
                    f"a SAELens release stored in another format (conversion {catalogue['other_formats'][release]!r})",
                    "a release in SAELens's own file layout",
                    "Load it with SAELens (SAE.from_pretrained) and pass the object to "
                    "autointerp.api.score_checkpoint, or save it with sae.save_model(FOLDER) and pass --sae FOLDER.",
                )
            )
        entry = catalogue["releases"].get(release)
        if entry is None:
            continue
        sae = entry["saes"].get(sae_id)
        if sae is None:
            known = ", ".join(list(entry["saes"])[:8])
            raise InputError(
                expected(f"--sae {name}", f"no SAE id {sae_id!r} in release {release!r}", f"one of: {known}, ...")
            )
        overrides = dict(entry["config_overrides"])
        if sae.get("neuronpedia"):
            overrides["neuronpedia_id"] = sae["neuronpedia"]
        return PretrainedSAE(
            release=release,
            sae_id=sae_id,
            repo_id=entry["repo_id"],
            folder=sae["path"],
            model=entry["model"],
            config_overrides=overrides,
            norm_scaling_factor=sae.get("norm_scaling_factor"),
        )
    return None


def hub_cache_dir() -> str:
    """HF_HUB_CACHE as set now (huggingface_hub reads it once, at import), else huggingface_hub's default."""
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE


def pretrained_folder(sae: PretrainedSAE) -> Path:
    """The folder of the local Hugging Face cache holding `sae`'s files (cfg.json, weights, sparsity).

    Files are read from the cache; one missing is downloaded unless the hub is offline (HF_HUB_OFFLINE=1),
    in which case the error says how to fetch it.
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    cache_dir = hub_cache_dir()
    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    folder: Path | None = None
    for filename in SAELENS_FILES + OPTIONAL_FILES:
        path_in_repo = f"{sae.folder}/{filename}"
        try:
            found = hf_hub_download(sae.repo_id, path_in_repo, cache_dir=cache_dir, local_files_only=True)
        except LocalEntryNotFoundError:
            if offline:
                if filename in OPTIONAL_FILES:
                    continue
                raise InputError(
                    expected(
                        f"--sae {sae.name}",
                        f"{sae.repo_id}/{path_in_repo} not in the Hugging Face cache {cache_dir} (offline)",
                        "the SAE's files in the cache",
                        f"Fetch them once online: huggingface-cli download {sae.repo_id} --include '{sae.folder}/*'",
                    )
                ) from None
            try:
                found = hf_hub_download(sae.repo_id, path_in_repo, cache_dir=cache_dir)
            except EntryNotFoundError:
                if filename in OPTIONAL_FILES:
                    continue
                raise
        folder = Path(found).parent
    assert folder is not None  # cfg.json was found or raised
    return folder


def locate_sae(name_or_path: str | Path) -> tuple[Path, dict[str, Any], float | None]:
    """(folder, cfg overrides, norm scaling factor) for a folder, `demo`, or a SAELens 'release/sae_id'.

    `demo` is always the built-in SAE; otherwise an existing folder wins over a catalogue name. Overrides
    are SAELens's catalogue keys, to be merged over cfg.json (`with_overrides`).
    """
    if str(name_or_path) in BUILTIN_SAES:
        return BUILTIN_SAES[str(name_or_path)], {}, None
    directory = Path(name_or_path).expanduser()
    if directory.is_dir():
        return directory, {}, None
    pretrained = find_pretrained(str(name_or_path))
    if pretrained is None:
        return directory, {}, None
    return pretrained_folder(pretrained), pretrained.config_overrides, pretrained.norm_scaling_factor


def with_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """SAELens merges catalogue overrides over the top-level keys; SAELens 6 files keep model facts under
    `metadata`, which our reader prefers, so an override of such a key is written there too."""
    if not overrides:
        return raw
    merged = raw | overrides
    metadata = raw.get("metadata")
    if isinstance(metadata, dict):
        merged["metadata"] = metadata | {k: v for k, v in overrides.items() if k in metadata or k == "neuronpedia_id"}
    return merged
