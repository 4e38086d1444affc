"""Which features get controls, whose explanation each one borrows, the lifts over them, and how a simulation is
scored (detection threshold per mode, permutation null, settings hash, unknown prices)."""

import asyncio
import io
import re

import pytest
from rich.console import Console
from test_store import RUN, call, make_sample, new_store

from autointerp.config import LLMConfig, RunConfig, SamplerConfig, ScoringConfig
from autointerp.interpret import (
    Tally,
    control_lifts,
    control_partners,
    default_scorers,
    interpret_run,
    run_settings,
    settle_scorers,
)
from autointerp.records import CallRecord, Simulation, Usage
from autointerp.scorers import DetectionFailure, DetectionScorer, SimulationScorer
from autointerp.scorers.simulation import score_simulation
from autointerp.scoring import permutation_null, score_feature
from autointerp.settings_hash import settings_hash
from autointerp.show import feature_view, summary_table
from autointerp.simulate import SimulationFailure
from autointerp.store import RunStore
from autointerp.tables import format_rows, run_table


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


# ------------------------------------------------------------------------------------------- scorers wired in


def test_default_scorers_follow_the_simulator():
    assert default_scorers("anthropic:claude-x") == ["simulation", "detection"]
    assert default_scorers("openai:gpt-x@http://localhost:1/v1") == ["simulation", "detection"]
    assert default_scorers("baseline") == ["simulation", "detection"]
    assert default_scorers("local") == ["simulation", "detection"]  # detection mode "tokens" (judge_tokens)
    settled = settle_scorers(RunConfig(sae="demo", llm=LLMConfig(explainer="baseline")))
    assert settled.scoring.scorers == ["simulation", "detection"]
    chosen = RunConfig(sae="demo", llm=LLMConfig(explainer="baseline"), scoring=ScoringConfig(scorers=["detection"]))
    assert settle_scorers(chosen) is chosen
    # the settings hash covers which scorers ran
    assert settings_hash(run_settings(settled, "fp")) != settings_hash(run_settings(chosen, "fp"))
    assert (
        "detect_user.md"
        in run_settings(RunConfig(sae="demo", llm=LLMConfig(explainer="openai:gpt-x")), "fp", "detection")["prompts"]
    )


def baseline_run(tmp_path, scoring: ScoringConfig | None = None) -> tuple[RunStore, dict]:
    store = new_store(tmp_path)
    store.save_samples(RUN, [make_sample(f) for f in (1, 2, 3)])
    cfg = RunConfig(sae="demo", llm=LLMConfig(explainer="baseline"), scoring=scoring or ScoringConfig())
    return store, asyncio.run(interpret_run(store, RUN, cfg))


def test_a_run_judges_every_explanation_with_both_scorers_and_stores_detection(tmp_path):
    store, summary = baseline_run(tmp_path)
    assert store.get_run(RUN)["config"]["scoring"]["scorers"] == ["simulation", "detection"]  # stored resolved
    detection = store.detection_rows(RUN, ["balanced_accuracy", "recall", "yes_rate_top", "settings_hash", "mode"])
    assert sorted(detection) == [1, 2, 3]
    for sources in detection.values():
        assert set(sources) == {"llm", "baseline", "other"} and sources["llm"]["mode"] == "baseline"
        # every window holds ' the', which fires and which the top-tokens explanation lists: all firing windows found
        assert sources["llm"]["recall"] == 1.0 and sources["llm"]["yes_rate_top"] == 1.0
    hashes = {r["settings_hash"] for s in detection.values() for r in s.values()}
    simulation_hashes = set(store.settings_hash_counts(RUN))
    assert len(hashes) == 1 and hashes.isdisjoint(simulation_hashes)  # one hash per scorer
    assert store.run_settings(RUN)[hashes.pop()]["scorer"] == "detection"
    assert summary["scored"] == 3 and summary["detection_recall_n"] == 3 and summary["detection_recall_mean"] == 1.0
    assert summary["detection_balanced_accuracy_lift_n"] == 3
    assert summary["correlation_n"] == 3  # simulation ran too

    # `show` gives the feature's detection metrics per explanation and the yes rate per window group
    console = Console(file=io.StringIO(), width=120, color_system=None)
    for renderable in feature_view(store.load_reports(RUN)[0]):
        console.print(renderable)
    shown = console.file.getvalue()
    assert "detection (baseline, 3 windows (2 fired))" in shown and "control: other:2" in shown
    assert re.search(r"yes rate: top\s+│\s+1\.00", shown) and "lift over baseline (balanced_accuracy)" in shown
    # `table` and the end-of-run table show detection with n and intervals
    store.close()
    text = format_rows(run_table([tmp_path]), "terminal")
    assert re.search(r"detection: recall\s+│ 1\.000\s+│ \[1\.000, 1\.000\]\s+│ 3 ", text), text
    assert re.search(r"detection: AUROC \(P\(yes\)\)\s+│ 0\.500 .*\n\s+lift over baseline\s+│ 0\.000", text)
    assert "n=3" in format_rows(run_table([tmp_path]), "markdown")
    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(summary_table(summary))
    assert re.search(r"detection: recall\s+│\s+1\.000.*n=3", console.file.getvalue())


def test_detection_only_still_counts_features_as_scored(tmp_path):
    store, summary = baseline_run(tmp_path, ScoringConfig(scorers=["detection"]))
    assert store.score_rows(RUN, ["correlation"]) == {} and summary["correlation_n"] == 0
    assert summary["scored"] == 3 and summary["detection_balanced_accuracy_n"] == 3


def failing(stage_failure, stage):
    async def score(self, item):
        if item.source != "llm":
            raise AssertionError("a scorer that failed on the LLM explanation must not judge the controls")
        bad = CallRecord(
            stage=stage, feature=item.feature, backend="b", model="m", prompt_hash="p", ok=False, error="boom",
            attempts=1, latency_s=0.1, usage=Usage(input_tokens=7), cost_usd=0.001,
        )  # fmt: skip
        raise stage_failure(f"{stage}: feature {item.feature}: boom", [bad])

    return score


def test_a_scorer_failing_on_the_llm_explanation_keeps_the_other_scorers_results(tmp_path, monkeypatch):
    monkeypatch.setattr(DetectionScorer, "score", failing(DetectionFailure, "detect"))
    store, summary = baseline_run(tmp_path)
    # detection failed on every feature: none counts as fully scored, each as partly scored
    assert summary["scored"] == 0 and summary["partly_scored"] == 3 and summary["failed"] == 0
    assert summary["partly_scored_missing"] == {f: ["detection"] for f in (1, 2, 3)} and summary["correlation_n"] == 3
    assert store.detection_rows(RUN, ["recall"]) == {}
    reports = {r.feature: r for r in store.load_reports(RUN)}
    assert all(r.errors == [f"detect: detect: feature {f}: boom"] for f, r in reports.items())
    stages = store.db.execute("SELECT stage, count(*) FROM llm_calls GROUP BY stage").fetchall()
    assert stages == [("detect", 3)]  # the failed calls are kept, under their own stage


def test_every_scorer_failing_fails_the_feature_with_one_error_per_stage(tmp_path, monkeypatch):
    monkeypatch.setattr(DetectionScorer, "score", failing(DetectionFailure, "detect"))
    monkeypatch.setattr(SimulationScorer, "score", failing(SimulationFailure, "simulate"))
    store, summary = baseline_run(tmp_path)
    assert summary["scored"] == 0 and summary["failed"] == 3
    errors = store.db.execute("SELECT feature, stage FROM errors ORDER BY feature, id").fetchall()
    assert errors == [(f, s) for f in (1, 2, 3) for s in ("simulate", "detect")]
    stages = store.db.execute("SELECT stage, count(*) FROM llm_calls GROUP BY stage ORDER BY stage").fetchall()
    assert stages == [("detect", 3), ("simulate", 3)]


def test_which_features_get_controls_does_not_depend_on_the_run_feature_set():
    small = control_partners([4, 17, 30], share=0.5, seed=3)
    large = control_partners(list(range(0, 200)), share=0.5, seed=3)
    assert all((f in small) == (f in large) for f in (4, 17, 30))
    assert 60 < len(large) < 140  # about half of 200 chosen
