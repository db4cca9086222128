"""refcal_zoo: image classifiers that are accurate, refined and calibrated (RefCal), timm/Hugging Face style.

Importing the package registers its architectures in timm's registry (``resnet32_cifar``, ``wrn28_10_cifar``,
``efficientvit_b0_cifar``, ...). It never touches the network.
"""

from __future__ import annotations

from .models import create_model

__version__ = "0.1.0.dev0"

__all__ = ["__version__", "create_model"]
