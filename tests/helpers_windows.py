"""Hand-made windows and feature samples for tests: the one place tests build a `Window`.

`make_window(tokens, activations)` fills what a test does not care about with fixed values (feature 7,
context 0, start 0, token ids 0..n-1, a top window of the explanation split); every field can be set.
`make_sample(windows)` wraps windows in a FeatureSample whose stats agree with them.
"""

from __future__ import annotations

from collections.abc import Sequence

from autointerp.records import FeatureSample, FeatureStats, Group, Split, Window


def make_window(
    tokens: Sequence[str],
    activations: Sequence[float],
    *,
    feature: int = 7,
    context_id: int = 0,
    start: int = 0,
    token_ids: Sequence[int] | None = None,
    group: Group = "top",
    interval: int | None = None,
    split: Split = "explain",
) -> Window:
    """A window with these tokens and raw activations (same length); token ids default to 0..n-1."""
    return Window(
        feature=feature,
        context_id=context_id,
        start=start,
        token_ids=list(range(len(tokens))) if token_ids is None else list(token_ids),
        tokens=list(tokens),
        activations=list(activations),
        group=group,
        interval=interval,
        split=split,
    )


def make_sample(windows: list[Window], feature: int = 7, max_activation: float | None = None) -> FeatureSample:
    """The windows as one feature's sample; stats counted from the windows (max_activation overrides
    the max, raw scale, e.g. 0.0 for a feature the stats say never fired)."""
    acts = [a for w in windows for a in w.activations]
    top = max(acts) if max_activation is None else max_activation
    active = [a for a in acts if a > 0]
    return FeatureSample(
        stats=FeatureStats(
            feature=feature,
            n_tokens=len(acts),
            n_active=len(active),
            max_activation=top,
            mean_active=sum(active) / len(active) if active else None,
            histogram_edges=[0.0, top],
            histogram_counts=[len(active)],
        ),
        windows=windows,
    )
