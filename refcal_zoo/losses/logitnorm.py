"""LogitNorm (Wei et al., ICML 2022)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import CalibrationLoss, as_float, check_logits_targets

__all__ = ["LogitNormLoss"]


class LogitNormLoss(CalibrationLoss):
    """``L = CE_mean(z / (t * (||z||_2 + 1e-7)), y)``: cross-entropy on L2-normalised logits, temperature t.

    Default ``t = 0.04`` (LogitNorm paper, CIFAR-10; the RefCal README example uses 0.01). The normalisation
    is part of the *training loss only*: the model still outputs raw logits at evaluation time.
    """

    def __init__(self, t: float = 0.04) -> None:
        super().__init__()
        if t <= 0:
            raise ValueError(f"t must be > 0, got {t}")
        self.t = float(t)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        check_logits_targets(logits, targets)
        logits = as_float(logits)
        norms = torch.linalg.vector_norm(logits, ord=2, dim=1, keepdim=True) + 1e-7
        return F.cross_entropy(logits / (norms * self.t), targets)

    def extra_repr(self) -> str:
        return f"t={self.t}"
