"""Refinement: how well the confidence separates correct from wrong predictions (and classes from each other).

* ``auroc_misclassification``: ``roc_auc_score(correct, max_prob)`` - positives are *correct* predictions,
  ties get half credit. Invariant to any strictly increasing transform of the confidence.
* ``auroc_ovo``: macro one-vs-one multiclass AUROC of Hand & Till (2001) on the probability matrix, i.e.
  ``roc_auc_score(y, probs, multi_class="ovo")`` - what the RefCal paper reports. When some classes are absent
  (e.g. a shot-group subset) it is computed over the classes present, with the probabilities renormalised
  over those classes, which is exactly what scikit-learn requires for that call:
  ``roc_auc_score(y, p[:, present] / p[:, present].sum(1, keepdims=True), multi_class="ovo")``.
  With a single class present it is undefined (nan + :class:`UndefinedMetricWarning`).
* ``aupr_error``: ``average_precision_score(1 - correct, -max_prob)`` - errors are the positives.
* ``fpr_at_95tpr``: from ``roc_curve(correct, max_prob)`` (positives = correct), the FPR at the first
  threshold, scanning confidence downwards, whose TPR >= 0.95 (= the smallest FPR with TPR >= 0.95; taken on
  the full curve, ``drop_intermediate=False``). CRL's code uses ``argmin |TPR - 0.95|`` instead.

The misclassification metrics are undefined when all predictions are correct or all are wrong: they return
nan with an :class:`UndefinedMetricWarning` instead of raising. Implemented with exact tie-aware rank
statistics (one sort), agreeing with scikit-learn to rounding error.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ._classwise import ClasswiseStats, classwise_pass, ovo_from_pair_u
from ._inputs import InputKind, Prepared, UndefinedMetricWarning, prepare
from ._ranking import (
    ConfidenceRanking,
    auroc_correct_vs_error,
    average_precision_of_errors,
    fpr_at_tpr,
    rank_confidence,
)


def _warn_one_sided(r: ConfidenceRanking, what: str, stacklevel: int = 3) -> None:
    state = "correct" if r.n_correct == r.n else "wrong"
    warnings.warn(
        f"{what} is undefined because all {r.n} predictions are {state}; returning nan",
        UndefinedMetricWarning,
        stacklevel=stacklevel,
    )


def _ranking_metric(logits_or_probs: Any, labels: Any, inputs: InputKind, fn: Any, name: str) -> float:
    p = prepare(logits_or_probs, labels, inputs)
    r = rank_confidence(p.conf, p.correct)
    if r.n_correct in (0, r.n):
        _warn_one_sided(r, name, stacklevel=4)
        return float("nan")
    return fn(r)


def auroc_misclassification(logits_or_probs: Any, labels: Any, *, inputs: InputKind = "auto") -> float:
    """AUROC of the max-probability confidence for separating correct (positive) from wrong predictions."""
    return _ranking_metric(logits_or_probs, labels, inputs, auroc_correct_vs_error, "auroc_misclassification")


def aupr_error(logits_or_probs: Any, labels: Any, *, inputs: InputKind = "auto") -> float:
    """Average precision for detecting errors (positives) with score ``-max_prob``."""
    return _ranking_metric(logits_or_probs, labels, inputs, average_precision_of_errors, "aupr_error")


def fpr_at_95tpr(logits_or_probs: Any, labels: Any, *, inputs: InputKind = "auto") -> float:
    """FPR (wrong predictions accepted) at the first confidence threshold where TPR (correct kept) >= 0.95."""
    return _ranking_metric(logits_or_probs, labels, inputs, fpr_at_tpr, "fpr_at_95tpr")


def ovo_inputs_for_present_classes(p: Prepared) -> tuple[np.ndarray, np.ndarray]:
    """Restrict to the classes present in the labels and renormalise rows (scikit-learn's OvO requirement).

    Returns ``(probs_present, labels_remapped)``; rows whose present-class mass is 0 become uniform.
    """
    present = np.flatnonzero(np.bincount(p.labels, minlength=p.k) > 0)
    sub = p.columns_at(present)
    s = sub.sum(axis=1, keepdims=True)
    zero = s[:, 0] <= 0
    if zero.any():
        sub[zero] = 1.0
        s[zero] = present.size
    sub /= s
    remap = np.full(p.k, -1, dtype=np.intp)
    remap[present] = np.arange(present.size)
    return sub, remap[p.labels]


def _auroc_ovo(p: Prepared, stats: ClasswiseStats | None = None, stacklevel: int = 3) -> float:
    counts = np.bincount(p.labels, minlength=p.k)
    n_present = int(np.count_nonzero(counts))
    if n_present < 2:
        warnings.warn(
            "auroc_ovo is undefined with a single class present; returning nan",
            UndefinedMetricWarning,
            stacklevel=stacklevel,
        )
        return float("nan")
    if n_present == p.k:
        if stats is None or stats.pair_u is None:
            stats = classwise_pass(p, p.labels, n_bins=None, n_ranges=None, want_u=True)
        return ovo_from_pair_u(stats.pair_u, stats.class_counts)
    sub, y = ovo_inputs_for_present_classes(p)
    sub_stats = classwise_pass(sub, y, n_bins=None, n_ranges=None, want_u=True)
    return ovo_from_pair_u(sub_stats.pair_u, sub_stats.class_counts)


def auroc_ovo(logits_or_probs: Any, labels: Any, *, inputs: InputKind = "auto") -> float:
    """Macro one-vs-one multiclass AUROC (Hand & Till), = ``roc_auc_score(y, probs, multi_class="ovo")``.

    Over the classes present only, with probabilities renormalised over them (see module docstring).
    """
    return _auroc_ovo(prepare(logits_or_probs, labels, inputs))
