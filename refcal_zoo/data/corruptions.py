"""CIFAR-10-C-style corruptions (Hendrycks & Dietterich, ICLR 2019) on batches of image tensors.

Each corruption takes uint8 ``[N, 3, H, W]`` images and a severity 1-5 and returns uint8 images of the same shape,
with the published CIFAR-10-C constants (``make_cifar_c.py``) and the same final ``np.uint8`` truncation. The
operations are batched torch ports of the reference ones, except where noted:

- ``motion_blur`` uses the NumPy kernel of ``imagecorruptions`` (Gaussian weights over shifted copies along a
  random angle) with CIFAR-10-C's ImageMagick radius/sigma, since the reference calls ImageMagick;
- ``fog`` draws a fresh diamond-square plasma fractal per image (the reference draws one per call);
- ``pixelate`` and ``jpeg_compression`` reproduce PIL's BOX resampling and JPEG codec (JPEG through PIL itself).

Randomness comes from ``generator`` (a ``torch.Generator``) so a corrupted test set is reproducible.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .augment import _hsv_to_rgb, _rgb_to_hsv

__all__ = ["CORRUPTIONS", "SEVERITY_PARAMS", "corrupt"]

#: CIFAR-10-C constants, severity 1 -> 5
SEVERITY_PARAMS: dict[str, list] = {
    "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],
    "shot_noise": [500, 250, 100, 75, 50],
    "impulse_noise": [0.01, 0.02, 0.03, 0.05, 0.07],
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
    "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],
    "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],
    "fog": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
    "jpeg_compression": [80, 65, 58, 50, 40],
}


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """``np.uint8(clip(x, 0, 1) * 255)``: truncation, as the reference."""
    return (x.clamp(0, 1) * 255).to(torch.uint8)


def gaussian_noise(x: torch.Tensor, c: float, g: torch.Generator | None) -> torch.Tensor:
    return x + torch.randn(x.shape, generator=g, device=x.device) * c


def shot_noise(x: torch.Tensor, c: float, g: torch.Generator | None) -> torch.Tensor:
    return torch.poisson(x * c, generator=g) / c


def impulse_noise(x: torch.Tensor, c: float, g: torch.Generator | None) -> torch.Tensor:
    """skimage ``random_noise(mode='s&p', amount=c)``: each value flipped with probability c, to 1 or 0 evenly."""
    flipped = torch.rand(x.shape, generator=g, device=x.device) <= c
    salted = torch.rand(x.shape, generator=g, device=x.device) <= 0.5
    out = x.clone()
    out[flipped & salted] = 1.0
    out[flipped & ~salted] = 0.0
    return out


def _gaussian_weights(size: int, sigma: float) -> np.ndarray:
    """OpenCV's ``getGaussianKernel(size, sigma)``."""
    i = np.arange(size) - (size - 1) / 2
    w = np.exp(-(i**2) / (2 * sigma**2))
    return w / w.sum()


def _disk(radius: float, alias_blur: float) -> np.ndarray:
    """make_cifar_c's ``disk``: an aliased disk, normalised, blurred by a 3x3 (5x5 if radius > 8) Gaussian with
    OpenCV's default reflect-101 border."""
    span = 8 if radius <= 8 else int(math.ceil(radius))
    ksize = 3 if radius <= 8 else 5
    grid = np.arange(-span, span + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = (xx**2 + yy**2 <= radius**2).astype(np.float64)
    disk /= disk.sum()
    w = _gaussian_weights(ksize, alias_blur)
    pad = ksize // 2
    padded = np.pad(disk, pad, mode="reflect")  # reflect-101
    rows = sum(w[k] * padded[k: k + disk.shape[0], :] for k in range(ksize))
    return sum(w[k] * rows[:, k: k + disk.shape[1]] for k in range(ksize))


def defocus_blur(x: torch.Tensor, c: tuple, g: torch.Generator | None) -> torch.Tensor:
    kernel = _disk(*c)
    nz = np.argwhere(np.abs(kernel) > 0)
    r = int(np.max(np.abs(nz - kernel.shape[0] // 2))) if len(nz) else 0  # zero rows/columns contribute nothing
    k = kernel.shape[0] // 2
    kernel = torch.tensor(kernel[k - r: k + r + 1, k - r: k + r + 1], dtype=x.dtype, device=x.device)
    weight = kernel.expand(x.shape[1], 1, *kernel.shape)
    return F.conv2d(F.pad(x, (r, r, r, r), mode="reflect"), weight, groups=x.shape[1])  # cv2.filter2D


def _shift_index(n: int, shift: torch.Tensor) -> torch.Tensor:
    """Per sample, source positions of a shift by ``shift`` with edge replication: ``clamp(i - shift)``."""
    return (torch.arange(n, device=shift.device)[None, :] - shift[:, None]).clamp(0, n - 1)


def motion_blur(x: torch.Tensor, c: tuple, g: torch.Generator | None) -> torch.Tensor:
    radius, sigma = c
    n, ch, h, w = x.shape
    width = radius * 2 + 1
    weights = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2))
    weights /= weights.sum()
    angle = torch.deg2rad(-45 + 90 * torch.rand(n, generator=g, device=x.device, dtype=torch.float64))
    py, px = width * torch.sin(angle), width * torch.cos(angle)
    hypot = torch.sqrt(py**2 + px**2)
    out = torch.zeros_like(x)
    b = torch.arange(n, device=x.device)[:, None, None, None]
    cc = torch.arange(ch, device=x.device)[None, :, None, None]
    for i in range(width):
        dy = -torch.ceil(i * py / hypot - 0.5).long()
        dx = -torch.ceil(i * px / hypot - 0.5).long()
        rows, cols = _shift_index(h, dy), _shift_index(w, dx)
        out += float(weights[i]) * x[b, cc, rows[:, None, :, None], cols[:, None, None, :]]
    return out


def contrast(x: torch.Tensor, c: float, g: torch.Generator | None) -> torch.Tensor:
    means = x.mean(dim=(2, 3), keepdim=True)
    return (x - means) * c + means


def brightness(x: torch.Tensor, c: float, g: torch.Generator | None) -> torch.Tensor:
    hsv = _rgb_to_hsv(x)
    hsv = torch.stack([hsv[:, 0], hsv[:, 1], (hsv[:, 2] + c).clamp(0, 1)], 1)
    return _hsv_to_rgb(hsv)


def _plasma_fractal(n: int, mapsize: int, wibbledecay: float, g: torch.Generator | None,
                    device: torch.device) -> torch.Tensor:
    """make_cifar_c's diamond-square ``plasma_fractal``, for ``n`` maps at once, normalised to [0, 1] each."""
    m = torch.zeros(n, mapsize, mapsize, dtype=torch.float64, device=device)
    stepsize, wibble = mapsize, 100.0

    def wibbled_mean(a: torch.Tensor) -> torch.Tensor:
        noise = -wibble + 2 * wibble * torch.rand(a.shape, generator=g, device=device, dtype=torch.float64)
        return a / 4 + wibble * noise

    while stepsize >= 2:
        half = stepsize // 2
        corner = m[:, 0:mapsize:stepsize, 0:mapsize:stepsize]
        square = corner + torch.roll(corner, -1, 1)
        square = square + torch.roll(square, -1, 2)
        m[:, half:mapsize:stepsize, half:mapsize:stepsize] = wibbled_mean(square)
        dr = m[:, half:mapsize:stepsize, half:mapsize:stepsize]
        ul = m[:, 0:mapsize:stepsize, 0:mapsize:stepsize]
        m[:, 0:mapsize:stepsize, half:mapsize:stepsize] = wibbled_mean(dr + torch.roll(dr, 1, 1) + ul
                                                                       + torch.roll(ul, -1, 2))
        m[:, half:mapsize:stepsize, 0:mapsize:stepsize] = wibbled_mean(dr + torch.roll(dr, 1, 2) + ul
                                                                       + torch.roll(ul, -1, 1))
        stepsize //= 2
        wibble /= wibbledecay
    m = m - m.amin(dim=(1, 2), keepdim=True)
    return m / m.amax(dim=(1, 2), keepdim=True)


def fog(x: torch.Tensor, c: tuple, g: torch.Generator | None) -> torch.Tensor:
    n, _, h, w = x.shape
    size = 1 << (max(h, w) - 1).bit_length()  # the next power of two (32 for CIFAR, as the reference)
    fractal = _plasma_fractal(n, size, c[1], g, x.device)[:, :h, :w].to(x.dtype)
    max_val = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + c[0] * fractal[:, None]) * max_val / (max_val + c[0])


def _box_matrix(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """PIL's BOX resampling along one axis as an ``[n_out, n_in]`` matrix (``ImagingResample`` coefficients)."""
    scale = n_in / n_out
    support = 0.5 * max(scale, 1.0)
    ss = 1.0 / max(scale, 1.0)
    centers = (torch.arange(n_out, dtype=torch.float64) + 0.5) * scale
    pos = (torch.arange(n_in, dtype=torch.float64)[None, :] - centers[:, None] + 0.5) * ss
    inside = (pos >= -0.5) & (pos < 0.5)
    lo = torch.floor(centers - support).clamp(min=0)
    hi = torch.ceil(centers + support).clamp(max=n_in)
    idx = torch.arange(n_in, dtype=torch.float64)[None, :]
    w = (inside & (idx >= lo[:, None]) & (idx < hi[:, None])).to(torch.float64)
    return (w / w.sum(1, keepdim=True)).to(device)


def _box_resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """PIL ``resize(..., BOX)`` of uint8 images, including its rounding to uint8 after each pass."""
    rows = _box_matrix(x.shape[2], h, x.device)
    cols = _box_matrix(x.shape[3], w, x.device)
    # PIL resamples horizontally first, rounding to uint8, then vertically
    y = torch.einsum("nchw,vw->nchv", x.double(), cols)
    y = torch.floor(y + 0.5).clamp(0, 255)
    y = torch.einsum("nchw,uh->ncuw", y, rows)
    return torch.floor(y + 0.5).clamp(0, 255)


def pixelate(x: torch.Tensor, c: float, g: torch.Generator | None) -> torch.Tensor:
    h, w = x.shape[2:]
    small = _box_resize(torch.floor(x * 255 + 1e-9), int(h * c), int(w * c))
    return _box_resize(small, h, w) / 255.0


def jpeg_compression(x: torch.Tensor, c: int, g: torch.Generator | None) -> torch.Tensor:
    from PIL import Image

    out = torch.empty_like(x)
    arrays = (x.clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    for i, a in enumerate(arrays):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "JPEG", quality=int(c))
        buf.seek(0)
        out[i] = torch.from_numpy(np.array(Image.open(buf).convert("RGB"))).permute(2, 0, 1).to(x) / 255.0
    return out


CORRUPTIONS: dict[str, Callable] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur,
    "motion_blur": motion_blur,
    "contrast": contrast,
    "brightness": brightness,
    "fog": fog,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
}


def corrupt(images: torch.Tensor, name: str, severity: int, *, generator: torch.Generator | None = None,
            batch_size: int = 2048) -> torch.Tensor:
    """Apply corruption ``name`` at ``severity`` (1-5) to uint8 ``[N, 3, H, W]`` images; returns uint8."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption '{name}'; choose one of {', '.join(CORRUPTIONS)}")
    if not 1 <= int(severity) <= 5:
        raise ValueError(f"severity must be 1..5, got {severity}")
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError("images must be uint8 [N, 3, H, W]")
    fn, c = CORRUPTIONS[name], SEVERITY_PARAMS[name][int(severity) - 1]
    parts = []
    for start in range(0, images.shape[0], batch_size):
        x = images[start: start + batch_size].float() / 255.0
        parts.append(_to_uint8(fn(x, c, generator)))
    return torch.cat(parts)
