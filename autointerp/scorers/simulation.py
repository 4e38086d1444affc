"""Simulation as a scorer: predict a 0..10 activation for every token from the explanation alone
(autointerp.simulate), then score the prediction against the truth (autointerp.scoring.score_feature).

It wraps the two and adds nothing: a run that calls `simulate_feature` and `score_feature` itself gets
the same numbers.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from autointerp.records import Simulation
from autointerp.scorers.base import SCORERS, Scorer, ScorerResult, ScoringItem, with_calls
from autointerp.scoring import FeatureScores, score_feature
from autointerp.simulate import simulate_feature


class SimulationResult(ScorerResult):
    scorer: Literal["simulation"] = "simulation"
    simulation: Simulation = Field(description="predictions per token, one list per window (sampler order)")
    scores: FeatureScores

    def columns(self) -> dict[str, Any]:
        return {**super().columns(), **self.scores.to_columns()}


@SCORERS.register("simulation")
class SimulationScorer(Scorer):
    name = "simulation"

    async def score(self, item: ScoringItem) -> SimulationResult:
        windows = item.windows
        simulation, calls = await simulate_feature(
            self.backend, item.explanation, windows, item.feature, item.source, self.cfg
        )
        scores = score_feature(
            [w.activations for w in windows],
            simulation.predictions,
            [w.group for w in windows],
            [w.interval for w in windows],
            item.sample.stats.max_activation,
            rule=self.cfg.scoring.quantise_rule,
            detection_threshold=self.cfg.scoring.threshold_for(simulation.mode),
            n_permutations=self.cfg.scoring.n_permutations,
            seed=self.cfg.sampler.seed,
            feature=item.feature,
        )
        return SimulationResult(
            feature=item.feature,
            explanation_source=item.source,
            backend=self.backend.name,
            simulation=simulation,
            scores=scores,
            **with_calls(calls),
        )
