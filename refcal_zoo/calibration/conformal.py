"""Split conformal prediction: label sets with a finite-sample coverage guarantee, overall or per class.

Fit on held-out *calibration* logits (the validation split; never test), then ``predict_sets`` returns, for each
new image, the boolean mask of the labels whose non-conformity score is at most the fitted threshold ``qhat``.
For exchangeable calibration and test data, ``P(y in C(x)) >= 1 - alpha`` (Vovk et al. 2005; Angelopoulos & Bates,
"A Gentle Introduction to Conformal Prediction", 2021); with ``classwise=True`` (class-conditional, "Mondrian")
the guarantee holds *for every class* separately, which is what a long-tailed model's tail classes need.

Scores (all from ``softmax(logits)``; pass temperature-scaled logits to use the calibrated probabilities):

* ``"thr"`` (LAC, Sadinle et al. 2019): ``s(x, y) = 1 - p_y(x)``; smallest sets on average.
* ``"aps"`` (Romano, Sesia & Candes, NeurIPS 2020): the total probability of the labels ranked at or above ``y``;
  ``randomized=True`` subtracts ``U * p_y(x)``, ``U ~ Uniform(0, 1)`` (exact coverage, random sets).
* ``"raps"`` (Angelopoulos, Bates, Malik & Jordan, ICLR 2021): APS ``+ lam * max(0, rank(y) - k_reg)`` with the
  1-based rank, which discourages long sets; defaults ``lam = 0.01, k_reg = 5`` are the Gentle Introduction's
  example values (choose ``k_reg`` below the number of classes).

Threshold: with ``n`` calibration scores, ``qhat`` is the ``k``-th smallest, ``k = ceil((n + 1)(1 - alpha))``,
i.e. the ``k / n`` empirical quantile taken at the higher order statistic (``np.quantile(s, k / n,
method="inverted_cdf")``). NumPy's ``method="higher"`` used in the Gentle Introduction's code returns the next
order statistic for most ``n`` (one point more conservative); both are valid. If ``k > n`` (``n < 1/alpha - 1``)
no finite threshold gives the guarantee and ``qhat = inf``: every label (classwise: that class) is always
included. With ties-free scores coverage is also at most ``1 - alpha + 1 / (n + 1)``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

__all__ = ["ConformalPredictor", "conformal_quantile", "conformal_report", "conformal_scores", "softmax_np"]

Score = Literal["thr", "aps", "raps"]
SCORES: tuple[str, ...] = ("thr", "aps", "raps")


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu").numpy()
    return np.asarray(x)


def _check_logits(logits: Any, what: str = "logits") -> np.ndarray:
    z = _as_numpy(logits)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"{what} must be 2-D [N, K] with K >= 2, got shape {z.shape}")
    if z.dtype.kind not in "fiu":
        raise ValueError(f"{what} must be numeric, got dtype {z.dtype}")
    z = z.astype(np.float64)
    if not np.all(np.isfinite(z)):
        raise ValueError(f"{what} contain NaN or inf; check the model outputs")
    return z


def _check_labels(labels: Any, n: int, k: int) -> np.ndarray:
    y = _as_numpy(labels)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"labels must be 1-D with {n} entries (one per row of logits), got shape {y.shape}")
    if y.dtype.kind not in "iu":
        raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
    if n and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"labels must lie in [0, {k - 1}], got values in [{y.min()}, {y.max()}]")
    return y.astype(np.int64)


def softmax_np(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (max-subtracted)."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def conformal_scores(
    probs: np.ndarray, score: Score = "thr", *, lam: float = 0.01, k_reg: int = 5, u: np.ndarray | None = None
) -> np.ndarray:
    """Non-conformity scores ``s(x, y)`` of **every** label, ``[N, K]`` (low = conforming).

    ``u`` (``[N]`` in ``[0, 1)``) randomises APS/RAPS: ``s -= u * p_y``; ``None`` = deterministic (``u = 0``).
    Ties in probability are ranked by class index (stable sort), the same for calibration and prediction.
    """
    if score == "thr":
        return 1.0 - probs
    if score not in ("aps", "raps"):
        raise ValueError(f"unknown conformal score {score!r}; choose one of {', '.join(SCORES)}")
    order = np.argsort(-probs, axis=1, kind="stable")  # labels from most to least probable
    sorted_p = np.take_along_axis(probs, order, axis=1)
    cum = np.cumsum(sorted_p, axis=1)  # mass of the labels ranked at or above each position
    if score == "raps":
        rank = np.arange(1, probs.shape[1] + 1, dtype=np.float64)  # 1-based rank o(x, y)
        cum = cum + lam * np.maximum(0.0, rank - k_reg)[None, :]
    if u is not None:
        cum = cum - u[:, None] * sorted_p
    out = np.empty_like(cum)
    np.put_along_axis(out, order, cum, axis=1)  # back to class order
    return out


def conformal_quantile(scores: np.ndarray, alpha: float) -> float:
    """The split-conformal threshold: the ``ceil((n + 1)(1 - alpha))``-th smallest score; ``inf`` if that rank
    exceeds ``n`` (too few calibration points for level ``1 - alpha``)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    n = s.size
    k = math.ceil((n + 1) * (1.0 - alpha) - 1e-12)  # guard (n + 1)(1 - alpha) landing a hair above an integer
    if n == 0 or k > n:
        return math.inf
    return float(np.partition(s, k - 1)[k - 1])


class ConformalPredictor:
    """Split conformal prediction sets for a classifier's logits (see the module docstring for the guarantee).

    Example::

        cp = ConformalPredictor(alpha=0.1, score="aps", classwise=True).fit(val_logits, val_labels)
        sets = cp.predict_sets(test_logits)        # bool [N, K]; sets.sum(1) = set sizes

    ``classwise=True`` fits one threshold per class from that class's calibration points (scores of the true
    label). A class with fewer than ``1/alpha - 1`` calibration points (e.g. < 19 at alpha 0.05, < 9 at 0.1)
    gets ``qhat = inf`` and is then in *every* set: the guarantee still holds but the sets grow; such classes are
    listed in ``always_included_`` and reported with a warning. Fitted attributes: ``qhat_`` (a float, or a
    ``[K]`` array when classwise), ``n_cal_`` (``[K]`` calibration points per class), ``num_classes_``.
    ``randomized`` (APS/RAPS only) draws ``U`` from ``np.random.default_rng(seed)``; deterministic by default.
    """

    def __init__(self, alpha: float = 0.1, score: Score = "thr", classwise: bool = False, *, lam: float = 0.01,
                 k_reg: int = 5, randomized: bool = False, seed: int | None = 0) -> None:
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0.0 < float(alpha) < 1.0:
            raise ValueError(f"alpha must be a number in (0, 1), e.g. 0.1 for 90% coverage; got {alpha!r}")
        if score not in SCORES:
            raise ValueError(f"unknown conformal score {score!r}; choose one of {', '.join(SCORES)}")
        if lam < 0 or int(k_reg) < 0:
            raise ValueError(f"RAPS needs lam >= 0 and k_reg >= 0, got lam={lam}, k_reg={k_reg}")
        if randomized and score == "thr":
            raise ValueError("randomized=True applies to score='aps' or 'raps' only")
        self.alpha = float(alpha)
        self.score = score
        self.classwise = bool(classwise)
        self.lam = float(lam)
        self.k_reg = int(k_reg)
        self.randomized = bool(randomized)
        self._rng = np.random.default_rng(seed)
        self.qhat_: float | np.ndarray | None = None
        self.n_cal_: np.ndarray | None = None
        self.num_classes_: int | None = None
        self.always_included_: list[int] = []

    def __repr__(self) -> str:
        extra = f", lam={self.lam}, k_reg={self.k_reg}" if self.score == "raps" else ""
        return (f"ConformalPredictor(alpha={self.alpha}, score={self.score!r}, classwise={self.classwise}{extra}"
                f"{', randomized=True' if self.randomized else ''})")

    def scores(self, logits: Any) -> np.ndarray:
        """Scores ``s(x, y)`` of every label, ``[N, K]`` (randomised APS/RAPS draw fresh ``U``)."""
        z = _check_logits(logits)
        u = self._rng.random(z.shape[0]) if self.randomized else None
        return conformal_scores(softmax_np(z), self.score, lam=self.lam, k_reg=self.k_reg, u=u)

    def fit(self, logits: Any, labels: Any) -> ConformalPredictor:
        """Fit the threshold(s) on calibration logits ``[n, K]`` and labels ``[n]`` (held out from training)."""
        z = _check_logits(logits, "calibration logits")
        n, k = z.shape
        y = _check_labels(labels, n, k)
        if n == 0:
            raise ValueError("no calibration points; pass the validation logits and labels")
        true_scores = self.scores(z)[np.arange(n), y]
        self.num_classes_ = k
        self.n_cal_ = np.bincount(y, minlength=k)
        if not self.classwise:
            self.qhat_ = conformal_quantile(true_scores, self.alpha)
            self.always_included_ = list(range(k)) if math.isinf(self.qhat_) else []
        else:
            self.qhat_ = np.array([conformal_quantile(true_scores[y == c], self.alpha) for c in range(k)])
            self.always_included_ = [int(c) for c in np.flatnonzero(np.isinf(self.qhat_))]
        if self.always_included_:
            need = math.ceil(1.0 / self.alpha - 1.0 - 1e-12)
            where = "" if not self.classwise else f" for {len(self.always_included_)} of {k} classes"
            warnings.warn(f"too few calibration points{where} for alpha={self.alpha} (need at least {need} per "
                          f"{'class' if self.classwise else 'fit'}); their threshold is infinite, so they are in "
                          "every prediction set", UserWarning, stacklevel=2)
        return self

    def predict_sets(self, logits: Any) -> np.ndarray:
        """Boolean ``[N, K]`` mask: ``True`` where label ``y`` is in the prediction set of row ``i``."""
        if self.qhat_ is None:
            raise RuntimeError("ConformalPredictor is not fitted; call .fit(val_logits, val_labels) first")
        z = _check_logits(logits)
        if z.shape[1] != self.num_classes_:
            raise ValueError(f"logits have {z.shape[1]} classes but the predictor was fitted on {self.num_classes_}")
        qhat = self.qhat_ if not self.classwise else np.asarray(self.qhat_)[None, :]
        return self.scores(z) <= qhat


def conformal_report(
    cal_logits: Any,
    cal_labels: Any,
    test_logits: Any,
    test_labels: Any,
    alpha: float = 0.1,
    train_class_counts: Sequence[int] | None = None,
    *,
    score: Score = "thr",
    classwise: bool = False,
    group_thresholds: Sequence[float] = (100, 20),
    **predictor_kwargs: Any,
) -> dict[str, float]:
    """Fit on ``cal_*``, evaluate on ``test_*``: coverage and mean set size overall, per shot group, worst class.

    Keys (fractions in [0, 1]): ``alpha``, ``qhat`` (classwise: the largest finite one), ``coverage``,
    ``set_size``, ``empty_sets`` (fraction of empty sets), ``min_class_coverage`` and ``min_class`` (the worst
    class by coverage among classes present in test), ``classes_always_included``; with ``train_class_counts``
    also ``many/coverage``, ``many/set_size`` (and ``medium/``, ``few/``), groups formed by training counts as in
    :func:`refcal_zoo.metrics.group_masks` (NaN for an empty group).
    """
    from ..metrics.groups import group_masks

    cp = ConformalPredictor(alpha, score=score, classwise=classwise, **predictor_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # reported below as classes_always_included
        cp.fit(cal_logits, cal_labels)
    z = _check_logits(test_logits, "test logits")
    y = _check_labels(test_labels, z.shape[0], z.shape[1])
    sets = cp.predict_sets(z)
    covered = sets[np.arange(len(y)), y]
    size = sets.sum(axis=1)
    k = z.shape[1]
    per_class = np.array([covered[y == c].mean() if np.any(y == c) else np.nan for c in range(k)])
    q = np.atleast_1d(np.asarray(cp.qhat_, dtype=np.float64))
    finite = q[np.isfinite(q)]
    out: dict[str, float] = {
        "alpha": float(alpha),
        "qhat": float(finite.max()) if finite.size else math.inf,
        "coverage": float(covered.mean()),
        "set_size": float(size.mean()),
        "empty_sets": float((size == 0).mean()),
        "min_class_coverage": float(np.nanmin(per_class)),
        "min_class": int(np.nanargmin(per_class)),
        "classes_always_included": len(cp.always_included_),
        "n_cal": int(len(_as_numpy(cal_labels))),
        "n": int(len(y)),
    }
    if train_class_counts is not None:
        for group, mask in group_masks(y, train_class_counts, thresholds=group_thresholds, num_classes=k).items():
            out[f"{group}/coverage"] = float(covered[mask].mean()) if mask.any() else math.nan
            out[f"{group}/set_size"] = float(size[mask].mean()) if mask.any() else math.nan
    return out
