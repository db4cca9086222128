"""Calibration and refinement metrics of refcal_zoo (function API over whole evaluation sets).

Every function takes ``(logits_or_probs, labels)``: an ``(N, K)`` matrix of logits or probabilities (numpy,
torch or lists; converted to float64) and ``N`` integer labels, and computes the metric on the *whole* set.
``evaluate_predictions`` returns all of them (and per shot group) as the flat dict used by ``metrics.json``
and the model cards; :data:`METRIC_KEYS` / :data:`METRIC_DEFINITIONS` name and define its keys.

This package never imports the reference implementations (torchmetrics, netcal, relplot, evaluate); the test
suite checks agreement with them.
"""

from __future__ import annotations

from ._inputs import UndefinedMetricWarning, prepare
from .calibration import ace, bin_top_label, ece, ece_equal_mass, mce, sce, smece, smooth_ece
from .groups import FREQUENCY_THIRDS, SHOT_GROUPS, frequency_thirds, group_masks, shot_groups
from .refinement import aupr_error, auroc_misclassification, auroc_ovo, fpr_at_95tpr
from .reliability import reliability_diagram
from .robustness import evaluate_corruptions
from .scores import accuracy, brier, nll
from .selective import aurc, eaurc, risk_coverage_curve
from .suite import METRIC_DEFINITIONS, METRIC_KEYS, evaluate_predictions, evaluate_with_temperature

__all__ = [
    "FREQUENCY_THIRDS",
    "METRIC_DEFINITIONS",
    "METRIC_KEYS",
    "SHOT_GROUPS",
    "UndefinedMetricWarning",
    "accuracy",
    "ace",
    "aupr_error",
    "auroc_misclassification",
    "auroc_ovo",
    "aurc",
    "bin_top_label",
    "brier",
    "eaurc",
    "ece",
    "ece_equal_mass",
    "evaluate_corruptions",
    "evaluate_predictions",
    "evaluate_with_temperature",
    "fpr_at_95tpr",
    "frequency_thirds",
    "group_masks",
    "mce",
    "nll",
    "prepare",
    "reliability_diagram",
    "risk_coverage_curve",
    "sce",
    "shot_groups",
    "smece",
    "smooth_ece",
]
