"""Common base class and input checks for the logits losses.

Every loss in this package is a plain ``nn.Module`` whose ``forward(logits, targets)`` returns a scalar with
**mean reduction over the batch** (the torrvision/AdaFocal reference code sums instead, see the reference
notes A.1: with mean reduction the raw gradients are ``batch_size`` times smaller). ``logits`` is ``[N, K]``
(any float dtype; half/bfloat16 inputs are promoted to float32 inside the loss), ``targets`` is ``[N]``
integer class indices.

Two class-level flags tell a trainer what else a loss needs:

* ``needs_indices`` -- ``forward`` takes a third argument, the dataset indices of the batch samples, and the
  loss keeps per-sample state that the trainer must update after each step (CRL).
* ``needs_validation`` -- the loss keeps state that the trainer must refresh from validation predictions,
  normally at the end of every epoch (AdaFocal).
* ``needs_class_counts`` -- the constructor takes ``class_counts``, the training images per class (the long-tail
  losses in ``longtail.py``); ``supports_class_weight`` -- ``set_class_weight(w)`` re-weights classes (DRW).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

__all__ = ["CalibrationLoss", "check_logits_targets", "as_float"]


class CalibrationLoss(nn.Module):
    """Base class of the logits losses: carries the ``needs_*`` / ``supports_*`` flags (all ``False`` here)."""

    needs_indices: ClassVar[bool] = False
    needs_validation: ClassVar[bool] = False
    needs_class_counts: ClassVar[bool] = False
    supports_class_weight: ClassVar[bool] = False


def check_logits_targets(logits: torch.Tensor, targets: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``logits`` is ``[N, K]`` (N >= 1, K >= 2) and ``targets`` ``[N]`` ints.

    Only shapes and dtypes are checked (no device synchronisation); out-of-range class indices are reported by
    ``F.cross_entropy`` / ``gather`` themselves.
    """
    if not isinstance(logits, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise ValueError("logits and targets must be torch tensors")
    if logits.dim() != 2:
        raise ValueError(f"logits must be [batch, num_classes], got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be floating point, got {logits.dtype}")
    n, k = logits.shape
    if n == 0:
        raise ValueError("empty batch")
    if k < 2:
        raise ValueError(f"need at least 2 classes, got {k}")
    if targets.dim() != 1 or targets.shape[0] != n:
        raise ValueError(f"targets must be [batch] = [{n}] class indices, got shape {tuple(targets.shape)}")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise ValueError(f"targets must be integer class indices, got {targets.dtype}")


def as_float(x: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32; float32/float64 unchanged (so gradcheck in float64 stays float64)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()
