"""Selective prediction: abstain when the top-label confidence is below a threshold chosen on validation.

``selective_threshold(val_logits, val_labels, max_risk)`` returns the confidence threshold ``t`` that accepts
the most validation images while their error rate (the *selective risk*) stays at most ``max_risk``: the
empirical point of the risk-coverage curve (Geifman & El-Yaniv, NeurIPS 2017, without their bound). Then
``selective_predict(logits, t)`` predicts the top label where ``max softmax >= t`` and ``-1`` (abstain) elsewhere.

The guarantee is **empirical**: the risk is met on the validation split it was chosen on; on new data from the
same distribution it holds approximately, with an error that shrinks like ``1 / sqrt(accepted validation
images)``. No high-probability bound is applied (Geifman & El-Yaniv's SGR or a Clopper-Pearson correction would
give one at the cost of coverage). Pass temperature-scaled logits to rank by calibrated confidence (the ranking,
hence the selection, is the same; only ``t``'s value changes).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from .conformal import _check_labels, _check_logits, softmax_np

__all__ = ["selective_predict", "selective_report", "selective_threshold"]


def _check_risk(max_risk: float) -> float:
    if not isinstance(max_risk, (int, float)) or isinstance(max_risk, bool) or not 0.0 <= float(max_risk) < 1.0:
        raise ValueError(f"max_risk must be a number in [0, 1), e.g. 0.05 for at most 5% errors; got {max_risk!r}")
    return float(max_risk)


def selective_threshold(val_logits: Any, val_labels: Any, max_risk: float) -> float:
    """The lowest confidence threshold whose accepted validation images have error rate ``<= max_risk``.

    Candidate thresholds are the distinct validation confidences (images with equal confidence are accepted or
    rejected together). Returns ``inf`` (always abstain) with a warning if even the most confident images exceed
    the risk; ``0.0``-like thresholds (the smallest confidence) mean the model never needs to abstain.
    """
    risk = _check_risk(max_risk)
    z = _check_logits(val_logits, "validation logits")
    y = _check_labels(val_labels, z.shape[0], z.shape[1])
    if z.shape[0] == 0:
        raise ValueError("no validation points; pass the validation logits and labels")
    p = softmax_np(z)
    conf = p.max(axis=1)
    wrong = (p.argmax(axis=1) != y).astype(np.float64)
    order = np.argsort(-conf, kind="stable")
    conf, wrong = conf[order], wrong[order]
    cum_err = np.cumsum(wrong)
    # cut only after the last image of each run of equal confidences
    last_of_tie = np.r_[conf[1:] != conf[:-1], True]
    accepted = np.arange(1, len(conf) + 1)
    ok = last_of_tie & (cum_err / accepted <= risk + 1e-12)
    if not ok.any():
        warnings.warn(f"no confidence threshold reaches selective risk <= {risk} on the validation split; the model "
                      "will abstain on every image", UserWarning, stacklevel=2)
        return math.inf
    return float(conf[np.flatnonzero(ok)[-1]])


def selective_predict(logits: Any, threshold: float) -> np.ndarray:
    """Top-label predictions ``[N]`` (int64), ``-1`` where ``max softmax < threshold`` (abstain)."""
    z = _check_logits(logits)
    p = softmax_np(z)
    pred = p.argmax(axis=1).astype(np.int64)
    pred[p.max(axis=1) < threshold] = -1
    return pred


def selective_report(val_logits: Any, val_labels: Any, test_logits: Any, test_labels: Any,
                     max_risk: float) -> dict[str, float]:
    """Choose the threshold on validation, report ``threshold``, ``val_coverage``, ``val_risk``, ``coverage``
    (fraction of test images answered) and ``risk`` (error rate among them; NaN if none answered)."""
    t = selective_threshold(val_logits, val_labels, max_risk)
    out: dict[str, float] = {"max_risk": float(max_risk), "threshold": t}
    for prefix, logits, labels in (("val_", val_logits, val_labels), ("", test_logits, test_labels)):
        z = _check_logits(logits)
        y = _check_labels(labels, z.shape[0], z.shape[1])
        pred = selective_predict(z, t)
        answered = pred >= 0
        out[f"{prefix}coverage"] = float(answered.mean())
        out[f"{prefix}risk"] = float((pred[answered] != y[answered]).mean()) if answered.any() else math.nan
    return out
