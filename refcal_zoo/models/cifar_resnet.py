"""CIFAR ResNets (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, section 4.2).

A 3x3 stem with 16 channels, then three stages of ``n`` basic blocks at 16, 32 and 64 channels on 32x32,
16x16 and 8x8 maps, global average pooling and a linear classifier (or, with ``classifier="cosine"``, LDAM-DRW's
cosine classifier ``NormedLinear`` scaled by ``cosine_scale``): depth ``6n + 2``.

Shortcuts use **option A** of the paper (parameter free: stride-2 subsampling and zero-padding of the new
channels), as He et al. did on CIFAR and as LDAM-DRW's ``resnet32`` does, so ResNet-32 with 10 classes has
464,154 parameters (466,906 would be option B, 1x1 projection shortcuts). Weights are initialised with
``kaiming_normal_`` on convolutions and the classifier, as in LDAM-DRW.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import SelectAdaptivePool2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from ._common import PooledLinearHead, ShardedPretrained, cifar_cfg, with_tag_head_args

__all__ = ["CifarResNet"]


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: subsample by 2 and zero-pad the extra channels evenly on both sides."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        extra = out_chs - in_chs
        self.pad = (extra // 2, extra - extra // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, *self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.shortcut = ZeroPadShortcut(in_chs, out_chs) if stride != 1 or in_chs != out_chs else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(ShardedPretrained, PooledLinearHead, nn.Module):
    """ResNet-(6n+2) for 32x32 inputs, with timm's model interface."""

    def __init__(
        self,
        depth: int = 32,
        num_classes: int = 10,
        in_chans: int = 3,
        widths: tuple[int, int, int] = (16, 32, 64),
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        classifier: str = "linear",
        cosine_scale: float = 30.0,
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (8, 20, 32, ...), got {depth}")
        n = (depth - 2) // 6
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = nn.ReLU(inplace=True)
        in_chs = widths[0]
        self.feature_info = [dict(num_chs=widths[0], reduction=1, module="act1")]
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(in_chs if j == 0 else width, width, stride if j == 0 else 1) for j in range(n)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            in_chs = width
            self.feature_info.append(dict(num_chs=width, reduction=2**i, module=f"layer{i + 1}"))
        self.num_features = self.head_hidden_size = in_chs
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.init_classifier(num_classes, classifier, cosine_scale)

        for m in self.modules():  # a cosine classifier keeps its own (LDAM-DRW) initialisation
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        return self.run_stages(x, [self.layer1, self.layer2, self.layer3])


def _create_cifar_resnet(variant: str, depth: int, pretrained: bool = False, **kwargs) -> CifarResNet:
    kwargs = with_tag_head_args(variant, kwargs)
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    return build_model_with_cfg(
        CifarResNet, variant, pretrained, depth=depth, feature_cfg=dict(out_indices=out_indices), **kwargs
    )


_PAPER = dict(paper_ids="arXiv:1512.03385", paper_name="Deep Residual Learning for Image Recognition")
default_cfgs = generate_default_cfgs(
    {f"resnet{d}_cifar": cifar_cfg(**_PAPER) for d in (8, 20, 32, 44, 56, 110)}
)


@register_model
def resnet8_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-8 (n=1): a tiny CIFAR ResNet for smoke runs and the embedded digits-LT default."""
    return _create_cifar_resnet("resnet8_cifar", 8, pretrained, **kwargs)


@register_model
def resnet20_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-20 (n=3), 269,722 parameters with 10 classes."""
    return _create_cifar_resnet("resnet20_cifar", 20, pretrained, **kwargs)


@register_model
def resnet32_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-32 (n=5), 464,154 parameters with 10 classes: the LDAM-DRW long-tail backbone."""
    return _create_cifar_resnet("resnet32_cifar", 32, pretrained, **kwargs)


@register_model
def resnet44_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-44 (n=7)."""
    return _create_cifar_resnet("resnet44_cifar", 44, pretrained, **kwargs)


@register_model
def resnet56_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-56 (n=9), 853,018 parameters with 10 classes."""
    return _create_cifar_resnet("resnet56_cifar", 56, pretrained, **kwargs)


@register_model
def resnet110_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-110 (n=18), 1,727,962 parameters with 10 classes."""
    return _create_cifar_resnet("resnet110_cifar", 110, pretrained, **kwargs)
