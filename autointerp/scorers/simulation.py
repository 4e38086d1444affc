"""Simulation as a scorer: predict a 0..10 activation for every token from the explanation alone
(autointerp.simulate), then score the prediction against the truth (autointerp.scoring.score_feature).

It wraps the two and adds nothing: `score_simulation` is the one code path from a simulation to its
scores, used by the scorer and by anything else that already holds a simulation.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from autointerp.config import RunConfig
from autointerp.records import FeatureSample, Simulation
from autointerp.scorers.base import SCORERS, Scorer, ScorerResult, ScoringItem, with_calls
from autointerp.scoring import FeatureScores, score_feature
from autointerp.simulate import simulate_feature


class SimulationResult(ScorerResult):
    scorer: Literal["simulation"] = "simulation"
    simulation: Simulation = Field(description="predictions per token, one list per window (sampler order)")
    scores: FeatureScores

    def columns(self) -> dict[str, Any]:
        return {**super().columns(), **self.scores.to_columns()}


def score_simulation(sample: FeatureSample, simulation: Simulation, cfg: RunConfig) -> FeatureScores:
    """Every score of one simulation of the feature's scoring windows, its permutation null included.

    The one place a simulation is scored (SimulationScorer and the run's orchestration use it). The
    detection threshold follows the simulation's mode (ScoringConfig.threshold_for: the balanced split for
    logprob expected values, 0.5 for integer answers, unless one is configured); the null is seeded by
    (sampler seed, feature), so a feature's null is the same whatever other features the run holds.
    """
    windows = sample.split("score")
    return score_feature(
        [w.activations for w in windows],
        simulation.predictions,
        [w.group for w in windows],
        [w.interval for w in windows],
        sample.stats.max_activation,
        rule=cfg.scoring.quantise_rule,
        detection_threshold=cfg.scoring.threshold_for(simulation.mode),
        n_permutations=cfg.scoring.n_permutations,
        seed=cfg.sampler.seed,
        feature=sample.feature,
    )


@SCORERS.register("simulation")
class SimulationScorer(Scorer):
    name = "simulation"

    async def score(self, item: ScoringItem) -> SimulationResult:
        simulation, calls = await simulate_feature(
            self.backend, item.explanation, item.windows, item.feature, item.source, self.cfg
        )
        return SimulationResult(
            feature=item.feature,
            explanation_source=item.source,
            backend=self.backend.name,
            simulation=simulation,
            scores=score_simulation(item.sample, simulation, self.cfg),
            **with_calls(calls),
        )
