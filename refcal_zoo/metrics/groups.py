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
#: Frequency thirds: the most frequent 30% of classes, the rarest 30%, the rest (MiSLAS's CIFAR-10 head / medium /
#: tail split, 3 / 4 / 3). For datasets where every class is many-shot (CIFAR-10-LT at rho 10: the rarest class has
#: 500 training images), so that the shot groups cannot tell the head from the tail.
FREQUENCY_THIRDS: tuple[str, ...] = ("head", "mid", "tail")


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


def frequency_thirds(train_class_counts: Sequence[int] | Any) -> tuple[float, float]:
    """``(hi, lo)`` count thresholds that split the classes into :data:`FREQUENCY_THIRDS` in :func:`shot_groups`'
    terms (head = count > hi, tail = count < lo, mid = the rest), to pass as ``thresholds``; 30% of K rounds to at
    least one class, and a middle group is always kept (K = 2: head and the rest)."""
    ranked = sorted((float(c) for c in np.asarray(train_class_counts).ravel()), reverse=True)
    k = len(ranked)
    if k == 0:
        raise ValueError("train_class_counts must be a non-empty 1-D sequence")
    n_edge = max(1, round(0.3 * k))
    if 2 * n_edge >= k:
        n_edge = max(1, (k - 1) // 2)
    hi = ranked[min(n_edge, k - 1)]
    return hi, min(hi, ranked[max(k - n_edge - 1, 0)])
