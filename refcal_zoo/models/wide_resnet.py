"""Wide ResNets for CIFAR (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016).

WRN-d-k: ``n = (d - 4) / 6`` pre-activation basic blocks per group, widths 16k, 32k, 64k at strides 1, 2, 2
after a 3x3 stem of 16 channels, a 1x1 projection shortcut where the shape changes, a final BN-ReLU,
global average pooling and a linear classifier (``classifier="cosine"``: LDAM-DRW's cosine classifier, see
``_common.NormedLinear``). Optional dropout between the two convolutions of a block.
WRN-28-10 has 36,479,194 parameters with 10 classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import SelectAdaptivePool2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from ._common import PooledLinearHead, ShardedPretrained, cifar_cfg, with_tag_head_args

__all__ = ["WideResNet"]


class WideBasicBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3, plus the (projected) input."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, drop_rate: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.shortcut = None
        if stride != 1 or in_chs != out_chs:
            self.shortcut = nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        y = self.conv1(o)
        y = F.relu(self.bn2(y))
        if self.drop_rate > 0.0:
            y = F.dropout(y, p=self.drop_rate, training=self.training)
        y = self.conv2(y)
        # As in the reference implementation, a projection shortcut sees the pre-activated input.
        return y + (self.shortcut(o) if self.shortcut is not None else x)


class WideResNet(ShardedPretrained, PooledLinearHead, nn.Module):
    """WRN-depth-widen for 32x32 inputs, with timm's model interface."""

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 10,
        num_classes: int = 10,
        in_chans: int = 3,
        block_drop_rate: float = 0.0,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        classifier: str = "linear",
        cosine_scale: float = 30.0,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"Wide ResNet depth must be 6n+4 (10, 16, 22, 28, 40, ...), got {depth}")
        n = (depth - 4) // 6
        widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.conv1 = nn.Conv2d(in_chans, 16, 3, stride=1, padding=1, bias=False)
        in_chs = 16
        self.feature_info = []
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            blocks = [
                WideBasicBlock(in_chs if j == 0 else width, width, stride if j == 0 else 1, block_drop_rate)
                for j in range(n)
            ]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            in_chs = width
            self.feature_info.append(dict(num_chs=width, reduction=2**i, module=f"layer{i + 1}"))
        self.bn_final = nn.BatchNorm2d(in_chs)
        self.act_final = nn.ReLU(inplace=True)
        self.feature_info[-1]["module"] = "act_final"
        self.num_features = self.head_hidden_size = in_chs
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.init_classifier(num_classes, classifier, cosine_scale)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.run_stages(self.conv1(x), [self.layer1, self.layer2, self.layer3])
        return self.act_final(self.bn_final(x))


def _create_wrn(variant: str, depth: int, widen: int, pretrained: bool = False, **kwargs) -> WideResNet:
    kwargs = with_tag_head_args(variant, kwargs)
    out_indices = kwargs.pop("out_indices", (0, 1, 2))
    return build_model_with_cfg(
        WideResNet, variant, pretrained, depth=depth, widen_factor=widen,
        feature_cfg=dict(out_indices=out_indices), **kwargs,
    )


_PAPER = dict(paper_ids="arXiv:1605.07146", paper_name="Wide Residual Networks")
default_cfgs = generate_default_cfgs(
    {name: cifar_cfg(**_PAPER) for name in ("wrn16_8_cifar", "wrn28_2_cifar", "wrn28_10_cifar", "wrn40_2_cifar")}
)


@register_model
def wrn16_8_cifar(pretrained: bool = False, **kwargs) -> WideResNet:
    """WRN-16-8, 10,961,370 parameters with 10 classes."""
    return _create_wrn("wrn16_8_cifar", 16, 8, pretrained, **kwargs)


@register_model
def wrn28_2_cifar(pretrained: bool = False, **kwargs) -> WideResNet:
    """WRN-28-2, 1,467,610 parameters with 10 classes."""
    return _create_wrn("wrn28_2_cifar", 28, 2, pretrained, **kwargs)


@register_model
def wrn28_10_cifar(pretrained: bool = False, **kwargs) -> WideResNet:
    """WRN-28-10, 36,479,194 parameters with 10 classes."""
    return _create_wrn("wrn28_10_cifar", 28, 10, pretrained, **kwargs)


@register_model
def wrn40_2_cifar(pretrained: bool = False, **kwargs) -> WideResNet:
    """WRN-40-2, 2,243,546 parameters with 10 classes."""
    return _create_wrn("wrn40_2_cifar", 40, 2, pretrained, **kwargs)
