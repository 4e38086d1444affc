"""Which features get controls, and whose explanation each one borrows."""

from autointerp.interpret import control_partners


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
