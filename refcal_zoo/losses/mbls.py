"""MbLS -- margin-based label smoothing (Liu, Ben Ayed, Galdran, Dolz, CVPR 2022; reference notes A.10)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import CalibrationLoss, as_float, check_logits_targets

__all__ = ["MbLSLoss"]


class MbLSLoss(CalibrationLoss):
    """``L = CE_mean + lam * mean_{i,k} relu(max_j z_ij - z_ik - margin)``.

    The penalty is averaged over all ``N * K`` logit entries (as the official ``LogitMarginL1``), so ``lam``
    is a per-entry weight. Defaults ``margin = 10``, ``lam = 0.1`` (paper /
    ``configs/loss/logit_margin.yaml``; the RefCal README example uses ``lam = 0.01``).
    """

    def __init__(self, margin: float = 10.0, lam: float = 0.1) -> None:
        super().__init__()
        if margin < 0 or lam < 0:
            raise ValueError(f"need margin >= 0 and lam >= 0, got margin={margin}, lam={lam}")
        self.margin, self.lam = float(margin), float(lam)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        check_logits_targets(logits, targets)
        logits = as_float(logits)
        d = logits.max(dim=1, keepdim=True).values - logits
        return F.cross_entropy(logits, targets) + self.lam * F.relu(d - self.margin).mean()

    def extra_repr(self) -> str:
        return f"margin={self.margin}, lam={self.lam}"
