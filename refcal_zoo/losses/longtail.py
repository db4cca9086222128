"""Long-tail losses that use the training class counts: logit adjustment, balanced softmax, LDAM; DRW weights.

All take ``class_counts`` (the ``K`` training images per class; the trainer passes
``PreparedData.train_class_counts``) and keep them as buffers. They support *class weights* (``set_class_weight``),
which deferred re-weighting (DRW) switches on late in training; with weights the mean over the batch is the
weighted mean ``sum_i w_{y_i} l_i / sum_i w_{y_i}`` of ``F.cross_entropy(weight=...)``, as the official LDAM-DRW code.
The trained models predict with their raw logits (the adjustments act in the loss only), so test-time predictions
are balanced across classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from .base import CalibrationLoss, as_float, check_logits_targets

__all__ = [
    "BalancedSoftmaxLoss",
    "ClassWeightMixin",
    "LDAMLoss",
    "LogitAdjustedLoss",
    "check_class_counts",
    "drw_class_weights",
]


def check_class_counts(class_counts: Sequence[int] | Any) -> np.ndarray:
    """``class_counts`` as a float64 array; raise ``ValueError`` unless it is 1-D, length >= 2, all positive."""
    if isinstance(class_counts, torch.Tensor):
        class_counts = class_counts.detach().cpu().numpy()
    c = np.asarray(class_counts, dtype=np.float64) if class_counts is not None else np.zeros(0)
    if c.ndim != 1 or c.size < 2:
        raise ValueError(f"class_counts must list the training images of each of K >= 2 classes, got {class_counts!r}")
    if not np.all(np.isfinite(c)) or np.any(c <= 0):
        raise ValueError("class_counts must be positive (a class without training images has no prior); "
                         f"got {c.tolist()}")
    return c


def drw_class_weights(class_counts: Sequence[int] | Any, beta: float = 0.9999) -> torch.Tensor:
    """Class-balanced weights from the effective number of samples (Cui et al., CVPR 2019), as DRW uses them.

    ``w_j = (1 - beta) / (1 - beta^n_j)``, normalised to sum to ``K`` (kaidic/LDAM-DRW ``cifar_train.py``,
    ``train_rule == 'DRW'``: ``betas = [0, 0.9999]``, switched at epoch 160 of 200). ``beta = 0`` gives all ones.
    """
    c = check_class_counts(class_counts)
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"DRW beta must be in [0, 1), got {beta}")
    w = (1.0 - beta) / (1.0 - np.power(beta, c))
    return torch.tensor(w / w.sum() * len(c), dtype=torch.float32)


class ClassWeightMixin:
    """Optional per-class weights of a cross-entropy-style loss (``None``: unweighted mean).

    The weights are not saved in checkpoints: DRW sets them again at the start of every epoch.
    """

    supports_class_weight: ClassVar[bool] = True

    def _init_class_weight(self) -> None:
        self.register_buffer("class_weight", None, persistent=False)

    def set_class_weight(self, weight: torch.Tensor | None) -> None:
        """Weights ``[K]`` (or ``None`` to switch them off), moved to the loss's device."""
        if weight is not None:
            weight = torch.as_tensor(weight, dtype=torch.float32)
            if weight.dim() != 1:
                raise ValueError(f"class weights must be [K], got shape {tuple(weight.shape)}")
            ref = next(iter(self.buffers()), None)
            weight = weight.to(ref.device) if ref is not None else weight
        self.class_weight = weight

    def _weight_for(self, logits: torch.Tensor) -> torch.Tensor | None:
        w = self.class_weight
        if w is not None and w.shape[0] != logits.shape[1]:
            raise ValueError(f"class weights have {w.shape[0]} entries but the logits {logits.shape[1]} classes")
        return None if w is None else w.to(device=logits.device, dtype=torch.float32 if logits.dtype != torch.float64
                                           else torch.float64)


class _CountsLoss(ClassWeightMixin, CalibrationLoss):
    needs_class_counts: ClassVar[bool] = True

    def __init__(self, class_counts: Sequence[int] | Any) -> None:
        super().__init__()
        counts = check_class_counts(class_counts)
        self.register_buffer("class_counts", torch.tensor(counts, dtype=torch.float64), persistent=False)
        self._init_class_weight()

    def _check(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        check_logits_targets(logits, targets)
        if logits.shape[1] != self.class_counts.shape[0]:
            raise ValueError(f"logits have {logits.shape[1]} classes but class_counts has {self.class_counts.shape[0]}")
        return as_float(logits)


class LogitAdjustedLoss(_CountsLoss):
    """Logit-adjusted cross-entropy (Menon et al., "Long-tail learning via logit adjustment", ICLR 2021).

    ``L = CE(z + tau * log(pi), y)`` with ``pi`` the training class prior (counts / total), ``tau = 1``
    (google-research/logit_adjustment ``main.py``: ``logits + tau * log(base_probs)``). The network learns
    balanced logits ``z``: predictions use ``z`` unchanged.
    """

    def __init__(self, class_counts: Sequence[int] | Any, tau: float = 1.0) -> None:
        super().__init__(class_counts)
        if float(tau) < 0:
            raise ValueError(f"logit adjustment tau must be >= 0, got {tau}")
        self.tau = float(tau)
        prior = self.class_counts / self.class_counts.sum()
        self.register_buffer("adjustment", (self.tau * prior.log()).float(), persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z = self._check(logits, targets)
        return F.cross_entropy(z + self.adjustment.to(z), targets, weight=self._weight_for(z))

    def extra_repr(self) -> str:
        return f"tau={self.tau}, num_classes={self.class_counts.shape[0]}"


class BalancedSoftmaxLoss(_CountsLoss):
    """Balanced softmax cross-entropy (Ren et al., "Balanced Meta-Softmax for Long-Tailed Visual Recognition",
    NeurIPS 2020; jiawei-ren/BalancedMetaSoftmax ``loss/BalancedSoftmaxLoss.py``).

    ``L = CE(z + log(n), y)`` with ``n`` the training class counts; softmax is shift-invariant, so this equals
    the logit-adjusted loss with ``tau = 1``.
    """

    def __init__(self, class_counts: Sequence[int] | Any) -> None:
        super().__init__(class_counts)
        self.register_buffer("log_counts", self.class_counts.log().float(), persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z = self._check(logits, targets)
        return F.cross_entropy(z + self.log_counts.to(z), targets, weight=self._weight_for(z))

    def extra_repr(self) -> str:
        return f"num_classes={self.class_counts.shape[0]}"


class LDAMLoss(_CountsLoss):
    """Label-distribution-aware margin loss (Cao et al., NeurIPS 2019; kaidic/LDAM-DRW ``losses.py``).

    Margins ``Delta_j = C / n_j^(1/4)`` with ``C`` set so that the largest (rarest class) is ``max_m = 0.5``;
    ``L = CE(s * (z - Delta_y * onehot(y)), y)`` with scale ``s = 30``. Pair with DRW (``train.drw_epoch: 160``).

    The official CIFAR ResNet-32 feeds it the cosines ``z`` in ``[-1, 1]`` of a cosine classifier
    (``NormedLinear``). Our cosine head (``timm.create_model(arch, classifier="cosine", cosine_scale=30)``) already
    outputs ``s * cos``, so the published logits are the trained predictor's: with ``prescaled=True`` the loss takes
    such logits and is ``CE(z - s * Delta_y * onehot(y), y)``, the official ``CE(s * (cos - Delta_y))`` when
    ``z = s * cos`` (the zoo's LDAM-DRW preset). ``prescaled=False`` applies ``s`` to the logits as written above;
    on an ordinary linear classifier's unbounded logits ``s = 30`` is unstable, so use ``s = 1`` there (margins on
    the raw logit scale). Digits-LT, ResNet-8, 12 epochs, DRW from epoch 10, test accuracy measured once on CPU:
    cosine head with ``s=30, prescaled`` 68.8%; linear head 57.2% at ``s=1``, 18.4% at ``s=30``::

        accelerate launch recipes/train.py method.name=plain method.base_loss=ldam train.drw_beta=0.9999
            train.epochs=12 train.drw_epoch=10 'method.loss_args={max_m: 0.5, s: 30.0, prescaled: true}'
            'model.kwargs={classifier: cosine, cosine_scale: 30.0}'

    (one command line; for the linear head drop ``model.kwargs`` and ``prescaled``).
    """

    def __init__(self, class_counts: Sequence[int] | Any, max_m: float = 0.5, s: float = 30.0,
                 prescaled: bool = False) -> None:
        super().__init__(class_counts)
        if float(max_m) < 0 or float(s) <= 0:
            raise ValueError(f"LDAM needs max_m >= 0 and s > 0, got max_m={max_m}, s={s}")
        if not isinstance(prescaled, bool):
            raise ValueError(f"LDAM prescaled must be true (logits are already s * cos) or false, got {prescaled!r}")
        self.max_m, self.s, self.prescaled = float(max_m), float(s), prescaled
        m = 1.0 / self.class_counts.pow(0.25)
        self.register_buffer("margins", (m * (self.max_m / m.max())).float(), persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z = self._check(logits, targets)
        if self.prescaled:  # z = s * cos: subtract the scaled margin, as the official s * (cos - margin)
            margin = self.s * self.margins.to(z)[targets]
            return F.cross_entropy(z.scatter_add(1, targets[:, None], -margin[:, None]), targets,
                                   weight=self._weight_for(z))
        margin = self.margins.to(z)[targets]
        z = z.scatter_add(1, targets[:, None], -margin[:, None])  # subtract the margin from the true class only
        return F.cross_entropy(self.s * z, targets, weight=self._weight_for(z))

    def extra_repr(self) -> str:
        return f"max_m={self.max_m}, s={self.s}, prescaled={self.prescaled}, num_classes={self.class_counts.shape[0]}"
