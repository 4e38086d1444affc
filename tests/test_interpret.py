"""Which features get controls, whose explanation each one borrows, and the lifts over them."""

import pytest

from autointerp.interpret import control_lifts, control_partners
from autointerp.scoring import score_feature


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
