"""Post-hoc calibration on validation logits (never on test): temperature scaling, conformal prediction sets
(split / class-conditional) and selective prediction (abstention at a target risk)."""

from .conformal import ConformalPredictor, conformal_quantile, conformal_report, conformal_scores
from .selective import selective_predict, selective_report, selective_threshold
from .temperature import TEMPERATURE_GRID, apply_temperature, fit_temperature, temperature_scaled_nll

__all__ = [
    "TEMPERATURE_GRID",
    "ConformalPredictor",
    "apply_temperature",
    "conformal_quantile",
    "conformal_report",
    "conformal_scores",
    "fit_temperature",
    "selective_predict",
    "selective_report",
    "selective_threshold",
    "temperature_scaled_nll",
]
