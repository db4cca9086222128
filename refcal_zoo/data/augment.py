"""Batched augmentation on uint8 tensors, on whatever device the batch lives on (no per-sample PIL work).

``random_crop_flip`` is the CIFAR standard (4-px zero padding, random 32x32 crop, horizontal flip) done as one
gather; ``normalize`` turns uint8 into float32 normalised with the model's mean/std.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["BatchTransform", "normalize", "random_crop_flip"]


def random_crop_flip(
    x: torch.Tensor, padding: int = 4, flip: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random crop of the zero-padded batch back to its size, plus horizontal flip with p=0.5, per sample."""
    if x.dim() != 4:
        raise ValueError(f"expected a [N, C, H, W] batch, got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    dev = x.device
    xp = F.pad(x, (padding, padding, padding, padding)) if padding > 0 else x
    oy = torch.randint(0, 2 * padding + 1, (n,), device=dev, generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (n,), device=dev, generator=generator)
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = oy[:, None] + ar_h  # [N, H]
    if flip:
        flipped = torch.rand(n, device=dev, generator=generator) < 0.5
        ar_w = torch.where(flipped[:, None], (w - 1) - ar_w, ar_w)  # [N, W]
    cols = ox[:, None] + ar_w
    b = torch.arange(n, device=dev)[:, None, None, None]
    ch = torch.arange(c, device=dev)[None, :, None, None]
    return xp[b, ch, rows[:, None, :, None], cols[:, None, None, :].expand(n, 1, 1, w)]


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` -> float32 ``(x / 255 - mean) / std``."""
    return (x.float().div_(255.0) - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


class BatchTransform:
    """The per-batch GPU/CPU pipeline: optional augmentation, then normalisation (and memory format)."""

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        augment: str = "none",
        channels_last: bool = False,
    ) -> None:
        if augment not in ("none", "crop_flip"):
            raise ValueError(f"unknown augmentation '{augment}' (choose crop_flip or none)")
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.std = torch.tensor(std, dtype=torch.float32)
        self.augment = augment
        self.channels_last = channels_last

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.mean.device != x.device:
            self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
        if self.augment == "crop_flip":
            x = random_crop_flip(x, generator=generator)
        out = normalize(x, self.mean, self.std)
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out
