"""Brier score as a training loss (reference notes A.5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import CalibrationLoss, as_float, check_logits_targets

__all__ = ["BrierLoss"]


class BrierLoss(CalibrationLoss):
    """``L = mean_i sum_k (p_ik - 1[y_i = k])^2`` (summed over classes, mean over the batch; range [0, 2])."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        check_logits_targets(logits, targets)
        p = F.softmax(as_float(logits), dim=1)
        onehot = F.one_hot(targets, p.shape[1]).to(p.dtype)
        return (p - onehot).pow(2).sum(1).mean()
