"""`autointerp run` end to end on features whose truth is known by construction.

The SAE reads SmolLM2-135M's `blocks.0.hook_resid_pre`, which is the token embedding itself, and feature i
is built to fire (activation exactly 1) on token t_i and nowhere else: its encoder column is
W_E[t_i] / |W_E[t_i]|^2 and its JumpReLU threshold sits between 1 and the largest projection of any other
token. With the no-LLM baseline explainer ("top tokens: ' the' (10)") and simulator, the right explanation
predicts the truth exactly, another feature's explanation predicts a different token, the permutation
null shuffles the right predictions over the wrong windows at the wrong positions, and the detection judge
finds exactly the windows where the feature fires. The whole pipeline runs for real: corpus,
model, sampler, explainer, simulator, scoring, store, summary.
"""

import io
import json

import pytest
import torch
from rich.console import Console

from autointerp.config import LLMConfig, RunConfig, SamplerConfig, SelectionConfig
from autointerp.pipeline import run
from autointerp.run_summary import run_summary
from autointerp.sae import SAEConfig, SparseAutoencoder, save_sae
from autointerp.show import feature_view
from autointerp.store import RunStore

pytestmark = pytest.mark.slow
HOOK = "blocks.0.hook_resid_pre"
WORDS = (" the", " and", " of", " I")
THRESHOLD = 0.9  # activation where t_i occurs is 1.0; every other token projects below 0.76 (checked below)


def known_truth_sae(model, words, directory):
    """A JumpReLU SAE on `HOOK` whose feature i fires exactly where the single token `words[i]` occurs.
    Returns (path, token ids)."""
    W_E = model.W_E.detach().float().cpu()
    ids = []
    for word in words:
        (token,) = model.tokenizer.encode(word, add_special_tokens=False)
        ids.append(token)
    W_enc_DF = torch.stack([W_E[t] / W_E[t].norm() ** 2 for t in ids], dim=1)
    projections_VF = W_E @ W_enc_DF
    for i, t in enumerate(ids):  # the construction only holds if no other token reaches the threshold
        others = torch.cat([projections_VF[:t, i], projections_VF[t + 1 :, i]])
        assert projections_VF[t, i] == pytest.approx(1.0) and others.max() < THRESHOLD - 0.1, words[i]
    d_in, d_sae = W_E.shape[1], len(ids)
    config = SAEConfig(
        architecture="jumprelu",
        d_in=d_in,
        d_sae=d_sae,
        hook_name=HOOK,
        model_name="smollm2-135m",
        context_size=64,
        prepend_bos=True,
    )
    weights = {
        "W_enc": W_enc_DF,
        "b_enc": torch.zeros(d_sae),
        "threshold": torch.full((d_sae,), THRESHOLD),
        "W_dec": W_enc_DF.T / W_enc_DF.T.norm(dim=-1, keepdim=True),
        "b_dec": torch.zeros(d_in),
    }
    return save_sae(SparseAutoencoder.from_weights(config, weights), directory / "sae"), ids


def test_known_truth_features_score_right_wrong_and_null_as_built(smollm2, tmp_path):
    sae_path, _ = known_truth_sae(smollm2, WORDS, tmp_path)
    cfg = RunConfig(
        sae=str(sae_path),
        run_dir=str(tmp_path / "run"),
        device="cpu",
        sampler=SamplerConfig(n_tokens=6000),
        selection=SelectionConfig(features=f"0-{len(WORDS) - 1}"),
        llm=LLMConfig(explainer="baseline", simulator="baseline"),
    )
    run(cfg)
    with RunStore.open(tmp_path / "run", create=False) as store:
        run_id = store.latest_run_id()
        summary = run_summary(store, run_id)
        reports = {r.feature: r for r in store.load_reports(run_id)}
    assert summary["scored"] == len(WORDS) and summary["failed"] == 0
    for feature, word in enumerate(WORDS):
        report = reports[feature]
        assert report.explanation.text == f"[baseline] top tokens: {word!r} (10)"
        assert report.scores["correlation"] > 0.9, (word, report.scores["correlation"])
        assert abs(report.controls["other"]["correlation"] or 0.0) < 0.2, word  # None: constant, counts as 0
        assert report.scores["permutation_z"] > 5 and report.scores["permutation_p"] < 0.01, word
        # the null pairs windows and rotates each: peak-aligned windows no longer keep its mean up (measured:
        # |mean| <= 0.003 per feature, std ~0.045; pairing alone gave 0.06..0.17)
        assert abs(report.scores["permutation_mean"]) < 0.02, (word, report.scores["permutation_mean"])
        # detection: the right explanation finds exactly the firing windows; another feature's does not
        assert report.detection["llm"]["balanced_accuracy"] == 1.0 and report.detection["llm"]["auroc"] == 1.0, word
        assert report.detection["other"]["balanced_accuracy"] < 0.8, word  # measured 0.18..0.65
        assert report.scores["settings_hash"] == summary["settings_hash"]
    assert summary["correlation_mean"] > 0.9 and summary["correlation_n"] == len(WORDS)
    assert abs(summary["other_correlation_mean"]) < 0.2 and summary["lift_other_mean"] > 0.7
    assert abs(summary["null_correlation_mean"]) < 0.01, summary["null_correlation_mean"]  # measured -0.0006
    assert summary["null_z_mean"] > 10 and summary["null_p05_share"] == 1.0  # measured z 21.5..23.5
    assert summary["detection_balanced_accuracy_mean"] == 1.0 and summary["detection_balanced_accuracy_n"] == len(WORDS)
    assert summary["auroc_mean"] > 0.9

    # `autointerp show` gives one feature's scores per activation bin and its controls, null with spread
    console = Console(file=io.StringIO(), width=100, color_system=None)
    for renderable in feature_view(reports[0]):
        console.print(renderable)
    shown = console.file.getvalue()
    assert "by activation bin" in shown and "control: other:1" in shown and "permutation null r" in shown
    by_bin = json.loads(reports[0].scores["json"])["details"]["by_bin"]
    top = next(row for row in by_bin if row["bin"] == "top")
    assert top["detected"] == 1.0 and top["correlation"] > 0.9
    assert all(row["detected"] == 0.0 for row in by_bin if row["bin"] == "nonfiring")
    assert any(line.split("│")[1].strip() == "top" for line in shown.splitlines() if line.count("│") > 2)
