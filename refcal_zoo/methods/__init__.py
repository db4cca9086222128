"""How a method turns a batch into a training loss: plain (one loss) or RefCal-joint (loss + lambda * SupCon)."""

from .base import Method, build_method
from .joint import RefCalJoint
from .plain import Plain

__all__ = ["Method", "Plain", "RefCalJoint", "build_method"]
