"""Post-hoc calibration: temperature scaling fitted on validation logits (never on test)."""

from .temperature import TEMPERATURE_GRID, apply_temperature, fit_temperature

__all__ = ["TEMPERATURE_GRID", "apply_temperature", "fit_temperature"]
