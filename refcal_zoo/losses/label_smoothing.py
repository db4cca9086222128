"""Label smoothing, both conventions in use (reference notes A.2)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from .base import CalibrationLoss, as_float, check_logits_targets

__all__ = ["LabelSmoothingLoss", "label_smoothing_loss"]

Convention = Literal["uniform", "others"]


def label_smoothing_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float, convention: Convention = "uniform"
) -> torch.Tensor:
    """Mean cross-entropy to a smoothed target; see :class:`LabelSmoothingLoss` for the two conventions."""
    logits = as_float(logits)
    if convention == "uniform":
        return F.cross_entropy(logits, targets, label_smoothing=alpha)
    k = logits.shape[1]
    logp = F.log_softmax(logits, dim=1)
    nll_true = -logp.gather(1, targets[:, None]).squeeze(1)
    nll_others = -logp.sum(1) - nll_true  # sum_{k != y} -log p_k
    return ((1.0 - alpha) * nll_true + alpha / (k - 1) * nll_others).mean()


class LabelSmoothingLoss(CalibrationLoss):
    """Cross-entropy to a label-smoothed target, mean reduction.

    ``convention="uniform"`` (default; PyTorch ``F.cross_entropy(label_smoothing=alpha)``, MbLS): the target
    is ``q = (1 - alpha) * onehot(y) + alpha / K``, so the true class gets ``1 - alpha + alpha/K``.

    ``convention="others"`` (Mukhoti et al. ``smooth_one_hot``, MDCA's and RefCal's ``LS``): ``q_y = 1 -
    alpha`` and ``q_k = alpha / (K - 1)`` for ``k != y``.

    The two agree when the uniform ``alpha`` equals ``alpha_others * K / (K - 1)`` (K = 10, 0.05 -> 0.0556).
    ``alpha`` must lie in ``[0, 1]`` (the RefCal code's default ``--alpha 5.0`` is rejected). ``alpha = 0`` is
    CE. Default ``alpha = 0.1`` (MDCA / RefCal-group scripts; Mukhoti's tables use 0.05).
    """

    def __init__(self, alpha: float = 0.1, convention: Convention = "uniform") -> None:
        super().__init__()
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"label-smoothing alpha must be in [0, 1], got {alpha}")
        if convention not in ("uniform", "others"):
            raise ValueError(f"convention must be 'uniform' or 'others', got {convention!r}")
        self.alpha = float(alpha)
        self.convention: Convention = convention

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        check_logits_targets(logits, targets)
        return label_smoothing_loss(logits, targets, self.alpha, self.convention)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, convention={self.convention!r}"
