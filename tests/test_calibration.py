"""Temperature scaling: recovery of a known temperature, argmax invariance, ECE grid, input validation."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from refcal_zoo.calibration import TEMPERATURE_GRID, apply_temperature, fit_temperature, temperature_scaled_nll
from refcal_zoo.calibration.temperature import _ece


def synthetic(t_true: float, n: int, k: int = 10, seed: int = 0, scale: float = 4.0):
    """Logits z and labels drawn from softmax(z / t_true): the NLL-optimal temperature is ~t_true."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * scale
    zt = z / t_true
    p = np.exp(zt - zt.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    u = rng.random(n)[:, None]
    y = np.minimum((p.cumsum(1) < u).sum(1), k - 1)
    return z, y


def nll(z, y, t):
    zt = z / t
    m = zt.max(1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(zt - m).sum(1))
    return float(np.mean(lse - zt[np.arange(len(y)), y]))


@pytest.mark.parametrize("t_true", [0.5, 2.5])
def test_nll_recovers_known_temperature(t_true):
    z, y = synthetic(t_true, 100_000, seed=int(t_true * 10))
    t = fit_temperature(z, y)
    assert isinstance(t, float)
    assert abs(t - t_true) / t_true < 0.01
    # it is the NLL minimiser (not just close to t_true)
    assert nll(z, y, t) <= min(nll(z, y, t * 0.99), nll(z, y, t * 1.01))
    assert nll(z, y, t) < nll(z, y, 1.0)


@pytest.mark.parametrize("t_true", [0.5, 2.5])
def test_ece_grid_roughly_recovers_known_temperature(t_true):
    z, y = synthetic(t_true, 100_000, seed=7)
    t = fit_temperature(z, y, method="ece_grid")
    assert t in TEMPERATURE_GRID
    assert abs(t - t_true) / t_true < 0.1


def test_ece_grid_returns_the_grid_minimum():
    z, y = synthetic(1.7, 5_000, seed=3)
    t = fit_temperature(z, y, method="ece_grid")
    correct = z.argmax(1) == y

    def ece_at(temp):
        zt = z / temp
        p = np.exp(zt - zt.max(1, keepdims=True))
        return _ece(p.max(1) / p.sum(1), correct)

    assert all(ece_at(t) <= ece_at(other) for other in TEMPERATURE_GRID)
    t_b = fit_temperature(z, y, method="ece_grid", bounds=(2.05, 3.0))  # grid restricted to bounds
    assert 2.1 <= t_b <= 3.0


def test_torch_inputs_and_float32():
    z, y = synthetic(2.0, 20_000, seed=1)
    t_np = fit_temperature(z, y)
    t_torch = fit_temperature(torch.from_numpy(z).float(), torch.from_numpy(y))
    assert abs(t_np - t_torch) / t_np < 1e-4


def test_calibrated_logits_give_t_near_one():
    z, y = synthetic(1.0, 50_000, seed=2)
    assert abs(fit_temperature(z, y) - 1.0) < 0.02


@pytest.mark.parametrize("t", [0.05, 0.3, 1.0, 4.2, 20.0])
def test_temperature_never_changes_argmax(t):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(500, 7, generator=g) * 3
    zt = apply_temperature(z, t)
    assert isinstance(zt, torch.Tensor) and zt.dtype == z.dtype
    assert torch.equal(zt.argmax(1), z.argmax(1))
    assert torch.equal(zt.softmax(1).argmax(1), z.argmax(1))
    zn = z.numpy()
    assert np.array_equal(apply_temperature(zn, t).argmax(1), zn.argmax(1))
    assert torch.allclose(zt, z / t)


def test_fitted_temperature_keeps_accuracy():
    z, y = synthetic(3.0, 10_000, seed=4)
    t = fit_temperature(z, y)
    assert np.array_equal(apply_temperature(z, t).argmax(1), z.argmax(1))


def test_warns_when_optimum_on_bound():
    z, y = synthetic(50.0, 5_000, seed=5)  # optimum far above 20
    with pytest.warns(UserWarning, match="bound"):
        t = fit_temperature(z, y)
    assert abs(t - 20.0) < 1e-3
    z2, y2 = synthetic(2.0, 5_000, seed=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit_temperature(z2, y2)


def test_private_ece_edge_conventions():
    # (lo, hi] bins, confidence 1.0 in the last bin: 0.475 as Guo/netcal (torchmetrics gives 0.525)
    assert abs(_ece(np.array([0.95, 1.0]), np.array([True, False])) - 0.475) < 1e-12
    # 0.2 = 3/15 sits on an edge: it belongs to (2/15, 3/15], together with 0.19, not with 0.21
    e = _ece(np.array([0.19, 0.2, 0.21]), np.array([1.0, 0.0, 0.0]))
    want = (2 / 3) * abs((0.19 + 0.2) / 2 - 0.5) + (1 / 3) * abs(0.21 - 0.0)
    assert abs(e - want) < 1e-12
    assert _ece(np.array([0.0, 0.5]), np.array([0.0, 1.0])) == pytest.approx(0.25)  # 0 -> first bin


GOOD_Z = np.zeros((4, 3))
GOOD_Y = np.array([0, 1, 2, 0])


@pytest.mark.parametrize(
    "z,y",
    [
        (np.full((4, 3), np.nan), GOOD_Y),
        (np.array([[0.0, np.inf, 1.0]] * 4), GOOD_Y),
        (GOOD_Z, GOOD_Y[:3]),  # mismatched lengths
        (np.zeros((0, 3)), np.zeros(0, dtype=np.int64)),  # empty
        (np.zeros(4), GOOD_Y),  # 1-D logits
        (np.zeros((4, 1)), np.zeros(4, dtype=np.int64)),  # single class
        (GOOD_Z, GOOD_Y.astype(float)),  # float labels
        (GOOD_Z, np.array([0, 1, 3, 0])),  # label out of range
        (GOOD_Z, np.array([0, -1, 2, 0])),
    ],
)
@pytest.mark.parametrize("method", ["nll", "ece_grid"])
def test_bad_input_raises(z, y, method):
    with pytest.raises(ValueError):
        fit_temperature(z, y, method=method)


def test_bad_options_raise():
    with pytest.raises(ValueError):
        fit_temperature(GOOD_Z, GOOD_Y, method="lbfgs")
    for b in [(0.0, 10.0), (5.0, 1.0), (1.0, math.inf)]:
        with pytest.raises(ValueError):
            fit_temperature(GOOD_Z, GOOD_Y, bounds=b)
    with pytest.raises(ValueError):
        fit_temperature(GOOD_Z, GOOD_Y, method="ece_grid", bounds=(10.5, 12.0))
    for t in [0.0, -1.0, math.nan, math.inf]:
        with pytest.raises(ValueError):
            apply_temperature(GOOD_Z, t)


def test_private_ece_agrees_with_metrics_package():
    metrics = pytest.importorskip("refcal_zoo.metrics")
    if not hasattr(metrics, "ece"):
        pytest.skip("refcal_zoo.metrics has no ece yet")
    z, y = synthetic(1.5, 5_000, seed=8)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    mine = _ece(p.max(1), p.argmax(1) == y)
    assert abs(mine - float(metrics.ece(p, y))) < 1e-10


def test_temperature_scaled_nll_is_the_minimum_over_temperatures_and_ignores_the_logits_scale():
    z, y = synthetic(2.5, 20_000, seed=5)
    scored = temperature_scaled_nll(z, y)
    on_a_grid = min(nll(z, y, t) for t in np.geomspace(0.05, 20.0, 4001))  # independent: brute force over T
    assert on_a_grid - 1e-4 <= scored <= on_a_grid + 1e-9
    assert scored < nll(z, y, 1.0) - 0.05  # these logits are miscalibrated: scaling removes part of the loss
    assert temperature_scaled_nll(3.0 * z, y) == pytest.approx(scored, abs=1e-7)  # a global scale is calibration
    assert nll(3.0 * z, y, 1.0) > nll(z, y, 1.0) + 0.1  # ... which the raw NLL does count
    assert temperature_scaled_nll(torch.from_numpy(z).float(), torch.from_numpy(y)) == pytest.approx(scored, rel=1e-5)


def test_temperature_scaled_nll_prefers_the_more_refined_model_the_raw_nll_rejects():
    rng = np.random.default_rng(0)
    n, k = 4000, 10
    y = rng.integers(0, k, n)

    def logits(signal: float, scale: float, seed: int) -> np.ndarray:  # true class ahead by `signal`, then scaled
        z = np.random.default_rng(seed).normal(size=(n, k))
        z[np.arange(n), y] += signal
        return z * scale

    weak = logits(2.0, 1.0, 1)
    weak = weak / fit_temperature(weak, y)  # calibrated
    strong = logits(2.6, 10.0, 2)  # separates right from wrong better, but ~4x over-confident
    assert (strong.argmax(1) == y).mean() > (weak.argmax(1) == y).mean() + 0.1
    assert nll(strong, y, 1.0) > nll(weak, y, 1.0)  # the raw NLL would select the weak model
    assert temperature_scaled_nll(strong, y) < temperature_scaled_nll(weak, y) - 0.3
    assert temperature_scaled_nll(weak, y) == pytest.approx(nll(weak, y, 1.0), abs=1e-9)  # nothing left to fix
