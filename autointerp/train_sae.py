"""A small TopK SAE trainer, used to build the built-in demo SAE (`--sae demo`).

TopK SAEs (Gao et al. 2024) need no sparsity-penalty tuning: each token keeps its k largest
pre-activations. Decoder rows are kept at unit norm, b_dec starts at the activation mean, and an
auxiliary loss (AuxK) lets dead features reconstruct the residual error so few stay dead.

Reproduce the committed demo SAE (CPU, about 15 minutes on 2 cores; faster on a GPU):

    python -m autointerp.train_sae --out autointerp/assets/demo_sae

Quality figures (L0, fraction of variance explained, CE loss recovered, dead fraction) are measured on
held-out contexts and written to `training_report.json` beside the weights.
"""

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from autointerp.corpus import CorpusSpec, special_token_ids, tokenise_corpus
from autointerp.hooks import hook_stop_layer
from autointerp.sae import SAEConfig, SparseAutoencoder, save_sae
from autointerp.subject_model import default_device, load_subject_model


class TrainConfig(BaseModel):
    model: str = "smollm2-135m"
    hook_name: str = "blocks.8.hook_resid_post"
    corpus: str = "shakespeare"
    context_size: int = Field(default=128, description="tokens per context, BOS first")
    n_train_tokens: int = Field(default=300_000, description="activation vectors collected for training")
    n_eval_contexts: int = Field(default=64, description="held-out contexts for the quality report")
    d_sae: int = 4096
    k: int = 32
    k_aux: int = 256
    aux_coefficient: float = 1 / 32
    dead_after_tokens: int = Field(default=200_000, description="a feature silent this long counts as dead for AuxK")
    batch_size: int = 4096
    epochs: int = 5
    lr: float = 4e-4
    seed: int = 0
    save_dtype: str = Field(default="float16", description="weights are stored at this precision to stay small")


def topk_encode(x_ND, W_enc_DS, b_enc_S, b_dec_D, k: int):
    pre_NS = F.relu((x_ND - b_dec_D) @ W_enc_DS + b_enc_S)
    values_NK, indices_NK = pre_NS.topk(k, dim=-1)
    return torch.zeros_like(pre_NS).scatter_(-1, indices_NK, values_NK), pre_NS


@torch.no_grad()
def collect_activations(model, tokens_BL, hook_name: str, skip_ids: list[int], batch: int = 16):
    """Hook activations of every non-special token, [n_tokens, d_model] on the CPU."""
    out = []
    skip = torch.tensor(skip_ids, device=tokens_BL.device)
    for start in range(0, len(tokens_BL), batch):
        toks = tokens_BL[start : start + batch].to(model.cfg.device)
        _, cache = model.run_with_cache(toks, names_filter=hook_name, stop_at_layer=hook_stop_layer(hook_name))
        keep = ~torch.isin(toks, skip.to(toks.device))
        out.append(cache[hook_name][keep].float().cpu())
    return torch.cat(out)


def train(cfg: TrainConfig, acts_ND: torch.Tensor, device: str) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(cfg.seed)
    d_in = acts_ND.shape[1]
    W_dec_SD = torch.randn(cfg.d_sae, d_in, generator=gen)
    W_dec_SD /= W_dec_SD.norm(dim=1, keepdim=True)
    params = {
        "W_enc": W_dec_SD.T.clone().to(device).requires_grad_(),
        "b_enc": torch.zeros(cfg.d_sae, device=device, requires_grad=True),
        "W_dec": W_dec_SD.to(device).requires_grad_(),
        "b_dec": acts_ND.mean(0).to(device).requires_grad_(),
    }
    optimiser = torch.optim.Adam(params.values(), lr=cfg.lr)
    tokens_since_fired = torch.zeros(cfg.d_sae, device=device)
    n_steps = cfg.epochs * math.ceil(len(acts_ND) / cfg.batch_size)
    step = 0
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(acts_ND), generator=gen)
        for start in range(0, len(acts_ND), cfg.batch_size):
            x_ND = acts_ND[order[start : start + cfg.batch_size]].to(device)
            acts_NS, pre_NS = topk_encode(x_ND, params["W_enc"], params["b_enc"], params["b_dec"], cfg.k)
            recon_ND = acts_NS @ params["W_dec"] + params["b_dec"]
            error_ND = x_ND - recon_ND
            variance = (x_ND - x_ND.mean(0)).pow(2).sum(-1).mean()
            loss = error_ND.pow(2).sum(-1).mean() / variance
            dead_S = tokens_since_fired > cfg.dead_after_tokens
            if dead_S.any():  # AuxK: the dead features' top-k_aux try to explain what the live ones missed
                k_aux = min(cfg.k_aux, int(dead_S.sum()))
                dead_pre_NS = torch.where(dead_S, pre_NS, torch.zeros_like(pre_NS))
                values, indices = dead_pre_NS.topk(k_aux, dim=-1)
                aux_recon = torch.zeros_like(pre_NS).scatter_(-1, indices, values) @ params["W_dec"]
                loss = loss + cfg.aux_coefficient * (error_ND.detach() - aux_recon).pow(2).sum(-1).mean() / variance
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            for group in optimiser.param_groups:  # linear decay over the last fifth
                group["lr"] = cfg.lr * min(1.0, 5 * (1 - step / n_steps))
            optimiser.step()
            with torch.no_grad():
                params["W_dec"] /= params["W_dec"].norm(dim=1, keepdim=True)
                fired_S = (acts_NS > 0).any(0)
                tokens_since_fired = torch.where(fired_S, 0, tokens_since_fired + len(x_ND))
            step += 1
            if step % 25 == 0 or step == n_steps:
                print(
                    f"epoch {epoch} step {step}/{n_steps} normalised mse {loss.item():.4f} dead {int(dead_S.sum())}",
                    flush=True,
                )
    return {name: p.detach().cpu() for name, p in params.items()}


@torch.no_grad()
def evaluate(model, sae: SparseAutoencoder, tokens_BL, hook_name: str, skip_ids: list[int]) -> dict[str, float]:
    """L0, fraction of variance explained, CE loss recovered when spliced in, dead fraction."""
    skip = torch.tensor(skip_ids)
    acts = collect_activations(model, tokens_BL, hook_name, skip_ids)
    feats = sae.encode(acts)
    recon = sae.decode(feats)
    fve = 1 - (acts - recon).pow(2).sum() / (acts - acts.mean(0)).pow(2).sum()

    def splice(replacement):
        def hook(value, hook):
            keep = ~torch.isin(tokens, skip)  # the BOS position is left as it was
            new = value.clone()
            new[keep] = replacement(value[keep])
            return new

        return [(hook_name, hook)]

    losses = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
    for start in range(0, len(tokens_BL), 16):
        tokens = tokens_BL[start : start + 16]
        losses["clean"] += model(tokens, return_type="loss").item()
        losses["sae"] += model.run_with_hooks(
            tokens, return_type="loss", fwd_hooks=splice(lambda v: sae.decode(sae.encode(v)).to(v.dtype))
        ).item()
        losses["zero"] += model.run_with_hooks(tokens, return_type="loss", fwd_hooks=splice(torch.zeros_like)).item()
    n_batches = math.ceil(len(tokens_BL) / 16)
    clean, spliced, zero = (losses[k] / n_batches for k in ("clean", "sae", "zero"))
    return {
        "l0": (feats > 0).float().sum(-1).mean().item(),
        "fraction_variance_explained": fve.item(),
        "ce_loss_clean": clean,
        "ce_loss_with_sae": spliced,
        "ce_loss_zero_ablation": zero,
        "ce_loss_recovered": (zero - spliced) / (zero - clean),
        "dead_fraction": ((feats > 0).sum(0) == 0).float().mean().item(),
        "eval_tokens": len(acts),
    }


@torch.no_grad()
def log10_density(sae: SparseAutoencoder, acts_ND: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """log10 of each feature's firing density over `acts_ND`, floored at -10 as SAELens stores it."""
    fired_S = torch.zeros(sae.cfg.d_sae)
    for start in range(0, len(acts_ND), chunk):
        fired_S += (sae.encode(acts_ND[start : start + chunk]) > 0).sum(0).float()
    return torch.log10(fired_S / len(acts_ND) + 1e-10)


def build_demo_sae(cfg: TrainConfig, out: Path, device: str | None = None) -> dict:
    device = device or default_device()
    torch.manual_seed(cfg.seed)
    model = load_subject_model(cfg.model, device=device, dtype=torch.float32)
    n_contexts = cfg.n_train_tokens // (cfg.context_size - 1) + 1 + cfg.n_eval_contexts
    tokens = tokenise_corpus(CorpusSpec(source=cfg.corpus), model.tokenizer, cfg.context_size, max_tokens=None)
    order = torch.randperm(len(tokens), generator=torch.Generator().manual_seed(cfg.seed))[:n_contexts]
    eval_tokens, train_tokens = tokens[order[: cfg.n_eval_contexts]], tokens[order[cfg.n_eval_contexts :]]
    skip_ids = special_token_ids(model.tokenizer)
    started = time.time()
    acts = collect_activations(model, train_tokens, cfg.hook_name, skip_ids)[: cfg.n_train_tokens]
    print(f"collected {len(acts)} activations in {time.time() - started:.0f}s", flush=True)
    weights = train(cfg, acts, device)
    sae_cfg = SAEConfig(
        architecture="topk",
        d_in=acts.shape[1],
        d_sae=cfg.d_sae,
        dtype="float32",
        hook_name=cfg.hook_name,
        model_name=cfg.model,
        prepend_bos=True,
        context_size=cfg.context_size,
        apply_b_dec_to_input=True,
        normalize_activations="none",
        k=cfg.k,
    )
    # Stored at save_dtype to keep the committed file small; evaluated at that precision too.
    stored = {name: w.to(getattr(torch, cfg.save_dtype)).float() for name, w in weights.items()}
    sae = SparseAutoencoder.from_weights(sae_cfg, stored)
    report = evaluate(model, sae, eval_tokens, cfg.hook_name, skip_ids)
    report["train_seconds"] = round(time.time() - started)
    report["device"] = device
    sae.log10_density = log10_density(sae, acts)
    report["dead_fraction_train_tokens"] = (sae.log10_density <= -10).float().mean().item()
    save_sae(sae.to(dtype=cfg.save_dtype), out)
    (out / "training_report.json").write_text(json.dumps({"config": cfg.model_dump(), "quality": report}, indent=1))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default=None)
    for name, field in TrainConfig.model_fields.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(field.default), default=field.default)
    args = vars(parser.parse_args())
    out, device = args.pop("out"), args.pop("device")
    print(json.dumps(build_demo_sae(TrainConfig(**args), out, device), indent=1))


if __name__ == "__main__":
    main()
