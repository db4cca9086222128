"""Cross-entropy / negative log-likelihood (reference notes A.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import CalibrationLoss, as_float, check_logits_targets
from .longtail import ClassWeightMixin

__all__ = ["CELoss"]


class CELoss(ClassWeightMixin, CalibrationLoss):
    """``L = mean_i -log softmax(z_i)[y_i]`` (mean reduction, the RefCal "NLL" baseline).

    Supports class weights (``set_class_weight``, used by DRW: CE-DRW), then the weighted mean."""

    def __init__(self) -> None:
        super().__init__()
        self._init_class_weight()

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        check_logits_targets(logits, targets)
        z = as_float(logits)
        return F.cross_entropy(z, targets, weight=self._weight_for(z))
