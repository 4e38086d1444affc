"""Tests for autointerp/scoring/quantise.py and metric.py on hand-made arrays."""

import numpy as np
import pytest

from autointerp.scoring import Metric, quantise, rank_average, to_level


def test_quantise_floor_and_ceil():
    # max 2: 10*a/max = [0, 0.95, 1, 5, 9.95, 10, 15, -> negative counts as 0]
    acts = [0.0, 0.19, 0.2, 1.0, 1.99, 2.0, 3.0, -1.0]
    assert quantise(acts, 2.0, "floor").tolist() == [0, 0, 1, 5, 9, 10, 10, 0]
    assert quantise(acts, 2.0, "ceil").tolist() == [0, 1, 1, 5, 10, 10, 10, 0]
    assert quantise(acts, 2.0).dtype.kind == "i"


def test_quantise_a_equal_to_max_is_10():
    for m in (0.1, 0.3, 1.0, 7.77, 1e-6, 123456.789):
        assert quantise([m], m, "floor").tolist() == [10]
        assert quantise([m], m, "ceil").tolist() == [10]


def test_quantise_nonpositive_max_gives_zeros():
    assert quantise([0.0, 1.0, 5.0], 0.0).tolist() == [0, 0, 0]
    assert quantise([0.0, 1.0, 5.0], -1.0, "ceil").tolist() == [0, 0, 0]


def test_quantise_exact_boundaries_not_float_accidents():
    # 0.3/1*10 = 3.0000000000000004 and 0.7*10 = 7.000000000000001 in float64; both are levels 3 and 7.
    assert quantise([0.3, 0.7], 1.0, "ceil").tolist() == [3, 7]
    assert quantise([0.3, 0.7], 1.0, "floor").tolist() == [3, 7]


def test_quantise_keeps_shape_and_rejects_bad_input():
    assert quantise(np.ones((2, 3)), 1.0).shape == (2, 3)
    with pytest.raises(ValueError, match="rule"):
        quantise([1.0], 1.0, "round")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        quantise([float("nan")], 1.0)


def test_to_level_rounds_halves_up_and_clips():
    assert to_level([0.49, 0.5, 2.5, 9.5, 10.0, 12.0, -1.0]).tolist() == [0, 1, 3, 10, 10, 10, 0]


def test_metric_is_value_xor_reason():
    assert Metric.ok(1).value == 1.0 and Metric.ok(1).defined
    assert not Metric.undefined("x").defined
    with pytest.raises(ValueError):
        Metric(None, None)
    with pytest.raises(ValueError):
        Metric(1.0, "both")


def test_rank_average_ties():
    assert rank_average([5, 1, 5]).tolist() == [2.5, 1.0, 2.5]
    # [3,1,3,3,0]: sorted 0(r1) 1(r2) 3,3,3 (r3,4,5 -> 4)
    assert rank_average([3, 1, 3, 3, 0]).tolist() == [4.0, 2.0, 4.0, 4.0, 1.0]
