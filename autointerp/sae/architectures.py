"""The SAE encoder families and SparseAutoencoder, which runs one of them on activations.

Every family shares W_enc [d_in, d_sae], W_dec [d_sae, d_in] and b_dec [d_in]; each adds its own
per-feature [d_sae] vectors and its own activation rule. The rules match SAELens 6's inference
classes (StandardSAE, JumpReLUSAE, GatedSAE, TopKSAE) so that a SAELens SAE encodes the same here.

Shape letters: N tokens (any leading dims), D = d_in, S = d_sae (all features), F chosen features.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from autointerp.dtypes import DTYPE_NAMES, parse_dtype
from autointerp.errors import InputError, expected
from autointerp.registry import Registry
from autointerp.sae.config import SAEConfig

LN_EPS = 1e-5  # SAELens's layer_norm epsilon


@dataclass(frozen=True)
class Architecture:
    """An encoder family: its per-feature weights and how pre-activations become activations.

    `activate(x_ND, weights, cfg)` gets the input already normalised and b_dec-shifted, and weights
    whose feature axis may be a subset (W_enc [D, F] and every `feature_vectors` entry [F]).
    """

    name: str
    feature_vectors: tuple[str, ...]
    activate: Callable[[Tensor, dict[str, Tensor], SAEConfig], Tensor]
    # True when one feature's activation depends on the others' (topk): a subset can then only be
    # read off the full encode, never computed from the subset's own columns.
    couples_features: bool = False

    def weight_shapes(self, d_in: int, d_sae: int) -> dict[str, tuple[int, ...]]:
        """Every weight this family needs, with its shape."""
        shapes = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
        return shapes | {name: (d_sae,) for name in self.feature_vectors}


ARCHITECTURES: Registry[Architecture] = Registry("SAE architecture")


def register(architecture: Architecture) -> Architecture:
    return ARCHITECTURES.register(architecture.name)(architecture)


def _standard(x_ND: Tensor, w: dict[str, Tensor], cfg: SAEConfig) -> Tensor:
    return (x_ND @ w["W_enc"] + w["b_enc"]).relu()


def _jumprelu(x_ND: Tensor, w: dict[str, Tensor], cfg: SAEConfig) -> Tensor:
    pre_NF = x_ND @ w["W_enc"] + w["b_enc"]
    # ReLU first, as SAELens does: a negative threshold must not let negative values through.
    return pre_NF.relu() * (pre_NF > w["threshold"]).to(pre_NF.dtype)


def _gated(x_ND: Tensor, w: dict[str, Tensor], cfg: SAEConfig) -> Tensor:
    # The gate decides which features fire; the magnitude path (same directions rescaled by exp(r_mag))
    # decides how strongly. Scaling W_enc before the matmul keeps SAELens's rounding.
    open_NF = (x_ND @ w["W_enc"] + w["b_gate"]) > 0
    magnitude_NF = (x_ND @ (w["W_enc"] * w["r_mag"].exp()) + w["b_mag"]).relu()
    return magnitude_NF * open_NF.to(magnitude_NF.dtype)


def _topk(x_ND: Tensor, w: dict[str, Tensor], cfg: SAEConfig) -> Tensor:
    pre_NS = x_ND @ w["W_enc"] + w["b_enc"]
    if cfg.rescale_acts_by_decoder_norm:
        pre_NS = pre_NS * w["W_dec"].norm(dim=-1)
    assert cfg.k is not None  # SAEConfig guarantees k for topk
    top_values_NK, top_indices_NK = pre_NS.topk(cfg.k, dim=-1, sorted=False)
    # ReLU after the selection (SAELens): a row with fewer than k positive values keeps zeros.
    return torch.zeros_like(pre_NS).scatter_(-1, top_indices_NK, top_values_NK.relu())


register(Architecture("standard", ("b_enc",), _standard))
register(Architecture("jumprelu", ("b_enc", "threshold"), _jumprelu))
register(Architecture("gated", ("b_gate", "b_mag", "r_mag"), _gated))
register(Architecture("topk", ("b_enc",), _topk, couples_features=True))


def check_weights(weights: dict[str, Tensor], shapes: dict[str, tuple[int, ...]], source: str, why: str) -> None:
    """Raise InputError unless `weights` holds exactly the keys of `shapes`, each of that shape.

    `source` names where the weights came from (a file); `why` says where the shapes come from.
    """
    missing = [key for key in shapes if key not in weights]
    if missing:
        raise InputError(
            expected(
                f"{source}: weight {missing[0]!r}",
                f"no such key (keys present: {', '.join(sorted(weights)) or 'none'})",
                f"the keys {', '.join(shapes)} ({why})",
            )
        )
    extra = [key for key in weights if key not in shapes]
    if extra:
        raise InputError(
            expected(
                f"{source}: weight {extra[0]!r}",
                "a key this SAE does not use",
                f"only {', '.join(shapes)} ({why})",
                "Check that the architecture in cfg.json matches the weights.",
            )
        )
    for key, shape in shapes.items():
        found = tuple(weights[key].shape)
        if found != shape:
            raise InputError(expected(f"{source}: weight {key!r}", f"shape {found}", f"{shape} ({why})"))


def _normalise(x_ND: Tensor, how: str) -> Tensor:
    """Redo the SAE's per-token input normalisation (SAELens's run-time normalisation)."""
    if how == "constant_norm_rescale":
        return x_ND * (x_ND.shape[-1] ** 0.5 / x_ND.norm(dim=-1, keepdim=True))
    if how == "layer_norm":
        centred_ND = x_ND - x_ND.mean(dim=-1, keepdim=True)
        return centred_ND / (centred_ND.std(dim=-1, keepdim=True) + LN_EPS)
    return x_ND


def _denormalise(out_ND: Tensor, x_ND: Tensor, how: str) -> Tensor:
    """Map a reconstruction of the normalised input back to the scale of the input x_ND."""
    if how == "constant_norm_rescale":
        return out_ND * (x_ND.norm(dim=-1, keepdim=True) / x_ND.shape[-1] ** 0.5)
    if how == "layer_norm":
        mean_N1 = x_ND.mean(dim=-1, keepdim=True)
        return out_ND * (x_ND - mean_N1).std(dim=-1, keepdim=True) + mean_N1
    return out_ND


_MAX_CACHED_SUBSETS = 1024  # > the blocks of one pass of a 4M-feature SAE


@dataclass
class _Subset:
    """Cached per feature set: the index on the SAE's device and, where possible, sliced weights."""

    features: Tensor | None  # the caller's tensor this was built from (None: not cacheable)
    version: int
    index_F: Tensor
    weights: dict[str, Tensor] | None


class SparseAutoencoder:
    """An SAE ready to encode activations, for all features or a chosen subset.

    Plain tensors, no autograd: this runs trained SAEs, it does not train them.
    """

    def __init__(
        self,
        cfg: SAEConfig,
        weights: dict[str, Tensor],
        log10_density: Tensor | None = None,
        source: str = "weights",
    ) -> None:
        self.architecture = ARCHITECTURES.get(cfg.architecture)
        check_weights(
            weights,
            self.architecture.weight_shapes(cfg.d_in, cfg.d_sae),
            source,
            f"{cfg.architecture} SAE with d_in={cfg.d_in}, d_sae={cfg.d_sae}",
        )
        if log10_density is not None and tuple(log10_density.shape) != (cfg.d_sae,):
            raise InputError(
                expected(f"{source}: log10 density", f"shape {tuple(log10_density.shape)}", f"({cfg.d_sae},)")
            )
        self.cfg = cfg
        device = weights["W_enc"].device
        self.weights = {key: w.to(device=device, dtype=cfg.torch_dtype) for key, w in weights.items()}
        self.log10_density = None if log10_density is None else log10_density.to(device)
        self._subsets: dict[int, _Subset] = {}  # by id() of the caller's index tensor

    @classmethod
    def from_weights(cls, cfg: SAEConfig, weights: dict[str, Tensor], source: str = "weights") -> "SparseAutoencoder":
        """Build an SAE from in-memory weights, checking names and shapes against `cfg`.

        Weights are cast to cfg.dtype and kept on W_enc's device. `source` names them in errors.
        """
        return cls(cfg, dict(weights), source=source)

    def __repr__(self) -> str:
        return (
            f"SparseAutoencoder({self.cfg.architecture}, d_in={self.cfg.d_in}, d_sae={self.cfg.d_sae}, "
            f"hook={self.cfg.hook_name}, {self.dtype}, {self.device})"
        )

    @property
    def device(self) -> torch.device:
        return self.weights["W_enc"].device

    @property
    def dtype(self) -> torch.dtype:
        return self.weights["W_enc"].dtype

    @property
    def hook_layer(self) -> int | None:
        """Layer L of a `blocks.L.*` hook (run the model to layer L + 1); None otherwise."""
        return self.cfg.hook_layer

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | str | None = None
    ) -> "SparseAutoencoder":
        """Move the weights (and cast them, updating cfg.dtype) in place; returns self."""
        if dtype is not None:
            dtype = parse_dtype(dtype)
            self.cfg = self.cfg.model_copy(update={"dtype": DTYPE_NAMES[dtype]})
        self.weights = {key: w.to(device=device, dtype=dtype) for key, w in self.weights.items()}
        if self.log10_density is not None:
            self.log10_density = self.log10_density.to(device=device)
        self._subsets = {}
        return self

    def encode_input(self, x_ND: Tensor) -> Tensor:
        """The encoder's input: x [..., d_in] in the SAE's dtype/device, normalised, b_dec-shifted."""
        x_ND = self._flat_input(x_ND)
        x_ND = _normalise(x_ND, self.cfg.normalize_activations)
        if self.cfg.apply_b_dec_to_input:
            x_ND = x_ND - self.weights["b_dec"]
        return x_ND

    def encode(self, x_ND: Tensor, features: Tensor | Sequence[int] | None = None) -> Tensor:
        """Feature activations [..., F] of the input x [..., d_in] (any float dtype).

        features: feature indices [F] (integers in [0, d_sae)); None for all d_sae features.
        encode(x, idx) equals encode(x)[..., idx] (up to matmul rounding). For standard, jumprelu and
        gated SAEs only the chosen columns are computed; topk needs every pre-activation.
        """
        sae_in_ND = self.encode_input(x_ND)
        if features is None:
            return self.architecture.activate(sae_in_ND, self.weights, self.cfg)
        subset = self._subset_for(features)
        if subset.weights is None:
            acts_NS = self.architecture.activate(sae_in_ND, self.weights, self.cfg)
            return acts_NS.index_select(-1, subset.index_F)
        return self.architecture.activate(sae_in_ND, subset.weights, self.cfg)

    def decode(self, acts_NS: Tensor, x_ND: Tensor | None = None) -> Tensor:
        """Reconstruction [..., d_in] from activations of all features [..., d_sae].

        An SAE that normalises its input per token reconstructs the normalised input; pass the
        input x_ND that was encoded to get the reconstruction on x's own scale (required then).
        """
        acts_NS = acts_NS.to(device=self.device, dtype=self.dtype)
        W_dec_SD = self.weights["W_dec"]
        if self.cfg.rescale_acts_by_decoder_norm:
            # encode ranked (and returned) activations scaled by the decoder norms; undo that here
            acts_NS = acts_NS / W_dec_SD.norm(dim=-1)
        out_ND = acts_NS @ W_dec_SD + self.weights["b_dec"]
        if self.cfg.normalize_activations == "none":
            return out_ND
        if x_ND is None:
            raise ValueError(
                f"decode of an SAE with normalize_activations={self.cfg.normalize_activations!r} needs "
                "the encoded input x_ND to undo the per-token normalisation"
            )
        return _denormalise(out_ND, self._flat_input(x_ND), self.cfg.normalize_activations)

    def _flat_input(self, x_ND: Tensor) -> Tensor:
        if self.cfg.reshape_activations == "hook_z" and x_ND.shape[-1] != self.cfg.d_in:
            x_ND = x_ND.flatten(-2)  # [..., n_heads, d_head] -> [..., d_in]
        if x_ND.shape[-1] != self.cfg.d_in:
            raise ValueError(f"SAE input has width {x_ND.shape[-1]}; this SAE reads d_in={self.cfg.d_in}")
        return x_ND.to(device=self.device, dtype=self.dtype)

    def _subset_for(self, features: Tensor | Sequence[int]) -> _Subset:
        """The subset for `features`, cached while the same, unmodified tensor is passed again (a few
        at once: the sampler encodes a pass in several fixed column blocks, see sampler_memory.ENCODE_BLOCK).

        Identity, not value, is the cache key: comparing values would sync the GPU on every batch.
        A tensor's version counter catches in-place edits; a plain sequence is never cached.
        """
        if not isinstance(features, Tensor):
            return self._make_subset(features)
        cached = self._subsets.get(id(features))
        if cached is not None and cached.features is features and cached.version == features._version:
            return cached
        if len(self._subsets) >= _MAX_CACHED_SUBSETS:  # callers passing a fresh tensor each time
            self._subsets.clear()
        self._subsets[id(features)] = subset = self._make_subset(features)
        return subset

    def release_subsets(self) -> None:
        """Drop the cached subsets (their sliced weights): a sampling pass calls it when done, so the next
        pass's blocks do not add to the last one's copies on the device."""
        self._subsets = {}

    def _make_subset(self, features: Tensor | Sequence[int]) -> _Subset:
        index_F = torch.as_tensor(features, device=self.device)
        if index_F.ndim != 1 or index_F.dtype == torch.bool or index_F.is_floating_point():
            raise ValueError(
                f"features must be a 1-D tensor of integer indices; got {index_F.dtype} of shape {tuple(index_F.shape)}"
            )
        index_F = index_F.long()
        if index_F.numel() and (int(index_F.min()) < 0 or int(index_F.max()) >= self.cfg.d_sae):
            raise ValueError(
                f"feature indices must lie in [0, {self.cfg.d_sae}); got {int(index_F.min())}..{int(index_F.max())}"
            )
        sliced = None
        if not self.architecture.couples_features:
            sliced = {"W_enc": self.weights["W_enc"].index_select(1, index_F)}
            for name in self.architecture.feature_vectors:
                sliced[name] = self.weights[name].index_select(0, index_F)
        features_tensor = features if isinstance(features, Tensor) else None
        version = features._version if isinstance(features, Tensor) else -1
        return _Subset(features_tensor, version, index_F, sliced)
