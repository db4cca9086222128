"""refcal_zoo: image classifiers that are accurate, refined and calibrated (RefCal), timm/Hugging Face style.

Importing the package registers its architectures in timm's registry (``resnet32_cifar``, ``wrn28_10_cifar``,
``efficientvit_b0_cifar``, ...). It never touches the network.
"""

from __future__ import annotations

from .models import create_model

__version__ = "0.1.0.dev0"

from .hub import ZooModel, load, predict_proba, push_to_hub, save_pretrained  # noqa: E402
from .zoo import list_models  # noqa: E402

__all__ = [
    "ZooModel",
    "__version__",
    "create_model",
    "list_models",
    "load",
    "predict_proba",
    "push_to_hub",
    "save_pretrained",
]
