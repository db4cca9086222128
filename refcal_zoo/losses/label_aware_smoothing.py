"""Label-aware smoothing (MiSLAS: Zhong et al., "Improving Calibration for Long-Tailed Recognition", CVPR 2021).

Label smoothing whose strength depends on the class of the target: frequent (head) classes, on which a long-tail
model is over-confident, are smoothed by ``smooth_head``, rare (tail) classes by ``smooth_tail``, and the classes in
between by a function of their training count (dvlab-research/MiSLAS ``methods.py``, ``LabelAwareSmoothing``):

``eps_j = tail + (head - tail) * f((n_j - n_K) / (n_1 - n_K))`` with ``n_1``/``n_K`` the largest/smallest count and
``f(u) = sin(pi u / 2)`` (``concave``, the default), ``u`` (``linear``), ``1 - cos(pi u / 2)`` (``convex``) or ``u^p``
(``exp``). The loss of a sample of class ``y`` is ``(1 - eps_y) * (-log p_y) + eps_y * mean_k(-log p_k)``, i.e.
cross-entropy to the target ``(1 - eps_y) * onehot(y) + eps_y / K`` (PyTorch's uniform smoothing convention).
MiSLAS uses it in its second stage (classifier re-training); the official CIFAR settings are head 0.1 / tail 0 for
CIFAR-10-LT and head 0.2 / tail 0 for CIFAR-100-LT at imbalance 10 (``config/cifar*/cifar*_imb01_stage2_mislas.yaml``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from .base import CalibrationLoss, as_float, check_logits_targets
from .longtail import check_class_counts

__all__ = ["LabelAwareSmoothingLoss", "label_aware_smoothing_factors"]

Shape = Literal["concave", "linear", "convex", "exp"]


def label_aware_smoothing_factors(class_counts: Sequence[int] | Any, smooth_head: float, smooth_tail: float,
                                  shape: Shape = "concave", power: float | None = None) -> np.ndarray:
    """The smoothing factor ``eps_j`` of every class (see the module docstring). With equal counts every class is
    a head class (``smooth_head``); the official formula would divide by zero there."""
    c = check_class_counts(class_counts)
    for name, v in (("smooth_head", smooth_head), ("smooth_tail", smooth_tail)):
        if not 0.0 <= float(v) < 1.0:
            raise ValueError(f"label-aware smoothing: {name} must be in [0, 1), got {v}")
    if shape == "exp" and (power is None or float(power) <= 0):
        raise ValueError(f"label-aware smoothing: shape 'exp' needs power > 0, got {power}")
    if shape not in ("concave", "linear", "convex", "exp"):
        raise ValueError(f"label-aware smoothing: shape must be concave, linear, convex or exp, got {shape!r}")
    n1, nk = c.max(), c.min()
    if n1 == nk:
        return np.full(c.shape, float(smooth_head))
    u = (c - nk) / (n1 - nk)
    f = {"concave": lambda: np.sin(np.pi * u / 2), "linear": lambda: u,
         "convex": lambda: 1.0 - np.cos(np.pi * u / 2), "exp": lambda: np.power(u, float(power or 1.0))}[shape]()
    return float(smooth_tail) + (float(smooth_head) - float(smooth_tail)) * f


class LabelAwareSmoothingLoss(CalibrationLoss):
    """Cross-entropy with a per-class label-smoothing factor that grows with the class's training count.

    Registry name ``label_aware_smoothing``; needs ``class_counts`` (the trainer passes the training counts).
    ``smooth_head``/``smooth_tail`` are the factors of the most/least frequent class, ``shape`` how they are
    interpolated (``concave`` as MiSLAS). Defaults are MiSLAS's CIFAR-10-LT (imbalance 10) values.
    """

    needs_class_counts: ClassVar[bool] = True

    def __init__(self, class_counts: Sequence[int] | Any, smooth_head: float = 0.1, smooth_tail: float = 0.0,
                 shape: Shape = "concave", power: float | None = None) -> None:
        super().__init__()
        eps = label_aware_smoothing_factors(class_counts, smooth_head, smooth_tail, shape, power)
        self.smooth_head, self.smooth_tail, self.shape = float(smooth_head), float(smooth_tail), shape
        self.register_buffer("smoothing", torch.tensor(eps, dtype=torch.float32), persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        check_logits_targets(logits, targets)
        z = as_float(logits)
        if z.shape[1] != self.smoothing.shape[0]:
            raise ValueError(f"logits have {z.shape[1]} classes but class_counts has {self.smoothing.shape[0]}")
        eps = self.smoothing.to(z)[targets]
        logp = F.log_softmax(z, dim=1)
        nll = -logp.gather(1, targets[:, None]).squeeze(1)
        return ((1.0 - eps) * nll - eps * logp.mean(dim=1)).mean()

    def extra_repr(self) -> str:
        return (f"smooth_head={self.smooth_head}, smooth_tail={self.smooth_tail}, shape={self.shape!r}, "
                f"num_classes={self.smoothing.shape[0]}")
