"""EfficientViT (MIT, timm's ``efficientvit_b*``) adapted to 32x32 inputs.

timm's EfficientViT-B downsamples by 32 (stem stride 2, then four stride-2 stages), which turns a 32x32 CIFAR
image into 2x2 and 1x1 maps: the attention stages then see one to four tokens. The ``efficientvit_b*_cifar``
variants keep timm's architecture and parameter names but run the stem and the first stage at stride 1, so the
total reduction is 8 and the last stage works on a 4x4 map at 32x32 (timm's b0 sees 7x7 at 224x224). The
parameters are unchanged, so a state dict of timm's ``efficientvit_b0`` loads into ``efficientvit_b0_cifar``.

Plain ``efficientvit_b0`` also runs on 32x32 (with 1x1 final maps); training batches must then avoid size 1
(BatchNorm on a 1x1 map), which is why our training loader drops the last incomplete batch.
"""

from __future__ import annotations

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.efficientvit_mit import EfficientVit
from torch import nn

from ._common import ShardedPretrained, cifar_cfg

__all__ = ["EfficientVitCifar"]


class EfficientVitCifar(ShardedPretrained, EfficientVit):
    """timm's EfficientVit with the stem and the first stage at stride 1 (total reduction 8)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        _set_stride_1(self.stem.in_conv.conv)
        _set_stride_1(self.stages[0].blocks[0].main.depth_conv.conv)
        self.stem.stride = 1
        reduction = 1
        for i, info in enumerate(self.feature_info):
            reduction = reduction if i == 0 else reduction * 2
            info["reduction"] = reduction


def _set_stride_1(conv: nn.Conv2d) -> None:
    if conv.stride != (2, 2):
        raise RuntimeError(f"expected a stride-2 convolution to adapt, found stride {conv.stride}")
    conv.stride = (1, 1)


def _create(variant: str, pretrained: bool = False, **kwargs) -> EfficientVitCifar:
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    return build_model_with_cfg(
        EfficientVitCifar,
        variant,
        pretrained,
        feature_cfg=dict(flatten_sequential=True, out_indices=out_indices),
        **kwargs,
    )


_PAPER = dict(
    paper_ids="arXiv:2205.14756",
    paper_name="EfficientViT: Multi-Scale Linear Attention for High-Resolution Dense Prediction",
    first_conv="stem.in_conv.conv",
    classifier="head.classifier.4",
    pool_size=(4, 4),
)
default_cfgs = generate_default_cfgs(
    {f"efficientvit_b{i}_cifar": cifar_cfg(**_PAPER) for i in (0, 1, 2)}
)


@register_model
def efficientvit_b0_cifar(pretrained: bool = False, **kwargs) -> EfficientVitCifar:
    """EfficientViT-B0 with a stride-adapted stem for 32x32 inputs (2.14M parameters with 10 classes)."""
    args = dict(widths=(8, 16, 32, 64, 128), depths=(1, 2, 2, 2, 2), head_dim=16, head_widths=(1024, 1280))
    return _create("efficientvit_b0_cifar", pretrained, **dict(args, **kwargs))


@register_model
def efficientvit_b1_cifar(pretrained: bool = False, **kwargs) -> EfficientVitCifar:
    """EfficientViT-B1 with a stride-adapted stem for 32x32 inputs."""
    args = dict(widths=(16, 32, 64, 128, 256), depths=(1, 2, 3, 3, 4), head_dim=16, head_widths=(1536, 1600))
    return _create("efficientvit_b1_cifar", pretrained, **dict(args, **kwargs))


@register_model
def efficientvit_b2_cifar(pretrained: bool = False, **kwargs) -> EfficientVitCifar:
    """EfficientViT-B2 with a stride-adapted stem for 32x32 inputs."""
    args = dict(widths=(24, 48, 96, 192, 384), depths=(1, 3, 4, 4, 6), head_dim=32, head_widths=(2304, 2560))
    return _create("efficientvit_b2_cifar", pretrained, **dict(args, **kwargs))
