"""Value, gradient and equivalence tests for the logits losses in refcal_zoo.losses (not CRL/AdaFocal/SupCon).

Reference values are computed by hand with ``math`` on a 3-sample, 3-class batch, independently of the code.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from refcal_zoo.losses import (
    LOSSES,
    BrierLoss,
    CELoss,
    DCALoss,
    FLSD53Loss,
    FocalLoss,
    LabelSmoothingLoss,
    LogitNormLoss,
    MbLSLoss,
    MDCALoss,
    MMCELoss,
    build_loss,
    mdca,
    mmce_weighted,
)

# 3 samples, 3 classes: sample 0 is correct (argmax 0 = y), samples 1 and 2 are wrong.
Z = [[2.0, 1.0, 0.1], [0.5, 2.5, -1.0], [0.3, 0.2, 0.1]]
Y = [0, 2, 1]
K = 3


def softmax(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    s = sum(e)
    return [v / s for v in e]


P = [softmax(r) for r in Z]
PT = [P[i][Y[i]] for i in range(3)]
CONF = [max(p) for p in P]
CORRECT = [1.0 if max(range(K), key=lambda k, p=p: p[k]) == Y[i] else 0.0 for i, p in enumerate(P)]


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs)


def CE_HAND():
    return mean(-math.log(PT[i]) for i in range(3))


@pytest.fixture
def batch():
    return torch.tensor(Z, dtype=torch.float64), torch.tensor(Y)


def _f(x):
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


def close(a, b, tol=1e-10):
    return abs(_f(a) - _f(b)) <= tol * max(1.0, abs(_f(b)))


def test_fixture_batch_has_mixed_correctness():
    assert CORRECT == [1.0, 0.0, 0.0]
    assert PT[1] < 0.2 < PT[0] and PT[2] >= 0.2  # both FLSD regimes are present


# ---------------------------------------------------------------- hand-computed values
def test_ce_value(batch):
    assert close(CELoss()(*batch), CE_HAND())


@pytest.mark.parametrize("alpha", [0.1, 0.3])
def test_label_smoothing_uniform_value(batch, alpha):
    want = mean(
        -sum(((1 - alpha) * (k == Y[i]) + alpha / K) * math.log(P[i][k]) for k in range(K)) for i in range(3)
    )
    assert close(LabelSmoothingLoss(alpha)(*batch), want)


@pytest.mark.parametrize("alpha", [0.1, 0.3])
def test_label_smoothing_others_value(batch, alpha):
    want = mean(
        -sum(((1 - alpha) if k == Y[i] else alpha / (K - 1)) * math.log(P[i][k]) for k in range(K))
        for i in range(3)
    )
    assert close(LabelSmoothingLoss(alpha, convention="others")(*batch), want)


@pytest.mark.parametrize("gamma", [1.0, 3.0])
def test_focal_value(batch, gamma):
    want = mean(-((1 - PT[i]) ** gamma) * math.log(PT[i]) for i in range(3))
    assert close(FocalLoss(gamma)(*batch), want)


def test_focal_default_gamma_is_3():
    assert FocalLoss().gamma == 3.0


def test_flsd53_value(batch):
    def g(pt):
        return 5.0 if pt < 0.2 else 3.0

    want = mean(-((1 - PT[i]) ** g(PT[i])) * math.log(PT[i]) for i in range(3))
    assert close(FLSD53Loss()(*batch), want)


def test_brier_value(batch):
    want = mean(sum((P[i][k] - (k == Y[i])) ** 2 for k in range(K)) for i in range(3))
    assert close(BrierLoss()(*batch), want)


def _mmce_hand(conf, correct, width=0.4):
    C = [i for i in range(len(conf)) if correct[i] == 1.0]
    I_ = [i for i in range(len(conf)) if correct[i] == 0.0]
    m, n = len(C), len(I_)
    if m == 0 or n == 0:
        return 0.0

    def k(a, b):
        return math.exp(-abs(conf[a] - conf[b]) / width)

    s_cc = mean((1 - conf[a]) * (1 - conf[b]) * k(a, b) for a in C for b in C)
    s_ii = mean(conf[a] * conf[b] * k(a, b) for a in I_ for b in I_)
    s_ci = mean((1 - conf[a]) * conf[b] * k(a, b) for a in C for b in I_)
    return math.sqrt(max(s_cc / m**2 + s_ii / n**2 - 2 * s_ci / (m * n), 0.0) + 1e-10)


@pytest.mark.parametrize("lam", [2.0, 4.0])
def test_mmce_value(batch, lam):
    term = _mmce_hand(CONF, CORRECT)
    assert term > 1e-3
    assert close(mmce_weighted(*batch), term)
    assert close(MMCELoss(lam)(*batch), CE_HAND() + lam * term)


def test_mmce_zero_when_all_correct_or_all_wrong():
    z = torch.tensor([[3.0, 0.0], [0.0, 2.0], [1.0, 0.5]], dtype=torch.float64, requires_grad=True)
    all_right = torch.tensor([0, 1, 0])
    all_wrong = torch.tensor([1, 0, 1])
    for y in (all_right, all_wrong):
        assert float(mmce_weighted(z, y).detach()) == 0.0
        assert close(MMCELoss(lam=5.0)(z, y), F.cross_entropy(z, y))
        (g,) = torch.autograd.grad(mmce_weighted(z, y), z)
        assert torch.isfinite(g).all() and float(g.abs().sum()) == 0.0


def test_mmce_single_correct_and_single_wrong_is_finite():
    z = torch.tensor([[2.0, 0.0], [2.0, 0.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1])
    v = mmce_weighted(z, y)
    (g,) = torch.autograd.grad(v, z)
    assert torch.isfinite(v) and torch.isfinite(g).all()


@pytest.mark.parametrize("beta", [1.0, 10.0])
def test_dca_value(batch, beta):
    want = CE_HAND() + beta * abs(mean(CONF) - mean(CORRECT))
    assert close(DCALoss(beta)(*batch), want)


def _mdca_hand():
    return mean(
        abs(mean(P[i][k] for i in range(3)) - mean(float(Y[i] == k) for i in range(3))) for k in range(K)
    )


def test_mdca_value_nll(batch):
    assert _mdca_hand() > 1e-3
    assert close(mdca(*batch), _mdca_hand())
    assert close(MDCALoss(beta=2.0)(*batch), CE_HAND() + 2.0 * _mdca_hand())


def test_mdca_value_focal_and_ls(batch):
    focal1 = mean(-((1 - PT[i]) ** 1.0) * math.log(PT[i]) for i in range(3))
    assert close(MDCALoss(beta=1.0, base="focal")(*batch), focal1 + _mdca_hand())
    a = 0.1
    ls_others = mean(
        -sum(((1 - a) if k == Y[i] else a / (K - 1)) * math.log(P[i][k]) for k in range(K)) for i in range(3)
    )
    got = MDCALoss(beta=1.0, base="ls", alpha=a, convention="others")(*batch)
    assert close(got, ls_others + _mdca_hand())


@pytest.mark.parametrize("margin,lam", [(1.0, 0.1), (0.5, 2.0)])
def test_mbls_value(batch, margin, lam):
    pen = mean(max(max(Z[i]) - Z[i][k] - margin, 0.0) for i in range(3) for k in range(K))  # N*K entries
    assert pen > 0
    assert close(MbLSLoss(margin=margin, lam=lam)(*batch), CE_HAND() + lam * pen)


def test_mbls_defaults_inactive_on_small_logits(batch):
    loss = MbLSLoss()
    assert (loss.margin, loss.lam) == (10.0, 0.1)
    assert close(loss(*batch), CE_HAND())


@pytest.mark.parametrize("t", [0.04, 0.5])
def test_logitnorm_value(batch, t):
    vals = []
    for i in range(3):
        norm = math.sqrt(sum(v * v for v in Z[i])) + 1e-7
        zz = [v / (norm * t) for v in Z[i]]
        vals.append(-math.log(softmax(zz)[Y[i]]))
    assert close(LogitNormLoss(t)(*batch), mean(vals))


# ---------------------------------------------------------------- equivalences
@pytest.fixture
def rand_batch():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 7, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 7, (16,), generator=g)
    return z, y


def test_ls_alpha_zero_is_ce(rand_batch):
    ce = F.cross_entropy(*rand_batch)
    assert close(LabelSmoothingLoss(0.0)(*rand_batch), ce)
    assert close(LabelSmoothingLoss(0.0, convention="others")(*rand_batch), ce)


def test_focal_gamma_zero_is_ce(rand_batch):
    assert close(FocalLoss(0.0)(*rand_batch), F.cross_entropy(*rand_batch))


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2])
def test_ls_conventions_related(rand_batch, alpha):
    k = rand_batch[0].shape[1]
    others = LabelSmoothingLoss(alpha, convention="others")(*rand_batch)
    uniform = LabelSmoothingLoss(alpha * k / (k - 1), convention="uniform")(*rand_batch)
    assert close(others, uniform)
    assert not close(others, LabelSmoothingLoss(alpha, convention="uniform")(*rand_batch), tol=1e-6)


def test_ls_uniform_matches_pytorch(rand_batch):
    assert close(LabelSmoothingLoss(0.1)(*rand_batch), F.cross_entropy(*rand_batch, label_smoothing=0.1))


def test_mdca_zero_when_mean_probs_match_label_frequencies():
    k = 5
    base_row = torch.tensor([2.0, -1.0, 0.3, 0.7, -0.4], dtype=torch.float64)
    z = torch.stack([base_row.roll(s) for s in range(k)])  # cyclic shifts -> mean prob is uniform
    y = torch.arange(k)  # each class once -> uniform frequencies
    assert float(mdca(z, y)) < 1e-12
    for base, kw in (("nll", {}), ("focal", {"gamma": 2.0}), ("ls", {"alpha": 0.1})):
        full = MDCALoss(beta=10.0, base=base, **kw)(z, y)
        cls = MDCALoss(beta=0.0, base=base, **kw)(z, y)
        assert close(full, cls)
    # ... and not zero when the frequencies differ
    assert float(mdca(z, torch.zeros(k, dtype=torch.long))) > 0.1


def test_flsd53_regimes(rand_batch):
    z, _ = rand_batch
    y_conf = z.argmax(1)  # p_t = max prob >= 1/7 ... make it >= 0.2 by sharpening
    zs = z * 5
    assert (F.softmax(zs, 1).gather(1, y_conf[:, None]) >= 0.2).all()
    assert close(FLSD53Loss()(zs, y_conf), FocalLoss(3.0)(zs, y_conf))
    y_low = z.argmin(1)
    assert (F.softmax(zs, 1).gather(1, y_low[:, None]) < 0.2).all()
    assert close(FLSD53Loss()(zs, y_low), FocalLoss(5.0)(zs, y_low))


PER_SAMPLE = [
    CELoss(),
    LabelSmoothingLoss(0.1),
    FocalLoss(3.0),
    FLSD53Loss(),
    BrierLoss(),
    MbLSLoss(1.0, 0.1),
]
PER_SAMPLE += [LogitNormLoss(0.1), MDCALoss(1.0)]


@pytest.mark.parametrize("loss", PER_SAMPLE, ids=lambda m: type(m).__name__)
def test_mean_reduction_invariant_to_batch_duplication(rand_batch, loss):
    z, y = rand_batch
    assert close(loss(z, y), loss(torch.cat([z, z]), torch.cat([y, y])))


# ---------------------------------------------------------------- gradients
GRAD_LOSSES = [
    CELoss(),
    LabelSmoothingLoss(0.1),
    LabelSmoothingLoss(0.1, convention="others"),
    FocalLoss(3.0),
    FocalLoss(0.5),
    FLSD53Loss(),
    BrierLoss(),
    MMCELoss(2.0),
    DCALoss(1.0),
    MDCALoss(1.0),
    MDCALoss(1.0, base="focal", gamma=2.0),
    MDCALoss(1.0, base="ls", alpha=0.1),
    MbLSLoss(margin=1.0, lam=0.5),
    LogitNormLoss(0.5),
]


@pytest.mark.parametrize("loss", GRAD_LOSSES, ids=lambda m: f"{type(m).__name__}-{m.extra_repr()}")
def test_gradcheck(loss):
    g = torch.Generator().manual_seed(1)
    z = (torch.randn(6, 4, generator=g, dtype=torch.float64) * 1.5).requires_grad_()
    pred = z.detach().argmax(1)
    y = torch.cat([pred[:3], (pred[3:] + 1) % 4])  # 3 correct, 3 wrong: MMCE/DCA see both kinds
    pt = F.softmax(z.detach(), 1).gather(1, y[:, None])
    assert ((pt - 0.2).abs() > 1e-3).all()  # away from FLSD's switch point
    assert torch.autograd.gradcheck(lambda x: loss(x, y), (z,), eps=1e-6, atol=1e-6)


def _counts_kwargs(name: str, k: int) -> dict:
    """The long-tail losses need the training class counts (a made-up long tail of ``k`` classes)."""
    return {"class_counts": [100 // (i + 1) for i in range(k)]} if LOSSES[name].needs_class_counts else {}


@pytest.mark.parametrize("name", sorted(set(LOSSES) - {"crl"}))
def test_bfloat16_input_runs_and_backprops(name):
    z = torch.randn(8, 5).bfloat16().requires_grad_()
    y = torch.randint(0, 5, (8,))
    out = build_loss(name, **_counts_kwargs(name, 5))(z, y)
    assert out.dim() == 0 and out.dtype == torch.float32 and torch.isfinite(out)
    out.backward()
    assert z.grad is not None and torch.isfinite(z.grad.float()).all()


# ---------------------------------------------------------------- input checks
@pytest.mark.parametrize(
    "z,y",
    [
        (torch.randn(4), torch.zeros(4, dtype=torch.long)),  # 1-D logits
        (torch.randn(4, 3), torch.zeros(5, dtype=torch.long)),  # length mismatch
        (torch.randn(4, 3), torch.zeros(4)),  # float targets
        (torch.randn(0, 3), torch.zeros(0, dtype=torch.long)),  # empty
        (torch.randn(4, 1), torch.zeros(4, dtype=torch.long)),  # one class
    ],
)
def test_bad_inputs_raise(z, y):
    for name in sorted(set(LOSSES) - {"crl"}):
        with pytest.raises(ValueError):
            build_loss(name, **_counts_kwargs(name, 3))(z, y)


@pytest.mark.parametrize(
    "cls,kwargs",
    [
        (LabelSmoothingLoss, {"alpha": 5.0}),  # RefCal's invalid default
        (LabelSmoothingLoss, {"convention": "mdca"}),
        (FocalLoss, {"gamma": -1.0}),
        (MMCELoss, {"kernel_width": 0.0}),
        (MDCALoss, {"base": "nll", "gamma": 2.0}),
        (MDCALoss, {"base": "focal", "alpha": 0.1}),
        (MDCALoss, {"base": "brier"}),
        (LogitNormLoss, {"t": 0.0}),
    ],
)
def test_bad_hyperparameters_raise(cls, kwargs):
    with pytest.raises(ValueError):
        cls(**kwargs)
