"""CIFAR-10-C-style corruptions against the reference implementations' building blocks (OpenCV, scikit-image,
PIL, a transcription of imagecorruptions' motion blur) and the corruption evaluation."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from refcal_zoo.data import corruptions as C
from refcal_zoo.data.corruptions import CORRUPTIONS, SEVERITY_PARAMS, corrupt


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=g)
    x[:, :, 8:24, 8:24] //= 3  # some structure, so blurs and contrast changes matter
    return x


def as_float(x):
    return x.float() / 255.0


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_pixelate_equals_pil_box(images, severity):
    c = SEVERITY_PARAMS["pixelate"][severity - 1]
    out = corrupt(images, "pixelate", severity)
    for i in range(images.shape[0]):
        im = Image.fromarray(images[i].permute(1, 2, 0).numpy())
        ref = im.resize((int(32 * c), int(32 * c)), Image.BOX).resize((32, 32), Image.BOX)
        np.testing.assert_array_equal(out[i].permute(1, 2, 0).numpy(), np.asarray(ref))


def test_jpeg_equals_pil(images):
    out = corrupt(images, "jpeg_compression", 5)
    buf = io.BytesIO()
    Image.fromarray(images[0].permute(1, 2, 0).numpy()).save(buf, "JPEG", quality=40)
    np.testing.assert_array_equal(out[0].permute(1, 2, 0).numpy(), np.asarray(Image.open(buf)))


@pytest.mark.parametrize("severity", [1, 3, 4, 5])
def test_defocus_blur_matches_opencv(images, severity):
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (test reference) not installed")
    radius, alias_blur = SEVERITY_PARAMS["defocus_blur"][severity - 1]
    grid = np.arange(-8, 9)
    xx, yy = np.meshgrid(grid, grid)
    disk = np.array((xx**2 + yy**2) <= radius**2, dtype=np.float32)
    disk /= disk.sum()
    kernel = cv2.GaussianBlur(disk, ksize=(3, 3), sigmaX=alias_blur)  # make_cifar_c's disk()
    np.testing.assert_allclose(C._disk(radius, alias_blur), kernel, atol=1e-6)
    x = images[0].permute(1, 2, 0).numpy() / 255.0
    ref = np.stack([cv2.filter2D(x[:, :, d], -1, kernel) for d in range(3)], axis=2)
    ref = np.uint8(np.clip(ref, 0, 1) * 255)
    out = corrupt(images[:1], "defocus_blur", severity)[0].permute(1, 2, 0).numpy()
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1  # float32 vs float64 at the truncation edge


def test_brightness_and_contrast_match_the_reference_formulas(images):
    skimage = pytest.importorskip("skimage", reason="scikit-image (test reference) not installed")
    x = images[1].permute(1, 2, 0).numpy() / 255.0
    hsv = skimage.color.rgb2hsv(x)
    hsv[:, :, 2] = np.clip(hsv[:, :, 2] + 0.2, 0, 1)
    ref = np.uint8(np.clip(skimage.color.hsv2rgb(hsv), 0, 1) * 255)
    out = corrupt(images[1:2], "brightness", 4)[0].permute(1, 2, 0).numpy()
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1
    means = np.mean(x, axis=(0, 1), keepdims=True)
    ref = np.uint8(np.clip((x - means) * 0.3 + means, 0, 1) * 255)
    out = corrupt(images[1:2], "contrast", 4)[0].permute(1, 2, 0).numpy()
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1


def reference_motion_blur(x: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    """imagecorruptions' _motion_blur (numpy), transcribed: Gaussian weights over shifted, edge-replicated copies."""
    width = radius * 2 + 1
    k = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2)) / (np.sqrt(2 * np.pi) * sigma)
    k = k / k.sum()
    point = (width * np.sin(np.deg2rad(angle)), width * np.cos(np.deg2rad(angle)))
    hypot = math.hypot(*point)
    out = np.zeros_like(x)
    for i in range(width):
        dy = -math.ceil(((i * point[0]) / hypot) - 0.5)
        dx = -math.ceil(((i * point[1]) / hypot) - 0.5)
        shifted = x
        if dx < 0:
            shifted = np.roll(shifted, shift=shifted.shape[1] + dx, axis=1)
            shifted[:, dx:] = shifted[:, dx - 1:dx]
        elif dx > 0:
            shifted = np.roll(shifted, shift=dx, axis=1)
            shifted[:, :dx] = shifted[:, dx:dx + 1]
        if dy < 0:
            shifted = np.roll(shifted, shift=shifted.shape[0] + dy, axis=0)
            shifted[dy:, :] = shifted[dy - 1:dy, :]
        elif dy > 0:
            shifted = np.roll(shifted, shift=dy, axis=0)
            shifted[:dy, :] = shifted[dy:dy + 1, :]
        out = out + k[i] * shifted
    return out


def test_motion_blur_matches_the_imagecorruptions_kernel(images):
    g = torch.Generator().manual_seed(3)
    out = corrupt(images, "motion_blur", 4, generator=g)
    angles = -45 + 90 * torch.rand(images.shape[0], generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    radius, sigma = SEVERITY_PARAMS["motion_blur"][3]
    for i in range(images.shape[0]):
        x = images[i].permute(1, 2, 0).numpy() / 255.0
        ref = np.uint8(np.clip(reference_motion_blur(x, radius, sigma, float(angles[i])), 0, 1) * 255)
        assert np.abs(out[i].permute(1, 2, 0).numpy().astype(int) - ref.astype(int)).max() <= 1


def test_noise_statistics():
    flat = torch.full((64, 3, 32, 32), 128, dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    noisy = corrupt(flat, "gaussian_noise", 5, generator=g).float() / 255
    assert noisy.std().item() == pytest.approx(0.10, rel=0.05)
    impulse = corrupt(flat, "impulse_noise", 5, generator=g)
    frac = ((impulse == 0) | (impulse == 255)).float().mean().item()
    assert frac == pytest.approx(0.07, abs=0.01)
    assert ((impulse == 0).float().mean() / (impulse == 255).float().mean()).item() == pytest.approx(1, abs=0.15)
    shot = corrupt(flat, "shot_noise", 5, generator=g).float() / 255
    assert shot.var().item() == pytest.approx(128 / 255 / 50, rel=0.1)  # Poisson(x c)/c has variance x / c


def test_fog_is_the_reference_formula_over_a_plasma_fractal(images):
    fractal = C._plasma_fractal(images.shape[0], 32, 2.0, torch.Generator().manual_seed(5), torch.device("cpu"))
    assert fractal.shape == (6, 32, 32)
    assert torch.equal(fractal.amin((1, 2)), torch.zeros(6, dtype=torch.float64))
    assert torch.equal(fractal.amax((1, 2)), torch.ones(6, dtype=torch.float64))
    out = corrupt(images, "fog", 4, generator=torch.Generator().manual_seed(5))
    x = as_float(images)
    mx = x.amax(dim=(1, 2, 3), keepdim=True)
    ref = ((x + 1.0 * fractal[:, None].float()) * mx / (mx + 1.0)).clamp(0, 1)
    assert (out.int() - (ref * 255).to(torch.uint8).int()).abs().max() <= 1


def test_every_corruption_and_bad_input(images):
    for name in CORRUPTIONS:
        for severity in (1, 5):
            out = corrupt(images, name, severity, generator=torch.Generator().manual_seed(0))
            assert out.dtype == torch.uint8 and out.shape == images.shape
        weak = corrupt(images, name, 1, generator=torch.Generator().manual_seed(0)).float()
        strong = corrupt(images, name, 5, generator=torch.Generator().manual_seed(0)).float()
        assert (strong - images.float()).abs().mean() >= (weak - images.float()).abs().mean() - 1e-6, name
    with pytest.raises(ValueError, match="unknown corruption 'snow'"):
        corrupt(images, "snow", 1)
    with pytest.raises(ValueError, match="severity must be 1..5"):
        corrupt(images, "fog", 6)


def test_corruption_evaluation_reports_every_cell():
    from refcal_zoo.metrics import evaluate_corruptions

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.arange(40) % 4

    def predict(x):  # a fixed "model": the mean intensity of each channel, plus a constant
        f = x.float().mean(dim=(2, 3)) / 255
        return torch.cat([f, f[:, :1] * 0.5], 1) * 4

    report = evaluate_corruptions(predict, images, labels, temperature=1.5, corruptions=["contrast", "fog"],
                                  severities=[1, 5])
    assert [(c["corruption"], c["severity"]) for c in report["cells"]] == \
        [("contrast", 1), ("contrast", 5), ("fog", 1), ("fog", 5)]
    errors = [1 - c["accuracy"] for c in report["cells"]]
    assert report["summary"]["mean_corruption_error"] == pytest.approx(sum(errors) / 4)
    assert report["summary"]["error/fog"] == pytest.approx(sum(errors[2:]) / 2)
    assert "ts/ece" in report["cells"][0] and "mean/ts/ece" in report["summary"]
