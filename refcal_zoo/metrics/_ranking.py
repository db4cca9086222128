"""Shared sort of the top-label confidence, from which the rank-based metrics are read off.

One stable ascending argsort of the confidence gives, via prefix counts over groups of *tied* confidences,
exact tie-aware values of: misclassification AUROC, AUPR-error, FPR@95%TPR, AURC / E-AURC and the
risk-coverage curve, plus the equal-mass ECE. Tied confidences are always treated as one threshold, so no
result depends on the (arbitrary) order of tied samples - the same convention as scikit-learn's ROC/PR code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._sort import stable_argsort_nonneg


@dataclass
class ConfidenceRanking:
    """Top-label confidences sorted ascending (stable), with tie groups and prefix counts of correct ones."""

    conf_sorted: np.ndarray  # (N,) float64, ascending
    correct_sorted: np.ndarray  # (N,) bool, same order
    starts: np.ndarray  # (G,) start index of each group of equal confidence
    ends: np.ndarray  # (G,) exclusive end index of each group
    cum_correct: np.ndarray  # (N+1,) int64, cum_correct[i] = number of correct among the i lowest

    @property
    def n(self) -> int:
        return int(self.conf_sorted.shape[0])

    @property
    def n_correct(self) -> int:
        return int(self.cum_correct[-1])

    @property
    def n_error(self) -> int:
        return self.n - self.n_correct


def rank_confidence(conf: np.ndarray, correct: np.ndarray) -> ConfidenceRanking:
    """Stable ascending sort of ``conf`` with tie groups and prefix counts of correct predictions."""
    order = stable_argsort_nonneg(conf)  # == np.argsort(conf, kind="stable"), faster
    cs = conf[order]
    cc = correct[order]
    n = cs.shape[0]
    new_group = np.empty(n, dtype=bool)
    new_group[0] = True
    np.not_equal(cs[1:], cs[:-1], out=new_group[1:])
    starts = np.flatnonzero(new_group)
    ends = np.append(starts[1:], n)
    cum = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(cc, out=cum[1:])
    return ConfidenceRanking(cs, cc, starts, ends, cum)


def auroc_correct_vs_error(r: ConfidenceRanking) -> float:
    """P(conf of a correct sample > conf of an error) + 0.5 P(tie); nan if a class is missing."""
    n_c, n_e = r.n_correct, r.n_error
    if n_c == 0 or n_e == 0:
        return float("nan")
    c_before = r.cum_correct[r.starts].astype(np.float64)
    c_in = r.cum_correct[r.ends] - r.cum_correct[r.starts]
    e_in = (r.ends - r.starts) - c_in
    u = np.sum(e_in * (n_c - c_before - 0.5 * c_in))
    return float(u / (float(n_c) * float(n_e)))


def average_precision_of_errors(r: ConfidenceRanking) -> float:
    """``average_precision_score(1 - correct, -conf)``: errors are positives, low confidence ranks first."""
    n_e = r.n_error
    if n_e == 0 or r.n_correct == 0:
        return float("nan")
    # thresholds = distinct confidences ascending (score -conf descending); "predicted error" = conf <= thr
    pos = r.ends
    fp = r.cum_correct[pos]
    tp = pos - fp
    precision = tp / pos
    recall = tp / n_e
    d_recall = np.diff(recall, prepend=0.0)
    return float(np.sum(d_recall * precision))


def fpr_at_tpr(r: ConfidenceRanking, tpr_level: float = 0.95) -> float:
    """FPR at the first ROC threshold (confidence descending) whose TPR >= ``tpr_level``.

    Positives are correct predictions (score = confidence) as in ``roc_curve(correct, conf)``; since FPR is
    non-decreasing along the curve this is also the smallest FPR among operating points with TPR >= level.
    """
    n_c, n_e = r.n_correct, r.n_error
    if n_c == 0 or n_e == 0:
        return float("nan")
    c_below = r.cum_correct[r.starts]  # correct with conf < group's conf
    tps = (n_c - c_below).astype(np.float64)  # correct with conf >= group's conf
    fps = (n_e - (r.starts - c_below)).astype(np.float64)
    tpr = tps / n_c
    ok = np.flatnonzero(tpr >= tpr_level)  # tpr decreases with the group index (ascending conf)
    g = ok[-1]  # highest threshold that reaches the level
    return float(fps[g] / n_e)


def risk_coverage(r: ConfidenceRanking) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coverage, selective risk and threshold at each distinct confidence, by increasing coverage."""
    n, n_e = r.n, r.n_error
    s = r.starts[::-1]
    count_ge = n - s
    err_ge = n_e - (s - r.cum_correct[s])
    coverage = count_ge / n
    risk = err_ge / count_ge
    return coverage, risk, r.conf_sorted[s]


def aurc_tie_robust(r: ConfidenceRanking) -> float:
    """Area under the risk-coverage curve: risk at each distinct threshold x its coverage increment."""
    coverage, risk, _ = risk_coverage(r)
    d_cov = np.diff(coverage, prepend=0.0)
    return float(np.sum(d_cov * risk))


def excess_aurc(r: ConfidenceRanking, aurc_value: float) -> float:
    """``AURC - AURC*_disc``; rounding noise below 1e-12 is clipped so a perfect ranking gives exactly 0."""
    e = aurc_value - aurc_optimal_discrete(r.n, r.n_correct)
    return 0.0 if abs(e) < 1e-12 else float(e)


def aurc_optimal_discrete(n: int, n_correct: int) -> float:
    """AURC of the ideal ranking (all correct first): ``(1/N) sum_{i=n_c+1..N} (i - n_c)/i``."""
    if n_correct >= n:
        return 0.0
    i = np.arange(n_correct + 1, n + 1, dtype=np.float64)
    return float(np.sum((i - n_correct) / i) / n)


def equal_mass_ece(r: ConfidenceRanking, n_bins: int) -> float:
    """Top-label ECE with ``n_bins`` equal-count bins: ``array_split`` of the stable confidence order."""
    n = r.n
    sizes = np.full(n_bins, n // n_bins, dtype=np.int64)
    sizes[: n % n_bins] += 1
    sizes = sizes[sizes > 0]
    bounds = np.concatenate(([0], np.cumsum(sizes)))
    conf_sum = np.add.reduceat(r.conf_sorted, bounds[:-1])
    corr_sum = r.cum_correct[bounds[1:]] - r.cum_correct[bounds[:-1]]
    return float(np.sum(np.abs(corr_sum - conf_sum)) / n)
