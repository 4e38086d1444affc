"""Known-truth token features (autointerp.known_truth): on the real SmolLM2-135M, feature i fires with
activation 1 exactly on token t_i, over the whole vocabulary and in running text; tokens and hooks the
construction cannot serve are refused."""

from __future__ import annotations

import pytest
import torch
from helpers_windows import make_window

from autointerp.errors import InputError
from autointerp.known_truth import (
    SHAKESPEARE_TOKENS,
    TOKEN_HOOK,
    single_token_ids,
    token_feature_sae,
    truth_violations,
    word_explanation,
)
from autointerp.sae import load_sae, save_sae
from autointerp.sampler import hook_activations

TEXT = "The king did love the death of night; his father's eyes, heart and blood. Kings love a king."


def test_truth_violations_count_firing_off_the_token_and_silence_on_it() -> None:
    good = make_window(["a", " king", "b"], [0, 1.0, 0], token_ids=[5, 9, 6])
    assert truth_violations([good], 9) == 0
    fires_elsewhere = make_window(["a", " king", "b"], [0.5, 1.0, 0], token_ids=[5, 9, 6])
    silent = make_window([" king", " king"], [0, 1.0], token_ids=[9, 9])
    assert truth_violations([good, fires_elsewhere, silent], 9) == 2


def test_word_explanation_names_the_word() -> None:
    assert word_explanation(" king") == 'the word "king"'
    assert word_explanation("\n") == "the word \"'\\n'\""


@pytest.mark.slow
def test_each_feature_fires_on_its_token_alone_over_the_vocabulary_and_in_text(smollm2, tmp_path) -> None:
    sae = load_sae(save_sae(token_feature_sae(smollm2, SHAKESPEARE_TOKENS), tmp_path / "sae"))  # SAELens round trip
    assert sae.cfg.architecture == "jumprelu" and sae.cfg.hook_name == TOKEN_HOOK
    assert sae.cfg.model_name == smollm2.cfg.model_name and sae.cfg.d_sae == len(SHAKESPEARE_TOKENS)
    ids = torch.tensor(single_token_ids(smollm2.tokenizer, SHAKESPEARE_TOKENS))

    with torch.no_grad():
        vocab_VD = smollm2.embed(torch.arange(smollm2.cfg.d_vocab)[None])[0]
        acts_VF = sae.encode(vocab_VD)
    fires_VF = acts_VF > 0
    assert fires_VF.sum().item() == len(ids)  # one token per feature in the whole vocabulary...
    assert fires_VF[ids, torch.arange(len(ids))].all()  # ...its own
    assert acts_VF[ids, torch.arange(len(ids))] == pytest.approx(torch.ones(len(ids)), abs=1e-5)

    tokens_L = torch.tensor(smollm2.tokenizer(TEXT, add_special_tokens=False).input_ids)
    tokens_BL = torch.cat([torch.tensor([smollm2.tokenizer.bos_token_id]), tokens_L])[None]
    acts_LF = sae.encode(hook_activations(smollm2, tokens_BL, TOKEN_HOOK)[0])
    expected_LF = tokens_BL[0, :, None] == ids[None, :]
    assert expected_LF.sum(0).min() >= 1  # every feature's token is in the text
    assert torch.equal(acts_LF > 0, expected_LF)


@pytest.mark.slow
def test_tokens_and_hooks_the_construction_cannot_serve_are_refused(smollm2) -> None:
    with pytest.raises(InputError, match=r"Known-truth token ' lord'.*projecting"):
        token_feature_sae(smollm2, (" king", " lord"))  # another token out-projects ' lord'
    with pytest.raises(InputError, match=r"' Westmoreland'.*expected one token"):
        token_feature_sae(smollm2, (" Westmoreland",))
    with pytest.raises(InputError, match="duplicates"):
        token_feature_sae(smollm2, (" king", " king"))
    with pytest.raises(InputError, match="not the token embedding"):
        token_feature_sae(smollm2, (" king",), hook_name="blocks.0.hook_resid_post")
    with pytest.raises(InputError, match="no such hook"):
        token_feature_sae(smollm2, (" king",), hook_name="blocks.0.hook_nothing")
