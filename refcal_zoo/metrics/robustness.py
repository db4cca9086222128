"""Robustness: every metric per CIFAR-10-C-style corruption and severity, and the mean corruption error."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .suite import evaluate_with_temperature

__all__ = ["evaluate_corruptions"]


def evaluate_corruptions(
    predict: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float | None = None,
    corruptions: Sequence[str] | None = None,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    seed: int = 0,
    train_class_counts: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Evaluate ``predict`` (uint8 images -> logits) on clean and corrupted copies of a test set.

    Returns ``{"clean": metrics, "cells": [{"corruption", "severity", **metrics}, ...], "summary": {...}}`` where
    the summary holds ``mean_corruption_error`` (the error rate averaged over every corruption x severity cell,
    unnormalised, as the RefCal release reports it; not ``mce``, the metric suite's maximum calibration error),
    ``error/<corruption>`` (averaged over severities) and
    ``mean/<key>`` (every metric averaged over the cells). Corruptions are drawn reproducibly from ``seed``.
    """
    from ..data.corruptions import CORRUPTIONS, corrupt

    names = list(corruptions) if corruptions else list(CORRUPTIONS)
    y = labels.numpy()

    def metrics_of(x: torch.Tensor) -> dict[str, float]:
        logits = predict(x).double().cpu().numpy()
        return evaluate_with_temperature(logits, y, temperature, train_class_counts=train_class_counts)

    clean = metrics_of(images)
    cells = []
    for i, name in enumerate(names):
        for severity in severities:
            g = torch.Generator().manual_seed(seed * 1000 + i * 10 + int(severity))
            cells.append({"corruption": name, "severity": int(severity),
                          **metrics_of(corrupt(images, name, severity, generator=g))})
    keys = [k for k in clean if k != "n" and "/" not in k or k.startswith("ts/") and k.count("/") == 1]
    summary: dict[str, float] = {"mean_corruption_error": sum(1 - c["accuracy"] for c in cells) / len(cells)}
    for name in names:
        own = [c for c in cells if c["corruption"] == name]
        summary[f"error/{name}"] = sum(1 - c["accuracy"] for c in own) / len(own)
    for k in keys:
        vals = [c[k] for c in cells if c.get(k) == c.get(k)]  # skip nan
        summary[f"mean/{k}"] = sum(vals) / len(vals) if vals else float("nan")
    return {"clean": clean, "cells": cells, "summary": summary}
