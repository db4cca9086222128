"""Post-hoc temperature scaling (Guo, Pleiss, Sun, Weinberger, ICML 2017; reference notes A.13).

Protocol: collect the *validation* logits once, model in ``eval()`` mode, under ``torch.no_grad()``, fit
one scalar ``T`` on them, then report test metrics on ``softmax(test_logits / T)``. **Never fit on test.**
Scaling by ``T > 0`` never changes the argmax, so accuracy is unchanged.

Inputs must be **logits** (pre-softmax scores). Passing probabilities or log-probabilities instead cannot be
detected reliably and silently gives a meaningless ``T`` (gpleiss/temperature_scaling issue #29).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import numpy as np
import torch

__all__ = ["fit_temperature", "apply_temperature", "temperature_scaled_nll", "TEMPERATURE_GRID"]

#: Grid of the calibration-loss repositories (torrvision, MbLS, AdaFocal): 0.1, 0.2, ..., 10.0.
TEMPERATURE_GRID: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 101))


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu").numpy()
    return np.asarray(x)


def _check_inputs(val_logits: Any, val_labels: Any) -> tuple[np.ndarray, np.ndarray]:
    z = _as_numpy(val_logits)
    y = _as_numpy(val_labels)
    if z.ndim != 2:
        raise ValueError(f"logits must be 2-D [N, K], got shape {z.shape}")
    n, k = z.shape
    if n == 0:
        raise ValueError("empty validation set")
    if k < 2:
        raise ValueError(f"need at least 2 classes, got {k}")
    if not np.issubdtype(z.dtype, np.floating) and not np.issubdtype(z.dtype, np.integer):
        raise ValueError(f"logits must be numeric, got dtype {z.dtype}")
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"labels must be 1-D with {n} entries (one per logit row), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
    z = z.astype(np.float64)
    if not np.isfinite(z).all():
        raise ValueError("logits contain NaN or inf")
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"labels must lie in [0, {k - 1}], got range [{y.min()}, {y.max()}]")
    return z, y.astype(np.int64)


def _check_temperature(T: float) -> float:
    T = float(T)
    if not math.isfinite(T) or T <= 0:
        raise ValueError(f"temperature must be a finite positive number, got {T}")
    return T


def _log_softmax(z: np.ndarray) -> np.ndarray:
    zmax = z.max(axis=1, keepdims=True)
    return z - zmax - np.log(np.exp(z - zmax).sum(axis=1, keepdims=True))


def _nll_at_beta(beta: float, z: np.ndarray, y: np.ndarray) -> float:
    logp = _log_softmax(beta * z)
    return float(-logp[np.arange(z.shape[0]), y].mean())


def _check_bounds(bounds: tuple[float, float]) -> tuple[float, float]:
    lo, hi = (float(b) for b in bounds)
    if not (0 < lo < hi and math.isfinite(hi)):
        raise ValueError(f"bounds must satisfy 0 < T_min < T_max < inf, got {bounds}")
    return lo, hi


def _nll_optimum(z: np.ndarray, y: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    """``(beta, NLL)`` at the NLL-minimising inverse temperature ``beta = 1/T`` over ``T in [lo, hi]``: a bounded
    1-D search in float64 (the NLL is convex in ``beta``, so the optimum is unique)."""
    from scipy.optimize import minimize_scalar  # scipy comes with scikit-learn

    res = minimize_scalar(_nll_at_beta, bounds=(1.0 / hi, 1.0 / lo), args=(z, y), method="bounded",
                          options={"xatol": 1e-10, "maxiter": 1000})
    return float(res.x), float(res.fun)


def _ece(conf: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE, equal-width bins ``(lo, hi]`` (confidence 1.0 in the last bin, 0 in the first)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    n = conf.shape[0]
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct.astype(np.float64), minlength=n_bins)
    return float(np.abs(conf_sum - acc_sum).sum() / n)  # sum_b (n_b/N) |conf_b - acc_b|


def fit_temperature(
    val_logits: Any,
    val_labels: Any,
    *,
    method: Literal["nll", "ece_grid"] = "nll",
    bounds: tuple[float, float] = (0.05, 20.0),
) -> float:
    """Fit the temperature ``T`` on **validation** logits (never fit on test). Returns ``T`` as a float.

    Args:
        val_logits: ``[N, K]`` logits (torch tensor or array), collected in ``eval()`` mode. Must be logits,
            not probabilities -- that mistake is undetectable and yields a meaningless ``T``.
        val_labels: ``[N]`` integer class indices.
        method: ``"nll"`` (default, Guo et al.): minimise the validation NLL over ``beta = 1/T`` in float64 by
            a bounded 1-D search (``scipy.optimize.minimize_scalar(method="bounded")``; the NLL is convex in
            ``beta``, so the optimum is unique). ``"ece_grid"`` (torrvision / MbLS / AdaFocal protocol): pick
            ``T`` from :data:`TEMPERATURE_GRID` (0.1, 0.2, ..., 10.0, restricted to ``bounds``) minimising the
            validation top-label ECE (15 equal-width ``(lo, hi]`` bins); the smallest ``T`` wins ties.
        bounds: ``(T_min, T_max)``, ``0 < T_min < T_max``. A ``UserWarning`` is issued when the NLL optimum
            sits on a bound (then the true optimum lies outside; widen the bounds or check the inputs).

    Raises:
        ValueError: wrong shapes, empty input, NaN/inf logits, non-integer or out-of-range labels, bad bounds
            or an unknown method.
    """
    z, y = _check_inputs(val_logits, val_labels)
    lo, hi = _check_bounds(bounds)

    if method == "nll":
        T = 1.0 / _nll_optimum(z, y, lo, hi)[0]
        if min(abs(T - lo) / lo, abs(T - hi) / hi) < 1e-4:
            warnings.warn(
                f"fit_temperature: NLL optimum T={T:.4g} is at the search bound {bounds}; "
                "the unconstrained optimum lies outside (are these really logits?)",
                stacklevel=2,
            )
        return T

    if method == "ece_grid":
        grid = [t for t in TEMPERATURE_GRID if lo <= t <= hi]
        if not grid:
            raise ValueError(f"no grid temperature (0.1 ... 10.0) lies within bounds {bounds}")
        correct = z.argmax(axis=1) == y
        zc = z - z.max(axis=1, keepdims=True)
        best_t, best_ece = grid[0], math.inf
        for t in grid:
            conf = 1.0 / np.exp(zc / t).sum(axis=1)  # max softmax probability of z / t
            e = _ece(conf, correct)
            if e < best_ece:
                best_t, best_ece = t, e
        return float(best_t)

    raise ValueError(f"method must be 'nll' or 'ece_grid', got {method!r}")


def temperature_scaled_nll(val_logits: Any, val_labels: Any, *, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The validation NLL after the best temperature: ``min_T NLL(softmax(z / T), y)`` over ``bounds``.

    Temperature scaling removes the part of the loss a single scalar can fix (global over/under-confidence), so
    what remains estimates the *refinement* error (Berta, Holzmueller, Jordan and Bach, "Rethinking Early
    Stopping: Refine, Then Calibrate", 2025). Selecting the epoch on it instead of on the raw NLL stops the
    selection from preferring an over-regularised early epoch merely because it is better calibrated: the
    calibration is fitted afterwards anyway. Same inputs and errors as :func:`fit_temperature` (``"nll"``); an
    optimum on a bound is not warned about here (the value is still the minimum over ``bounds``).
    """
    z, y = _check_inputs(val_logits, val_labels)
    lo, hi = _check_bounds(bounds)
    return _nll_optimum(z, y, lo, hi)[1]


def apply_temperature(logits: Any, T: float) -> Any:
    """Return ``logits / T`` (same type; tensors keep dtype/device and stay differentiable); softmax it next.

    ``T`` must be finite and > 0. The argmax of every row is unchanged.
    """
    T = _check_temperature(T)
    if isinstance(logits, torch.Tensor):
        return logits / T
    return np.asarray(logits, dtype=np.float64) / T
