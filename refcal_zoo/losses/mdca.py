"""MDCA -- Multi-class Difference in Confidence and Accuracy (Hebbalaguppe et al., CVPR 2022; notes A.9)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from .base import CalibrationLoss, as_float, check_logits_targets
from .focal import focal_loss
from .label_smoothing import Convention, label_smoothing_loss

__all__ = ["MDCALoss", "mdca"]

Base = Literal["nll", "focal", "ls"]


def mdca(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``(1/K) sum_k | mean_i p_ik - mean_i 1[y_i = k] |`` over the batch (device-agnostic, vectorised)."""
    p = F.softmax(as_float(logits), dim=1)
    freq = F.one_hot(targets, p.shape[1]).to(p.dtype).mean(0)
    return (p.mean(0) - freq).abs().mean()


class MDCALoss(CalibrationLoss):
    """``L = L_cls + beta * MDCA`` with ``L_cls`` one of NLL (``base="nll"``), focal (``"focal"``, ``gamma``)
    or label smoothing (``"ls"``, ``alpha``, ``convention``). All terms are batch means.

    Defaults follow MDCA's ``scripts/cifar10.sh`` (not its argparser, whose ``--beta 10 --alpha 5.0`` must
    never be used): ``beta = 1``; FL+MDCA ``gamma = 1``; LS+MDCA ``alpha = 0.1``. Note MDCA's own LS is the
    ``convention="others"`` form; this package defaults to ``"uniform"`` everywhere -- pass
    ``convention="others"`` to reproduce MDCA exactly. Passing ``gamma`` for a non-focal base, or ``alpha`` /
    ``convention`` for a non-LS base, is a ``ValueError``.
    """

    def __init__(
        self,
        beta: float = 1.0,
        base: Base = "nll",
        gamma: float | None = None,
        alpha: float | None = None,
        convention: Convention | None = None,
    ) -> None:
        super().__init__()
        if base not in ("nll", "focal", "ls"):
            raise ValueError(f"MDCA base must be one of 'nll', 'focal', 'ls', got {base!r}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if gamma is not None and base != "focal":
            raise ValueError("gamma only applies to base='focal'")
        if (alpha is not None or convention is not None) and base != "ls":
            raise ValueError("alpha/convention only apply to base='ls'")
        self.beta = float(beta)
        self.base: Base = base
        self.gamma = float(gamma) if gamma is not None else 1.0
        self.alpha = float(alpha) if alpha is not None else 0.1
        self.convention: Convention = convention if convention is not None else "uniform"
        if self.gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {self.gamma}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.convention not in ("uniform", "others"):
            raise ValueError(f"convention must be 'uniform' or 'others', got {self.convention!r}")

    def classification_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.base == "nll":
            return F.cross_entropy(logits, targets)
        if self.base == "focal":
            return focal_loss(logits, targets, self.gamma).mean()
        return label_smoothing_loss(logits, targets, self.alpha, self.convention)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        check_logits_targets(logits, targets)
        logits = as_float(logits)
        return self.classification_loss(logits, targets) + self.beta * mdca(logits, targets)

    def extra_repr(self) -> str:
        s = f"beta={self.beta}, base={self.base!r}"
        if self.base == "focal":
            s += f", gamma={self.gamma}"
        if self.base == "ls":
            s += f", alpha={self.alpha}, convention={self.convention!r}"
        return s
