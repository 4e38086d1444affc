"""Scorers: ways to judge an explanation on a feature's held-out windows, behind one interface.

    scorer = make_scorer("detection", backend, cfg)      # or "simulation"
    result = await scorer.score(ScoringItem(sample=sample, explanation=text, source="llm"))
    row = result.columns()                                # flat values for the store

See autointerp.scorers.base for the contract. Importing this package registers both scorers.
"""

from autointerp.scorers.base import SCORERS, Scorer, ScorerResult, ScoringItem, make_scorer
from autointerp.scorers.detection import DetectionFailure, DetectionResult, DetectionScorer, YesNoScorer
from autointerp.scorers.simulation import SimulationResult, SimulationScorer

__all__ = [
    "SCORERS",
    "DetectionFailure",
    "DetectionResult",
    "DetectionScorer",
    "Scorer",
    "ScorerResult",
    "ScoringItem",
    "SimulationResult",
    "SimulationScorer",
    "YesNoScorer",
    "make_scorer",
]
