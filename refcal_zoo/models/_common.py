"""Shared pieces of the CIFAR model families: normalization constants and the default-cfg helper."""

from __future__ import annotations

from typing import Any

# Per-channel statistics of the CIFAR training sets (true standard deviations, computed over all pixels).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


def cifar_cfg(**kwargs: Any) -> dict[str, Any]:
    """A timm pretrained cfg for a 32x32 CIFAR model (no weights unless the caller adds a source)."""
    cfg = {
        "url": "",
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "pool_size": (8, 8),
        "crop_pct": 1.0,
        "crop_mode": "center",
        "interpolation": "bilinear",
        "mean": CIFAR10_MEAN,
        "std": CIFAR10_STD,
        "first_conv": "conv1",
        "classifier": "fc",
        "license": "apache-2.0",
    }
    cfg.update(kwargs)
    return cfg
