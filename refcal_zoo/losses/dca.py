"""DCA -- Difference between Confidence and Accuracy (Liang et al., BMVC 2020; reference notes A.8)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import CalibrationLoss, as_float, check_logits_targets

__all__ = ["DCALoss"]


class DCALoss(CalibrationLoss):
    """``L = CE_mean + beta * | mean_i conf_i - mean_i 1[argmax_i = y_i] |`` over the batch.

    ``conf`` is the max softmax probability; the accuracy term carries no gradient. ``beta`` default 1.0
    (MDCA's baseline scripts, the RefCal group's standard); the official DCA code default is 10 (a copy
    circulates with 5).
    """

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.beta = float(beta)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        check_logits_targets(logits, targets)
        logits = as_float(logits)
        conf, pred = F.softmax(logits, dim=1).max(dim=1)
        acc = (pred == targets).to(conf.dtype)
        return F.cross_entropy(logits, targets) + self.beta * (conf.mean() - acc.mean()).abs()

    def extra_repr(self) -> str:
        return f"beta={self.beta}"
