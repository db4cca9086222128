"""How a method trains: plain (one loss), refcal (two-stage SupCon then linear classifier), refcal_joint and mislas
(mixup, then classifier re-training)."""

from .base import ClassifierMethod, Criterion, Method, Stage, build_base_loss, build_stages, stage_plan
from .joint import RefCalJoint
from .mislas import ClassifierRetraining, MixupTraining, ScaledClassifier, fold_logit_scale
from .plain import Plain
from .two_stage import FrozenEncoderClassifier, LinearProbe, SupConPretrain

__all__ = [
    "ClassifierMethod",
    "ClassifierRetraining",
    "Criterion",
    "FrozenEncoderClassifier",
    "LinearProbe",
    "Method",
    "MixupTraining",
    "Plain",
    "RefCalJoint",
    "ScaledClassifier",
    "Stage",
    "SupConPretrain",
    "build_base_loss",
    "build_stages",
    "fold_logit_scale",
    "stage_plan",
]
