"""Selective classification: risk-coverage curve, AURC and E-AURC.

Geifman & El-Yaniv 2017; Geifman, Uziel & El-Yaniv 2019.

Rejecting the least confident samples first, the selective risk at coverage c is the error rate among the
kept samples. **Tie-robust:** the curve is evaluated only at *distinct* confidence thresholds (a group of
tied confidences is accepted or rejected together) and each risk is weighted by the coverage it adds, so
nothing depends on the order of tied samples (which matters when many softmax confidences saturate at 1.0).
Without ties this equals the usual per-sample ``AURC = (1/N) sum_i risk_i``.

``E-AURC = AURC - AURC*`` uses the **exact discrete optimum** ``AURC* = (1/N) sum_{i=n_c+1..N} (i - n_c)/i``
(all correct predictions ranked first), not the continuous approximation ``r + (1 - r) ln(1 - r)`` of the CRL
code; E-AURC is therefore >= 0 and 0 for a perfect ranking. Both are fractions (papers often report x1000).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._inputs import InputKind, prepare
from ._ranking import aurc_tie_robust, excess_aurc, rank_confidence, risk_coverage


def risk_coverage_curve(
    logits_or_probs: Any, labels: Any, *, inputs: InputKind = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """``(coverage, risk)`` arrays by increasing coverage, one point per distinct confidence threshold.

    ``coverage[j]`` = fraction of samples with confidence >= the j-th largest distinct confidence,
    ``risk[j]`` = error rate among them; the last point has coverage 1 and risk = 1 - accuracy.
    """
    p = prepare(logits_or_probs, labels, inputs)
    coverage, risk, _ = risk_coverage(rank_confidence(p.conf, p.correct))
    return coverage, risk


def aurc(logits_or_probs: Any, labels: Any, *, inputs: InputKind = "auto") -> float:
    """Area under the (tie-robust) risk-coverage curve of the max-probability confidence; lower is better."""
    p = prepare(logits_or_probs, labels, inputs)
    return aurc_tie_robust(rank_confidence(p.conf, p.correct))


def eaurc(logits_or_probs: Any, labels: Any, *, inputs: InputKind = "auto") -> float:
    """Excess AURC: ``AURC - AURC*`` with the exact discrete optimum for the observed number of errors."""
    p = prepare(logits_or_probs, labels, inputs)
    r = rank_confidence(p.conf, p.correct)
    return excess_aurc(r, aurc_tie_robust(r))
