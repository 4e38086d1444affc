"""Tests for autointerp/scoring/aggregate.py: honest summaries over features and bootstrap intervals."""

import numpy as np
import pytest

from autointerp.scoring import bootstrap_mean_ci, bootstrap_paired_diff, summarise


def test_summarise_counts_undefined_as_zero():
    # [1, None, 2, 3, 4] -> [1, 2, 3, 4, 0]: mean 2; sorted 0,1,2,3,4: q25 1, median 2, q75 3
    s = summarise([1, None, 2, 3, 4], n_boot=0)
    assert (s["n_total"], s["n_defined"], s["n_undefined_as_zero"], s["n"]) == (5, 4, 1, 5)
    assert (s["mean"], s["median"], s["q25"], s["q75"]) == (2.0, 2.0, 1.0, 3.0)
    assert s["ci_lo"] is None and s["ci_hi"] is None  # n_boot=0 skips the bootstrap
    assert summarise([float("nan"), 0.5], n_boot=0)["mean"] == 0.25  # NaN is undefined too
    s = summarise([None, None], n_boot=0)
    assert (s["n"], s["n_defined"], s["mean"]) == (2, 0, 0.0)  # two constant predictions explain nothing


def test_summarise_can_skip_undefined_for_scores_where_0_is_not_no_skill():
    # defined values 1,2,3,4: mean 2.5; linear quantiles at positions 0.75, 1.5, 2.25 -> 1.75, 2.5, 3.25
    s = summarise([1, None, 2, 3, 4], undefined_as_zero=False, n_boot=0)
    assert (s["n_total"], s["n_defined"], s["n_undefined_as_zero"], s["n"]) == (5, 4, 0, 4)
    assert (s["mean"], s["median"], s["q25"], s["q75"]) == (2.5, 2.5, 1.75, 3.25)
    s = summarise([None, None], undefined_as_zero=False)
    assert s["n"] == 0 and s["mean"] is None and s["ci_lo"] is None and s["n_total"] == 2


def test_summarise_bootstrap_interval():
    rng = np.random.default_rng(4)
    values = rng.normal(0.4, 0.2, size=400).tolist() + [None] * 100  # 100 constant predictions
    s = summarise(values, seed=1)
    # mean of the 500 with zeros ~ 0.32; se ~ 0.22/sqrt(500) ~ 0.01
    assert s["ci_lo"] < s["mean"] < s["ci_hi"] and 0.02 < s["ci_hi"] - s["ci_lo"] < 0.06
    assert s == summarise(values, seed=1)
    assert summarise(values, seed=2)["ci_lo"] != s["ci_lo"]
    assert summarise([0.3] * 5)["ci_lo"] == pytest.approx(0.3) == summarise([0.3] * 5)["ci_hi"]


def test_bootstrap_mean_ci_covers_the_mean_and_is_deterministic():
    rng = np.random.default_rng(7)
    v = rng.normal(0.5, 0.1, size=300)
    mean, lo, hi = bootstrap_mean_ci(v.tolist(), seed=0)
    assert mean == pytest.approx(v.mean())
    # normal-theory 95% interval: mean +- 1.96 sd/sqrt(n); the percentile bootstrap is close to it
    half = 1.96 * v.std(ddof=1) / np.sqrt(v.size)
    assert lo == pytest.approx(mean - half, abs=0.002) and hi == pytest.approx(mean + half, abs=0.002)
    assert bootstrap_mean_ci(v.tolist(), seed=0) == (mean, lo, hi)
    assert bootstrap_mean_ci([None, 2.0, 2.0]) == (2.0, 2.0, 2.0)  # None dropped, no spread
    assert bootstrap_mean_ci([None]) == (None, None, None)
    with pytest.raises(ValueError, match="ci"):
        bootstrap_mean_ci([1.0], ci=95)


def test_bootstrap_paired_diff_contains_truth_and_is_deterministic():
    rng = np.random.default_rng(123)
    b = rng.uniform(0, 1, size=300)
    a = b + 0.1 + rng.normal(0, 0.05, size=300)  # true mean difference 0.1
    mean_diff, lo, hi = bootstrap_paired_diff(a.tolist(), b.tolist(), seed=0)
    assert lo < 0.1 < hi
    assert lo < mean_diff < hi and hi - lo < 0.03  # se ~ 0.05/sqrt(300) ~ 0.003
    assert bootstrap_paired_diff(a.tolist(), b.tolist(), seed=0) == (mean_diff, lo, hi)
    assert bootstrap_paired_diff(a.tolist(), b.tolist(), seed=1) != (mean_diff, lo, hi)
    assert tuple(bootstrap_mean_ci((a - b).tolist(), seed=0)) == (mean_diff, lo, hi)  # one bootstrap


def test_bootstrap_paired_diff_edges():
    # constant difference 1: every resampled mean is 1
    assert bootstrap_paired_diff([2, 3, None], [1, 2, 5]) == pytest.approx((1.0, 1.0, 1.0))
    assert bootstrap_paired_diff([None], [1.0]) == (None, None, None)
    with pytest.raises(ValueError, match="paired"):
        bootstrap_paired_diff([1, 2], [1])
