"""Conformal prediction sets and selective prediction against hand-written references and known distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from refcal_zoo.calibration import (
    ConformalPredictor,
    conformal_quantile,
    conformal_report,
    selective_predict,
    selective_report,
    selective_threshold,
)


def oracle_data(n: int, k: int = 10, seed: int = 0, scale: float = 2.0, class_shift=None):
    """Logits z and labels drawn from softmax(z): the model is the true conditional distribution."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * scale
    if class_shift is not None:
        z = z + np.asarray(class_shift)[None, :]
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = (p.cumsum(1) < rng.random(n)[:, None]).sum(1).clip(max=k - 1)
    return z, y


# ---------------------------------------------------------------- hand-written split-conformal reference (loops)
def ref_softmax(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    s = sum(e)
    return [v / s for v in e]


def ref_score(probs, label, score, lam=0.0, k_reg=0):
    if score == "thr":
        return 1.0 - probs[label]
    ranked = sorted(range(len(probs)), key=lambda j: (-probs[j], j))
    total = 0.0
    for pos, j in enumerate(ranked):
        total += probs[j]
        if j == label:
            return total + (lam * max(0, pos + 1 - k_reg) if score == "raps" else 0.0)
    raise AssertionError


def ref_fit_predict(cal_z, cal_y, test_z, alpha, score, classwise, lam=0.0, k_reg=0):
    cal_p = [ref_softmax(list(r)) for r in cal_z]
    cal_s = [ref_score(p, int(y), score, lam, k_reg) for p, y in zip(cal_p, cal_y, strict=True)]

    def qhat_of(scores):
        n = len(scores)
        k = math.ceil((n + 1) * (1 - alpha))
        return sorted(scores)[k - 1] if k <= n else math.inf

    num_k = len(cal_z[0])
    if classwise:
        q = [qhat_of([s for s, y in zip(cal_s, cal_y, strict=True) if y == c]) for c in range(num_k)]
    else:
        q = [qhat_of(cal_s)] * num_k
    sets = []
    for r in test_z:
        p = ref_softmax(list(r))
        sets.append([ref_score(p, j, score, lam, k_reg) <= q[j] for j in range(num_k)])
    return np.array(sets), q


@pytest.mark.parametrize("score,classwise", [("thr", False), ("aps", False), ("raps", False), ("thr", True),
                                             ("aps", True), ("raps", True)])
def test_matches_hand_written_reference(score, classwise):
    cal_z, cal_y = oracle_data(400, k=6, seed=1)
    test_z, _ = oracle_data(150, k=6, seed=2)
    kw = {"lam": 0.05, "k_reg": 2} if score == "raps" else {}
    cp = ConformalPredictor(0.1, score=score, classwise=classwise, **kw).fit(cal_z, cal_y)
    ref_sets, ref_q = ref_fit_predict(cal_z, cal_y, test_z, 0.1, score, classwise, kw.get("lam", 0), kw.get("k_reg", 0))
    np.testing.assert_allclose(np.atleast_1d(cp.qhat_) * np.ones(6), ref_q, rtol=0, atol=1e-12)
    assert cp.predict_sets(test_z).dtype == bool
    np.testing.assert_array_equal(cp.predict_sets(test_z), ref_sets)
    # torch tensors in, same answer
    np.testing.assert_array_equal(cp.predict_sets(torch.from_numpy(test_z).float()).shape, ref_sets.shape)


def test_quantile_is_the_exact_order_statistic():
    rng = np.random.default_rng(0)
    for n in (1, 5, 9, 10, 50, 99, 1000):
        s = rng.random(n)
        for alpha in (0.05, 0.1, 0.2):
            k = math.ceil((n + 1) * (1 - alpha))
            q = conformal_quantile(s, alpha)
            if k > n:
                assert q == math.inf
                continue
            assert q == np.sort(s)[k - 1] == np.quantile(s, k / n, method="inverted_cdf")
            assert q <= np.quantile(s, k / n, method="higher")  # numpy's 'higher' is (weakly) more conservative


def test_known_expected_coverage_on_oracle_data():
    """Continuous scores: E[coverage] = k / (n + 1) exactly, k = ceil((n + 1)(1 - alpha)); here 46/51."""
    n, alpha, trials = 50, 0.1, 300
    cov = []
    for t in range(trials):
        cal_z, cal_y = oracle_data(n, seed=1000 + t)
        test_z, test_y = oracle_data(500, seed=50_000 + t)
        sets = ConformalPredictor(alpha).fit(cal_z, cal_y).predict_sets(test_z)
        cov.append(sets[np.arange(len(test_y)), test_y].mean())
    expected = math.ceil((n + 1) * (1 - alpha)) / (n + 1)
    assert abs(np.mean(cov) - expected) < 0.008, (np.mean(cov), expected)  # MC sd ~0.0025
    # numpy's 'higher' would give 47/51 = 0.922: distinguishable
    assert abs(np.mean(cov) - 47 / 51) > 0.01


@pytest.mark.parametrize("score", ["aps", "raps"])
def test_randomized_scores_have_exact_coverage(score):
    n, alpha, trials = 50, 0.1, 200
    cov = []
    for t in range(trials):
        cal_z, cal_y = oracle_data(n, seed=2000 + t)
        test_z, test_y = oracle_data(500, seed=60_000 + t)
        cp = ConformalPredictor(alpha, score=score, randomized=True, seed=t, lam=0.01, k_reg=2).fit(cal_z, cal_y)
        cov.append(cp.predict_sets(test_z)[np.arange(500), test_y].mean())
    assert abs(np.mean(cov) - 46 / 51) < 0.01


def test_large_sample_coverage_and_oracle_set():
    """With many calibration points coverage -> 1 - alpha, and thr sets equal the oracle's {p_y >= 1 - qhat}."""
    cal_z, cal_y = oracle_data(20_000, seed=3)
    test_z, test_y = oracle_data(20_000, seed=4)
    cp = ConformalPredictor(0.1).fit(cal_z, cal_y)
    sets = cp.predict_sets(test_z)
    assert abs(sets[np.arange(20_000), test_y].mean() - 0.9) < 0.01
    p = np.exp(test_z - test_z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_array_equal(sets, p >= 1 - cp.qhat_)


def test_classwise_covers_the_hard_class_that_marginal_misses():
    """Class 0 is rarely predicted confidently: marginal conformal under-covers it, classwise does not."""
    shift = np.zeros(10)
    shift[0] = -2.0  # the true p(y=0|x) is small: class 0 is hard (and rare, like a tail class)
    cal_z, cal_y = oracle_data(40_000, seed=5, class_shift=shift)
    test_z, test_y = oracle_data(40_000, seed=6, class_shift=shift)
    assert np.sum(cal_y == 0) > 900
    per_class = {}
    for classwise in (False, True):
        sets = ConformalPredictor(0.1, classwise=classwise).fit(cal_z, cal_y).predict_sets(test_z)
        covered = sets[np.arange(len(test_y)), test_y]
        per_class[classwise] = np.array([covered[test_y == c].mean() for c in range(10)])
    assert per_class[False][0] < 0.8
    assert per_class[True].min() > 0.9 - 0.03


def test_classwise_with_too_few_points_always_includes_the_class():
    cal_z, cal_y = oracle_data(2_000, k=5, seed=7)
    keep = (cal_y != 4) | (np.cumsum(cal_y == 4) <= 5)  # only 5 calibration points of class 4 (< 1/0.1 - 1 = 9)
    with pytest.warns(UserWarning, match="too few calibration points for 1 of 5 classes"):
        cp = ConformalPredictor(0.1, classwise=True).fit(cal_z[keep], cal_y[keep])
    assert cp.always_included_ == [4] and math.isinf(cp.qhat_[4]) and np.isfinite(cp.qhat_[:4]).all()
    assert cp.predict_sets(oracle_data(100, k=5, seed=8)[0])[:, 4].all()


def test_raps_with_zero_penalty_is_aps_and_penalty_shrinks_sets():
    cal_z, cal_y = oracle_data(3_000, seed=9, scale=0.7)  # flat softmax: long APS sets
    test_z, _ = oracle_data(2_000, seed=10, scale=0.7)
    aps = ConformalPredictor(0.1, score="aps").fit(cal_z, cal_y).predict_sets(test_z)
    raps0 = ConformalPredictor(0.1, score="raps", lam=0.0).fit(cal_z, cal_y).predict_sets(test_z)
    np.testing.assert_array_equal(aps, raps0)
    raps = ConformalPredictor(0.1, score="raps", lam=0.5, k_reg=1).fit(cal_z, cal_y).predict_sets(test_z)
    assert raps.sum(1).max() < aps.sum(1).max()


def test_report_matches_predict_sets_and_groups():
    cal_z, cal_y = oracle_data(3_000, k=4, seed=11)
    test_z, test_y = oracle_data(3_000, k=4, seed=12)
    counts = [500, 60, 30, 5]  # many, medium, medium, few
    r = conformal_report(cal_z, cal_y, test_z, test_y, 0.1, counts, score="thr")
    sets = ConformalPredictor(0.1).fit(cal_z, cal_y).predict_sets(test_z)
    covered = sets[np.arange(3000), test_y]
    assert r["coverage"] == pytest.approx(covered.mean())
    assert r["set_size"] == pytest.approx(sets.sum(1).mean())
    assert r["few/coverage"] == pytest.approx(covered[test_y == 3].mean())
    assert r["medium/set_size"] == pytest.approx(sets.sum(1)[(test_y == 1) | (test_y == 2)].mean())
    per_class = [covered[test_y == c].mean() for c in range(4)]
    assert r["min_class_coverage"] == pytest.approx(min(per_class)) and r["min_class"] == int(np.argmin(per_class))
    assert r["n_cal"] == 3000 and r["n"] == 3000 and r["alpha"] == 0.1


def test_bad_inputs_fail_with_clear_errors():
    z, y = oracle_data(50, seed=0)
    with pytest.raises(ValueError, match="alpha must be"):
        ConformalPredictor(1.5)
    with pytest.raises(ValueError, match="unknown conformal score"):
        ConformalPredictor(0.1, score="lac")
    with pytest.raises(RuntimeError, match="not fitted"):
        ConformalPredictor(0.1).predict_sets(z)
    with pytest.raises(ValueError, match="labels must lie in"):
        ConformalPredictor(0.1).fit(z, y + 10)
    cp = ConformalPredictor(0.1).fit(z, y)
    with pytest.raises(ValueError, match="fitted on 10"):
        cp.predict_sets(z[:, :5])


# ------------------------------------------------------------------------------------------ selective prediction
def ref_selective_threshold(z, y, max_risk):
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    conf, wrong = p.max(1), p.argmax(1) != y
    best = math.inf
    for t in sorted(set(conf.tolist())):
        acc = conf >= t
        if wrong[acc].mean() <= max_risk:
            best = min(best, t)
    return best


@pytest.mark.parametrize("max_risk", [0.02, 0.1, 0.3])
def test_selective_threshold_matches_brute_force(max_risk):
    z, y = oracle_data(800, seed=13)
    assert selective_threshold(z, y, max_risk) == ref_selective_threshold(z, y, max_risk)


def test_selective_ties_are_accepted_together():
    z = np.array([[2.0, 0.0], [2.0, 0.0], [1.0, 0.0], [0.5, 0.0]])
    y = np.array([0, 1, 0, 1])  # the two most confident images tie and one is wrong; the least confident is wrong
    t = selective_threshold(z, y, 0.34)
    assert t == pytest.approx(1 / (1 + math.exp(-1.0)))  # accept three images with one error (risk 1/3)
    with pytest.warns(UserWarning, match="abstain on every image"):
        assert selective_threshold(z, y, 0.2) == math.inf  # accepting only the top one is impossible (tie)
    assert (selective_predict(z, math.inf) == -1).all()


def test_selective_risk_holds_on_fresh_data_from_the_same_distribution():
    val_z, val_y = oracle_data(20_000, seed=14, scale=4.0)
    test_z, test_y = oracle_data(20_000, seed=15, scale=4.0)
    r = selective_report(val_z, val_y, test_z, test_y, max_risk=0.1)
    assert r["val_risk"] <= 0.1
    assert abs(r["risk"] - 0.1) < 0.01  # empirical guarantee: close on fresh data
    assert 0.2 < r["coverage"] < 1.0 and abs(r["coverage"] - r["val_coverage"]) < 0.02
    pred = selective_predict(test_z, r["threshold"])
    assert ((pred == -1) == (torch.softmax(torch.from_numpy(test_z), 1).max(1).values.numpy() < r["threshold"])).all()


def test_selective_bad_risk():
    z, y = oracle_data(10, seed=0)
    with pytest.raises(ValueError, match="max_risk must be"):
        selective_threshold(z, y, 1.0)
