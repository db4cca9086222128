"""Training losses: supervised contrastive (RefCal) and calibration losses."""

from .supcon import SupConLoss, refinement_loss

__all__ = ["SupConLoss", "refinement_loss"]
