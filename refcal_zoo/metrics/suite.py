"""``evaluate_predictions``: every metric of the zoo on one evaluation set, as a flat ``{key: float}`` dict.

The keys are the contract shared by ``metrics.json``, model cards and the README (see :data:`METRIC_KEYS`
and :data:`METRIC_DEFINITIONS`). Everything is computed in float64 on the whole set; one sort of the
confidence and one sort per class column are shared between the metrics that need them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._classwise import classwise_pass, ovo_from_pair_u
from ._inputs import InputKind, Prepared, UndefinedMetricWarning, prepare
from ._ranking import (
    aurc_tie_robust,
    auroc_correct_vs_error,
    average_precision_of_errors,
    equal_mass_ece,
    excess_aurc,
    fpr_at_tpr,
    rank_confidence,
)
from ._smooth import SmoothECE
from .calibration import _check_bins, _ece_mce
from .groups import SHOT_GROUPS, group_masks
from .refinement import _auroc_ovo
from .scores import _accuracy, _brier, _nll

#: One-line definition of every key returned by :func:`evaluate_predictions` (fractions, never %).
METRIC_DEFINITIONS: dict[str, str] = {
    "accuracy": "top-1 accuracy",
    "nll": "negative log-likelihood, mean -log p(y) (nats; from log-softmax of the logits)",
    "brier": "multiclass Brier score, mean sum_k (p_k - 1[y=k])^2, in [0, 2]",
    "ece": "top-label expected calibration error, n_bins (default 15) equal-width (lo, hi] bins",
    "mce": "top-label maximum calibration error over non-empty equal-width bins",
    "ece_equal_mass": "top-label ECE with n_bins equal-count bins (array_split of the stable confidence order)",
    "sce": "static/classwise ECE: every class column in n_bins equal-width bins, mean over the K classes",
    "ace": "adaptive calibration error (Nixon et al. 2019): classwise, n_bins equal-count ranges per class",
    "smece": "smooth ECE (Blasiok & Nakkiran 2023) of the top-label confidence, automatic bandwidth",
    "auroc_misclassification": "AUROC of max-prob confidence separating correct from wrong predictions",
    "auroc_ovo": "macro one-vs-one multiclass AUROC (Hand & Till) over the classes present",
    "aupr_error": "average precision for detecting errors with score -max-prob",
    "fpr_at_95tpr": "FPR (errors accepted) at the first threshold keeping >= 95% of correct predictions",
    "aurc": "area under the risk-coverage curve (tie-robust), lower is better",
    "eaurc": "excess AURC: AURC minus its exact discrete optimum for the same error count",
}

#: The metric keys of :func:`evaluate_predictions`, in output order (``n`` = sample count is added too).
METRIC_KEYS: tuple[str, ...] = tuple(METRIC_DEFINITIONS)

_MISCLASSIFICATION_KEYS = ("auroc_misclassification", "aupr_error", "fpr_at_95tpr")


def _evaluate(p: Prepared, n_bins: int, where: str) -> dict[str, float]:
    out: dict[str, float] = {"accuracy": _accuracy(p), "nll": _nll(p), "brier": _brier(p)}
    out["ece"], out["mce"] = _ece_mce(p.conf, p.correct, n_bins)
    r = rank_confidence(p.conf, p.correct)
    out["ece_equal_mass"] = equal_mass_ece(r, n_bins)

    all_present = bool(np.all(np.bincount(p.labels, minlength=p.k) > 0))
    stats = classwise_pass(p, p.labels, n_bins=n_bins, n_ranges=n_bins, want_u=all_present)
    out["sce"], out["ace"] = stats.sce, stats.ace
    out["smece"] = SmoothECE(p.conf, p.correct).value()[0]

    if r.n_correct in (0, r.n):
        state = "correct" if r.n_correct == r.n else "wrong"
        warnings.warn(
            f"{where}all {r.n} predictions are {state}: "
            f"{', '.join(_MISCLASSIFICATION_KEYS)} are undefined (nan)",
            UndefinedMetricWarning,
            stacklevel=3,
        )
        for key in _MISCLASSIFICATION_KEYS:
            out[key] = float("nan")
    else:
        out["auroc_misclassification"] = auroc_correct_vs_error(r)
        out["aupr_error"] = average_precision_of_errors(r)
        out["fpr_at_95tpr"] = fpr_at_tpr(r, 0.95)
    if all_present:
        out["auroc_ovo"] = ovo_from_pair_u(stats.pair_u, stats.class_counts)
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out["auroc_ovo"] = _auroc_ovo(p)
        for w in caught:
            warnings.warn(f"{where}{w.message}", w.category, stacklevel=3)

    out["aurc"] = aurc_tie_robust(r)
    out["eaurc"] = excess_aurc(r, out["aurc"])
    result = {key: float(out[key]) for key in METRIC_KEYS}
    result["n"] = p.n
    return result


def evaluate_predictions(
    logits_or_probs: Any,
    labels: Any,
    *,
    train_class_counts: Sequence[int] | None = None,
    n_bins: int = 15,
    inputs: InputKind = "auto",
    group_thresholds: Sequence[float] = (100, 20),
) -> dict[str, float]:
    """All zoo metrics of one evaluation set as a flat dict (see :data:`METRIC_DEFINITIONS`).

    Args:
        logits_or_probs: ``(N, K)`` logits or probabilities (numpy, torch on any device, or lists).
        labels: ``(N,)`` integer labels in ``[0, K)``.
        train_class_counts: optional length-K training counts per class; adds ``many/<key>``,
            ``medium/<key>``, ``few/<key>`` and ``<group>/n`` computed on the test samples of each group
            (a group without test samples is omitted).
        n_bins: bins of the binned calibration errors (ECE, MCE, equal-mass ECE, SCE) and ranges of ACE.
        inputs: ``"auto"`` (probabilities only if every entry is in [0, 1] and rows sum to 1 within 1e-4,
            else logits), ``"logits"`` or ``"probs"``; pass it explicitly when you know.
        group_thresholds: ``(hi, lo)``: many = count > hi, medium = lo..hi inclusive, few = count < lo.

    Returns:
        ``{key: value}`` with every key of :data:`METRIC_KEYS` plus ``n`` (sample count, int); values are
        fractions in [0, 1] (NLL in nats, Brier in [0, 2]); undefined metrics are nan with a warning.

    Raises:
        ValueError: on malformed input (NaN/Inf, labels out of range, length mismatch, empty, wrong dims).
    """
    n_bins = _check_bins(n_bins)
    p = prepare(logits_or_probs, labels, inputs)
    masks = None
    if train_class_counts is not None:
        masks = group_masks(p.labels, train_class_counts, thresholds=group_thresholds, num_classes=p.k)
    result: dict[str, float] = dict(_evaluate(p, n_bins, ""))
    if masks is not None:
        for name in SHOT_GROUPS:
            mask = masks[name]
            if not mask.any():
                continue
            sub = _evaluate(p.subset(mask), n_bins, f"[{name} group] ")
            result.update({f"{name}/{key}": value for key, value in sub.items()})
    return result


def evaluate_with_temperature(
    logits: Any,
    labels: Any,
    temperature: float | None,
    *,
    train_class_counts: Sequence[int] | None = None,
    n_bins: int = 15,
    group_thresholds: Sequence[float] = (100, 20),
) -> dict[str, float]:
    """:func:`evaluate_predictions` of ``logits``, plus the same metrics of ``logits / temperature`` as
    ``ts/<key>`` when a temperature is given (the layout of ``metrics.json`` and the model cards)."""
    metrics = evaluate_predictions(logits, labels, train_class_counts=train_class_counts, n_bins=n_bins,
                                   inputs="logits", group_thresholds=group_thresholds)
    if temperature is not None:
        z = np.asarray(logits.detach().cpu().double() if hasattr(logits, "detach") else logits, dtype=np.float64)
        scaled = evaluate_predictions(z / float(temperature), labels, train_class_counts=train_class_counts,
                                      n_bins=n_bins, inputs="logits", group_thresholds=group_thresholds)
        metrics.update({f"ts/{k}": v for k, v in scaled.items() if k != "n" and not k.endswith("/n")})
    return metrics
