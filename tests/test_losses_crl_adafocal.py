"""CRL (correctness history + ranking) and AdaFocal (per-bin gamma from validation): the stateful losses."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from refcal_zoo.losses import AdaFocalLoss, CorrectnessHistory, CRLLoss


def softmax(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    return [v / sum(e) for v in e]


# ================================================================ CRL
def test_history_counts_epoch_counter_and_normalisation():
    h = CorrectnessHistory(4)
    assert int(h.epoch_counter) == 1
    h.update(torch.tensor([0, 1, 2, 3]), torch.tensor([True, True, False, False]))
    h.update(torch.tensor([0, 2]), torch.tensor([1, 0]))
    assert h.correct_count.tolist() == [2, 1, 0, 0]
    h.next_epoch()
    assert int(h.epoch_counter) == 1  # official: e grows only from the 2nd epoch end on
    h.next_epoch()
    assert int(h.epoch_counter) == 2
    assert h.normalized(torch.tensor([0, 1, 2, 3])).tolist() == [1.0, 0.5, 0.0, 0.0]  # (h - 0) / (2 - 0)
    h.update(torch.tensor([2, 3]), torch.tensor([1, 1]))  # min h becomes 1
    assert h.normalized(torch.tensor([0, 1, 2])).tolist() == [1.0, 0.0, 0.0]  # (h - 1) / (2 - 1)


def test_history_repeated_indices_all_counted():
    h = CorrectnessHistory(3)
    h.update(torch.tensor([1, 1, 1]), torch.tensor([1, 1, 0]))
    assert h.correct_count.tolist() == [0, 2, 0]


def test_history_no_nan_when_everything_always_correct():
    h = CorrectnessHistory(3)
    h.update(torch.arange(3), torch.ones(3, dtype=torch.bool))  # min h = 1 = e: official code divides by 0
    c = h.normalized(torch.arange(3))
    assert torch.isfinite(c).all() and c.tolist() == [0.0, 0.0, 0.0]


def test_history_update_errors():
    h = CorrectnessHistory(3)
    with pytest.raises(ValueError):
        h.update(torch.tensor([0, 1]), torch.tensor([1]))
    with pytest.raises(ValueError):
        h.update(torch.tensor([0.0, 1.0]), torch.tensor([1, 0]))
    with pytest.raises(ValueError):
        CorrectnessHistory(0)


def test_crl_value_by_hand():
    hist = CorrectnessHistory(4)
    hist.update(torch.arange(4), torch.tensor([1, 1, 0, 0]))
    hist.update(torch.tensor([0, 2]), torch.tensor([1, 0]))
    hist.next_epoch()
    hist.next_epoch()  # h = [2, 1, 0, 0], e = 2 -> c = [1, .5, 0, 0]
    Z = [[2.0, 0.0, 0.0], [0.5, 0.2, 0.0], [1.0, 1.0, -1.0], [3.0, -2.0, 0.0]]
    Y = [0, 1, 2, 0]
    idx = [0, 1, 2, 3]
    c = [1.0, 0.5, 0.0, 0.0]
    k = [max(softmax(r)) for r in Z]
    terms = []
    for i in range(4):
        j = (i + 1) % 4  # roll(-1): pair i with i+1
        s = (c[i] > c[j]) - (c[i] < c[j])
        terms.append(max(0.0, -s * (k[i] - k[j]) + abs(c[i] - c[j])))
    rank = sum(terms) / 4
    ce = sum(-math.log(softmax(Z[i])[Y[i]]) for i in range(4)) / 4
    assert rank > 0.05
    z = torch.tensor(Z, dtype=torch.float64)
    y = torch.tensor(Y)
    loss = CRLLoss(hist, rank_weight=0.7)
    assert abs(float(loss.ranking_loss(z, torch.tensor(idx))) - rank) < 1e-7
    assert abs(float(loss(z, y, torch.tensor(idx))) - (ce + 0.7 * rank)) < 1e-7


def _toy_problem(n=20, k=3):
    """Same logits for every sample (so confidences tie); labels make samples < n/2 right, the rest wrong."""
    z = torch.tensor([[3.0, 0.0, 0.0]]).repeat(n, 1)
    y = torch.where(torch.arange(n) < n // 2, 0, 1)
    return z, y


def test_crl_ranking_term_becomes_nonzero_after_updates_and_round_trips():
    n = 20
    z, y = _toy_problem(n)
    crl = CRLLoss(num_samples=n, rank_weight=1.0)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(n, generator=g)
    # Before any update every c_i = 0 and the ranking term is exactly 0 (all the RefCal release ever sees).
    assert float(crl.ranking_loss(z[perm], perm)) == 0.0
    for _epoch in range(3):
        for _step in range(0, n, 5):  # 4 steps of batch 5 per epoch
            idx = torch.randperm(n, generator=g)[:5]
            crl.update_history(z[idx], y[idx], idx)
        crl.next_epoch()
    h = crl.history.correct_count
    assert (h[n // 2 :] == 0).all() and (h[: n // 2] > 0).any()
    rank = crl.ranking_loss(z[perm], perm)
    assert float(rank) > 0.0
    assert float(crl(z[perm], y[perm], perm)) > float(F.cross_entropy(z[perm], y[perm]))

    # state_dict round trip (through bytes, as a checkpoint would)
    buf = io.BytesIO()
    torch.save(crl.state_dict(), buf)
    buf.seek(0)
    fresh = CRLLoss(num_samples=n)
    assert float(fresh.ranking_loss(z[perm], perm)) == 0.0
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(fresh.history.correct_count, crl.history.correct_count)
    assert int(fresh.history.epochs_completed) == 3
    assert float(fresh.ranking_loss(z[perm], perm)) == float(rank)
    hist_only = CorrectnessHistory(n)
    hist_only.load_state_dict(crl.history.state_dict())
    assert torch.equal(hist_only.correct_count, h)
    with pytest.raises(RuntimeError):
        CRLLoss(num_samples=n + 1).load_state_dict(crl.state_dict())


def test_crl_gradient_flows_through_both_members_of_a_pair():
    hist = CorrectnessHistory(2)
    hist.update(torch.tensor([0]), torch.tensor([1]))  # c = [1, 0]
    z = torch.tensor([[0.1, 0.0], [2.0, 0.0]], dtype=torch.float64, requires_grad=True)  # wrong order of conf
    loss = CRLLoss(hist).ranking_loss(z, torch.tensor([0, 1]))
    assert float(loss.detach()) > 0
    (g,) = torch.autograd.grad(loss, z)
    assert (g.abs().sum(1) > 0).all()


def test_crl_gradcheck():
    hist = CorrectnessHistory(5)
    hist.update(torch.tensor([0, 1, 1, 2]), torch.tensor([1, 1, 1, 1]))
    g = torch.Generator().manual_seed(3)
    z = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 4, (5,), generator=g)
    loss = CRLLoss(hist)
    assert torch.autograd.gradcheck(lambda x: loss(x, y, torch.arange(5)), (z,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("target", ["entropy", "margin"])
def test_crl_other_rank_targets(target):
    z = torch.tensor([[2.0, 1.0, 0.0]], dtype=torch.float64)
    p = softmax([2.0, 1.0, 0.0])
    want = sum(q * math.log(q) for q in p) / math.log(3) if target == "entropy" else p[0] - p[1]
    assert abs(float(CRLLoss(num_samples=1, rank_target=target).confidence(z)) - want) < 1e-12


def test_crl_sync_is_noop_without_process_group():
    a, b = CorrectnessHistory(5), CorrectnessHistory(5)
    a.update(torch.tensor([1, 3]), torch.tensor([1, 1]), sync=True)
    b.update(torch.tensor([1, 3]), torch.tensor([1, 1]))
    assert torch.equal(a.correct_count, b.correct_count)


# ================================================================ AdaFocal
Z = [[2.0, 1.0, 0.1], [0.5, 2.5, -1.0], [0.3, 0.2, 0.1]]
Y = [0, 2, 1]


def test_adafocal_initial_value_is_focal_gamma_1():
    pt = [softmax(Z[i])[Y[i]] for i in range(3)]
    want = sum(-(1 - p) * math.log(p) for p in pt) / 3
    got = AdaFocalLoss()(torch.tensor(Z, dtype=torch.float64), torch.tensor(Y))
    assert abs(float(got) - want) < 1e-10


def test_adafocal_inverse_focal_value_for_negative_gamma():
    loss = AdaFocalLoss()
    loss.gammas.fill_(-1.5)
    pt = [softmax(Z[i])[Y[i]] for i in range(3)]
    want = sum(-((1 + p) ** 1.5) * math.log(p) for p in pt) / 3
    assert abs(float(loss(torch.tensor(Z, dtype=torch.float64), torch.tensor(Y))) - want) < 1e-10


def _val_set(n, k, scale, acc, seed):
    """Validation logits: confidence set by ``scale``, accuracy ``acc`` (labels set directly)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g, dtype=torch.float64) * scale
    pred = z.argmax(1)
    right = torch.rand(n, generator=g, dtype=torch.float64) < acc
    y = torch.where(right, pred, (pred + 1) % k)
    return z, y


def _hand_bins(z, y, b):
    p = torch.softmax(z, 1).numpy()
    conf, pred = p.max(1), p.argmax(1)
    correct = (pred == y.numpy()).astype(float)
    order = np.argsort(conf, kind="stable")
    chunks = np.array_split(order, b)
    gaps = np.array([conf[c].mean() - correct[c].mean() for c in chunks])
    lowers = np.array([0.0] + [conf[c[0]] for c in chunks[1:]])
    return gaps, lowers


def test_adafocal_update_overconfident_raises_gamma_by_the_rule():
    z, y = _val_set(600, 10, scale=4.0, acc=0.3, seed=0)  # confident but mostly wrong
    loss = AdaFocalLoss()
    stats = loss.update_from_validation(z, y)
    gaps, lowers = _hand_bins(z, y, 15)
    assert (gaps > 0).all()
    np.testing.assert_allclose(stats["gap"].numpy(), gaps, atol=1e-12)
    np.testing.assert_allclose(loss.gammas.numpy(), np.exp(gaps), rtol=1e-6)  # 1 * exp(1 * gap)
    assert (loss.gammas > 1.0).all()
    np.testing.assert_allclose(loss.bin_lowers.numpy(), lowers, rtol=1e-6)
    assert int(stats["count"].sum()) == 600 and int(loss.num_updates) == 1
    before = loss.gammas.clone()
    loss.update_from_validation(z, y)
    assert (loss.gammas > before).all()


def test_adafocal_update_underconfident_lowers_gamma_and_switches():
    z, y = _val_set(600, 10, scale=0.3, acc=0.95, seed=1)  # unconfident but mostly right
    loss = AdaFocalLoss()
    loss.update_from_validation(z, y)
    assert (loss.gammas < 1.0).all()
    for _ in range(10):
        loss.update_from_validation(z, y)
    g = loss.gammas
    assert (g < 0).all(), g  # switched to inverse focal
    assert (g >= -2.0).all() and (g <= -0.2 + 1e-6).all()
    for _ in range(20):
        loss.update_from_validation(z, y)
    assert torch.allclose(loss.gammas, torch.full_like(loss.gammas, -2.0))  # clipped at gamma_min


def test_adafocal_switch_and_clip_rule():
    loss = AdaFocalLoss(num_bins=1, gamma_initial=0.25)
    probs = torch.tensor([[0.6, 0.4]] * 10, dtype=torch.float64)
    labels = torch.tensor([0] * 10)  # acc 1, conf 0.6 -> gap -0.4 -> 0.25 * exp(-0.4) = 0.168 < 0.2
    loss.update_from_validation(probs, labels)
    assert abs(float(loss.gammas[0]) + 0.2) < 1e-7
    loss.update_from_validation(probs, labels)  # -0.2 * exp(+0.4) = -0.298
    assert abs(float(loss.gammas[0]) - (-0.2 * math.exp(0.4))) < 1e-6
    big = AdaFocalLoss(num_bins=1, gamma_initial=19.0)
    big.update_from_validation(probs, torch.tensor([1] * 10))  # gap 0.6 -> 19 * e^0.6 > 20
    assert float(big.gammas[0]) == 20.0


def test_adafocal_lookup_uses_pt_against_stored_bins():
    loss = AdaFocalLoss(num_bins=3)
    loss.gammas.copy_(torch.tensor([5.0, -1.0, 2.0]))
    loss.bin_lowers.copy_(torch.tensor([0.0, 0.3, 0.7]))
    loss.bin_uppers.copy_(torch.tensor([0.3, 0.7, 1.0]))
    pt = torch.tensor([0.0, 0.29, 0.3, 0.5, 0.7, 0.99, 1.0])
    assert loss.gamma_for(pt).tolist() == [5.0, 5.0, -1.0, -1.0, 2.0, 2.0, 2.0]


def test_adafocal_probs_and_logits_agree_and_state_round_trips():
    z, y = _val_set(300, 5, scale=3.0, acc=0.5, seed=2)
    a, b = AdaFocalLoss(), AdaFocalLoss()
    a.update_from_validation(z, y)
    b.update_from_validation(torch.softmax(z, 1), y)
    assert torch.allclose(a.gammas, b.gammas) and torch.allclose(a.bin_lowers, b.bin_lowers)
    c = AdaFocalLoss()
    c.update_from_validation(torch.softmax(z, 1), y, inputs="logits")  # wrongly declared: different gammas
    assert not torch.allclose(a.gammas, c.gammas)

    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    fresh = AdaFocalLoss()
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    for name in ("gammas", "bin_lowers", "bin_uppers", "num_updates"):
        assert torch.equal(getattr(fresh, name), getattr(a, name))
    zt, yt = torch.randn(32, 5), torch.randint(0, 5, (32,))
    assert float(fresh(zt, yt)) == float(a(zt, yt))
    assert float(fresh(zt, yt)) != float(AdaFocalLoss()(zt, yt))


def test_adafocal_gradcheck_mixed_regimes():
    loss = AdaFocalLoss(num_bins=3)
    loss.gammas.copy_(torch.tensor([3.0, -1.5, 0.5]))
    loss.bin_lowers.copy_(torch.tensor([0.0, 0.3, 0.6]))
    g = torch.Generator().manual_seed(4)
    z = torch.randn(8, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 4, (8,), generator=g)
    pt = torch.softmax(z.detach(), 1).gather(1, y[:, None]).squeeze(1)
    assert ((pt - 0.3).abs() > 1e-3).all() and ((pt - 0.6).abs() > 1e-3).all()
    assert torch.autograd.gradcheck(lambda x: loss(x, y), (z,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "z,y",
    [
        (torch.randn(10, 3), torch.randint(0, 3, (10,))),  # fewer samples than bins
        (torch.full((30, 3), float("nan")), torch.randint(0, 3, (30,))),
        (torch.randn(30, 3), torch.randint(0, 3, (29,))),
        (torch.randn(30), torch.randint(0, 3, (30,))),
    ],
)
def test_adafocal_update_bad_inputs(z, y):
    with pytest.raises(ValueError):
        AdaFocalLoss().update_from_validation(z, y)
