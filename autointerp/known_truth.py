"""Known-truth SAEs: features whose meaning is fixed by construction, to check an LLM setup end to end.

`token_feature_sae(model, tokens)` builds a JumpReLU SAE whose feature i fires on token t_i and on
nothing else, reading a hook whose activation is the token embedding alone (by default
`blocks.0.hook_resid_pre`: for models with rotary or no positional embeddings that is W_E[token]).
Feature i's encoder column is e_i / |e_i|^2 (e_i the embedding of t_i), so its pre-activation is 1 on
t_i and, on any other token v, the projection of e_v onto e_i relative to |e_i|; the threshold sits
halfway between 1 and the largest such value over the whole vocabulary. So the feature is exact: it
fires with `activation` on every occurrence of t_i and is 0 everywhere else. A token that some other
token out-projects (no threshold separates it) is refused.

What it is for: the right explanation of such a feature is known ("the word 'king'"), so a simulator
that uses explanations should score it near 1 and another feature's explanation near 0. A setup that
cannot do that on these features cannot be trusted on real ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from autointerp.errors import InputError, expected
from autointerp.hooks import hook_width
from autointerp.records import Window
from autointerp.sae import SAEConfig, SparseAutoencoder
from autointerp.sampler import hook_activations

TOKEN_HOOK = "blocks.0.hook_resid_pre"
# Frequent single-token words of the built-in Shakespeare corpus (SmolLM2's tokenizer), each separable
# from the rest of the vocabulary at TOKEN_HOOK with a margin of at least 0.07.
SHAKESPEARE_TOKENS = (" king", " love", " death", " night", " father", " eyes", " heart", " blood")
MIN_MARGIN = 0.02  # refuse a token whose nearest rival projects within this of it (relative)


def word_explanation(token: str) -> str:
    """The right explanation of a token feature as a short natural-language phrase."""
    word = token.strip() or repr(token)
    return f'the word "{word}"'


def single_token_ids(tokenizer, tokens: Sequence[str]) -> list[int]:
    """The id of each token string; InputError unless each is exactly one token and all differ."""
    ids = []
    for token in tokens:
        encoded = tokenizer.encode(token, add_special_tokens=False)
        if len(encoded) != 1:
            raise InputError(expected(f"Known-truth token {token!r}", f"{len(encoded)} tokens {encoded}", "one token"))
        ids.append(encoded[0])
    if len(set(ids)) != len(ids):
        raise InputError(expected("Known-truth tokens", f"duplicates in {list(tokens)}", "distinct tokens"))
    return ids


@torch.no_grad()
def token_feature_sae(
    model,
    tokens: Sequence[str] = SHAKESPEARE_TOKENS,
    hook_name: str = TOKEN_HOOK,
    activation: float = 1.0,
    model_name: str | None = None,
    context_size: int = 128,
) -> SparseAutoencoder:
    """A JumpReLU SAE (float32, on the model's device) whose feature i fires with `activation` exactly
    where token `tokens[i]` occurs (see the module docstring).

    model: a HookedTransformer; model_name: recorded in the SAE's metadata (default model.cfg.model_name).
    Raises InputError if a token is not one token, if the hook's activation is not the token embedding
    alone, or if a token cannot be separated from every other token of the vocabulary.
    """
    ids = single_token_ids(model.tokenizer, tokens)
    device = model.W_E.device
    vocab_VD = model.embed(torch.arange(model.cfg.d_vocab, device=device)[None])[0].float()
    _check_hook_is_embedding(model, hook_name, ids, vocab_VD)

    targets_FD = vocab_VD[ids]
    W_enc_DF = (targets_FD / targets_FD.pow(2).sum(-1, keepdim=True)).T  # pre-activation 1 on its own token
    proj_VF = vocab_VD @ W_enc_DF
    proj_VF[ids, torch.arange(len(ids), device=device)] = -torch.inf
    rival_F, rival_id_F = proj_VF.max(dim=0)
    for token, rival, rival_id in zip(tokens, rival_F.tolist(), rival_id_F.tolist(), strict=True):
        if rival > 1 - MIN_MARGIN:
            rival_text = model.tokenizer.decode([rival_id])
            raise InputError(
                expected(
                    f"Known-truth token {token!r} at {hook_name}",
                    f"token {rival_text!r} projecting {rival:.3f} onto its direction (itself: 1)",
                    f"every other token below {1 - MIN_MARGIN}",
                    "Pick another token.",
                )
            )
    d_in, d_sae = targets_FD.shape[1], len(ids)
    weights = {
        "W_enc": activation * W_enc_DF,
        "b_enc": torch.zeros(d_sae, device=device),
        "threshold": activation * (1 + rival_F) / 2,
        "W_dec": targets_FD / targets_FD.norm(dim=-1, keepdim=True),
        "b_dec": torch.zeros(d_in, device=device),
    }
    cfg = SAEConfig(
        architecture="jumprelu",
        d_in=d_in,
        d_sae=d_sae,
        hook_name=hook_name,
        model_name=model_name or model.cfg.model_name,
        prepend_bos=True,
        context_size=context_size,
    )
    return SparseAutoencoder.from_weights(cfg, {k: v.cpu() for k, v in weights.items()}, source="token_feature_sae")


def _check_hook_is_embedding(model, hook_name: str, ids: list[int], vocab_VD: torch.Tensor) -> None:
    """The hook's activation on each target token, at two positions, must equal its embedding row."""
    tokens_BL = torch.tensor([ids + ids[::-1]], device=vocab_VD.device)
    hook_width(model, hook_name)  # an InputError naming the hook if the model has none of that name
    acts_LD = hook_activations(model, tokens_BL, hook_name)[0].float()
    want_LD = vocab_VD[tokens_BL[0]]
    if acts_LD.shape != want_LD.shape or not torch.allclose(acts_LD, want_LD, rtol=1e-4, atol=1e-5):
        same_shape = acts_LD.shape == want_LD.shape
        found = f"max |diff| {(acts_LD - want_LD).abs().max():.3g}" if same_shape else "another shape"
        raise InputError(
            expected(
                f"Hook {hook_name!r} of model {model.cfg.model_name!r}",
                f"activations that are not the token embedding ({found})",
                "a hook that sees the token alone, e.g. blocks.0.hook_resid_pre of a model without learned "
                "positional embeddings",
            )
        )


def truth_violations(windows: Sequence[Window], token_id: int) -> int:
    """Tokens of `windows` where a token feature disagrees with its construction: it fired on another
    token or stayed silent on its own. 0 for a correct known-truth feature."""
    return sum(
        (act > 0) != (tid == token_id)
        for window in windows
        for tid, act in zip(window.token_ids, window.activations, strict=True)
    )
