"""One identity for an SAE, the same whichever way it reaches a run (a folder on the command line, an
object in memory through `score_checkpoint`), so `compare` can tell two runs of one SAE apart from two
different SAEs and pair their features."""

import hashlib

from autointerp.sae.architectures import SparseAutoencoder

# Bytes hashed per weight: enough to tell checkpoints apart, bounded for SAEs of millions of features.
HASHED_BYTES = 1 << 20


def sae_fingerprint(sae) -> str:
    """16 hex digits from the SAE's config (ours) and the first MiB of each weight's values as float32.

    `sae` is a SparseAutoencoder or any object with a `state_dict()` (a SAELens SAE, an nn.Module) or
    a `weights` dict of tensors.
    Weights are taken in name order, the names themselves are not hashed: an SAE loaded from SAELens
    or sparsify files has the same weights under the same canonical names. The config leaves out
    where the SAE was loaded from and its dtype, so a run on a GPU in bf16 and one on a CPU agree when
    fingerprinted before the cast (the pipeline does so).
    """
    if isinstance(sae, SparseAutoencoder):
        digest = hashlib.sha256(sae.cfg.model_dump_json(exclude={"path", "dtype"}).encode())
        tensors = sae.weights
    else:
        digest = hashlib.sha256()
        tensors = sae.state_dict() if hasattr(sae, "state_dict") else getattr(sae, "weights", {})
    for name in sorted(tensors):
        # The leading elements only, in row-major order: the bytes of the whole tensor's float32 copy,
        # cut, without copying a large GPU matrix to the host.
        head = tensors[name].detach().reshape(-1)[: HASHED_BYTES // 4]
        digest.update(head.float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]
