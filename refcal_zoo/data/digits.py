"""The embedded default dataset: scikit-learn's handwritten digits (ships with scikit-learn, no download).

1,797 grey 8x8 images of 10 classes. We upsample them to 32x32 RGB (bilinear) so every model and augmentation
built for CIFAR applies unchanged, and fix held-out splits with a stratified draw of seed 0: 50 test and 20
validation images per class; the rest (104 to 113 per class) is the training pool that the long-tail profile
samples from.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DIGITS_MEAN", "DIGITS_STD", "load_digits_splits"]

TEST_PER_CLASS = 50
VAL_PER_CLASS = 20
# Per-channel statistics of the 32x32 digits training pool (computed once with load_digits_splits()).
DIGITS_MEAN = (0.3056, 0.3056, 0.3056)
DIGITS_STD = (0.3241, 0.3241, 0.3241)


def load_digits_splits(size: int = 32) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """Return ``({"train"|"validation"|"test": (uint8 images [N, 3, size, size], int64 labels)}, class_names)``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]  # [N, 1, 8, 8] in [0, 1]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous().numpy()
    y = bunch.target.astype(np.int64)

    rng = np.random.default_rng(0)
    parts: dict[str, list[np.ndarray]] = {"test": [], "validation": [], "train": []}
    for k in range(10):
        idx = rng.permutation(np.flatnonzero(y == k))
        parts["test"].append(idx[:TEST_PER_CLASS])
        parts["validation"].append(idx[TEST_PER_CLASS: TEST_PER_CLASS + VAL_PER_CLASS])
        parts["train"].append(idx[TEST_PER_CLASS + VAL_PER_CLASS:])
    splits = {}
    for name, chunks in parts.items():
        idx = np.sort(np.concatenate(chunks))
        splits[name] = (x[idx], y[idx])
    return splits, [str(k) for k in range(10)]
