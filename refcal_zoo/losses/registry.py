"""Name -> loss registry: ``build_loss("focal", gamma=3)``."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from .adafocal import AdaFocalLoss
from .brier import BrierLoss
from .ce import CELoss
from .crl import CRLLoss
from .dca import DCALoss
from .focal import FLSD53Loss, FocalLoss
from .label_aware_smoothing import LabelAwareSmoothingLoss
from .label_smoothing import LabelSmoothingLoss
from .logitnorm import LogitNormLoss
from .longtail import BalancedSoftmaxLoss, LDAMLoss, LogitAdjustedLoss
from .mbls import MbLSLoss
from .mdca import MDCALoss
from .mmce import MMCELoss

__all__ = ["LOSSES", "build_loss", "available_losses"]

#: registry name -> loss class (all take ``(logits, targets)``; CRL also ``indices``).
LOSSES: dict[str, type[nn.Module]] = {
    "ce": CELoss,
    "ls": LabelSmoothingLoss,
    "focal": FocalLoss,
    "flsd53": FLSD53Loss,
    "brier": BrierLoss,
    "mmce": MMCELoss,
    "dca": DCALoss,
    "mdca": MDCALoss,
    "mbls": MbLSLoss,
    "logitnorm": LogitNormLoss,
    "crl": CRLLoss,
    "adafocal": AdaFocalLoss,
    "logitadjusted": LogitAdjustedLoss,
    "balancedsoftmax": BalancedSoftmaxLoss,
    "ldam": LDAMLoss,
    "labelawaresmoothing": LabelAwareSmoothingLoss,
}


def available_losses() -> list[str]:
    """Registered loss names, sorted."""
    return sorted(LOSSES)


def _init_params(cls: type) -> list[str]:
    params = inspect.signature(cls.__init__).parameters
    return [
        p
        for p in params
        if p != "self" and params[p].kind not in (params[p].VAR_POSITIONAL, params[p].VAR_KEYWORD)
    ]


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate a registered loss by name (case-insensitive, ``-``/``_`` ignored: ``"FLSD-53"`` works).

    Names: ``ce, ls, focal, flsd53, brier, mmce, dca, mdca, mbls, logitnorm, crl, adafocal`` and the long-tail
    ``logit_adjusted, balanced_softmax, ldam, label_aware_smoothing`` (these need ``class_counts=``, the training
    images per class; the trainer passes them). ``kwargs`` go to the class constructor, e.g. ``build_loss("mdca",
    base="focal", gamma=1.0, beta=1.0)``, ``build_loss("crl", num_samples=len(train_set))``.
    An unknown name or keyword raises ``ValueError`` listing the valid ones. Check
    ``loss.needs_indices`` / ``loss.needs_validation`` to drive the loss correctly.
    """
    if not isinstance(name, str):
        raise ValueError(f"loss name must be a string, got {type(name).__name__}")
    key = name.lower().replace("-", "").replace("_", "").strip()
    if key not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(available_losses())}")
    cls = LOSSES[key]
    valid = _init_params(cls)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown argument(s) {', '.join(unknown)} for loss {key!r} ({cls.__name__}); "
            f"valid: {', '.join(valid) if valid else '(none)'}"
        )
    return cls(**kwargs)
