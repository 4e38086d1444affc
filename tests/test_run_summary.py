"""Tests for autointerp/run_summary.py: a run's summary row from a real run database."""

import numpy as np
import pytest
from test_store import RUN, call, make_explanation, make_predictions, make_sample, new_store, scoring_windows

from autointerp.config import RunConfig, ScoringConfig
from autointerp.errors import StoreError
from autointerp.records import FeatureSample, Simulation
from autointerp.run_summary import run_summary
from autointerp.scoring import FeatureScores, score_feature, summarise
from autointerp.store import RunStore

STAT_KEYS = list(summarise([]))
PREFIXES = [
    "correlation", "baseline_correlation", "lift", "other_correlation", "lift_other",
    "auroc", "baseline_auroc", "auroc_lift", "other_auroc", "auroc_lift_other",
    "null_correlation", "null_std", "null_z", "bootstrap_std",
    "balanced_accuracy", "abs_dev_explained", "ece", "binarity",
]  # fmt: skip


def scores_of(sample: FeatureSample, predictions: list[list[float]]) -> FeatureScores:
    windows = scoring_windows(sample)
    return score_feature(
        [w.activations for w in windows],
        predictions,
        [w.group for w in windows],
        [w.interval for w in windows],
        sample.stats.max_activation,
        n_permutations=200,
        seed=0,
        feature=sample.feature,
    )


def constant(sample: FeatureSample) -> list[list[float]]:
    return [[0.0] * len(w.activations) for w in scoring_windows(sample)]


def save(store: RunStore, sample: FeatureSample, predictions: dict[str, list[list[float]]]) -> dict[str, FeatureScores]:
    scores = {source: scores_of(sample, p) for source, p in predictions.items()}
    sims = [
        Simulation(feature=sample.feature, explanation_source=s, backend="b", mode="sampled", predictions=p)
        for s, p in predictions.items()
    ]
    store.save_scored(RUN, sample.feature, sims, scores, calls=[call(0.02)])
    return scores


def test_run_summary_counts_undefined_correlations_as_zero_and_reports_every_control(tmp_path):
    samples = [make_sample(f) for f in range(6)]
    with new_store(tmp_path) as store:
        store.save_samples(RUN, samples)
        for s in samples[:5]:
            store.save_explanation(RUN, make_explanation(s.feature), calls=[call(0.01)])
        scored = [
            save(store, samples[0], {"llm": make_predictions(samples[0], 0.5, seed=0),
                                     "baseline": make_predictions(samples[0], 3.0, seed=1),
                                     "other:1": constant(samples[0])}),
            save(store, samples[1], {"llm": constant(samples[1]),  # a constant prediction explains nothing
                                     "baseline": make_predictions(samples[1], 2.0, seed=2),
                                     "other:2": make_predictions(samples[1], 5.0, seed=3)}),
            save(store, samples[2], {"llm": make_predictions(samples[2], 1.0, seed=4),
                                     "baseline": make_predictions(samples[2], 4.0, seed=5)}),
            save(store, samples[3], {"llm": make_predictions(samples[3], 2.0, seed=6)}),
        ]  # fmt: skip
        store.record_failure(RUN, 4, "explain", "HTTP 529 overloaded", calls=[call(0.005, ok=False, error="529")])
        summary = run_summary(store, RUN)

    fixed = ["run_id", "name", "status", "training_run", "step", "sae_fingerprint", "settings_hash"]
    counts = ["sampled", "scored", "failed"]
    usage = ["llm_calls", "cost_usd", "unpriced_calls", "input_tokens", "cached_input_tokens"]
    for key in [*fixed, *counts, *usage, "null_p05_share", "null_p05_n", "null_n_permutations"]:
        assert key in summary, key
    for prefix in PREFIXES:
        assert all(f"{prefix}_{k}" in summary for k in STAT_KEYS), prefix
    assert [summary[k] for k in fixed] == [RUN, "demo-run", "sampling", None, None, "sae-fp", None]
    assert [summary[k] for k in counts] == [6, 4, 1]

    def values(source: str, metric: str) -> list[float | None]:
        return [s[source].model_dump()[metric] if source in s else None for s in scored if source in s]

    llm = [s["llm"] for s in scored]
    assert llm[1].correlation is None and llm[1].undefined["correlation"] == "constant prediction"
    correlation = [c or 0.0 for c in values("llm", "correlation")]
    assert summary["correlation_mean"] == pytest.approx(np.mean(correlation))  # not the mean of the 3 defined
    assert (summary["correlation_n"], summary["correlation_n_defined"], summary["correlation_n_undefined_as_zero"]) == (
        4,
        3,
        1,
    )
    assert summary["correlation_ci_lo"] <= summary["correlation_mean"] <= summary["correlation_ci_hi"]
    assert summary["correlation_ci_lo"] < summary["correlation_ci_hi"]

    # controls: their own score over the features that had them, and the lift over them (undefined as 0)
    with_baseline = scored[:3]
    assert summary["baseline_correlation_n"] == 3
    assert summary["baseline_correlation_mean"] == pytest.approx(
        np.mean([s["baseline"].correlation for s in with_baseline])
    )
    assert summary["lift_mean"] == pytest.approx(
        np.mean([(s["llm"].correlation or 0.0) - s["baseline"].correlation for s in with_baseline])
    )
    assert summary["lift_n"] == 3 and summary["lift_n_undefined_as_zero"] == 1
    others = [(s["llm"], next(v for k, v in s.items() if k.startswith("other:"))) for s in scored[:2]]
    assert others[0][1].correlation is None  # the 'other' control can be undefined too: it counts as 0
    assert summary["other_correlation_n"] == 2 and summary["other_correlation_n_undefined_as_zero"] == 1
    assert summary["lift_other_mean"] == pytest.approx(
        np.mean([(a.correlation or 0.0) - (o.correlation or 0.0) for a, o in others])
    )

    # AUROC: undefined values are left out, not zero; its lifts only over pairs both defined
    aurocs = [v for v in values("llm", "auroc") if v is not None]
    assert summary["auroc_mean"] == pytest.approx(np.mean(aurocs)) and summary["auroc_n"] == len(aurocs)
    assert summary["auroc_lift_mean"] == pytest.approx(
        np.mean([s["llm"].auroc - s["baseline"].auroc for s in with_baseline])
    )
    assert summary["baseline_auroc_mean"] == pytest.approx(np.mean([s["baseline"].auroc for s in with_baseline]))

    # permutation null: mean r (undefined as 0), z over the defined, share of p < 0.05 over all scored
    assert summary["null_n_permutations"] == 1000  # the run's setting (these rows drew 200)
    assert summary["null_correlation_mean"] == pytest.approx(np.mean([s.permutation_mean or 0.0 for s in llm]))
    zs = [s.permutation_z for s in llm if s.permutation_z is not None]
    assert summary["null_z_mean"] == pytest.approx(np.mean(zs)) and summary["null_z_n"] == len(zs) == 3
    assert summary["null_p05_n"] == 4
    assert summary["null_p05_share"] == pytest.approx(
        sum(s.permutation_p is not None and s.permutation_p < 0.05 for s in llm) / 4
    )

    for metric in ("ece", "binarity", "balanced_accuracy", "abs_dev_explained"):
        defined = [v for v in values("llm", metric) if v is not None]
        assert summary[f"{metric}_mean"] == pytest.approx(np.mean(defined)), metric
        assert summary[f"{metric}_n_undefined_as_zero"] == 0
    assert summary["cost_usd"] == pytest.approx(5 * 0.01 + 4 * 0.02 + 0.005)
    assert (summary["llm_calls"], summary["input_tokens"], summary["output_tokens"]) == (10, 1000, 200)


def test_a_run_without_the_null_reports_it_as_not_computed(tmp_path):
    sample = make_sample(0)
    with RunStore.open(tmp_path, create=True) as store:
        config = RunConfig(sae="demo", scoring=ScoringConfig(n_permutations=0))
        store.create_run(RUN, "no-null", config, "sae-fp", "corpus-fp", {})
        store.save_samples(RUN, [sample])
        save(store, sample, {"llm": make_predictions(sample, 0.5)})
        summary = run_summary(store, RUN)
    assert summary["null_p05_share"] is None and summary["null_p05_n"] == 0
    assert summary["null_correlation_n"] == 0 and summary["null_correlation_mean"] is None
    assert summary["correlation_n"] == 1


def test_run_summary_reports_the_mean_window_bootstrap_std_over_features(tmp_path):
    """Each scored feature's window-bootstrap std (stored in its score json) is summarised over the llm rows;
    a constant prediction has none and is left out, as the n says."""
    samples = [make_sample(f) for f in range(4)]
    with new_store(tmp_path) as store:
        store.save_samples(RUN, samples)
        stds = []
        for i, s in enumerate(samples):
            predictions = constant(s) if i == 3 else make_predictions(s, 1.0 + i, seed=i)
            stds.append(save(store, s, {"llm": predictions, "baseline": constant(s)})["llm"].bootstrap_std)
        summary = run_summary(store, RUN)
    defined = [x for x in stds if x is not None]
    assert len(defined) == 3 and all(x > 0 for x in defined)
    assert summary["bootstrap_std_n"] == 3 and summary["bootstrap_std_n_total"] == 4
    assert summary["bootstrap_std_mean"] == pytest.approx(float(np.mean(defined)))


def test_unknown_prices_make_the_cost_unknown_not_zero(tmp_path):
    with new_store(tmp_path) as store:
        store.save_samples(RUN, [make_sample(0)])
        store.save_explanation(RUN, make_explanation(0), calls=[call(0.01), call(None)])
        summary = run_summary(store, RUN)
    assert summary["cost_usd"] is None and summary["unpriced_calls"] == 1


def test_run_summary_of_an_empty_run_and_of_no_run(tmp_path):
    with new_store(tmp_path) as store:
        summary = run_summary(store, RUN)
        with pytest.raises(StoreError, match="no run 'nope'"):
            run_summary(store, "nope")
    assert (summary["sampled"], summary["scored"], summary["failed"], summary["llm_calls"]) == (0, 0, 0, 0)
    assert summary["cost_usd"] == 0.0 and summary["lift_mean"] is None and summary["lift_n"] == 0
    assert summary["correlation_n"] == 0 and summary["null_p05_share"] is None


def test_reading_notes_say_what_local_and_baseline_scores_can_and_cannot_show():
    from autointerp.run_summary import (
        BASELINE_NOTE,
        LOCAL_EXPLAINER_NOTE,
        LOCAL_JUDGE_NOTE,
        READ_LIFTS_NOTE,
        reading_notes,
    )

    local = reading_notes({"llm": {"explainer": "local", "simulator": None}})
    assert local == [LOCAL_EXPLAINER_NOTE, LOCAL_JUDGE_NOTE, READ_LIFTS_NOTE]
    assert "135M" in local[0] and "no context" in local[1]
    assert (
        reading_notes({"llm": {"explainer": "anthropic:claude-haiku-5-5", "simulator": "local"}})[0] == LOCAL_JUDGE_NOTE
    )
    assert reading_notes({"llm": {"explainer": "baseline"}}) == [BASELINE_NOTE, READ_LIFTS_NOTE]
    assert reading_notes({"llm": {"explainer": "anthropic:claude-haiku-5-5"}}) == []


def test_the_end_of_run_table_prints_the_notes(tmp_path):
    import io

    from rich.console import Console

    from autointerp.config import LLMConfig
    from autointerp.show import summary_table

    with RunStore.open(tmp_path, create=True) as store:
        store.create_run(RUN, "local", RunConfig(sae="demo", llm=LLMConfig(explainer="local")), "sae", "corpus", {})
        summary = run_summary(store, RUN)
    console = Console(file=io.StringIO(), width=100)
    console.print(summary_table(summary))
    text = " ".join(console.file.getvalue().split())
    assert "its explanations are close to noise" in text and "reads each token alone" in text
