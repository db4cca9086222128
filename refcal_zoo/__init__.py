"""refcal_zoo: image classifiers that are accurate, refined and calibrated (RefCal), timm/Hugging Face style.

Importing the package registers its architectures in timm's registry (``resnet32_cifar``, ``wrn28_10_cifar``,
``efficientvit_b0_cifar``, ...) and the zoo's published entries as timm pretrained tags
(``resnet8_cifar.ce_digitslt``). It never touches the network.
"""

from __future__ import annotations

from .models import create_model

__version__ = "0.1.0.dev0"

from .hub import predict_proba, publish_run  # noqa: E402
from .record import RunRecord  # noqa: E402
from .zoo import ZooModel, list_models, load  # noqa: E402

__all__ = [
    "RunRecord",
    "ZooModel",
    "__version__",
    "create_model",
    "list_models",
    "load",
    "predict_proba",
    "publish_run",
]
