"""Shot groups of long-tailed evaluation: many / medium / few classes by their number of *training* samples.

Convention (Liu et al. 2019, OLTR; used by most long-tailed CIFAR papers): with thresholds ``(hi, lo) =
(100, 20)``, *many* = count > 100, *medium* = 20 <= count <= 100, *few* = count < 20. A group's metrics are
computed on the test samples whose **true** label belongs to the group (predictions keep all K classes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

SHOT_GROUPS: tuple[str, ...] = ("many", "medium", "few")


def _check_thresholds(thresholds: Sequence[float]) -> tuple[float, float]:
    if len(thresholds) != 2:
        raise ValueError(f"group_thresholds must be (hi, lo), got {thresholds!r}")
    hi, lo = float(thresholds[0]), float(thresholds[1])
    if hi < lo:
        raise ValueError(f"group_thresholds must be (hi, lo) with hi >= lo, got {thresholds!r}")
    return hi, lo


def shot_groups(
    train_class_counts: Sequence[int] | Any,
    *,
    thresholds: Sequence[float] = (100, 20),
    num_classes: int | None = None,
) -> dict[str, np.ndarray]:
    """Class indices of each shot group: ``{"many": [...], "medium": [...], "few": [...]}``.

    ``thresholds=(hi, lo)``: many = count > hi, medium = lo <= count <= hi, few = count < lo.
    ``num_classes`` (if given) must equal ``len(train_class_counts)``.
    """
    counts = np.asarray(train_class_counts)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"train_class_counts must be a non-empty 1-D sequence, got shape {counts.shape}")
    if counts.dtype.kind not in "iuf" or not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError("train_class_counts must contain finite non-negative numbers")
    if num_classes is not None and counts.size != num_classes:
        raise ValueError(
            f"train_class_counts has {counts.size} entries but the predictions have K={num_classes} classes"
        )
    hi, lo = _check_thresholds(thresholds)
    return {
        "many": np.flatnonzero(counts > hi),
        "medium": np.flatnonzero((counts >= lo) & (counts <= hi)),
        "few": np.flatnonzero(counts < lo),
    }


def group_masks(
    labels: np.ndarray, train_class_counts: Sequence[int] | Any, *, thresholds: Sequence[float] = (100, 20),
    num_classes: int | None = None,
) -> dict[str, np.ndarray]:
    """Boolean sample masks (by true label) for each shot group."""
    groups = shot_groups(train_class_counts, thresholds=thresholds, num_classes=num_classes)
    k = num_classes if num_classes is not None else len(np.asarray(train_class_counts))
    out = {}
    for name, classes in groups.items():
        member = np.zeros(k, dtype=bool)
        member[classes] = True
        out[name] = member[labels]
    return out
