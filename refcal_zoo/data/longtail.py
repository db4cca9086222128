"""Long-tailed training subsets (Cao et al. 2019, LDAM-DRW's exponential profile) and the validation split.

``n_k = int(n_max * (1/rho) ** (k / (K - 1)))`` for classes k = 0..K-1 in ascending label order (class 0 is the
head). Images are drawn exactly as LDAM-DRW's ``imbalance_cifar.py`` does: one legacy NumPy RNG seeded once,
then per class: shuffle that class's indices and keep the first ``n_k``. With seed 0 this reproduces the
published CIFAR-10-LT / CIFAR-100-LT subsets (CIFAR-10, rho 10: 20,431 images; rho 100: 12,406).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError

__all__ = ["LongTailSplit", "indices_sha256", "longtail_counts", "make_longtail_split", "shot_group"]


def longtail_counts(n_max: int, num_classes: int, rho: float) -> list[int]:
    """Per-class image counts of the exponential profile (head first)."""
    if rho < 1:
        raise DataError(f"imbalance ratio rho must be >= 1 (n_max / n_min), got {rho}; use rho=1 for balanced data")
    if n_max < 1 or num_classes < 1:
        raise DataError(f"n_max and num_classes must be positive, got n_max={n_max}, num_classes={num_classes}")
    if num_classes == 1:
        return [int(n_max)]
    factor = 1.0 / rho  # written as LDAM-DRW does, so float rounding (and int truncation) matches it exactly
    return [int(n_max * factor ** (k / (num_classes - 1.0))) for k in range(num_classes)]


def indices_sha256(indices: np.ndarray | list[int]) -> str:
    """sha256 of the sorted indices as little-endian int64: a fingerprint of a subset, independent of order."""
    arr = np.sort(np.asarray(indices, dtype=np.int64)).astype("<i8")
    return hashlib.sha256(arr.tobytes()).hexdigest()


@dataclass
class LongTailSplit:
    """Indices into the source training split: the long-tailed training subset and the validation split."""

    train_indices: np.ndarray
    val_indices: np.ndarray
    profile_counts: list[int]  # n_k of the profile
    train_counts: list[int]  # per-class counts actually in train (profile minus any validation shortfall)
    val_counts: list[int]
    rho: float
    seed: int
    n_max: int
    moved_to_val: dict[int, int] = field(default_factory=dict)  # class -> images taken out of the LT subset

    def record(self) -> dict:
        """JSON-ready description (written to ``lt_indices.json``)."""
        return {
            "profile": "exponential (Cao et al. 2019, LDAM-DRW)",
            "rho": self.rho,
            "seed": self.seed,
            "n_max": self.n_max,
            "profile_counts": self.profile_counts,
            "train_counts": self.train_counts,
            "val_counts": self.val_counts,
            "moved_to_val": {str(k): v for k, v in self.moved_to_val.items()},
            "train_sha256": indices_sha256(self.train_indices),
            "val_sha256": indices_sha256(self.val_indices),
            "train_indices": self.train_indices.tolist(),
            "val_indices": self.val_indices.tolist(),
        }


def make_longtail_split(
    labels: np.ndarray,
    num_classes: int,
    *,
    rho: float,
    seed: int = 0,
    n_max: int | None = None,
    val_per_class: int = 0,
    class_names: list[str] | None = None,
) -> LongTailSplit:
    """Draw the LT training subset (LDAM-DRW procedure) and a balanced validation split disjoint from it.

    Validation images come from each class's images that were *not* drawn into the LT subset, in the same
    shuffled order. When a class has fewer unused images than ``val_per_class`` (the head class, whenever
    ``n_max`` equals its size, as for CIFAR), the shortfall is moved out of that class's LT selection (its
    last-drawn images), so validation stays balanced and disjoint from training; ``moved_to_val`` records it.
    With ``val_per_class=0`` the subset is exactly the published one. ``rho=1`` without ``n_max`` keeps every
    image in file order (e.g. a dataset exported with ``refcal-zoo dataset export`` is already long-tailed).
    A class left with no training image is a ``DataError`` naming it (with ``class_names``) and the fix.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise DataError("labels must be a non-empty 1-D array")
    if val_per_class < 0:
        raise DataError(f"val_per_class must be >= 0, got {val_per_class}")
    def name(k: int) -> str:
        return f"class {k} ('{class_names[k]}')" if class_names is not None and k < len(class_names) else f"class {k}"

    class_idx = [np.flatnonzero(labels == k) for k in range(num_classes)]
    sizes = [len(ix) for ix in class_idx]
    if min(sizes) == 0:
        empty = [k for k, s in enumerate(sizes) if s == 0]
        raise DataError(f"classes {empty[:10]} have no training images (first: {name(empty[0])}); cannot build a "
                        "long-tailed subset: check dataset.label_column and dataset.train_split")
    keep_all = rho == 1 and n_max is None  # rho=1 without n_max: every image, in file order (no subsampling)
    n_max = int(n_max) if n_max is not None else (max(sizes) if keep_all else min(sizes))
    counts = list(sizes) if keep_all else longtail_counts(n_max, num_classes, rho)
    short = [(k, sizes[k], counts[k]) for k in range(num_classes) if sizes[k] < counts[k]]
    if short:
        k, have, need = short[0]
        raise DataError(f"{name(k)} has {have} training images but the profile asks for {need}; "
                        f"lower dataset.n_max (now {n_max})")
    if any(sizes[k] < val_per_class for k in range(num_classes)):
        raise DataError(f"dataset.val_per_class={val_per_class} exceeds the smallest class ({min(sizes)} images)")
    empty = [k for k in range(num_classes) if counts[k] < 1]
    if empty:
        raise DataError(f"{name(empty[0])} gets 0 training images (n_max={n_max}, rho={rho:g}: n_max / rho < 1); "
                        f"raise dataset.n_max to at least {int(np.ceil(rho))} or lower dataset.rho")

    rs = np.random.RandomState(seed)  # legacy RNG: same stream as np.random.seed(seed) in LDAM-DRW
    train, val, moved = [], [], {}
    for k in range(num_classes):
        idx = class_idx[k].copy()
        if not keep_all:
            rs.shuffle(idx)
        chosen, rest = idx[: counts[k]], idx[counts[k]:]
        take = rest[:val_per_class]
        missing = val_per_class - len(take)
        if missing > 0:
            moved[k] = missing
            take = np.concatenate([take, chosen[len(chosen) - missing:]])
            chosen = chosen[: len(chosen) - missing]
        if len(chosen) == 0:
            raise DataError(f"{name(k)} has {sizes[k]} images: after taking {val_per_class} for validation none is "
                            f"left for training; lower dataset.val_per_class or use a dataset with a validation split "
                            "(dataset.val_split)")
        train.append(chosen)
        val.append(take)
    return LongTailSplit(
        train_indices=np.concatenate(train),
        val_indices=np.concatenate(val),
        profile_counts=counts,
        train_counts=[len(t) for t in train],
        val_counts=[len(v) for v in val],
        rho=float(rho),
        seed=int(seed),
        n_max=n_max,
        moved_to_val=moved,
    )


def shot_group(train_count: int, many: int = 100, few: int = 20) -> str:
    """Shot group of a class by its training count: many (> 100), medium (20-100), few (< 20)."""
    return "many" if train_count > many else ("few" if train_count < few else "medium")
