"""Smooth ECE (Błasiok & Nakkiran, "Smooth ECE: Principled Reliability Diagrams via Kernel Smoothing", 2023).

An independent numpy re-implementation of the estimator of the reference package ``relplot`` 1.0.3
(``relplot.smECE``), reproducing its discretisation so that the numbers agree to ~1e-10:

* residuals ``r_i = f_i - y_i`` and ones are linearly splatted onto a grid of
  ``G = max(2000, round(20/σ))//2+1`` points on [0, 1] and convolved with a Gaussian of width σ sampled on
  that grid, reflected at 0 and 1;
* the smoothed residual and density are linearly interpolated onto
  ``t = linspace(0, 1, max(200, round(10/σ)))``;
  ``r̂(t) = Σ K r / (Σ K + 1e-4)``, ``δ̂(t) = Σ K + 1e-4``, and ``smECE_σ = Σ_t |r̂(t)| δ̂(t) / Σ_t δ̂(t)``;
* the bandwidth is the fixed point ``σ* = smECE_σ*``, found by 10 bisection steps on (0, 1] with predicate
  ``σ < 0.001 or σ < smECE_σ``; the upper end of the final bracket is used (so ``σ* ≳ smECE``).

Splats are cached per grid size (the grid is the same for all σ >= 0.01) and large grids use FFT convolution,
which makes the whole bisection cost about two ``bincount`` passes over the data.
"""

from __future__ import annotations

import math

import numpy as np

_SMECE_EPS = 1e-4  # density floor inside the estimator
_MIN_MESH = 200  # relplot.config.smECE_mesh_pts


class SmoothECE:
    """Kernel-smoothed calibration of binary predictions ``f`` in [0, 1] against outcomes ``y`` in {0, 1}."""

    def __init__(self, f: np.ndarray, y: np.ndarray) -> None:
        self.f = np.asarray(f, dtype=np.float64)
        self.r = self.f - np.asarray(y, dtype=np.float64)
        self._splats: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _splat(self, g: int) -> tuple[np.ndarray, np.ndarray]:
        """Linear splat of (residual, 1) onto g grid points (as ``relplot.kernels.smooth_round_to_grid``)."""
        if g not in self._splats:
            pos = self.f * (g - 1)
            idx = pos.astype(np.int64).clip(0, g - 2)
            frac = pos - idx
            w_lo, w_hi = 1.0 - frac, frac
            ones = np.bincount(idx, weights=w_lo, minlength=g)
            ones += np.bincount(idx + 1, weights=w_hi, minlength=g)
            res = np.bincount(idx, weights=w_lo * self.r, minlength=g) + np.bincount(
                idx + 1, weights=w_hi * self.r, minlength=g
            )
            self._splats[g] = (res, ones)
        return self._splats[g]

    @staticmethod
    def _reflected_convolve(values: np.ndarray, sigma: float, full_support: bool = False) -> np.ndarray:
        """Convolve grid values with a Gaussian, data reflected at 0 and 1.

        ``full_support=False`` is relplot's kernel, sampled only on offsets [-0.5, 0.5] (defines smECE);
        ``True`` samples it on [-1, 1] so wide bandwidths give a smooth curve (used for plotting).
        """
        g = values.shape[0]
        ext = np.concatenate([values[::-1][:-1], values, values[::-1][1:]])
        d = np.linspace(-1.0, 1.0, 2 * g - 1) if full_support else np.linspace(0.0, 1.0, g) - 0.5
        ker = np.exp(-d * d / (2.0 * sigma * sigma)) / (math.sqrt(2.0 * math.pi) * sigma)
        m = ker.shape[0]
        if m <= 4001:
            full = np.convolve(ext, ker, "valid")
        else:  # large grids (sigma < 0.005): FFT convolution, identical up to rounding
            size = ext.shape[0] + m - 1
            nfft = 1 << (size - 1).bit_length()
            full = np.fft.irfft(np.fft.rfft(ext, nfft) * np.fft.rfft(ker, nfft), nfft)[m - 1 : ext.shape[0]]
        return full if full_support else full[g // 2 : g // 2 + g]

    @staticmethod
    def _interpolate(t: np.ndarray, y: np.ndarray) -> np.ndarray:
        m = y.shape[0]
        step = 1.0 / (m - 1)
        idx = (t * (m - 1)).astype(np.int64).clip(0, m - 2)
        res = (t - idx * step) / step
        return y[idx] * (1.0 - res) + y[idx + 1] * res

    def curve(
        self, sigma: float, n_eval: int | None = None, full_support: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Evaluation grid ``t``, smoothed residual ``r̂(t)`` and smoothed density ``δ̂(t)`` at bandwidth σ."""
        if n_eval is None:
            n_eval = max(round(10 / sigma), _MIN_MESH)
        t = np.linspace(0.0, 1.0, n_eval)
        g = max(2000, round(20 / sigma)) // 2 + 1
        res, ones = self._splat(g)
        num = self._interpolate(t, self._reflected_convolve(res, sigma, full_support))
        dens = self._interpolate(t, self._reflected_convolve(ones, sigma, full_support)) + _SMECE_EPS
        return t, num / dens, dens

    def at(self, sigma: float) -> float:
        """smECE at a fixed bandwidth σ."""
        _, rs, dens = self.curve(sigma)
        return float(np.sum(np.abs(rs) * dens) / np.sum(dens))

    def bandwidth(self, eps: float = 0.001, refine: int = 10) -> float:
        """Fixed point σ* = smECE_σ* by bisection (upper bracket), as ``relplot.smECE``."""

        def ok(alpha: float) -> bool:
            return alpha < eps or alpha < self.at(alpha)

        if ok(1.0):
            return 1.0
        hi, lo = 1.0, 0.0
        for _ in range(refine):
            mid = (hi + lo) / 2
            if ok(mid):
                lo = mid
            else:
                hi = mid
        return hi

    def value(self) -> tuple[float, float]:
        """(smECE, σ*) with the automatic bandwidth."""
        sigma = self.bandwidth()
        return self.at(sigma), sigma
