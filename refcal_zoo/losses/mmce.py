"""Weighted MMCE (Kumar, Sarawagi, Jain, ICML 2018) as trained by Mukhoti et al. and MDCA (notes A.6)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import CalibrationLoss, as_float, check_logits_targets

__all__ = ["MMCELoss", "mmce_weighted"]


def mmce_weighted(logits: torch.Tensor, targets: torch.Tensor, kernel_width: float = 0.4) -> torch.Tensor:
    """The weighted MMCE term ``MMCE_w`` of one batch (a differentiable scalar, >= 0).

    With top-label confidences ``r_i``, correctness ``c_i``, the Laplacian kernel ``k(r, r') = exp(-|r - r'| /
    0.4)``, weights ``w_i = 1 - r_i`` on the ``m`` correct and ``w_j = r_j`` on the ``n`` incorrect samples::

        S_CC = mean_{i,i' in C} w_i w_i' k(r_i, r_i')   (m^2 pairs)      S_II likewise over I (n^2 pairs)
        S_CI = mean_{i in C, j in I} w_i w_j k(r_i, r_j)  (m*n pairs)
        MMCE_w = sqrt(max(S_CC / m^2 + S_II / n^2 - 2 S_CI / (m n), 0) + 1e-10)

    The *double* normalisation (mean over pairs, then a further ``/m^2``, ``/n^2``, ``/(m n)``) is the one in
    the TF original and torrvision's ``MMCE_weighted``; it is kept so that published lambdas stay comparable
    (torrvision's extra ``+1e-5`` in those denominators is dropped: relative effect < 1e-5 since ``m, n >=
    1``). The argument of the square root is clamped at 0 (float round-off could make it slightly negative ->
    NaN). The term is exactly 0 when every sample of the batch is correct or every sample is wrong.
    Correctness carries no gradient; the confidences (in the weights and in the kernel) do. Value depends on
    the batch size (minibatch estimator).
    """
    p = F.softmax(as_float(logits), dim=1)
    conf, pred = p.max(dim=1)
    c = (pred == targets).to(conf.dtype)
    w = c * (1.0 - conf) + (1.0 - c) * conf
    kern = torch.exp(-(conf[:, None] - conf[None, :]).abs() / kernel_width)
    wk = w[:, None] * w[None, :] * kern
    ic = 1.0 - c
    m = c.sum()
    n = ic.sum()
    m1, n1 = m.clamp_min(1.0), n.clamp_min(1.0)
    s_cc = (wk * c[:, None] * c[None, :]).sum() / m1**2
    s_ii = (wk * ic[:, None] * ic[None, :]).sum() / n1**2
    s_ci = (wk * c[:, None] * ic[None, :]).sum() / (m1 * n1)
    mmd2 = s_cc / m1**2 + s_ii / n1**2 - 2.0 * s_ci / (m1 * n1)
    value = torch.sqrt(mmd2.clamp_min(0.0) + 1e-10)
    both = ((m > 0) & (n > 0)).to(value.dtype)
    return value * both


class MMCELoss(CalibrationLoss):
    """``L = CE_mean + lam * MMCE_w`` with the Laplacian kernel of width 0.4 (see :func:`mmce_weighted`).

    ``lam`` (lambda) default 2.0 (Mukhoti et al. scripts and the reference class default; MDCA and the RefCal
    group use 4.0; the RefCal code passes 10 by default). With sum-reduced CE the torrvision code multiplies
    the whole objective by the batch size; here everything is a batch mean.
    """

    def __init__(self, lam: float = 2.0, kernel_width: float = 0.4) -> None:
        super().__init__()
        if lam < 0 or kernel_width <= 0:
            raise ValueError(
                f"need lam >= 0 and kernel_width > 0, got lam={lam}, kernel_width={kernel_width}"
            )
        self.lam, self.kernel_width = float(lam), float(kernel_width)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        check_logits_targets(logits, targets)
        logits = as_float(logits)
        return F.cross_entropy(logits, targets) + self.lam * mmce_weighted(logits, targets, self.kernel_width)

    def extra_repr(self) -> str:
        return f"lam={self.lam}, kernel_width={self.kernel_width}"
