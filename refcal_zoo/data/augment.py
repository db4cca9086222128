"""Batched augmentation on whatever device the batch lives on (no per-sample PIL work).

- ``random_crop_flip``: the CIFAR standard (4-px zero padding, random crop back to size, horizontal flip), done on
  uint8 as one gather.
- ``random_resized_crop_flip``: torchvision's ``RandomResizedCrop(scale=(0.2, 1), ratio=(3/4, 4/3))`` + flip as one
  batched ``grid_sample`` with a per-sample affine map (an out-of-range box is clamped to the image instead of
  being re-drawn up to 10 times).
- ``color_jitter`` / ``random_grayscale``: SimCLR's ``ColorJitter(0.4, 0.4, 0.4, 0.1)`` applied with p=0.8 and
  ``RandomGrayscale(p=0.2)``, with per-sample factors, in the fixed order brightness, contrast, saturation, hue
  (torchvision shuffles the order per call).
- ``normalize`` turns uint8 into float32 normalised with the model's mean/std.

``BatchTransform(augment=...)`` chains them: ``none``, ``crop_flip`` (supervised CIFAR training), ``rrc_flip``
(the linear-classifier stage of two-stage RefCal), ``simclr`` (the contrastive stage).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "AUGMENTATIONS",
    "BatchTransform",
    "color_jitter",
    "normalize",
    "random_crop_flip",
    "random_grayscale",
    "random_resized_crop_flip",
    "resized_crop",
]

AUGMENTATIONS = ("none", "crop_flip", "rrc_flip", "simclr")
_LUMA = (0.2989, 0.587, 0.114)  # ITU-R 601-2, as torchvision's rgb_to_grayscale


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


def _uniform(n: int, lo: float, hi: float, device, generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, device=device, generator=generator)


def resized_crop(
    x: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, w: torch.Tensor, h: torch.Tensor, flipped: torch.Tensor
) -> torch.Tensor:
    """Crop per sample the box centred at ``(cx, cy)`` of size ``(w, h)`` (fractions of the image, in [0, 1]),
    mirror it where ``flipped``, and resample it bilinearly to the input size (one ``grid_sample``)."""
    n = x.shape[0]
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = torch.where(flipped, -w, w)
    theta[:, 0, 2] = 2 * cx - 1
    theta[:, 1, 1] = h
    theta[:, 1, 2] = 2 * cy - 1
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_resized_crop_flip(
    x: torch.Tensor,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-sample random resized crop (area fraction ``scale``, aspect ``ratio``) + flip, back to the input size.

    ``x`` is float ``[N, C, H, W]``."""
    n, dev = x.shape[0], x.device
    area = _uniform(n, scale[0], scale[1], dev, generator)
    aspect = torch.exp(_uniform(n, math.log(ratio[0]), math.log(ratio[1]), dev, generator))
    w = torch.sqrt(area * aspect).clamp(max=1.0)  # box width / image width
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = _uniform(n, 0.0, 1.0, dev, generator) * (1 - w) + w / 2  # box centre in [0, 1]
    cy = _uniform(n, 0.0, 1.0, dev, generator) * (1 - h) + h / 2
    flipped = torch.rand(n, device=dev, generator=generator) < 0.5 if flip else torch.zeros(n, dtype=torch.bool,
                                                                                             device=dev)
    return resized_crop(x, cx.to(x.dtype), cy.to(x.dtype), w.to(x.dtype), h.to(x.dtype), flipped)


def _gray(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack([h, s, maxc], 1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = torch.stack([
        torch.stack([v, q, p, p, t, v], 1),
        torch.stack([t, v, v, q, p, p], 1),
        torch.stack([p, p, t, v, v, q], 1),
    ], 1)  # [N, 3, 6, H, W]
    idx = i[:, None, None].expand(-1, 3, 1, -1, -1)
    return table.gather(2, idx).squeeze(2)


def color_jitter(
    x: torch.Tensor,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    hue: float = 0.1,
    p: float = 0.8,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-sample colour jitter of float RGB images in [0, 1], applied to each sample with probability ``p``."""
    n, dev = x.shape[0], x.device
    apply = (torch.rand(n, device=dev, generator=generator) < p).to(x.dtype).view(n, 1, 1, 1)

    def factor(amount: float) -> torch.Tensor:
        f = _uniform(n, max(0.0, 1 - amount), 1 + amount, dev, generator).to(x.dtype).view(n, 1, 1, 1)
        return apply * f + (1 - apply)  # identity where the jitter is not applied

    out = (x * factor(brightness)).clamp(0, 1)
    c = factor(contrast)
    out = (c * out + (1 - c) * _gray(out).mean((2, 3), keepdim=True)).clamp(0, 1)
    s = factor(saturation)
    out = (s * out + (1 - s) * _gray(out)).clamp(0, 1)
    if hue > 0:
        shift = _uniform(n, -hue, hue, dev, generator).to(x.dtype).view(n, 1, 1) * apply.view(n, 1, 1)
        hsv = _rgb_to_hsv(out)
        hsv = torch.stack([(hsv[:, 0] + shift) % 1.0, hsv[:, 1], hsv[:, 2]], 1)
        out = _hsv_to_rgb(hsv).clamp(0, 1)
    return out


def random_grayscale(x: torch.Tensor, p: float = 0.2, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each RGB image by its (3-channel) luma with probability ``p``."""
    pick = (torch.rand(x.shape[0], device=x.device, generator=generator) < p).view(-1, 1, 1, 1)
    return torch.where(pick, _gray(x).expand_as(x), x)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` (or float in [0, 1]) -> float32 ``(x / 255 - mean) / std``."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


class BatchTransform:
    """The per-batch GPU/CPU pipeline: optional augmentation, then normalisation (and memory format)."""

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        augment: str = "none",
        channels_last: bool = False,
    ) -> None:
        if augment not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation '{augment}' (choose one of {', '.join(AUGMENTATIONS)})")
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.std = torch.tensor(std, dtype=torch.float32)
        self.augment = augment
        self.channels_last = channels_last

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.mean.device != x.device:
            self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
        if self.augment == "crop_flip":
            x = random_crop_flip(x, generator=generator)
        elif self.augment in ("rrc_flip", "simclr"):
            x = random_resized_crop_flip(x.float().div_(255.0), generator=generator)
            if self.augment == "simclr":
                if x.shape[1] != 3:
                    raise ValueError("the simclr augmentation needs RGB images")
                x = random_grayscale(color_jitter(x, generator=generator), generator=generator)
        out = normalize(x, self.mean, self.std)
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out
