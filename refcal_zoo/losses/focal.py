"""Focal loss and FLSD-53 (reference notes A.3, A.4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import CalibrationLoss, as_float, check_logits_targets

__all__ = ["FocalLoss", "FLSD53Loss", "focal_loss"]


def _log_pt(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(as_float(logits), dim=1).gather(1, targets[:, None]).squeeze(1)


def _one_minus_pt(logpt: torch.Tensor) -> torch.Tensor:
    return (-torch.expm1(logpt)).clamp_min(1e-20)


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float | torch.Tensor) -> torch.Tensor:
    """Per-sample ``-(1 - p_t)^gamma * log p_t`` (no reduction). ``gamma`` may be a per-sample tensor.

    The modulating factor is not detached (as in every reference implementation). ``1 - p_t`` is computed as
    ``-expm1(log p_t)`` for accuracy when ``p_t`` is close to 1, and floored at 1e-20 (as AdaFocal's ``+
    1e-20``) so that ``gamma < 1`` gives a finite gradient when ``p_t`` rounds to exactly 1.
    """
    logpt = _log_pt(logits, targets)
    return -(_one_minus_pt(logpt) ** gamma) * logpt


class FocalLoss(CalibrationLoss):
    """Focal loss ``mean_i -(1 - p_t)^gamma log p_t`` (Lin et al. 2017); "FL-3" of Mukhoti et al. at gamma=3.

    Mean reduction (torrvision sums). ``gamma = 0`` is cross-entropy. Default ``gamma = 3``.
    """

    def __init__(self, gamma: float = 3.0) -> None:
        super().__init__()
        if float(gamma) < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        check_logits_targets(logits, targets)
        return focal_loss(logits, targets, self.gamma).mean()

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}"


class FLSD53Loss(CalibrationLoss):
    """FLSD-53 (Mukhoti et al., NeurIPS 2020): focal loss with a sample-dependent gamma.

    ``gamma_i = gamma_low (5)`` if ``p_t < threshold (0.2)`` else ``gamma_high (3)``. The choice of gamma uses
    the detached ``p_t`` (it is not differentiated; inside each regime the loss is an ordinary focal loss).
    Mean reduction. Equivalent to torrvision's ``FocalLossAdaptive(gamma=3)`` rule {<0.2: 5, [0.2, 0.5): 3,
    >=0.5: gamma}.
    """

    def __init__(self, gamma_low: float = 5.0, gamma_high: float = 3.0, threshold: float = 0.2) -> None:
        super().__init__()
        if gamma_low < 0 or gamma_high < 0:
            raise ValueError("FLSD gammas must be >= 0")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.gamma_low, self.gamma_high, self.threshold = (
            float(gamma_low),
            float(gamma_high),
            float(threshold),
        )

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        check_logits_targets(logits, targets)
        logpt = _log_pt(logits, targets)
        pt = logpt.detach().exp()
        gamma = torch.where(pt < self.threshold, self.gamma_low, self.gamma_high).to(logpt.dtype)
        return (-(_one_minus_pt(logpt) ** gamma) * logpt).mean()

    def extra_repr(self) -> str:
        return f"gamma_low={self.gamma_low}, gamma_high={self.gamma_high}, threshold={self.threshold}"
