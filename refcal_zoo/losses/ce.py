"""Cross-entropy / negative log-likelihood (reference notes A.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import CalibrationLoss, as_float, check_logits_targets

__all__ = ["CELoss"]


class CELoss(CalibrationLoss):
    """``L = mean_i -log softmax(z_i)[y_i]`` (mean reduction, the RefCal "NLL" baseline)."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        check_logits_targets(logits, targets)
        return F.cross_entropy(as_float(logits), targets)
