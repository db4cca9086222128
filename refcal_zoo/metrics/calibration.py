"""Calibration errors: how far predicted confidences are from observed frequencies.

* ``ece`` / ``mce``: top-label expected / maximum calibration error with equal-width bins (Guo et al. 2017).
  Bins are ``(lo, hi]``; a confidence of 0 goes to the first bin and a confidence of exactly 1.0 to the
  **last** bin (torchmetrics 1.9 puts it in a phantom extra bin, its issue #3510; netcal and the Guo et al.
  code agree with us).
* ``ece_equal_mass``: top-label ECE with equal-count bins: ``np.array_split`` of the stable confidence order,
  so every sample is counted and ties are split deterministically (by sample index).
* ``sce``: static / classwise ECE (Kull et al. 2019; Nixon et al. 2019): every class column of all samples
  is binned into equal-width bins against the indicator ``1[y = k]``; averaged over the K columns of the
  probability matrix (K is its width, not ``max(label) + 1``).
* ``ace``: adaptive calibration error of Nixon et al. 2019: classwise *and* equal-count ranges, no threshold.
  Not ``netcal.metrics.ACE`` (which is Neumann's average over top-label bins) nor Mukhoti's AdaECE.
* ``smece``: smooth ECE (Błasiok & Nakkiran 2023) of the top-label confidence with its automatic bandwidth.

All are computed in float64 on the whole evaluation set (never averaged over batches) and are in [0, 1].
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._classwise import classwise_pass
from ._inputs import InputKind, prepare
from ._ranking import equal_mass_ece, rank_confidence
from ._smooth import SmoothECE


def _check_bins(n_bins: int, name: str = "n_bins") -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"{name} must be a positive integer, got {n_bins!r}")
    return int(n_bins)


def bin_top_label(conf: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> tuple[np.ndarray, ...]:
    """Equal-width ``(lo, hi]`` binning of confidences.

    Returns ``(edges, counts, conf_sums, correct_sums)``; bin ``m`` holds ``edges[m] < conf <= edges[m+1]``,
    with confidence 0 in bin 0.
    """
    n_bins = _check_bins(n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    conf_sums = np.bincount(idx, weights=conf, minlength=n_bins)
    correct_sums = np.bincount(idx, weights=correct.astype(np.float64), minlength=n_bins)
    return edges, counts, conf_sums, correct_sums


def _ece_mce(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> tuple[float, float]:
    _, counts, conf_sums, correct_sums = bin_top_label(conf, correct, n_bins)
    ece_value = float(np.sum(np.abs(correct_sums - conf_sums)) / conf.shape[0])
    nz = counts > 0
    mce_value = float(np.max(np.abs(correct_sums[nz] - conf_sums[nz]) / counts[nz]))
    return ece_value, mce_value


def ece(logits_or_probs: Any, labels: Any, *, n_bins: int = 15, inputs: InputKind = "auto") -> float:
    """Top-label ECE ``sum_m |B_m|/N |acc(B_m) - conf(B_m)|``, ``n_bins`` equal-width ``(lo, hi]`` bins."""
    p = prepare(logits_or_probs, labels, inputs)
    return _ece_mce(p.conf, p.correct, n_bins)[0]


def mce(logits_or_probs: Any, labels: Any, *, n_bins: int = 15, inputs: InputKind = "auto") -> float:
    """Maximum calibration error: ``max |acc(B_m) - conf(B_m)|`` over the *non-empty* equal-width bins."""
    p = prepare(logits_or_probs, labels, inputs)
    return _ece_mce(p.conf, p.correct, n_bins)[1]


def ece_equal_mass(
    logits_or_probs: Any, labels: Any, *, n_bins: int = 15, inputs: InputKind = "auto"
) -> float:
    """Top-label ECE with equal-count bins (``array_split`` of the stable confidence order; all counted)."""
    p = prepare(logits_or_probs, labels, inputs)
    return equal_mass_ece(rank_confidence(p.conf, p.correct), _check_bins(n_bins))


def sce(logits_or_probs: Any, labels: Any, *, n_bins: int = 15, inputs: InputKind = "auto") -> float:
    """Static (classwise) ECE: per class, equal-width bins of ``p_ik`` of all samples vs ``1[y_i = k]``.

    Averaged over the K columns of the probability matrix.
    """
    p = prepare(logits_or_probs, labels, inputs)
    return classwise_pass(p, p.labels, n_bins=_check_bins(n_bins), n_ranges=None, want_u=False).sce


def ace(logits_or_probs: Any, labels: Any, *, n_ranges: int = 15, inputs: InputKind = "auto") -> float:
    """Adaptive calibration error (Nixon et al. 2019): ``1/(K R) sum_k sum_r |acc(r,k) - conf(r,k)|``.

    For each class the column ``p_.k`` is sorted (stable) and split into ``R`` equal-count ranges with
    ``np.array_split``; when ``N < R`` the empty ranges are skipped (average over the non-empty ones).
    """
    p = prepare(logits_or_probs, labels, inputs)
    n_ranges = _check_bins(n_ranges, "n_ranges")
    return classwise_pass(p, p.labels, n_bins=None, n_ranges=n_ranges, want_u=False).ace


def smooth_ece(
    f: Any, y: Any, *, sigma: float | None = None, return_sigma: bool = False
) -> float | tuple[float, float]:
    """Smooth ECE of binary predictions ``f`` in [0, 1] against outcomes ``y`` in {0, 1}.

    ``sigma=None`` uses the automatic bandwidth (fixed point ``σ* = smECE_σ*``); agrees with
    ``relplot.smECE`` / ``relplot.smECE_sigma``. ``return_sigma=True`` also returns the bandwidth used.
    """
    f = np.asarray(f, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if f.shape != y.shape or f.size == 0:
        raise ValueError(f"f and y must be non-empty and of equal length, got {f.shape} and {y.shape}")
    if not (np.isfinite(f).all() and f.min() >= 0.0 and f.max() <= 1.0):
        raise ValueError("f must contain finite values in [0, 1]")
    est = SmoothECE(f, y)
    if sigma is None:
        value, sigma = est.value()
    else:
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        value = est.at(float(sigma))
    return (value, float(sigma)) if return_sigma else value


def smece(logits_or_probs: Any, labels: Any, *, inputs: InputKind = "auto") -> float:
    """Smooth ECE (Błasiok & Nakkiran 2023) of top-label confidence vs correctness, automatic bandwidth."""
    p = prepare(logits_or_probs, labels, inputs)
    return SmoothECE(p.conf, p.correct).value()[0]
