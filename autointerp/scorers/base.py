"""The scorer interface: one feature's explanation and windows in, a typed result out.

A scorer judges how well an explanation describes a feature on its held-out windows
(`FeatureSample.split("score")`). Simulation (autointerp.scorers.simulation: predict every token's
activation, correlate) and detection (autointerp.scorers.detection: say which windows match) are two
implementations; the run's orchestration asks `SCORERS` for the ones the config names and never needs
to know more about them, so a new scorer plugs in without editing it.

Contract of `Scorer.score`:
- returns a `ScorerResult` subclass whose `columns()` are the flat values a store row holds, with the
  LLM calls made (`calls`), their usage and cost;
- raises an `LLMStageFailure` (carrying the calls made) when the feature cannot be scored: the failure
  is recorded as the feature's error, never as a score;
- never mutates the item; results for one item are repeatable (every shuffle is seeded by run seed and
  feature).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from autointerp.config import RunConfig
from autointerp.llm.base import LLMBackend
from autointerp.llm_calls import total_usage
from autointerp.records import CallRecord, FeatureSample, Usage, Window
from autointerp.registry import Registry


class ScoringItem(BaseModel):
    """What a scorer gets for one feature: its sample and one explanation to judge."""

    sample: FeatureSample = Field(description="the feature's sample; scorers use its 'score' split")
    explanation: str = Field(description="the explanation text to judge (LLM, baseline or a control's)")
    source: str = Field(default="llm", description="'llm', 'baseline' or 'other:<feature>' (control), stored as is")

    @property
    def feature(self) -> int:
        return self.sample.feature

    @property
    def windows(self) -> list[Window]:
        """The held-out windows, in sampler order (every per-window list of a result uses this order)."""
        return self.sample.split("score")


class ScorerResult(BaseModel):
    """What every scorer returns; subclasses add their own record and columns."""

    scorer: str = Field(description="the scorer's registered name, e.g. 'simulation', 'detection'")
    feature: int
    explanation_source: str = Field(description="'llm', 'baseline' or 'other:<feature>'")
    backend: str = Field(description="backend spec that judged, e.g. 'anthropic:claude-haiku-4-5', 'baseline'")
    calls: list[CallRecord] = Field(default_factory=list, description="every LLM call made, unusable answers too")
    usage: Usage = Field(default_factory=Usage, description="summed over `calls`")
    cost_usd: float | None = Field(default=0.0, description="USD summed over `calls`; None if a price is unknown")

    def columns(self) -> dict[str, Any]:
        """Flat values for one store row (numbers, text or None); subclasses add their metrics."""
        return {"scorer": self.scorer, "explanation_source": self.explanation_source, "backend": self.backend}


def with_calls(calls: Sequence[CallRecord]) -> dict[str, Any]:
    """The `calls`, `usage` and `cost_usd` fields of a result, from its calls."""
    usage, cost = total_usage(calls)
    return {"calls": list(calls), "usage": usage, "cost_usd": cost}


class Scorer(ABC):
    """One way to score an explanation. Construct with the judging backend and the run config."""

    name: ClassVar[str]

    def __init__(self, backend: LLMBackend, cfg: RunConfig) -> None:
        self.backend = backend
        self.cfg = cfg

    @abstractmethod
    async def score(self, item: ScoringItem) -> ScorerResult:
        """Score `item.explanation` on `item.windows`; LLMStageFailure (with calls) if it cannot."""


SCORERS: Registry[type[Scorer]] = Registry("scorer")


def make_scorer(name: str, backend: LLMBackend, cfg: RunConfig) -> Scorer:
    """The scorer registered under `name` (InputError naming the known ones otherwise)."""
    return SCORERS.get(name)(backend, cfg)
