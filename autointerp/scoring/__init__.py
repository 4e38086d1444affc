"""Scores of a feature's simulation and of a run's features: pure functions over numpy arrays (no I/O, no LLM).

Scales used throughout:
- ``a``   raw true activations (the SAE's own scale, >= 0 in practice);
- ``a_q`` ``a`` quantised to the integers 0..10 against the feature's max (:func:`quantise`);
- ``p``   simulated activations, floats on the 0..10 scale (integers when sampled, expected values
  when computed from logprobs).

A metric that cannot be computed (a constant input, no positive windows, ...) is *undefined*: a
:class:`Metric` with ``value=None`` and a ``reason``, never 0 and never an exception. Exceptions are
kept for programming errors (arrays of different lengths, predictions off the 0..10 scale).

Modules, by job: ``metric`` (the Metric record, shared helpers), ``quantise``, ``agreement`` (Pearson,
Spearman, R^2, absolute deviation), ``calibration``, ``detection`` (from a simulation, and a yes/no
detection scorer's answers), ``bins`` (scores per activation bin), ``controls`` (lift, permutation
null), ``spread`` (window-bootstrap std of a feature's correlation), ``feature`` (:func:`score_feature`,
:class:`FeatureScores`), ``aggregate`` (summaries over features, bootstrap intervals). Definitions: ``docs/scores.md``.
"""

from autointerp.scoring.aggregate import MeanCI, PairedDiff, bootstrap_mean_ci, bootstrap_paired_diff, summarise
from autointerp.scoring.agreement import abs_dev_explained, abs_dev_explained_centred, pearson, r2_centred, spearman
from autointerp.scoring.bins import score_by_bin, window_bin
from autointerp.scoring.calibration import (
    binarity,
    calibration_fit,
    calibration_tokens,
    ece,
    prediction_histogram,
    reliability_table,
)
from autointerp.scoring.controls import PermutationNull, lift, lift_metric, permutation_null
from autointerp.scoring.detection import (
    DEFAULT_DETECTION_THRESHOLD,
    DetectionScores,
    ThresholdSetting,
    auroc,
    balanced_accuracy,
    balanced_split_threshold,
    detection_scores,
    resolve_detection_threshold,
)
from autointerp.scoring.feature import (
    COLUMNS,
    HEADLINE,
    SCORED_GROUPS,
    WINDOW_GROUPS,
    FeatureScores,
    score_feature,
)
from autointerp.scoring.metric import N_LEVELS, Metric, rank_average
from autointerp.scoring.quantise import QuantiseRule, quantise, to_level
from autointerp.scoring.spread import WindowBootstrap, window_bootstrap

__all__ = [
    "COLUMNS",
    "DEFAULT_DETECTION_THRESHOLD",
    "HEADLINE",
    "N_LEVELS",
    "SCORED_GROUPS",
    "WINDOW_GROUPS",
    "DetectionScores",
    "FeatureScores",
    "MeanCI",
    "Metric",
    "PairedDiff",
    "PermutationNull",
    "QuantiseRule",
    "ThresholdSetting",
    "WindowBootstrap",
    "abs_dev_explained",
    "abs_dev_explained_centred",
    "auroc",
    "balanced_accuracy",
    "balanced_split_threshold",
    "binarity",
    "bootstrap_mean_ci",
    "bootstrap_paired_diff",
    "calibration_fit",
    "calibration_tokens",
    "detection_scores",
    "ece",
    "lift",
    "lift_metric",
    "pearson",
    "permutation_null",
    "prediction_histogram",
    "quantise",
    "r2_centred",
    "rank_average",
    "reliability_table",
    "resolve_detection_threshold",
    "score_by_bin",
    "score_feature",
    "spearman",
    "summarise",
    "to_level",
    "window_bin",
    "window_bootstrap",
]
