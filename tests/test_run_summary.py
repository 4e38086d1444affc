"""Tests for autointerp/run_summary.py: a run's summary row from a real run database."""

import numpy as np
import pytest
from test_store import RUN, call, make_explanation, make_sample, new_store, score_all

from autointerp.errors import StoreError
from autointerp.run_summary import run_summary
from autointerp.scoring import summarise


def test_run_summary(tmp_path):
    samples = [make_sample(f) for f in range(4)]
    with new_store(tmp_path) as store:
        store.save_samples(RUN, samples)
        for s in samples[:3]:
            store.save_explanation(RUN, make_explanation(s.feature), calls=[call(0.01)])
        scores = [score_all(store, s, noise=0.5 + s.feature) for s in samples[:3]]
        store.record_failure(RUN, 3, "explain", "HTTP 529 overloaded", calls=[call(0.005, ok=False, error="529")])
        summary = run_summary(store, RUN)
    correlations = [s["llm"].correlation for s in scores]
    fixed = ["run_id", "name", "status", "training_run", "step", "sae_fingerprint", "sampled", "scored", "failed"]
    means = [f"{m}_mean" for m in ("lift", "lift_other", "auroc", "ece", "binarity")]
    usage = ["llm_calls", "cost_usd", "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens"]
    assert list(summary) == [*fixed, *(f"correlation_{k}" for k in summarise([])), *means, *usage]
    assert [summary[k] for k in fixed] == [RUN, "demo-run", "sampling", None, None, "sae-fp", 4, 3, 1]
    assert summary["correlation_n"] == 3
    assert summary["correlation_mean"] == pytest.approx(np.mean(correlations))
    assert summary["correlation_median"] == pytest.approx(np.median(correlations))
    assert summary["lift_mean"] == pytest.approx(
        np.mean([s["llm"].correlation - s["baseline"].correlation for s in scores])
    )
    assert summary["lift_other_mean"] == pytest.approx(
        np.mean([s["llm"].correlation - s[f"other:{f + 1}"].correlation for f, s in enumerate(scores)])
    )
    assert summary["auroc_mean"] == pytest.approx(np.mean([s["llm"].auroc for s in scores]))
    assert summary["cost_usd"] == pytest.approx(3 * 0.01 + 3 * 0.02 + 0.005)
    assert (summary["llm_calls"], summary["input_tokens"], summary["output_tokens"]) == (7, 700, 140)


def test_run_summary_of_an_empty_run_and_of_no_run(tmp_path):
    with new_store(tmp_path) as store:
        summary = run_summary(store, RUN)
        with pytest.raises(StoreError, match="no run 'nope'"):
            run_summary(store, "nope")
    assert (summary["sampled"], summary["scored"], summary["failed"], summary["llm_calls"]) == (0, 0, 0, 0)
    assert summary["cost_usd"] == 0.0 and summary["lift_mean"] is None
