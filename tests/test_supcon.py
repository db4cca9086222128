"""SupCon against a naive double-loop implementation, Lemma 2 (SupCon > L_ref per anchor), refinement loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from refcal_zoo.losses import (
    SupConLoss,
    gather_features,
    refinement_loss,
    refinement_loss_per_anchor,
    supcon_per_anchor,
)


def naive_supcon(features, labels, tau, tau_b=None):
    """Plain-Python SupCon L_out: returns (mean over anchors with a positive, per-anchor list with None)."""
    tau_b = tau if tau_b is None else tau_b
    b, v, _ = features.shape
    zs = [features[i, j].tolist() for j in range(v) for i in range(b)]  # view-major
    ys = [int(labels[i]) for _j in range(v) for i in range(b)]
    n = len(zs)

    def dot(a, c):
        return sum(x * y for x, y in zip(a, c, strict=True))

    per = []
    for i in range(n):
        denom = sum(math.exp(dot(zs[i], zs[a]) / tau) for a in range(n) if a != i)
        positives = [p for p in range(n) if p != i and ys[p] == ys[i]]
        if not positives:
            per.append(None)
            continue
        s = sum(math.log(math.exp(dot(zs[i], zs[p]) / tau) / denom) for p in positives)
        per.append(-(tau / tau_b) * s / len(positives))
    vals = [x for x in per if x is not None]
    return (sum(vals) / len(vals) if vals else 0.0), per


def _features(b, v, d, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(b, v, d, generator=g, dtype=dtype), dim=-1)


@pytest.mark.parametrize("views", [1, 2])
@pytest.mark.parametrize("tau,tau_b", [(0.1, None), (0.1, 0.07), (0.5, None), (1.0, 2.0)])
def test_supcon_matches_naive(views, tau, tau_b):
    f = _features(7, views, 5, seed=views)
    y = torch.tensor([0, 0, 1, 2, 1, 3, 0])  # classes 2 and 3 have a single sample
    want_mean, want_per = naive_supcon(f, y, tau, tau_b)
    got = SupConLoss(tau, tau_b)(f, y)
    assert abs(float(got) - want_mean) < 1e-10
    per = supcon_per_anchor(f, y, tau, tau_b)
    assert per.shape == (views * 7,)
    for g_, w in zip(per.tolist(), want_per, strict=True):
        if w is None:
            assert math.isnan(g_)
        else:
            assert abs(g_ - w) < 1e-10
    if views == 1:
        assert sum(w is None for w in want_per) == 2  # anchors without positives exist ...
    else:
        assert all(w is not None for w in want_per)  # ... and two views always give one


def test_base_temperature_is_an_explicit_scale():
    f, y = _features(6, 2, 4, seed=0), torch.tensor([0, 1, 0, 1, 2, 2])
    unscaled = SupConLoss(0.1)(f, y)
    assert abs(float(SupConLoss(0.1, 0.07)(f, y)) - float(unscaled) * 0.1 / 0.07) < 1e-10
    assert SupConLoss(0.1).base_temperature == 0.1


def test_no_positive_gives_graph_connected_zero():
    f = _features(4, 1, 3, seed=1).requires_grad_()
    loss = SupConLoss()(f, torch.arange(4))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert f.grad is not None and float(f.grad.abs().sum()) == 0.0


def test_anchors_without_positives_do_not_dilute_and_no_nan_gradients():
    f = _features(5, 1, 4, seed=2).requires_grad_()
    y = torch.tensor([0, 0, 1, 2, 3])
    loss = SupConLoss()(f, y)
    per = supcon_per_anchor(f.detach(), y)
    assert abs(float(loss.detach()) - float(per[:2].mean())) < 1e-12
    loss.backward()
    assert torch.isfinite(f.grad).all()


def test_supcon_gradcheck():
    g = torch.Generator().manual_seed(5)
    raw = torch.randn(5, 2, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 0, 2, 1])
    loss = SupConLoss(0.5)
    assert torch.autograd.gradcheck(lambda x: loss(F.normalize(x, dim=-1), y), (raw,), eps=1e-6, atol=1e-6)


def test_float32_and_half_inputs():
    f, y = _features(6, 2, 8, seed=3), torch.tensor([0, 1, 0, 1, 2, 2])
    ref = float(SupConLoss()(f, y))
    assert abs(float(SupConLoss()(f.float(), y)) - ref) < 1e-5
    out = SupConLoss()(f.bfloat16(), y)
    assert out.dtype == torch.float32 and abs(float(out) - ref) < 0.1


def test_bad_shapes():
    with pytest.raises(ValueError):
        SupConLoss()(torch.randn(4, 8), torch.arange(4))  # 2-D features
    with pytest.raises(ValueError):
        SupConLoss()(torch.randn(4, 2, 8), torch.arange(5))
    with pytest.raises(ValueError):
        SupConLoss(temperature=0.0)


# ---------------------------------------------------------------- refinement loss and Lemma 2
def test_refinement_loss_by_hand():
    # unit vectors in 2-D; anchor 0 at angle 0
    ang = [0.0, 0.3, 1.0, 2.0]
    f = torch.tensor([[[math.cos(a), math.sin(a)]] for a in ang], dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1])
    per = refinement_loss_per_anchor(f, y)

    def half_sq(a, b):
        return 0.5 * ((math.cos(a) - math.cos(b)) ** 2 + (math.sin(a) - math.sin(b)) ** 2)

    for i in range(4):
        pos = [half_sq(ang[i], ang[j]) for j in range(4) if j != i and int(y[j]) == int(y[i])]
        neg = [half_sq(ang[i], ang[j]) for j in range(4) if int(y[j]) != int(y[i])]
        assert abs(float(per[i]) - (min(pos) - min(neg))) < 1e-12
    assert abs(float(refinement_loss(f, y)) - float(per.mean())) < 1e-12
    assert float(per[0]) > 0  # anchor 0's nearest neighbour (angle 0.3) has the other label


def test_refinement_loss_nan_when_undefined():
    f = _features(3, 1, 4, seed=0)
    assert math.isnan(float(refinement_loss(f, torch.arange(3))))  # no positives
    assert math.isnan(float(refinement_loss(f, torch.zeros(3, dtype=torch.long))))  # no negatives


@pytest.mark.parametrize("tau", [0.05, 0.07, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("views,dim", [(1, 3), (2, 16)])
def test_lemma2_supcon_exceeds_refinement_per_anchor(tau, views, dim):
    checked = 0
    for seed in range(6):
        f = _features(24, views, dim, seed=100 + seed)
        y = torch.randint(0, 5, (24,), generator=torch.Generator().manual_seed(seed))
        sc = supcon_per_anchor(f, y, tau)  # unscaled (tau_b = tau)
        ref = refinement_loss_per_anchor(f, y)
        ok = ~torch.isnan(sc) & ~torch.isnan(ref)
        assert (sc[ok] > ref[ok]).all()
        if tau >= 0.07:  # the code's tau/0.07 >= 1 scale keeps the inequality
            assert (supcon_per_anchor(f, y, tau, 0.07)[ok] > ref[ok]).all()
        checked += int(ok.sum())
    assert checked > 100


def test_lemma2_bound_is_tight_enough_to_be_tested():
    # The proof gives sc_i > L_ref,i / tau; for tau > 1 the inequality sc_i > L_ref,i can fail (tiny batches),
    # which shows the per-anchor comparison above is a real check.
    violations = 0
    for seed in range(50):
        f = _features(3, 1, 2, seed=seed)
        y = torch.tensor([0, 0, 1])
        sc, ref = supcon_per_anchor(f, y, 50.0)[:2], refinement_loss_per_anchor(f, y)[:2]  # anchor 2: no pos.
        assert (sc > ref / 50.0).all()
        violations += int((sc <= ref).sum())
    assert violations > 0


# ---------------------------------------------------------------- gather (single process: no-op)
def test_gather_is_noop_without_process_group():
    f, y = _features(4, 2, 3, seed=0), torch.arange(4)
    gf, gy = gather_features(f, y)
    assert gf is f and torch.equal(gy, y)
    assert float(SupConLoss(gather=True)(f, y % 2)) == float(SupConLoss()(f, y % 2))
