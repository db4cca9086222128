"""Training losses: supervised contrastive (RefCal), calibration losses and long-tail losses (LA, BS, LDAM, LAS).

Every logits loss is an ``nn.Module`` with ``forward(logits [N, K], targets [N]) -> scalar`` and mean
reduction over the batch; :class:`CRLLoss` additionally takes the samples' dataset ``indices``. Class flags
tell a trainer what else is needed: ``needs_indices`` (CRL: pass indices, call ``update_history`` after each
step and ``next_epoch`` after each epoch) and ``needs_validation`` (AdaFocal: call ``update_from_validation``
with the full validation set after each epoch). ``build_loss(name, **kwargs)`` builds one by name.
"""

from .adafocal import AdaFocalLoss
from .base import CalibrationLoss
from .brier import BrierLoss
from .ce import CELoss
from .crl import CorrectnessHistory, CRLLoss
from .dca import DCALoss
from .distributed import all_gather_no_grad, all_gather_with_local_grad, is_distributed
from .focal import FLSD53Loss, FocalLoss, focal_loss
from .label_aware_smoothing import LabelAwareSmoothingLoss, label_aware_smoothing_factors
from .label_smoothing import LabelSmoothingLoss, label_smoothing_loss
from .logitnorm import LogitNormLoss
from .longtail import BalancedSoftmaxLoss, LDAMLoss, LogitAdjustedLoss, drw_class_weights
from .mbls import MbLSLoss
from .mdca import MDCALoss, mdca
from .mmce import MMCELoss, mmce_weighted
from .registry import LOSSES, available_losses, build_loss
from .supcon import (
    SupConLoss,
    gather_features,
    refinement_loss,
    refinement_loss_per_anchor,
    supcon_per_anchor,
)

__all__ = [
    "LOSSES",
    "AdaFocalLoss",
    "BalancedSoftmaxLoss",
    "BrierLoss",
    "CELoss",
    "CRLLoss",
    "CalibrationLoss",
    "CorrectnessHistory",
    "DCALoss",
    "FLSD53Loss",
    "FocalLoss",
    "LDAMLoss",
    "LabelAwareSmoothingLoss",
    "LabelSmoothingLoss",
    "LogitAdjustedLoss",
    "LogitNormLoss",
    "MDCALoss",
    "MMCELoss",
    "MbLSLoss",
    "SupConLoss",
    "all_gather_no_grad",
    "all_gather_with_local_grad",
    "available_losses",
    "build_loss",
    "drw_class_weights",
    "focal_loss",
    "gather_features",
    "is_distributed",
    "label_aware_smoothing_factors",
    "label_smoothing_loss",
    "mdca",
    "mmce_weighted",
    "refinement_loss",
    "refinement_loss_per_anchor",
    "supcon_per_anchor",
]
