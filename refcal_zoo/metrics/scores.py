"""Proper scores and accuracy: accuracy, negative log-likelihood (NLL) and the multiclass Brier score.

NLL and Brier are *proper* scoring rules: they reward calibration and refinement together, so they are the
headline numbers next to accuracy. All three are means over the whole evaluation set in float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._inputs import InputKind, Prepared, prepare


def _accuracy(p: Prepared) -> float:
    return float(np.mean(p.correct))


def _nll(p: Prepared) -> float:
    return float(-np.mean(p.log_prob_true))


def _brier(p: Prepared) -> float:
    # sum_k (p_k - 1[y=k])^2 = sum_k p_k^2 - 2 p_y + 1 (per-row terms computed in prepare's single pass)
    return float(np.mean(p.sum_sq - 2.0 * p.prob_true + 1.0))


def accuracy(logits_or_probs: Any, labels: Any, *, inputs: InputKind = "auto") -> float:
    """Top-1 accuracy: fraction of samples whose argmax class equals the label (in [0, 1])."""
    return _accuracy(prepare(logits_or_probs, labels, inputs))


def nll(logits_or_probs: Any, labels: Any, *, inputs: InputKind = "auto") -> float:
    """Negative log-likelihood ``mean_i -log p_i[y_i]`` (natural log).

    From logits it uses a float64 log-softmax (never ``log(softmax)``); from probabilities it uses
    ``-log(clip(p, eps, 1))`` with ``eps`` = float64 machine epsilon, like ``sklearn.metrics.log_loss``.
    """
    return _nll(prepare(logits_or_probs, labels, inputs))


def brier(logits_or_probs: Any, labels: Any, *, inputs: InputKind = "auto") -> float:
    """Multiclass Brier score ``mean_i sum_k (p_ik - 1[y_i = k])^2``, in [0, 2] (not divided by K)."""
    return _brier(prepare(logits_or_probs, labels, inputs))
