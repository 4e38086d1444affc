"""Which features get controls, whose explanation each one borrows, the lifts over them, and how a simulation is
scored (detection threshold per mode, permutation null, settings hash, unknown prices)."""

import pytest
from test_store import call, make_sample

from autointerp.config import LLMConfig, RunConfig, SamplerConfig, ScoringConfig
from autointerp.interpret import Tally, control_lifts, control_partners, run_settings, score_simulation
from autointerp.records import Simulation
from autointerp.scoring import permutation_null, score_feature
from autointerp.settings_hash import settings_hash


def simulation(sample, predictions, mode) -> Simulation:
    return Simulation(feature=sample.feature, explanation_source="llm", backend="b", mode=mode, predictions=predictions)


def test_every_feature_gets_controls_by_default_and_borrows_the_next_explanation():
    assert control_partners([9, 3, 5], share=1.0, seed=0) == {3: 5, 5: 9, 9: 3}


def test_a_lone_feature_still_gets_the_baseline_control():
    assert control_partners([4], share=1.0, seed=0) == {4: None}


def test_share_selects_a_seeded_subset():
    features = list(range(200))
    chosen = control_partners(features, share=0.25, seed=1)
    assert 30 < len(chosen) < 70
    assert chosen == control_partners(features, share=0.25, seed=1)
    assert control_partners(features, share=0.0, seed=1) == {}


def test_control_lifts_subtract_each_control_from_the_llm_correlation():
    truth = [[0.0, 4.0, 2.0, 0.0], [0.0, 3.0, 0.0, 1.0]]

    def scores(predictions):
        return score_feature(truth, predictions, ["top", "top"], [None, None], 4.0)

    llm = scores([[0, 10, 5, 0], [0, 7, 0, 3]])
    baseline = scores([[0, 5, 5, 5], [0, 5, 0, 0]])
    other = scores([[5, 0, 5, 0], [0, 0, 9, 0]])
    lifts = control_lifts({"llm": llm, "baseline": baseline, "other:7": other})
    assert lifts == pytest.approx(
        {"lift": llm.correlation - baseline.correlation, "lift_other": llm.correlation - other.correlation}
    )
    assert control_lifts({"llm": llm, "other:7": other})["lift"] is None
    assert control_lifts({"llm": llm}) == {"lift": None, "lift_other": None}


# ------------------------------------------------------------------------------------------- scoring wiring


def logprob_like(sample) -> list[list[float]]:
    """Expected values as a logprob simulator gives them: right where the feature fires, never below ~0.8."""
    return [[0.8 + 9 * a / sample.stats.max_activation for a in w.activations] for w in sample.split("score")]


def test_score_simulation_picks_the_detection_threshold_by_simulation_mode():
    sample = make_sample(3)
    preds = logprob_like(sample)
    cfg = RunConfig(sae="demo")
    logprob = score_simulation(sample, simulation(sample, preds, "logprob"), cfg)
    sampled = score_simulation(sample, simulation(sample, preds, "sampled"), cfg)
    assert (logprob.detection_threshold_rule, sampled.detection_threshold_rule) == ("auto", "fixed")
    assert sampled.detection_threshold == 0.5 and sampled.balanced_accuracy == 0.5  # every window called firing
    assert 0.8 < logprob.detection_threshold < 10 and logprob.balanced_accuracy == 1.0
    fixed = RunConfig(sae="demo", scoring=ScoringConfig(detection_threshold=2.0))
    assert score_simulation(sample, simulation(sample, preds, "logprob"), fixed).detection_threshold == 2.0
    auto = RunConfig(sae="demo", scoring=ScoringConfig(detection_threshold="auto"))
    assert score_simulation(sample, simulation(sample, preds, "sampled"), auto).detection_threshold_rule == "auto"


def test_score_simulation_computes_the_permutation_null_seeded_by_the_feature():
    sample = make_sample(3)
    preds = logprob_like(sample)
    cfg = RunConfig(sae="demo", scoring=ScoringConfig(n_permutations=300), sampler=SamplerConfig(seed=5))
    scores = score_simulation(sample, simulation(sample, preds, "logprob"), cfg)
    windows = sample.split("score")
    null = permutation_null([w.activations for w in windows], preds, 300, 5, feature=3)
    assert scores.n_permutations == 300
    assert (scores.permutation_mean, scores.permutation_std, scores.permutation_p) == (
        null.mean,
        null.std,
        null.p_value,
    )
    off = RunConfig(sae="demo", scoring=ScoringConfig(n_permutations=0))
    assert score_simulation(sample, simulation(sample, preds, "logprob"), off).permutation_mean is None
    assert RunConfig(sae="demo").scoring.n_permutations == 1000


def test_tally_keeps_an_unknown_price_unknown():
    tally = Tally()
    tally.add([call(0.25), call(None)])
    assert tally.cost_usd is None and tally.cost == 0.25 and tally.unpriced == 1
    assert "unpriced" in tally.line() and ">= $0.2500" in tally.line()
    priced = Tally()
    priced.add([call(0.25)])
    assert priced.cost_usd == 0.25 and priced.line().endswith("$0.2500")


def test_run_settings_name_the_models_that_run_without_their_address():
    cfg = RunConfig(sae="demo", llm=LLMConfig(explainer="openai:gpt-x@http://localhost:8000/v1"))
    settings = run_settings(cfg, "corpus-fp")
    assert (settings["explainer"], settings["simulator"]) == ("openai:gpt-x", "openai:gpt-x")
    assert settings["corpus_fingerprint"] == "corpus-fp" and "simulate_user.md" in settings["prompts"]
    other_server = RunConfig(sae="demo", llm=LLMConfig(explainer="openai:gpt-x@http://elsewhere/v1"))
    assert settings_hash(run_settings(other_server, "corpus-fp")) == settings_hash(settings)
    baseline = run_settings(RunConfig(sae="demo", llm=LLMConfig(explainer="baseline")), "corpus-fp")
    assert baseline["prompts"] == {} and baseline["simulator"] == "baseline"
