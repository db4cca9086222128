"""Batched SimCLR-style augmentation against torchvision's functional transforms (independent reference)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from refcal_zoo.data import BatchTransform
from refcal_zoo.data.augment import color_jitter, random_grayscale, random_resized_crop_flip, resized_crop


def factors(seed: int, n: int, amount: float):
    """Replay color_jitter's draws: apply mask, then one factor per op in order (brightness, contrast, saturation)."""
    g = torch.Generator().manual_seed(seed)
    apply = torch.rand(n, generator=g) < 0.8
    return apply, [max(0.0, 1 - amount) + (2 * amount if amount <= 1 else 1 + amount) * torch.rand(n, generator=g)
                   for _ in range(3)]


@pytest.mark.parametrize("op", ["brightness", "contrast", "saturation"])
def test_colour_ops_match_torchvision(op):
    x = torch.rand(12, 3, 16, 16)
    kwargs = dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
    kwargs[op] = 0.4
    out = color_jitter(x, p=0.8, generator=torch.Generator().manual_seed(5), **kwargs)
    apply, (fb, fc, fs) = factors(5, 12, 0.4)
    f = {"brightness": fb, "contrast": fc, "saturation": fs}[op]
    ref_fn = {"brightness": TF.adjust_brightness, "contrast": TF.adjust_contrast,
              "saturation": TF.adjust_saturation}[op]
    for i in range(12):
        expected = ref_fn(x[i], float(f[i])) if apply[i] else x[i]
        torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=0)
    assert apply.any() and not apply.all()


def test_hue_matches_torchvision():
    x = torch.rand(8, 3, 16, 16)
    out = color_jitter(x, brightness=0, contrast=0, saturation=0, hue=0.1, p=1.0,
                       generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    torch.rand(8, generator=g)  # apply mask
    for _ in range(3):
        torch.rand(8, generator=g)  # the three (identity) factors
    shifts = -0.1 + 0.2 * torch.rand(8, generator=g)
    for i in range(8):
        torch.testing.assert_close(out[i], TF.adjust_hue(x[i], float(shifts[i])), atol=1e-5, rtol=0)


def test_grayscale_matches_torchvision():
    x = torch.rand(10, 3, 8, 8)
    out = random_grayscale(x, p=0.5, generator=torch.Generator().manual_seed(1))
    pick = torch.rand(10, generator=torch.Generator().manual_seed(1)) < 0.5
    for i in range(10):
        expected = TF.rgb_to_grayscale(x[i], num_output_channels=3) if pick[i] else x[i]
        torch.testing.assert_close(out[i], expected, atol=1e-6, rtol=0)


def test_resized_crop_identity_flip_and_zoom():
    x = torch.rand(4, 3, 32, 32)
    torch.testing.assert_close(random_resized_crop_flip(x, scale=(1, 1), ratio=(1, 1), flip=False), x)
    half, one = torch.full((4,), 0.5), torch.ones(4)
    no, yes = torch.zeros(4, dtype=torch.bool), torch.ones(4, dtype=torch.bool)
    torch.testing.assert_close(resized_crop(x, half, half, one, one, yes), x.flip(-1))
    # the centre box of half the side is a 2x bilinear zoom of the centre 16x16 (away from the box border)
    zoom = resized_crop(x, half, half, half, half, no)
    ref = F.interpolate(x[:, :, 8:24, 8:24], size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(zoom[:, :, 1:-1, 1:-1], ref[:, :, 1:-1, 1:-1], atol=1e-5, rtol=0)
    # random boxes cover the requested area range on average
    out = random_resized_crop_flip(torch.zeros(256, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    assert out.shape == (256, 1, 8, 8)


def test_batch_transform_modes_and_errors():
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    for mode in ("none", "crop_flip", "rrc_flip", "simclr"):
        out = BatchTransform([0.5] * 3, [0.25] * 3, augment=mode)(x)
        assert out.shape == (6, 3, 32, 32) and out.dtype == torch.float32
    with pytest.raises(ValueError, match="unknown augmentation 'autoaugment'"):
        BatchTransform([0.5] * 3, [0.25] * 3, augment="autoaugment")
