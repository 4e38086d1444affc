"""autointerp.sae: loading SAELens / sparsify files, encoding (cross-checked against SAELens), saving."""

import json
from pathlib import Path

import pytest
import torch
from helpers_sae import make_sae, random_weights, write_sae
from safetensors.torch import load_file, save_file

from autointerp.errors import InputError
from autointerp.sae import SAEConfig, SparseAutoencoder, load_sae, sae_fingerprint, save_sae

D_IN, D_SAE = 16, 64
ARCHS = ["standard", "jumprelu", "gated", "topk"]
SAELENS_CLASSES = {
    "standard": ("StandardSAE", "StandardSAEConfig"),
    "jumprelu": ("JumpReLUSAE", "JumpReLUSAEConfig"),
    "gated": ("GatedSAE", "GatedSAEConfig"),
    "topk": ("TopKSAE", "TopKSAEConfig"),
}


def inputs(n: int = 32, seed: int = 1) -> torch.Tensor:
    # A scale well above b_dec so that the input normalisations matter.
    return 3.0 * torch.randn(n, D_IN, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def sae_lens():
    """The installed SAELens (a test dependency); only the cross-checks need it."""
    return pytest.importorskip("sae_lens")


def saelens_sae(architecture: str, **cfg_kwargs):
    """A SAELens SAE of `architecture` carrying our helpers' random weights."""
    sae_lens = pytest.importorskip("sae_lens")
    from sae_lens.saes.sae import SAEMetadata

    sae_cls, cfg_cls = (getattr(sae_lens, name) for name in SAELENS_CLASSES[architecture])
    if architecture == "topk":
        cfg_kwargs.setdefault("k", 8)
    metadata = SAEMetadata(model_name="gpt2", hook_name="blocks.3.hook_resid_post", prepend_bos=False, context_size=128)
    cfg = cfg_cls(d_in=D_IN, d_sae=D_SAE, metadata=metadata, **cfg_kwargs)
    sae = sae_cls(cfg)
    sae.load_state_dict(random_weights(architecture, D_IN, D_SAE, seed=3))
    return sae


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# --- cross-check against SAELens ---------------------------------------------------------------


@pytest.mark.parametrize("normalize", ["none", "constant_norm_rescale", "layer_norm"])
@pytest.mark.parametrize("apply_b_dec", [True, False])
@pytest.mark.parametrize("architecture", ARCHS)
def test_encode_matches_saelens(tmp_path: Path, architecture: str, apply_b_dec: bool, normalize: str) -> None:
    reference = saelens_sae(architecture, apply_b_dec_to_input=apply_b_dec, normalize_activations=normalize)
    reference.save_model(tmp_path)
    sae = load_sae(tmp_path)
    x_ND = inputs()

    with torch.no_grad():
        expected_NS = reference.encode(x_ND)
        expected_out_ND = reference.decode(reference.encode(x_ND))  # SAELens keeps x's norm stats
    acts_NS = sae.encode(x_ND)
    close(acts_NS, expected_NS)
    assert 0 < (acts_NS > 0).float().mean() < 0.9  # the check is not vacuous
    close(sae.decode(acts_NS, x_ND), expected_out_ND)

    idx = torch.tensor([5, 0, 63, 17, 17])
    close(sae.encode(x_ND, features=idx), acts_NS[:, idx])
    assert sae.cfg.architecture == architecture
    assert (sae.cfg.apply_b_dec_to_input, sae.cfg.normalize_activations) == (apply_b_dec, normalize)
    assert (sae.cfg.model_name, sae.cfg.hook_name, sae.hook_layer) == ("gpt2", "blocks.3.hook_resid_post", 3)
    assert (sae.cfg.prepend_bos, sae.cfg.context_size) == (False, 128)


def test_topk_rescale_by_decoder_norm_matches_saelens(tmp_path: Path) -> None:
    reference = saelens_sae("topk", rescale_acts_by_decoder_norm=True)
    with torch.no_grad():
        reference.W_dec.mul_(torch.linspace(0.5, 2.0, D_SAE)[:, None])  # norms must differ to matter
    reference.save_model(tmp_path)
    sae = load_sae(tmp_path)
    x_ND = inputs()
    with torch.no_grad():
        expected_NS = reference.encode(x_ND)
        expected_out_ND = reference.decode(expected_NS)
    close(sae.encode(x_ND), expected_NS)
    close(sae.decode(expected_NS), expected_out_ND)


@pytest.mark.parametrize("architecture", ["jumprelu", "topk"])
def test_edge_cases_match_saelens(tmp_path: Path, architecture: str) -> None:
    """Negative thresholds (jumprelu) and rows with fewer than k positive pre-activations (topk)."""
    reference = saelens_sae(architecture)
    with torch.no_grad():
        reference.b_enc.sub_(6.0 if architecture == "topk" else 1.0)
        if architecture == "jumprelu":
            reference.threshold.copy_(-torch.linspace(0.0, 1.0, D_SAE))
    reference.save_model(tmp_path)
    x_ND = inputs()
    with torch.no_grad():
        expected_NS = reference.encode(x_ND)
    close(load_sae(tmp_path).encode(x_ND), expected_NS)
    if architecture == "topk":
        assert int((expected_NS > 0).sum(-1).min()) < 8  # some rows really had fewer than k positives


@pytest.mark.parametrize("architecture", ARCHS)
def test_saelens_loads_what_we_save(sae_lens, tmp_path: Path, architecture: str) -> None:
    sae = make_sae(architecture, model_name="gpt2", normalize_activations="layer_norm")
    save_sae(sae, tmp_path)
    reference = sae_lens.SAE.load_from_disk(tmp_path)
    assert reference.cfg.metadata.hook_name == "blocks.0.hook_resid_post"
    x_ND = inputs()
    with torch.no_grad():
        close(sae.encode(x_ND), reference.encode(x_ND))


@pytest.mark.filterwarnings(r"ignore:\s*This SAE has non-empty model_from_pretrained_kwargs")
def test_pre_saelens6_topk_config(sae_lens, tmp_path: Path) -> None:
    weights = random_weights("topk", D_IN, D_SAE, seed=4)
    save_file(weights, tmp_path / "sae_weights.safetensors")
    old_cfg = {
        "model_name": "gpt2",
        "hook_point": "blocks.2.hook_resid_pre",
        "hook_point_layer": 2,
        "hook_point_head_index": None,
        "d_in": D_IN,
        "d_sae": D_SAE,
        "dtype": "torch.float32",
        "device": "cpu",
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": 5},
        "apply_b_dec_to_input": False,
        "normalize_activations": False,
        "prepend_bos": False,
        "context_size": 256,
        "model_from_pretrained_kwargs": {"center_writing_weights": False},
        "sae_lens_training_version": "3.13.0",
    }
    (tmp_path / "cfg.json").write_text(json.dumps(old_cfg))
    sae = load_sae(tmp_path)
    reference = sae_lens.SAE.load_from_disk(tmp_path)
    cfg = sae.cfg
    assert (cfg.architecture, cfg.k, sae.hook_layer) == ("topk", 5, 2)
    assert cfg.hook_name == "blocks.2.hook_resid_pre"
    assert (cfg.apply_b_dec_to_input, cfg.normalize_activations, cfg.prepend_bos) == (False, "none", False)
    assert (cfg.context_size, cfg.dtype) == (256, "float32")
    assert cfg.model_from_pretrained_kwargs == {"center_writing_weights": False}
    x_ND = inputs()
    with torch.no_grad():
        close(sae.encode(x_ND), reference.encode(x_ND))
    assert int((sae.encode(x_ND) > 0).sum(-1).max()) <= 5


def test_pre_saelens6_relu_config_without_architecture(sae_lens, tmp_path: Path) -> None:
    save_file(random_weights("standard", D_IN, D_SAE), tmp_path / "sae_weights.safetensors")
    old_cfg = {"hook_point": "blocks.1.hook_resid_post", "d_in": D_IN, "d_sae": D_SAE}
    old_cfg["activation_fn_str"] = "relu"
    (tmp_path / "cfg.json").write_text(json.dumps(old_cfg))
    assert load_sae(tmp_path).cfg.dtype == "float32"  # the default; SAELens needs the key, so add it
    old_cfg["dtype"] = "float32"
    (tmp_path / "cfg.json").write_text(json.dumps(old_cfg))
    sae = load_sae(tmp_path)
    reference = sae_lens.SAE.load_from_disk(tmp_path)
    assert (sae.cfg.architecture, sae.cfg.apply_b_dec_to_input) == ("standard", True)
    with torch.no_grad():
        close(sae.encode(inputs()), reference.encode(inputs()))


# --- subset encode -------------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ARCHS)
def test_subset_encode_equals_full_columns(architecture: str) -> None:
    sae = make_sae(architecture, d_in=D_IN, d_sae=D_SAE)
    x_BLD = inputs(24).reshape(2, 12, D_IN).to(torch.float16)  # any leading dims, any float dtype
    full_BLS = sae.encode(x_BLD)
    assert full_BLS.shape == (2, 12, D_SAE) and full_BLS.dtype == torch.float32
    for idx in (torch.tensor([3, 1, 2]), torch.arange(D_SAE), torch.tensor([], dtype=torch.long), [7, 8]):
        index = torch.as_tensor(idx, dtype=torch.long)
        close(sae.encode(x_BLD, features=idx), full_BLS[..., index])


def test_subset_cache_follows_the_features_tensor() -> None:
    sae = make_sae("jumprelu")
    x_ND = inputs()
    full_NS = sae.encode(x_ND)
    idx = torch.tensor([1, 2, 3])
    close(sae.encode(x_ND, idx), full_NS[:, idx])
    idx[0] = 40  # edited in place: the cached slice must not be reused
    close(sae.encode(x_ND, idx), full_NS[:, [40, 2, 3]])
    with pytest.raises(ValueError, match="indices"):
        sae.encode(x_ND, torch.tensor([D_SAE]))
    with pytest.raises(ValueError, match="integer"):
        sae.encode(x_ND, torch.ones(D_SAE, dtype=torch.bool))


def test_encode_formulas_by_hand() -> None:
    x_ND = inputs()
    sae = make_sae("jumprelu", apply_b_dec_to_input=True)
    w = sae.weights
    pre_NS = (x_ND - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    close(sae.encode(x_ND), torch.where(pre_NS > w["threshold"], pre_NS, 0.0))

    sae = make_sae("topk", k=3, apply_b_dec_to_input=False)
    acts_NS = sae.encode(x_ND)
    pre_NS = x_ND @ sae.weights["W_enc"] + sae.weights["b_enc"]
    assert ((acts_NS > 0).sum(-1) <= 3).all()
    kth_N1 = pre_NS.topk(3, dim=-1).values[:, -1:]
    close(acts_NS, torch.where(pre_NS >= kth_N1, pre_NS.relu(), 0.0))


# --- sparsify layout -----------------------------------------------------------------------------


def write_sparsify(directory: Path, cfg: dict, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    weights = {
        "encoder.weight": torch.randn(D_SAE, D_IN, generator=generator) / D_IN**0.5,
        "encoder.bias": 0.1 * torch.randn(D_SAE, generator=generator),
        "W_dec": torch.randn(D_SAE, D_IN, generator=generator),
        "b_dec": 0.1 * torch.randn(D_IN, generator=generator),
    }
    directory.mkdir(parents=True)
    save_file({key: w.to(dtype) for key, w in weights.items()}, directory / "sae.safetensors")
    (directory / "cfg.json").write_text(json.dumps(cfg))
    return weights


def test_sparsify_layout(tmp_path: Path) -> None:
    cfg = {"activation": "topk", "expansion_factor": 4, "num_latents": D_SAE, "k": 6}
    weights = write_sparsify(tmp_path / "layers.6", cfg | {"d_in": D_IN})
    (tmp_path / "config.json").write_text(json.dumps({"model": "EleutherAI/pythia-70m", "ctx_len": 2048}))
    sae = load_sae(tmp_path / "layers.6")
    assert (sae.cfg.layout, sae.cfg.architecture, sae.cfg.k) == ("sparsify", "topk", 6)
    assert (sae.cfg.hook_name, sae.hook_layer) == ("blocks.6.hook_resid_post", 6)
    assert (sae.cfg.model_name, sae.cfg.context_size) == ("EleutherAI/pythia-70m", 2048)

    x_ND = inputs()
    pre_NS = torch.relu((x_ND - weights["b_dec"]) @ weights["encoder.weight"].T + weights["encoder.bias"])
    values_NK, indices_NK = pre_NS.topk(6, dim=-1)
    expected_NS = torch.zeros_like(pre_NS).scatter(-1, indices_NK, values_NK)
    close(sae.encode(x_ND), expected_NS)
    close(sae.encode(x_ND, torch.tensor([9, 4])), expected_NS[:, [9, 4]])
    close(sae.decode(expected_NS), expected_NS @ weights["W_dec"] + weights["b_dec"])


def test_sparsify_infers_widths_and_keeps_stored_dtype(tmp_path: Path) -> None:
    write_sparsify(tmp_path / "embed", {"k": 4, "num_latents": 0, "expansion_factor": 4}, torch.bfloat16)
    sae = load_sae(tmp_path / "embed")
    assert (sae.cfg.d_in, sae.cfg.d_sae) == (D_IN, D_SAE)
    assert (sae.cfg.dtype, sae.dtype) == ("bfloat16", torch.bfloat16)
    assert sae.cfg.hook_name is None and sae.hook_layer is None
    assert sae.encode(inputs()).dtype == torch.bfloat16


def test_sparsify_refuses_transcoders(tmp_path: Path) -> None:
    write_sparsify(tmp_path / "layers.1", {"k": 4, "num_latents": D_SAE, "d_in": D_IN, "transcode": True})
    with pytest.raises(InputError, match="transcode"):
        load_sae(tmp_path / "layers.1")


# --- files: sparsity, dtype, save -----------------------------------------------------------------


def test_sparsity_file_is_read(tmp_path: Path) -> None:
    density_S = -torch.rand(D_SAE) * 5
    directory = write_sae(tmp_path, "standard", log10_density=density_S)
    assert set(load_file(directory / "sparsity.safetensors")) == {"sparsity"}
    close(load_sae(directory).log10_density, density_S)


@pytest.mark.parametrize("architecture", ARCHS)
def test_save_load_round_trip(tmp_path: Path, architecture: str) -> None:
    sae = make_sae(architecture, seed=2, model_name="pythia", context_size=64, model_from_pretrained_kwargs={"a": 1})
    sae.log10_density = torch.linspace(-6, 0, D_SAE)
    loaded = load_sae(save_sae(sae, tmp_path / "out"))
    assert loaded.cfg.model_dump(exclude={"path"}) == sae.cfg.model_dump(exclude={"path"})
    assert loaded.cfg.path == str(tmp_path / "out")
    assert loaded.weights.keys() == sae.weights.keys()
    for key, weight in sae.weights.items():
        assert torch.equal(loaded.weights[key], weight), key
    assert torch.equal(loaded.log10_density, sae.log10_density)
    saved_cfg = json.loads((tmp_path / "out" / "cfg.json").read_text())
    assert saved_cfg["metadata"]["hook_name"] == "blocks.0.hook_resid_post"

    sae.log10_density = None  # a stale sparsity file must not come back
    assert load_sae(save_sae(sae, tmp_path / "out")).log10_density is None


def test_fingerprint_names_the_sae_not_where_it_came_from(tmp_path: Path) -> None:
    sae = make_sae("jumprelu", seed=3, model_name="pythia")
    first = sae_fingerprint(sae)
    assert len(first) == 16 and int(first, 16) >= 0
    loaded = load_sae(save_sae(sae, tmp_path / "a"))
    assert sae_fingerprint(loaded) == first  # the folder it was loaded from is not part of it
    assert sae_fingerprint(load_sae(save_sae(sae, tmp_path / "b"))) == first
    assert sae_fingerprint(make_sae("jumprelu", seed=4, model_name="pythia")) != first  # other weights
    assert sae_fingerprint(make_sae("jumprelu", seed=3, model_name="gpt2")) != first  # other model
    bumped = load_sae(tmp_path / "a")
    bumped.weights["threshold"][0] += 1  # one value changed
    assert sae_fingerprint(bumped) != first


def test_fingerprint_of_an_sae_from_another_library(sae_lens) -> None:
    lens = sae_lens.SAE.from_dict(sae_lens.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE).to_dict())
    with torch.no_grad():
        for parameter in lens.parameters():
            parameter.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    first = sae_fingerprint(lens)
    assert sae_fingerprint(lens) == first and len(first) == 16
    with torch.no_grad():
        lens.b_enc[0] += 1
    assert sae_fingerprint(lens) != first


def test_dtype_from_cfg_and_to(tmp_path: Path) -> None:
    directory = write_sae(tmp_path, "gated", dtype="torch.bfloat16")
    sae = load_sae(directory)
    assert (sae.cfg.dtype, sae.dtype) == ("bfloat16", torch.bfloat16)
    assert all(w.dtype == torch.bfloat16 for w in sae.weights.values())
    assert sae.encode(inputs()).dtype == torch.bfloat16
    assert sae.to(dtype=torch.float64) is sae
    assert (sae.cfg.dtype, sae.dtype, sae.device.type) == ("float64", torch.float64, "cpu")
    assert sae.encode(inputs(), [1, 2]).dtype == torch.float64


def test_hook_z_input_is_flattened() -> None:
    sae = make_sae("standard", hook_name="blocks.4.attn.hook_z", reshape_activations="hook_z")
    x_ND = inputs()
    close(sae.encode(x_ND.reshape(-1, 4, 4)), sae.encode(x_ND))


def test_decode_needs_input_when_normalising() -> None:
    sae = make_sae("standard", normalize_activations="constant_norm_rescale")
    with pytest.raises(ValueError, match="x_ND"):
        sae.decode(sae.encode(inputs()))


def test_from_weights_checks_shapes() -> None:
    cfg = SAEConfig(architecture="standard", d_in=D_IN, d_sae=D_SAE)
    weights = random_weights("standard", D_IN, D_SAE) | {"b_enc": torch.zeros(D_SAE + 1)}
    with pytest.raises(InputError, match=r"'b_enc'.*\(65,\).*\(64,\)"):
        SparseAutoencoder.from_weights(cfg, weights)


# --- bad input -----------------------------------------------------------------------------------


def edit_cfg(directory: Path, **changes) -> None:
    cfg_file = directory / "cfg.json"
    cfg = json.loads(cfg_file.read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    cfg_file.write_text(json.dumps(cfg))


def edit_weights(directory: Path, **changes) -> None:
    weights_file = directory / "sae_weights.safetensors"
    weights = load_file(weights_file)
    for key, value in changes.items():
        if value is None:
            del weights[key]
        else:
            weights[key] = value
    save_file(weights, weights_file)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nowhere.*directory"):
        load_sae(tmp_path / "nowhere")


def test_missing_cfg_json(tmp_path: Path) -> None:
    directory = write_sae(tmp_path)
    (directory / "cfg.json").unlink()
    with pytest.raises(InputError, match="cfg.json"):
        load_sae(directory)


def test_missing_weights_file(tmp_path: Path) -> None:
    directory = write_sae(tmp_path)
    (directory / "sae_weights.safetensors").unlink()
    with pytest.raises(InputError, match="sae_weights.safetensors"):
        load_sae(directory)


def test_truncated_weights_file(tmp_path: Path) -> None:
    directory = write_sae(tmp_path)
    weights_file = directory / "sae_weights.safetensors"
    weights_file.write_bytes(weights_file.read_bytes()[:-100])
    with pytest.raises(InputError, match="sae_weights.safetensors.*truncated"):
        load_sae(directory)


def test_cfg_not_json(tmp_path: Path) -> None:
    directory = write_sae(tmp_path)
    (directory / "cfg.json").write_text("{'d_in': 16,")
    with pytest.raises(InputError, match="cfg.json.*not JSON"):
        load_sae(directory)


def test_missing_weight_key(tmp_path: Path) -> None:
    directory = write_sae(tmp_path, "jumprelu")
    edit_weights(directory, threshold=None)
    with pytest.raises(InputError, match="sae_weights.safetensors.*'threshold'"):
        load_sae(directory)


def test_weight_of_wrong_shape(tmp_path: Path) -> None:
    directory = write_sae(tmp_path, "standard")
    edit_weights(directory, W_dec=torch.zeros(D_IN, D_SAE))
    with pytest.raises(InputError, match=r"'W_dec'.*\(16, 64\).*\(64, 16\)"):
        load_sae(directory)


def test_weight_the_architecture_does_not_use(tmp_path: Path) -> None:
    directory = write_sae(tmp_path, "standard")
    edit_weights(directory, threshold=torch.zeros(D_SAE))
    with pytest.raises(InputError, match="'threshold'.*architecture"):
        load_sae(directory)


def test_unknown_architecture(tmp_path: Path) -> None:
    directory = write_sae(tmp_path)
    edit_cfg(directory, architecture="matryoshka")
    with pytest.raises(InputError, match="cfg.json.*'architecture'.*matryoshka.*jumprelu"):
        load_sae(directory)


def test_missing_widths_are_inferred_or_refused(tmp_path: Path) -> None:
    directory = write_sae(tmp_path, "standard")
    edit_cfg(directory, d_in=None, d_sae=None)
    assert (load_sae(directory).cfg.d_in, load_sae(directory).cfg.d_sae) == (D_IN, D_SAE)
    edit_weights(directory, W_enc=None)
    with pytest.raises(InputError, match="cfg.json.*'d_in'"):
        load_sae(directory)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("normalize_activations", "expected_average_only_in", "not stored in the SAE files"),
        ("normalize_activations", "whiten", "constant_norm_rescale"),
        ("dtype", "float8", "float32"),
        ("k", 1000, "k"),
        ("apply_b_dec_to_input", "maybe", "bool"),
    ],
)
def test_bad_cfg_values(tmp_path: Path, key: str, value: object, message: str) -> None:
    directory = write_sae(tmp_path, "topk")
    edit_cfg(directory, **{key: value})
    with pytest.raises(InputError, match=f"cfg.json.*'{key}'.*{message}") as raised:
        load_sae(directory)
    assert "\n" not in str(raised.value)


def test_bad_sparsity_file(tmp_path: Path) -> None:
    directory = write_sae(tmp_path)
    save_file({"log_density": torch.zeros(D_SAE)}, directory / "sparsity.safetensors")
    with pytest.raises(InputError, match="sparsity.safetensors.*'sparsity'"):
        load_sae(directory)
    save_file({"sparsity": torch.zeros(D_SAE - 1)}, directory / "sparsity.safetensors")
    with pytest.raises(InputError, match=r"sparsity.safetensors.*\(63,\)"):
        load_sae(directory)


@pytest.mark.parametrize("normalize", ["none", "constant_norm_rescale", "layer_norm"])
@pytest.mark.parametrize("architecture", ["standard", "jumprelu", "topk"])
def test_a_saelens_object_converts_to_the_sae_its_saved_folder_loads_as(tmp_path, architecture, normalize):
    """from_saelens (score_checkpoint's path for SAELens objects) encodes as SAELens does, per-token input
    normalisation included, and fingerprints as `load_sae` of the folder SAELens saves."""
    import sae_lens

    from autointerp.sae.in_memory import from_saelens

    config_class = {
        "standard": sae_lens.StandardSAEConfig,
        "jumprelu": sae_lens.JumpReLUSAEConfig,
        "topk": sae_lens.TopKSAEConfig,
    }[architecture]
    extra = {"k": 6} if architecture == "topk" else {}
    cfg = config_class(d_in=D_IN, d_sae=D_SAE, normalize_activations=normalize, **extra)
    cfg.metadata.hook_name = "blocks.2.hook_resid_post"
    cfg.metadata.context_size = 77
    lens = sae_lens.SAE.from_dict(cfg.to_dict())
    torch.manual_seed(0)
    with torch.no_grad():
        for p in lens.parameters():
            p.normal_(0, 0.3)
    x_ND = 3 * torch.randn(10, D_IN) + 1
    ours = from_saelens(lens)
    close(ours.encode(x_ND), lens.encode(x_ND))
    lens.save_model(tmp_path / "saved")
    assert sae_fingerprint(ours) == sae_fingerprint(load_sae(tmp_path / "saved"))
    assert (ours.cfg.context_size, ours.cfg.hook_name, ours.cfg.normalize_activations) == (
        77,
        "blocks.2.hook_resid_post",
        normalize,
    )
