"""Model families, registered in timm's registry on import (``timm.create_model("resnet32_cifar")``)."""

from __future__ import annotations

import difflib
from typing import Any

import timm
from torch import nn

from ..errors import ConfigError
from . import cifar_resnet, efficientvit_cifar, wide_resnet  # noqa: F401  (registers the entry points)
from ._common import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD
from .cifar_resnet import CifarResNet
from .efficientvit_cifar import EfficientVitCifar
from .heads import ContrastiveClassifier, ProjectionHead, pre_logits_dim
from .wide_resnet import WideResNet

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "CifarResNet",
    "ContrastiveClassifier",
    "EfficientVitCifar",
    "ProjectionHead",
    "WideResNet",
    "create_model",
    "pre_logits_dim",
]


def create_model(arch: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with refcal_zoo's architectures registered; an unknown name raises ValueError."""
    name = arch.split(".", 1)[0]
    if ":" not in arch and not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        raise ConfigError(f"unknown model architecture '{arch}'.{hint} See timm.list_models() for all names.")
    return timm.create_model(arch, **kwargs)
