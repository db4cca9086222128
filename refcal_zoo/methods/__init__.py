"""How a method trains: plain (one loss), refcal (two-stage SupCon then linear classifier) and refcal_joint."""

from .base import Criterion, Method, Stage, build_base_loss, build_stages
from .joint import RefCalJoint
from .plain import Plain
from .two_stage import FrozenEncoderClassifier, LinearProbe, SupConPretrain

__all__ = [
    "Criterion",
    "FrozenEncoderClassifier",
    "LinearProbe",
    "Method",
    "Plain",
    "RefCalJoint",
    "Stage",
    "SupConPretrain",
    "build_base_loss",
    "build_stages",
]
