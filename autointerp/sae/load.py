"""Read SAEs from disk (SAELens and sparsify layouts) and write them in SAELens 6 layout.

SAELens: cfg.json + sae_weights.safetensors (+ sparsity.safetensors, log10 feature density).
sparsify (EleutherAI): cfg.json + sae.safetensors, a topk SAE stored with an nn.Linear encoder.
Anything that does not fit raises InputError naming the file, the key and what was expected.
Writing lives here too (`save_sae`), not on SparseAutoencoder: the SAE class stays below its file formats.
Besides a folder, `load_sae` takes a built-in name (`demo`) or a SAELens pretrained name (`release/sae_id`,
see `autointerp.sae.pretrained`), read from the local Hugging Face cache with the catalogue's overrides.
"""

import json
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from autointerp.errors import InputError, expected
from autointerp.sae.architectures import ARCHITECTURES, SparseAutoencoder, check_weights
from autointerp.sae.config import NORMALIZATIONS, SAEConfig
from autointerp.sae.pretrained import locate_sae, with_overrides

CFG_FILE = "cfg.json"
SAELENS_WEIGHTS_FILE = "sae_weights.safetensors"
SPARSITY_FILE = "sparsity.safetensors"
SPARSITY_KEY = "sparsity"  # SAELens's key for the log10 feature density
SPARSIFY_WEIGHTS_FILE = "sae.safetensors"
SPARSIFY_RUN_CFG_FILE = "config.json"  # sparsify's run config, one folder up from the SAE

# Written into cfg.json metadata: SAELens treats a cfg.json without a version >= 6 as an older format
# and would then look for hook_name etc. at the top level instead of under metadata.
SAELENS_FORMAT_VERSION = "6.0.0"

_SPARSIFY_LAYER = re.compile(r"^(?:model\.)?layers\.(\d+)$")


def read_sae_cfg(name_or_path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the SAE's cfg.json as SAELens would see it, catalogue overrides merged; the facts a run takes from
    it: hook_name, context_size, prepend_bos), without reading the weights."""
    directory, overrides, _ = locate_sae(name_or_path)
    cfg_file = directory / CFG_FILE
    if not cfg_file.is_file():
        raise InputError(expected(f"SAE config {cfg_file}", "no such file", "the SAE's cfg.json"))
    raw = with_overrides(_read_json(cfg_file), overrides)
    if not (directory / SAELENS_WEIGHTS_FILE).is_file() and (directory / SPARSIFY_WEIGHTS_FILE).is_file():
        run = _sparsify_run_config(directory)
        hook = _sparsify_hook_name(raw.get("hookpoint") or directory.name)
        return raw, {"hook_name": hook, "context_size": run.get("ctx_len"), "prepend_bos": True}
    fields = _saelens_fields(raw, cfg_file)
    return raw, {key: fields[key] for key in ("hook_name", "context_size", "prepend_bos")}


def load_sae(path: str | Path, input_scale: float | None = None) -> SparseAutoencoder:
    """Load the SAE in directory `path` (or named `demo` / SAELens 'release/sae_id'), in the dtype its
    cfg.json names (sparsify: its weights').

    input_scale: the dataset-wide factor an SAE with normalize_activations 'expected_average_only_in'
    multiplies its inputs by (a SAELens trainer's `activation_scaler.scaling_factor` for a mid-training
    checkpoint), folded into the weights as SAELens folds it; the catalogue's factor for a pretrained name.
    """
    directory, overrides, norm_scaling_factor = locate_sae(path)
    norm_scaling_factor = input_scale if input_scale is not None else norm_scaling_factor
    if not directory.is_dir():
        found = "a file" if directory.exists() else "nothing there"
        raise InputError(
            expected(
                f"SAE path {directory}",
                found,
                f"a directory holding {CFG_FILE} and {SAELENS_WEIGHTS_FILE} (SAELens) "
                f"or {SPARSIFY_WEIGHTS_FILE} (sparsify), 'demo', or a SAELens pretrained name 'release/sae_id' "
                "(its release in SAELens's pretrained_saes.yaml)",
            )
        )
    cfg_file = directory / CFG_FILE
    if not cfg_file.is_file():
        raise InputError(expected(f"SAE config {cfg_file}", "no such file", "the SAE's cfg.json"))
    raw = with_overrides(_read_json(cfg_file), overrides)
    if norm_scaling_factor is not None and raw.get("normalize_activations") == "expected_average_only_in":
        # SAELens folds the catalogue's dataset-wide input scale into the weights; so do we, in _load_saelens.
        raw = raw | {"normalize_activations": "none"}
    else:
        norm_scaling_factor = None
    if (directory / SAELENS_WEIGHTS_FILE).is_file():
        return _load_saelens(directory, raw, norm_scaling_factor)
    if (directory / SPARSIFY_WEIGHTS_FILE).is_file():
        return _load_sparsify(directory, raw)
    raise InputError(
        expected(
            f"SAE weights in {directory}",
            "no weights file",
            f"{SAELENS_WEIGHTS_FILE} (SAELens layout) or {SPARSIFY_WEIGHTS_FILE} (sparsify layout)",
        )
    )


def save_sae(sae: SparseAutoencoder, path: str | Path) -> Path:
    """Write `sae` to directory `path` in SAELens 6 layout, readable by load_sae and by SAELens.

    A sparsity.safetensors left there from an earlier SAE is removed when `sae` has no density, so
    that loading the directory gives back exactly this SAE.
    """
    cfg = sae.cfg
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    cfg_dict: dict[str, Any] = {
        "architecture": cfg.architecture,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": cfg.dtype,
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": cfg.normalize_activations,
        "reshape_activations": cfg.reshape_activations,
        "metadata": {
            "sae_lens_version": SAELENS_FORMAT_VERSION,
            "model_name": cfg.model_name,
            "hook_name": cfg.hook_name,
            "prepend_bos": cfg.prepend_bos,
            "context_size": cfg.context_size,
            "model_from_pretrained_kwargs": cfg.model_from_pretrained_kwargs,
        },
    }
    if cfg.architecture == "topk":
        cfg_dict |= {"k": cfg.k, "rescale_acts_by_decoder_norm": cfg.rescale_acts_by_decoder_norm}
    save_file(
        {key: w.detach().cpu().contiguous() for key, w in sae.weights.items()},
        directory / SAELENS_WEIGHTS_FILE,
    )
    sparsity_file = directory / SPARSITY_FILE
    if sae.log10_density is not None:
        save_file({SPARSITY_KEY: sae.log10_density.detach().cpu().contiguous()}, sparsity_file)
    else:
        sparsity_file.unlink(missing_ok=True)
    (directory / CFG_FILE).write_text(json.dumps(cfg_dict, indent=2) + "\n")
    return directory


def _read_json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(expected(f"SAE config {file}", f"text that is not JSON ({exc})", "a JSON object")) from None
    if not isinstance(data, dict):
        raise InputError(expected(f"SAE config {file}", f"a JSON {type(data).__name__}", "a JSON object"))
    return data


def _read_safetensors(file: Path) -> dict[str, Tensor]:
    try:
        return load_file(file)
    except (SafetensorError, OSError) as exc:
        raise InputError(
            expected(
                f"SAE weights {file}",
                f"a file safetensors cannot read ({exc})",
                "a safetensors file",
                "It may be truncated: download or copy it again.",
            )
        ) from None


def _load_saelens(directory: Path, raw: dict[str, Any], norm_scaling_factor: float | None = None) -> SparseAutoencoder:
    cfg_file = directory / CFG_FILE
    weights_file = directory / SAELENS_WEIGHTS_FILE
    fields = _saelens_fields(raw, cfg_file)
    weights = _read_safetensors(weights_file)
    _fold_finetuning_scaling_factor(weights, weights_file)
    if norm_scaling_factor is not None:
        fold_input_scale(weights, norm_scaling_factor)
    _infer_widths(fields, weights.get("W_enc"), "W_enc", (0, 1), cfg_file, weights_file)
    cfg = _make_cfg(fields | {"layout": "saelens", "path": str(directory)}, cfg_file)
    sae = SparseAutoencoder(cfg, weights, source=str(weights_file))
    sparsity_file = directory / SPARSITY_FILE
    if sparsity_file.is_file():
        sparsity = _read_safetensors(sparsity_file)
        if SPARSITY_KEY not in sparsity:
            raise InputError(
                expected(
                    f"{sparsity_file}",
                    f"keys {sorted(sparsity)}",
                    f"the key {SPARSITY_KEY!r} (log10 density)",
                )
            )
        density_S = sparsity[SPARSITY_KEY].float()
        if tuple(density_S.shape) != (cfg.d_sae,):
            raise InputError(
                expected(
                    f"{sparsity_file}: key {SPARSITY_KEY!r}",
                    f"shape {tuple(density_S.shape)}",
                    f"({cfg.d_sae},), one log10 density per feature",
                )
            )
        sae.log10_density = density_S.to(sae.device)
    return sae


def _saelens_fields(raw: dict[str, Any], cfg_file: Path) -> dict[str, Any]:
    """SAEConfig fields from a SAELens cfg.json, SAELens 6 (metadata dict) or older (flat keys)."""
    metadata = raw.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}

    def pick(key: str, default: Any = None) -> Any:
        # SAELens 6 keeps model/hook facts under metadata; older versions put them at the top level.
        value = metadata.get(key, raw.get(key))
        return default if value is None else value

    def refuse(key: str, found: Any, wanted: str, hint: str = "") -> InputError:
        return InputError(expected(f"SAE config {cfg_file}: key {key!r}", repr(found), wanted, hint))

    # Before SAELens 6 `architecture` could be missing (standard) and topk was an activation function.
    architecture = raw.get("architecture") or "standard"
    k = raw.get("k")
    activation_key = "activation_fn" if "activation_fn" in raw else "activation_fn_str"
    activation = raw.get(activation_key)
    if activation == "topk":
        kwargs = raw.get("activation_fn_kwargs") or {}
        if not isinstance(kwargs, dict) or kwargs.get("k") is None:
            raise refuse("activation_fn_kwargs", kwargs, "a dict with the topk 'k'")
        architecture, k = "topk", kwargs["k"]
    elif activation not in (None, "relu") and architecture == "standard":
        raise refuse(activation_key, activation, "'relu' or 'topk'")
    if architecture not in ARCHITECTURES:
        raise refuse("architecture", architecture, f"one of {', '.join(ARCHITECTURES)}")

    normalize = raw.get("normalize_activations")
    if isinstance(normalize, bool):  # an old boolean meant the expected-average-norm scaling
        normalize = "expected_average_only_in" if normalize else "none"
    normalize = normalize or "none"
    if normalize == "expected_average_only_in":
        raise refuse(
            "normalize_activations",
            normalize,
            f"one of {', '.join(NORMALIZATIONS)}",
            "That scaling divides inputs by a dataset-wide constant that is not stored in the SAE files; "
            "fold the constant into the weights (SAELens: fold_activation_norm_scaling_factor) and set "
            "normalize_activations to 'none'.",
        )
    if normalize not in NORMALIZATIONS:
        raise refuse("normalize_activations", normalize, f"one of {', '.join(NORMALIZATIONS)}")

    hook_head_index = pick("hook_head_index")
    if hook_head_index is not None:
        raise refuse("hook_head_index", hook_head_index, "null", "SAEs on a single attention head are not supported.")

    hook_name = pick("hook_name") or raw.get("hook_point")
    reshape = raw.get("reshape_activations")
    if reshape is None:  # before SAELens 6: implied by the hook (SAELens's own rule)
        reshape = "hook_z" if isinstance(hook_name, str) and hook_name.endswith("hook_z") else "none"

    return {
        "architecture": architecture,
        "d_in": raw.get("d_in"),
        "d_sae": raw.get("d_sae"),
        "dtype": raw.get("dtype") or "float32",
        "hook_name": hook_name,
        "model_name": pick("model_name"),
        "prepend_bos": pick("prepend_bos", True),
        "context_size": pick("context_size"),
        "model_from_pretrained_kwargs": pick("model_from_pretrained_kwargs", {}),
        "apply_b_dec_to_input": raw.get("apply_b_dec_to_input", True),
        "normalize_activations": normalize,
        "k": k,
        "rescale_acts_by_decoder_norm": raw.get("rescale_acts_by_decoder_norm", False),
        "reshape_activations": reshape,
    }


def _fold_finetuning_scaling_factor(weights: dict[str, Tensor], weights_file: Path) -> None:
    """Old SAELens SAEs may carry `scaling_factor` [d_sae], multiplying activations before decoding.

    All ones (written by default for a while) means nothing; otherwise it is folded into W_dec rows,
    which decodes identically and leaves encode untouched.
    """
    scale_S = weights.pop("scaling_factor", None)
    if scale_S is None or bool((scale_S == 1).all()):
        return
    if "W_dec" not in weights or scale_S.shape != weights["W_dec"].shape[:1]:
        raise InputError(
            expected(
                f"{weights_file}: weight 'scaling_factor'",
                f"shape {tuple(scale_S.shape)}",
                "one factor per W_dec row",
            )
        )
    weights["W_dec"] = weights["W_dec"] * scale_S[:, None]


def fold_input_scale(weights: dict[str, Tensor], scale: float) -> None:
    """Fold "multiply every input by `scale`" into the weights (SAELens's fold_activation_norm_scaling_factor):
    the encoder reads x * scale, the decoder writes back in the input's own units."""
    weights["W_enc"] = weights["W_enc"] * scale
    weights["W_dec"] = weights["W_dec"] / scale
    weights["b_dec"] = weights["b_dec"] / scale


def _infer_widths(
    fields: dict[str, Any],
    matrix: Tensor | None,
    matrix_key: str,
    axes: tuple[int, int],
    cfg_file: Path,
    weights_file: Path,
) -> None:
    """Fill a missing d_in / d_sae from the encoder matrix; axes = (d_in axis, d_sae axis)."""
    for name, axis in zip(("d_in", "d_sae"), axes, strict=True):
        if fields.get(name) is not None:
            continue
        if matrix is None or matrix.ndim != 2:
            raise InputError(
                expected(
                    f"SAE config {cfg_file}: key {name!r}",
                    "no value",
                    f"an integer, or a 2-D {matrix_key!r} in {weights_file} to read it from",
                )
            )
        fields[name] = int(matrix.shape[axis])


def _make_cfg(fields: dict[str, Any], cfg_file: Path) -> SAEConfig:
    try:
        return SAEConfig(**fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        message = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:  # a check across keys; its message names the key
            raise InputError(f"SAE config {cfg_file}: {message}.") from None
        key = ".".join(str(part) for part in error["loc"])
        raise InputError(expected(f"SAE config {cfg_file}: key {key!r}", repr(error.get("input")), message)) from None


def _load_sparsify(directory: Path, raw: dict[str, Any]) -> SparseAutoencoder:
    """A sparsify SAE: relu(encoder(x - b_dec)), keep the top k; stored as an nn.Linear encoder."""
    cfg_file = directory / CFG_FILE
    weights_file = directory / SPARSIFY_WEIGHTS_FILE

    def refuse(key: str, found: Any, wanted: str) -> InputError:
        return InputError(expected(f"sparsify config {cfg_file}: key {key!r}", repr(found), wanted))

    if raw.get("activation", "topk") != "topk":
        raise refuse("activation", raw["activation"], "'topk' (other sparsify activations are not supported)")
    # Options that change what the encoder reads or what the decoder writes: not an SAE we can run.
    for key in ("transcode", "skip_connection", "embed_skip", "gram_lookup", "signed"):
        if raw.get(key):
            raise refuse(key, raw[key], "false (sparse coders with this option are not supported)")
    if raw.get("k") is None:
        raise refuse("k", None, "the number of features kept per token")

    stored = _read_safetensors(weights_file)
    encoder_SD = stored.get("encoder.weight")
    fields: dict[str, Any] = {"d_in": raw.get("d_in"), "d_sae": raw.get("num_latents") or None}
    if fields["d_sae"] is None and fields["d_in"] is not None and raw.get("expansion_factor"):
        fields["d_sae"] = fields["d_in"] * raw["expansion_factor"]
    _infer_widths(fields, encoder_SD, "encoder.weight", (1, 0), cfg_file, weights_file)
    d_in, d_sae = fields["d_in"], fields["d_sae"]
    check_weights(
        stored,
        {"encoder.weight": (d_sae, d_in), "encoder.bias": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)},
        str(weights_file),
        f"sparsify SAE with d_in={d_in}, num_latents={d_sae}",
    )
    weights = {
        "W_enc": stored["encoder.weight"].T.contiguous(),
        "b_enc": stored["encoder.bias"],
        "W_dec": stored["W_dec"],
        "b_dec": stored["b_dec"],
    }
    run = _sparsify_run_config(directory)
    cfg = _make_cfg(
        {
            "architecture": "topk",
            "d_in": d_in,
            "d_sae": d_sae,
            # sparsify keeps no dtype in cfg.json; it runs in the dtype it saved
            "dtype": str(stored["encoder.weight"].dtype),
            "hook_name": _sparsify_hook_name(raw.get("hookpoint") or directory.name),
            "model_name": run.get("model"),
            "context_size": run.get("ctx_len"),
            "apply_b_dec_to_input": True,  # sparsify subtracts b_dec from every SAE's input
            "normalize_activations": "none",
            "k": raw["k"],
            "layout": "sparsify",
            "path": str(directory),
        },
        cfg_file,
    )
    return SparseAutoencoder(cfg, weights, source=str(weights_file))


def _sparsify_hook_name(hookpoint: str) -> str | None:
    """sparsify names an SAE's folder after its hookpoint; `layers.N` is the output of block N."""
    match = _SPARSIFY_LAYER.match(hookpoint)
    return f"blocks.{match.group(1)}.hook_resid_post" if match else None


def _sparsify_run_config(directory: Path) -> dict[str, Any]:
    """sparsify's run config (model name, context length), saved one folder up, if it is there."""
    run_file = directory.parent / SPARSIFY_RUN_CFG_FILE
    return _read_json(run_file) if run_file.is_file() else {}
