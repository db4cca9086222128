"""refcal_zoo.metrics: hand-computed cases, brute-force cross-checks, identities, bad inputs, shot groups."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import refcal_zoo.metrics as M
from refcal_zoo.metrics import METRIC_KEYS, UndefinedMetricWarning, evaluate_predictions

# ----------------------------------------------------------------------------------------------------------
# helpers: data and brute-force reference implementations written straight from the definitions


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def random_problem(n: int, k: int, seed: int = 0, acc: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """Logits with mixed over/under-confidence (per-sample temperature) and labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    z = rng.standard_normal((n, k))
    hit = rng.random(n) < acc
    z[np.arange(n), np.where(hit, y, rng.integers(0, k, n))] += 2.0
    return z * rng.uniform(0.3, 3.0, (n, 1)), y


def two_class_rows(conf: list[float], correct: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """2-class probability rows with top-label confidence ``conf`` (>= 0.5) and correctness ``correct``."""
    c = np.asarray(conf, dtype=np.float64)
    probs = np.stack([c, 1.0 - c], axis=1)
    labels = np.where(np.asarray(correct) == 1, 0, 1)
    return probs, labels


def brute_ece(conf, correct, n_bins=15):
    edges = np.linspace(0, 1, n_bins + 1)
    e, gaps = 0.0, []
    for b in range(n_bins):
        lo, hi = edges[b], edges[b + 1]
        m = (conf > lo) & (conf <= hi) if b > 0 else (conf <= hi)
        if m.any():
            gap = abs(correct[m].mean() - conf[m].mean())
            e += m.mean() * gap
            gaps.append(gap)
    return e, max(gaps)


def brute_sce(probs, y, n_bins=15):
    n, k = probs.shape
    total = 0.0
    for c in range(k):
        ind = (y == c).astype(float)
        total += brute_ece(probs[:, c], ind, n_bins)[0]
    return total / k


def brute_ace(probs, y, r=15):
    n, k = probs.shape
    total, count = 0.0, 0
    for c in range(k):
        order = np.argsort(probs[:, c], kind="stable")
        for chunk in np.array_split(order, r):
            if chunk.size:
                total += abs((y[chunk] == c).mean() - probs[chunk, c].mean())
                count += 1
    return total / count


def brute_aurc(conf, correct):
    """Per-sample (1/N) sum_i risk_i after sorting by confidence descending (exact only without ties)."""
    order = np.argsort(-conf, kind="stable")
    errors = 1 - correct[order]
    risks = [errors[: i + 1].sum() / (i + 1) for i in range(len(conf))]
    return float(np.mean(risks))


def brute_ovo(probs, y):
    classes = np.unique(y)
    scores = []
    for i, a in enumerate(classes):
        for b in classes[i + 1 :]:
            pair = []
            for pos, neg in ((a, b), (b, a)):
                sp, sn = probs[y == pos, pos], probs[y == neg, pos]
                gt = (sp[:, None] > sn[None, :]).mean() + 0.5 * (sp[:, None] == sn[None, :]).mean()
                pair.append(gt)
            scores.append(np.mean(pair))
    return float(np.mean(scores))


# ----------------------------------------------------------------------------------------------------------
# hand-computed cases


def test_ece_confidence_one_goes_to_last_bin():
    probs, y = two_class_rows([0.95, 1.0], [1, 0])
    assert M.ece(probs, y) == pytest.approx(0.475, abs=1e-12)  # torchmetrics 1.9 gives 0.525 (phantom bin)
    assert M.mce(probs, y) == pytest.approx(0.475, abs=1e-12)
    r = evaluate_predictions(probs, y)
    assert r["ece"] == pytest.approx(0.475, abs=1e-12)


def test_ece_mce_hand_case_several_bins():
    # bins of width 1/15: 0.55 -> (8/15, 9/15], 0.62 -> (9/15, 10/15], 0.64 same bin, 0.99 -> last bin
    probs, y = two_class_rows([0.55, 0.62, 0.64, 0.99], [0, 1, 0, 1])
    expected = (0.55 + abs(0.5 - 0.63) * 2 + 0.01) / 4
    assert M.ece(probs, y) == pytest.approx(expected, abs=1e-12)
    assert M.mce(probs, y) == pytest.approx(0.55, abs=1e-12)
    # with 1 bin, ECE = |mean conf - accuracy|
    assert M.ece(probs, y, n_bins=1) == pytest.approx(abs(np.mean([0.55, 0.62, 0.64, 0.99]) - 0.5), abs=1e-12)


def test_ece_edge_value_belongs_to_lower_bin():
    edges = np.linspace(0, 1, 16)
    c = edges[9]  # exactly on an edge: belongs to (8/15, 9/15]
    probs, y = two_class_rows([c, edges[9] + 1e-9], [1, 0])
    _, counts, _, _ = M.bin_top_label(probs.max(1), np.array([True, False]))
    assert counts[8] == 1 and counts[9] == 1


def test_accuracy_nll_brier_hand():
    logits = np.array([[0.0, math.log(3.0)], [math.log(4.0), 0.0]])  # p = (.25, .75), (.8, .2)
    y = np.array([1, 1])
    assert M.accuracy(logits, y) == 0.5
    assert M.nll(logits, y) == pytest.approx((-math.log(0.75) - math.log(0.2)) / 2, abs=1e-12)
    assert M.brier(logits, y) == pytest.approx((0.125 + 2 * 0.8**2) / 2, abs=1e-12)
    # probabilities: NLL clips p_y = 0 at float64 eps (like sklearn.log_loss)
    probs = np.array([[1.0, 0.0], [0.5, 0.5]])
    assert M.nll(probs, [1, 0]) == pytest.approx((-math.log(np.finfo(float).eps) - math.log(0.5)) / 2)
    assert M.brier(probs, [1, 0]) == pytest.approx((2.0 + 0.5) / 2)


def test_nll_from_logits_is_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0], [0.0, 800.0]])
    assert M.nll(logits, [1, 1]) == pytest.approx(500.0, abs=1e-9)  # log(softmax) would give inf


def test_equal_mass_ece_hand_and_ties():
    probs, y = two_class_rows([0.6, 0.6, 0.7, 0.9], [1, 0, 1, 1])
    assert M.ece_equal_mass(probs, y, n_bins=2) == pytest.approx(0.5 * 0.1 + 0.5 * 0.2, abs=1e-12)
    # all tied: stable order -> chunks {0, 1}, {2, 3} (by sample index), every sample counted
    probs, y = two_class_rows([0.6] * 4, [1, 0, 0, 0])
    assert M.ece_equal_mass(probs, y, n_bins=2) == pytest.approx(0.5 * 0.1 + 0.5 * 0.6, abs=1e-12)
    # more bins than samples: one sample per chunk, empty chunks skipped -> mean |correct - conf|
    assert M.ece_equal_mass(probs, y, n_bins=15) == pytest.approx((0.4 + 0.6 * 3) / 4, abs=1e-12)


def test_sce_hand():
    probs = np.array([[0.5, 0.28, 0.22], [0.08, 0.62, 0.30]])
    y = np.array([0, 2])
    # class 0: |1-.5| + |0-.08|; class 1: .28 + .62; class 2: .22 + |1-.3|; each / N=2, mean over K=3
    assert M.sce(probs, y) == pytest.approx((0.58 + 0.90 + 0.92) / 2 / 3, abs=1e-12)


def test_sce_uses_matrix_width_not_max_label():
    probs = softmax(np.random.default_rng(3).standard_normal((50, 4)))
    y = np.random.default_rng(4).integers(0, 2, 50)  # only classes 0 and 1 appear
    assert M.sce(probs, y) == pytest.approx(brute_sce(probs, y), abs=1e-12)


def test_ace_hand():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    y = np.array([0, 1, 0, 1])
    # every class and range: |0.5 - 0.25| or |0.5 - 0.75|
    assert M.ace(probs, y, n_ranges=2) == pytest.approx(0.25, abs=1e-12)


def test_aurc_eaurc_and_refinement_hand():
    probs, y = two_class_rows([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0])
    assert M.aurc(probs, y) == pytest.approx((0 + 1 / 2 + 1 / 3 + 2 / 4) / 4, abs=1e-12)
    opt = (1 / 3 + 2 / 4) / 4  # n_c = 2: (1/N) sum_{i=3..4} (i - 2) / i
    assert M.eaurc(probs, y) == pytest.approx((0 + 1 / 2 + 1 / 3 + 2 / 4) / 4 - opt, abs=1e-12)
    assert M.auroc_misclassification(probs, y) == pytest.approx(0.75, abs=1e-12)
    assert M.aupr_error(probs, y) == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3, abs=1e-12)
    assert M.fpr_at_95tpr(probs, y) == pytest.approx(0.5, abs=1e-12)
    cov, risk = M.risk_coverage_curve(probs, y)
    np.testing.assert_allclose(cov, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(risk, [0, 1 / 2, 1 / 3, 2 / 4])


def test_aurc_ties_are_one_threshold():
    probs, y = two_class_rows([0.9, 0.9, 0.5], [1, 0, 1])
    expected = (2 / 3) * (1 / 2) + (1 / 3) * (1 / 3)
    assert M.aurc(probs, y) == pytest.approx(expected, abs=1e-12)
    probs2, y2 = two_class_rows([0.9, 0.9, 0.5], [0, 1, 1])  # tied samples swapped
    assert M.aurc(probs2, y2) == pytest.approx(expected, abs=1e-12)
    assert M.auroc_misclassification(probs, y) == pytest.approx((0.5 + 0.0) / 2, abs=1e-12)  # tie = 1/2


def test_eaurc_zero_for_perfect_ranking():
    probs, y = two_class_rows([0.99, 0.95, 0.9, 0.7, 0.6], [1, 1, 1, 0, 0])
    assert M.eaurc(probs, y) == 0.0
    assert M.auroc_misclassification(probs, y) == 1.0
    assert M.fpr_at_95tpr(probs, y) == 0.0


def test_ovo_hand():
    probs = np.array([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.2, 0.2, 0.6]])
    y = np.array([0, 0, 1, 2, 2])
    # pairs (0,1): AUC(0|1)=1, AUC(1|0)=1 ; (0,2): AUC(0|2)=1, AUC(2|0)=1 ; (1,2): AUC(1|2)=1, AUC(2|1)=1
    assert M.auroc_ovo(probs, y) == pytest.approx(1.0)
    y2 = np.array([0, 1, 1, 2, 2])
    assert M.auroc_ovo(probs, y2) == pytest.approx(brute_ovo(probs, y2), abs=1e-12)


def test_smece_hand():
    # constant forecast 0.7 with exactly 70% positives: smoothed residual is 0 everywhere
    f = np.full(10, 0.7)
    y = np.array([1] * 7 + [0] * 3)
    assert M.smooth_ece(f, y) == pytest.approx(0.0, abs=1e-12)
    # always-0.7 forecast, always positive: residual -0.3 wherever there is mass
    assert M.smooth_ece(f, np.ones(10)) == pytest.approx(0.3, abs=2e-3)
    # top-label: all confident and right -> 0; all confident and wrong -> ~1
    probs, y = two_class_rows([1.0] * 5, [1] * 5)
    assert M.smece(probs, y) == pytest.approx(0.0, abs=1e-12)
    probs, y = two_class_rows([1.0] * 5, [0] * 5)
    assert M.smece(probs, y) == pytest.approx(1.0, abs=2e-3)


# ----------------------------------------------------------------------------------------------------------
# brute-force agreement on random data


@pytest.mark.parametrize("n,k,seed", [(1, 3, 0), (7, 2, 1), (500, 10, 2), (3000, 7, 3)])
def test_against_brute_force(n, k, seed):
    z, y = random_problem(n, k, seed)
    p = softmax(z)
    conf, correct = p.max(1), (p.argmax(1) == y).astype(float)
    e, m = brute_ece(conf, correct)
    assert M.ece(z, y) == pytest.approx(e, abs=1e-12)
    assert M.mce(z, y) == pytest.approx(m, abs=1e-12)
    assert M.sce(z, y) == pytest.approx(brute_sce(p, y), abs=1e-12)
    assert M.ace(z, y) == pytest.approx(brute_ace(p, y), abs=1e-12)
    assert M.aurc(z, y) == pytest.approx(brute_aurc(conf, correct), abs=1e-12)
    if len(np.unique(y)) > 1 and n <= 500:
        assert M.auroc_ovo(z, y) == pytest.approx(brute_ovo(p, y), abs=1e-12)


def test_classwise_pass_threaded_equals_serial():
    from refcal_zoo.metrics._classwise import classwise_pass

    z, y = random_problem(30_000, 70, 5)
    p = softmax(z)
    p[:50] = np.round(p[:50], 2)  # some ties
    a = classwise_pass(p, y, n_bins=15, n_ranges=15, want_u=True, n_threads=1)
    b = classwise_pass(p, y, n_bins=15, n_ranges=15, want_u=True, n_threads=3)
    assert a.sce == b.sce and a.ace == b.ace
    np.testing.assert_array_equal(a.pair_u, b.pair_u)


def test_ties_handled_exactly_in_ovo_and_ranking():
    rng = np.random.default_rng(7)
    pool = softmax(rng.standard_normal((6, 4)))
    idx = rng.integers(0, 6, 400)
    p, y = pool[idx], rng.integers(0, 4, 400)  # heavy ties everywhere
    assert M.auroc_ovo(p, y) == pytest.approx(brute_ovo(p, y), abs=1e-12)
    assert M.ace(p, y) == pytest.approx(brute_ace(p, y), abs=1e-12)
    assert M.sce(p, y) == pytest.approx(brute_sce(p, y), abs=1e-12)


# ----------------------------------------------------------------------------------------------------------
# identities


def calibrated_sample(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Perfectly calibrated by construction: labels drawn from the predicted distribution."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(k, 0.3), size=n)
    y = (rng.random(n)[:, None] > np.cumsum(p, 1)).sum(1).clip(0, k - 1)
    return p, y


def test_calibrated_sampler_errors_shrink_with_n():
    small = evaluate_predictions(*calibrated_sample(500, 5, 0), inputs="probs")
    large = evaluate_predictions(*calibrated_sample(200_000, 5, 1), inputs="probs")
    for key in ("ece", "ece_equal_mass", "sce", "ace", "smece"):
        assert large[key] < small[key], key
        assert large[key] < 0.01, (key, large[key])
    p, y = calibrated_sample(200_000, 5, 1)
    miscal = evaluate_predictions(p**2, y)
    assert miscal["ece"] > 0.05  # the metric can fail


def test_temperature_invariances():
    z, y = random_problem(2000, 10, 11)
    base = evaluate_predictions(z, y, inputs="logits")
    for t in (0.5, 2.0, 7.0):
        r = evaluate_predictions(z / t, y, inputs="logits")
        assert r["accuracy"] == base["accuracy"]  # argmax is invariant
    np.testing.assert_array_equal(softmax(z / 3).argmax(1), z.argmax(1))
    # binary problems: confidence = sigmoid(|margin| / T) is monotone in |margin| -> ranking metrics invariant
    z2, y2 = random_problem(2000, 2, 12)
    b2 = evaluate_predictions(z2, y2, inputs="logits")
    for t in (0.5, 3.0):
        r2 = evaluate_predictions(z2 / t, y2, inputs="logits")
        for key in ("auroc_misclassification", "aupr_error", "fpr_at_95tpr", "aurc", "eaurc", "auroc_ovo"):
            assert r2[key] == pytest.approx(b2[key], abs=1e-12), key


def test_monotone_transform_of_confidence_keeps_ranking_metrics():
    rng = np.random.default_rng(13)
    conf = 0.5 + 0.5 * rng.random(1000)
    correct = (rng.random(1000) < conf).astype(int)
    p1, y = two_class_rows(conf.tolist(), correct.tolist())
    p2, _ = two_class_rows((0.5 + 0.5 * ((conf - 0.5) / 0.5) ** 3).tolist(), correct.tolist())
    for fn in (M.auroc_misclassification, M.aupr_error, M.fpr_at_95tpr, M.aurc, M.eaurc):
        assert fn(p1, y) == pytest.approx(fn(p2, y), abs=1e-12), fn.__name__
    assert M.ece(p1, y) != pytest.approx(M.ece(p2, y))  # calibration is not invariant


def test_permutation_invariance_without_ties():
    z, y = random_problem(1500, 6, 14)
    perm = np.random.default_rng(15).permutation(1500)
    a, b = evaluate_predictions(z, y), evaluate_predictions(z[perm], y[perm])
    for key in METRIC_KEYS:
        assert b[key] == pytest.approx(a[key], rel=1e-10, abs=1e-12), key


def test_aurc_matches_brute_force_and_ignores_tie_order():
    z, y = random_problem(800, 5, 16)
    p = softmax(z)
    assert M.aurc(p, y) == pytest.approx(brute_aurc(p.max(1), (p.argmax(1) == y).astype(float)), abs=1e-12)
    q = np.round(p, 1)
    q /= q.sum(1, keepdims=True)
    perm = np.random.default_rng(17).permutation(800)
    assert M.aurc(q, y, inputs="probs") == pytest.approx(M.aurc(q[perm], y[perm], inputs="probs"), abs=1e-12)


def test_bounds_and_orderings():
    z, y = random_problem(3000, 10, 18)
    r = evaluate_predictions(z, y)
    for key in METRIC_KEYS:
        if key not in ("nll", "brier"):
            assert 0.0 <= r[key] <= 1.0, key
    assert 0.0 <= r["brier"] <= 2.0 and r["nll"] > 0
    assert r["mce"] >= r["ece"]
    assert r["eaurc"] >= 0 and r["aurc"] >= r["eaurc"]


# ----------------------------------------------------------------------------------------------------------
# output contract, inputs, torch


def test_keys_and_types():
    z, y = random_problem(300, 4, 19)
    r = evaluate_predictions(z, y)
    assert list(r) == [*METRIC_KEYS, "n"]
    assert set(METRIC_KEYS) == {
        "accuracy", "nll", "brier", "ece", "mce", "ece_equal_mass", "sce", "ace", "smece",
        "auroc_misclassification", "auroc_ovo", "aupr_error", "fpr_at_95tpr", "aurc", "eaurc",
    }
    assert r["n"] == 300
    assert all(type(r[k]) is float for k in METRIC_KEYS)
    assert set(M.METRIC_DEFINITIONS) == set(METRIC_KEYS)


def test_auto_detection_and_forcing():
    z, y = random_problem(200, 5, 20)
    p = softmax(z)
    assert evaluate_predictions(p, y) == evaluate_predictions(z, y)  # auto: probs vs logits, same metrics
    assert M.nll(p, y, inputs="logits") != pytest.approx(M.nll(p, y))  # forcing changes the meaning
    # a matrix in [0, 1] whose rows do not sum to 1 is ambiguous: treated as logits, with a warning saying so
    u = np.random.default_rng(0).random((100, 5))
    with pytest.warns(UserWarning, match="treats this matrix as logits"):
        assert M.nll(u, y[:100]) == pytest.approx(M.nll(u, y[:100], inputs="logits"))
    # half-precision probabilities fail the 1e-4 row-sum test: treated as logits, with a warning
    p16 = (p * 0.997).astype(np.float16)  # rows sum to ~0.997
    with pytest.warns(UserWarning, match="inputs='probs'"):
        assert M.nll(p16, y) == pytest.approx(M.nll(p16, y, inputs="logits"))


def test_prepared_set_is_reusable():
    z, y = random_problem(300, 5, 26)
    prep = M.prepare(z, y)
    assert M.ece(prep, y) == M.ece(z, y) and M.auroc_ovo(prep, None) == M.auroc_ovo(z, y)
    assert evaluate_predictions(prep, y) == evaluate_predictions(z, y)
    with pytest.raises(ValueError, match="labels differ"):
        M.ece(prep, (y + 1) % 5)


def test_torch_and_list_inputs():
    torch = pytest.importorskip("torch")
    z, y = random_problem(400, 6, 21)
    ref = evaluate_predictions(z, y)
    got = evaluate_predictions(torch.from_numpy(z), torch.from_numpy(y))
    assert got == pytest.approx(ref, rel=1e-12)
    got32 = evaluate_predictions(torch.from_numpy(z).float(), torch.from_numpy(y))
    assert got32["ece"] == pytest.approx(ref["ece"], abs=1e-5)
    bf = evaluate_predictions(torch.from_numpy(z).bfloat16(), torch.from_numpy(y).int())
    assert bf["accuracy"] == pytest.approx(ref["accuracy"], abs=0.05)
    assert evaluate_predictions(z.tolist(), y.tolist()) == pytest.approx(ref, rel=1e-12)


# ----------------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "x,y,kwargs,match",
    [
        ([[0.0, np.nan]], [0], {}, "NaN or Inf"),
        ([[0.0, np.inf], [1.0, 2.0]], [0, 1], {}, "NaN or Inf"),
        ([[0.0, 1.0]], [2], {}, "out of range"),
        ([[0.0, 1.0]], [-1], {}, "out of range"),
        ([[0.0, 1.0], [1.0, 0.0]], [0], {}, "length mismatch"),
        (np.zeros((0, 3)), np.zeros(0, int), {}, "empty"),
        ([0.2, 0.8], [0, 1], {}, "2-D"),
        (np.zeros((2, 2, 2)), [0, 1], {}, "2-D"),
        ([[1.0], [2.0]], [0, 0], {}, "K >= 2"),
        ([[0.0, 1.0]], [0.5], {}, "integers"),
        ([[0.0, 1.0]], [[0]], {}, "1-D"),
        ([[0.0, 1.0]], ["a"], {}, "numeric"),
        ([[0.0, 1.0]], [0], {"inputs": "softmax"}, "inputs must be"),
        ([[-0.5, 1.5]], [0], {"inputs": "probs"}, "outside"),
        ([[0.0, 1.0]], [0], {"n_bins": 0}, "n_bins"),
        ([[0.0, 1.0]], [0], {"train_class_counts": [5, 5, 5]}, "train_class_counts"),
        ([[0.0, 1.0]], [0], {"train_class_counts": [5, -1]}, "non-negative"),
    ],
)
def test_bad_input_raises_value_error(x, y, kwargs, match):
    with pytest.raises(ValueError, match=match):
        evaluate_predictions(np.asarray(x) if not isinstance(x, list) else x, y, **kwargs)


@pytest.mark.parametrize(
    "fn", [M.ece, M.sce, M.ace, M.smece, M.auroc_ovo, M.aurc, M.nll, M.brier, M.accuracy, M.ece_equal_mass]
)
def test_each_function_validates(fn):
    with pytest.raises(ValueError, match="NaN or Inf"):
        fn(np.array([[np.nan, 0.0]]), [0])
    with pytest.raises(ValueError, match="out of range"):
        fn(np.array([[0.3, 0.0]]), [5])


# ----------------------------------------------------------------------------------------------------------
# undefined metrics and tiny subsets


@pytest.mark.parametrize("all_correct", [True, False])
def test_one_sided_correctness_gives_nan_with_warning(all_correct):
    z, y = random_problem(50, 3, 22)
    y = z.argmax(1) if all_correct else (z.argmax(1) + 1) % 3
    for fn in (M.auroc_misclassification, M.aupr_error, M.fpr_at_95tpr):
        with pytest.warns(UndefinedMetricWarning, match="all 50 predictions"):
            assert math.isnan(fn(z, y))
    with pytest.warns(UndefinedMetricWarning):
        r = evaluate_predictions(z, y)
    assert all(math.isnan(r[k]) for k in ("auroc_misclassification", "aupr_error", "fpr_at_95tpr"))
    assert r["accuracy"] == (1.0 if all_correct else 0.0)
    assert r["aurc"] == (0.0 if all_correct else 1.0) and r["eaurc"] == 0.0
    assert not math.isnan(r["auroc_ovo"]) and not math.isnan(r["ece"])


def test_single_sample_and_single_class_subset():
    with pytest.warns(UndefinedMetricWarning):
        r = evaluate_predictions([[2.0, 0.0, 1.0]], [0])
    assert r["n"] == 1 and r["accuracy"] == 1.0 and math.isnan(r["auroc_ovo"])
    z, y = random_problem(200, 10, 23)
    mask = y == 3
    with pytest.warns(UndefinedMetricWarning, match="single class"):
        r = evaluate_predictions(z[mask], y[mask])
    assert math.isnan(r["auroc_ovo"])
    assert all(not math.isnan(r[k]) for k in METRIC_KEYS if k != "auroc_ovo")


def test_two_class_subset_of_many_classes():
    z, y = random_problem(600, 10, 24)
    mask = (y == 2) | (y == 7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing undefined here
        r = evaluate_predictions(z[mask], y[mask])
    assert all(np.isfinite(r[k]) for k in METRIC_KEYS)
    p = softmax(z[mask])[:, [2, 7]]
    p /= p.sum(1, keepdims=True)
    yy = (y[mask] == 7).astype(int)
    assert r["auroc_ovo"] == pytest.approx(brute_ovo(p, yy), abs=1e-12)  # renormalised over present classes


# ----------------------------------------------------------------------------------------------------------
# shot groups


def test_shot_group_thresholds_inclusive():
    g = M.shot_groups([101, 100, 20, 19, 0, 5000])
    assert g["many"].tolist() == [0, 5]
    assert g["medium"].tolist() == [1, 2]
    assert g["few"].tolist() == [3, 4]
    g = M.shot_groups([101, 100, 20, 19], thresholds=(50, 10))
    assert g["many"].tolist() == [0, 1] and g["medium"].tolist() == [2, 3] and g["few"].tolist() == []


def test_frequency_thirds_split_cifar10lt_as_mislas():
    cifar10lt = [4950, 3837, 2974, 2305, 1787, 1385, 1073, 832, 645, 500]  # rho 10, head class first
    groups = M.shot_groups(cifar10lt, thresholds=M.frequency_thirds(cifar10lt))
    assert [g.tolist() for g in groups.values()] == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9]]
    shuffled = [500, 4950, 832, 3837]  # order-free; 30% of 4 classes rounds to 1
    assert [g.tolist() for g in M.shot_groups(shuffled, thresholds=M.frequency_thirds(shuffled)).values()] == [
        [1], [2, 3], [0]]
    assert M.frequency_thirds([7, 3]) == (3.0, 3.0)  # K = 2: the head class and the rest
    with pytest.raises(ValueError, match="non-empty"):
        M.frequency_thirds([])


def test_group_keys_counts_and_values():
    z, y = random_problem(1000, 6, 25)
    counts = [500, 200, 60, 20, 10, 3]  # many: 0,1  medium: 2,3  few: 4,5
    r = evaluate_predictions(z, y, train_class_counts=counts)
    for name, classes in (("many", [0, 1]), ("medium", [2, 3]), ("few", [4, 5])):
        mask = np.isin(y, classes)
        assert r[f"{name}/n"] == int(mask.sum())
        sub = evaluate_predictions(z[mask], y[mask])
        for key in METRIC_KEYS:
            assert r[f"{name}/{key}"] == pytest.approx(sub[key], rel=1e-12, abs=1e-15), (name, key)
    assert r["many/n"] + r["medium/n"] + r["few/n"] == r["n"] == 1000
    # a group without test samples is omitted; thresholds are configurable
    r2 = evaluate_predictions(z, y, train_class_counts=[500] * 6)
    assert "many/n" in r2 and not any(k.startswith(("medium/", "few/")) for k in r2)
    with warnings.catch_warnings(record=True) as caught:  # many = class 0 only, medium = class 1 only
        warnings.simplefilter("always")
        r3 = evaluate_predictions(z, y, train_class_counts=counts, group_thresholds=(300, 100))
    messages = sorted(str(w.message) for w in caught if w.category is UndefinedMetricWarning)
    assert len(messages) == 2 and "[many group] auroc_ovo" in messages[0] and "[medium group]" in messages[1]
    assert math.isnan(r3["many/auroc_ovo"]) and math.isnan(r3["medium/auroc_ovo"])
    assert r3["many/n"] == int(np.isin(y, [0]).sum()) and r3["few/n"] == int(np.isin(y, [2, 3, 4, 5]).sum())


# ----------------------------------------------------------------------------------------------------------
# internals that the speed relies on


@pytest.mark.parametrize("n", [10, 2048, 50_000])
def test_fast_stable_argsort_equals_numpy_stable(n):
    from refcal_zoo.metrics._sort import stable_argsort_nonneg

    rng = np.random.default_rng(n)
    base = rng.random(n)
    near = np.repeat(rng.random(n // 40 + 1), 40)[:n] * (1 + rng.integers(-3, 4, n) * 2.0**-50)
    rng.shuffle(near)
    mixed = rng.random(n)
    mixed[rng.random(n) < 0.3] = 0.0
    mixed[rng.random(n) < 0.2] = 1.0
    mixed[rng.random(n) < 0.1] = -0.0
    mixed[rng.random(n) < 0.1] = 5e-324  # subnormal
    for x in (base, np.round(base, 2), np.clip(near, 0, 1), mixed, np.exp(-800 * base)):
        np.testing.assert_array_equal(stable_argsort_nonneg(x), np.argsort(x, kind="stable"))


def test_lazy_columns_match_a_float64_softmax():
    from refcal_zoo.metrics._inputs import prepare

    z, y = random_problem(20_000, 13, 30)
    z32 = z.astype(np.float32)
    p = prepare(z32, y, "logits")
    full = softmax(z32.astype(np.float64))
    np.testing.assert_array_equal(p.columns(3, 11), full[:, 3:11].T)
    np.testing.assert_array_equal(p.probs, full)
    np.testing.assert_array_equal(p.conf, full.max(1))
    q = prepare(full, y, "probs")
    np.testing.assert_array_equal(q.columns(0, 13), full.T)


def test_cuda_tensor_inputs():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    z, y = random_problem(1000, 10, 31)
    got = evaluate_predictions(torch.from_numpy(z).cuda().requires_grad_(), torch.from_numpy(y).cuda())
    assert got == pytest.approx(evaluate_predictions(z, y), rel=1e-12)
