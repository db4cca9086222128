"""Shared pieces of the CIFAR model families: normalization constants, the default-cfg helper, the classifier
heads (linear, or cosine as LDAM-DRW's ``NormedLinear``) and the loading of sharded pretrained weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import SelectAdaptivePool2d
from timm.models import checkpoint_seq
from torch import nn

from ..weight_files import load_shards

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


CLASSIFIERS = ("linear", "cosine")

#: "arch.tag" -> the head arguments its weights need (e.g. a cosine classifier); filled by ``refcal_zoo.zoo.tags``
#: for published entries, read by the model factories, so ``timm.create_model("resnet32_cifar.<tag>",
#: pretrained=True)`` rebuilds the head the weights were trained with (timm's pretrained cfgs carry no model args)
TAG_HEAD_ARGS: dict[str, dict[str, Any]] = {}


def with_tag_head_args(variant: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` plus the head arguments registered for ``variant.<tag>`` when timm passes that tag as
    ``pretrained_cfg`` (explicit arguments win)."""
    tag = kwargs.get("pretrained_cfg")
    extra = TAG_HEAD_ARGS.get(f"{variant}.{tag}") if isinstance(tag, str) else None
    return {**extra, **kwargs} if extra else kwargs


def check_classifier_args(classifier: str, cosine_scale: float) -> None:
    """Raise a one-line ``ValueError`` for a classifier type other than ``CLASSIFIERS`` or a scale that is not > 0."""
    if classifier not in CLASSIFIERS:
        raise ValueError(f"classifier must be one of {', '.join(map(repr, CLASSIFIERS))}, got {classifier!r}")
    if isinstance(cosine_scale, bool) or not isinstance(cosine_scale, (int, float)) or not cosine_scale > 0:
        raise ValueError(f"cosine_scale must be a number > 0 (LDAM-DRW uses 30), got {cosine_scale!r}")


class NormedLinear(nn.Module):
    """Cosine classifier: ``scale * cos(x, w_j)`` for every class ``j``, no bias.

    LDAM-DRW's ``NormedLinear`` (kaidic/LDAM-DRW ``models/resnet_cifar.py``:
    ``F.normalize(x, dim=1).mm(F.normalize(self.weight, dim=0))``, weight ``uniform_(-1, 1).renorm_(2, 1, 1e-5)
    .mul_(1e5)``), which its CIFAR ResNet-32 uses with the LDAM loss. Two differences, neither changing the function:
    the weight is stored as ``[num_classes, in_features]`` (``nn.Linear``'s layout, so code that reads class rows of
    ``fc.weight`` keeps working; the official layout is its transpose), and the output is multiplied by ``scale``
    here rather than inside the loss, so the published logits are the ones the trained predictor's softmax used
    (temperature scaling and calibration metrics see the trained scale). Pair with ``LDAMLoss(prescaled=True)``.
    """

    def __init__(self, in_features: int, out_features: int, scale: float = 30.0) -> None:
        super().__init__()
        check_classifier_args("cosine", scale)
        self.in_features, self.out_features, self.scale = in_features, out_features, float(scale)
        # every class vector uniform in [-1, 1]^d, then rescaled to unit norm (the official renorm_ + mul_)
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-1, 1).renorm_(2, 0, 1e-5).mul_(1e5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, scale={self.scale}"


class ShardedPretrained:
    """timm's ``custom_load`` hook: a pretrained cfg whose ``file`` is a ``model.safetensors.index.json`` (weights
    shipped as Hugging Face shards, with any tensor over the size limit cut into parts: :mod:`refcal_zoo.weight_files`)
    is read by :func:`refcal_zoo.weight_files.load_shards`."""

    def load_pretrained(self, checkpoint_path: str, prefix: str = "") -> None:
        state, _ = load_shards(Path(checkpoint_path).parent)
        self.load_state_dict(state, strict=True)


class PooledLinearHead:
    """timm's classifier interface for families ending in global pooling, optional dropout and a classifier layer.

    The model provides ``global_pool``, ``fc``, ``num_features``, ``num_classes``, ``drop_rate``,
    ``grad_checkpointing``, ``forward_features``, and ``classifier_type`` / ``cosine_scale`` (set by
    ``init_classifier``): ``"linear"`` is ``nn.Linear``, ``"cosine"`` a :class:`NormedLinear` whose logits are
    ``cosine_scale * cos``.
    """

    def init_classifier(self, num_classes: int, classifier: str = "linear", cosine_scale: float = 30.0) -> None:
        """Check the classifier arguments and build ``self.fc`` (call once ``num_features`` is known)."""
        check_classifier_args(classifier, cosine_scale)
        self.classifier_type, self.cosine_scale = classifier, float(cosine_scale)
        self.fc = self._new_classifier(num_classes)

    def _new_classifier(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        if self.classifier_type == "cosine":
            return NormedLinear(self.num_features, num_classes, self.cosine_scale)
        return nn.Linear(self.num_features, num_classes)

    def classifier_args(self) -> dict[str, Any]:
        """The model arguments that rebuild this head (none for the default linear head): exports record them."""
        if self.classifier_type == "linear":
            return {}
        return {"classifier": self.classifier_type, "cosine_scale": self.cosine_scale}

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new, freshly initialised classifier of the same type (linear or cosine, same scale)."""
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.fc = self._new_classifier(num_classes)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def run_stages(self, x: torch.Tensor, stages: list[nn.Sequential]) -> torch.Tensor:
        """The residual stages, with activation checkpointing when ``set_grad_checkpointing`` asked for it."""
        for stage in stages:
            x = checkpoint_seq(stage, x) if self.grad_checkpointing and not torch.jit.is_scripting() else stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
