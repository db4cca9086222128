"""refcal_zoo.metrics vs independent reference implementations (sklearn, netcal, torchmetrics, relplot).

Each reference is optional (``pytest.importorskip``); install them with the ``dev`` extra. They are used only
where they implement the same definition; known library deviations are asserted as such.
"""

from __future__ import annotations

import numpy as np
import pytest

import refcal_zoo.metrics as M
from refcal_zoo.metrics import evaluate_predictions


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def problem(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    z = rng.standard_normal((n, k))
    hit = rng.random(n) < 0.6
    z[np.arange(n), np.where(hit, y, rng.integers(0, k, n))] += 2.0
    return softmax(z * rng.uniform(0.3, 3.0, (n, 1))), y


def tied_problem(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows drawn from a small pool of probability vectors: massive ties in every column and confidence."""
    rng = np.random.default_rng(seed)
    pool = softmax(2 * rng.standard_normal((8, k)))
    return pool[rng.integers(0, 8, n)], rng.integers(0, k, n)


CASES = [(2000, 10, 0), (5000, 3, 1), (3000, 2, 2), (1500, 37, 3)]


# ---------------------------------------------------------------------------------------------- sklearn


@pytest.mark.parametrize("n,k,seed", CASES)
@pytest.mark.parametrize("tied", [False, True])
def test_sklearn_ranking_metrics(n, k, seed, tied):
    skm = pytest.importorskip("sklearn.metrics", reason="scikit-learn is the AUROC/AP reference")
    p, y = (tied_problem if tied else problem)(n, k, seed)
    conf, correct = p.max(1), (p.argmax(1) == y).astype(int)
    r = evaluate_predictions(p, y, inputs="probs")
    assert r["auroc_misclassification"] == pytest.approx(skm.roc_auc_score(correct, conf), abs=1e-12)
    assert r["aupr_error"] == pytest.approx(skm.average_precision_score(1 - correct, -conf), abs=1e-12)
    fpr, tpr, _ = skm.roc_curve(correct, conf, drop_intermediate=False)
    assert r["fpr_at_95tpr"] == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-12)
    if not tied:  # without ties the default (dropped intermediate points) curve gives the same value
        fpr, tpr, _ = skm.roc_curve(correct, conf)
        assert r["fpr_at_95tpr"] == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-12)
    scores = p[:, 1] if k == 2 else p  # sklearn wants 1-D scores for binary labels
    assert r["auroc_ovo"] == pytest.approx(skm.roc_auc_score(y, scores, multi_class="ovo"), abs=1e-12)
    assert r["nll"] == pytest.approx(skm.log_loss(y, p, labels=np.arange(k)), rel=1e-12)
    assert r["accuracy"] == skm.accuracy_score(y, p.argmax(1))


def test_sklearn_brier():
    skm = pytest.importorskip("sklearn.metrics", reason="scikit-learn is the Brier reference")
    p, y = problem(2000, 10, 4)
    try:
        ref = skm.brier_score_loss(y, p, labels=np.arange(10), scale_by_half=False)
    except TypeError:  # scikit-learn < 1.7 has no multiclass Brier
        ref = np.mean(np.sum((p - np.eye(10)[y]) ** 2, axis=1))
    assert M.brier(p, y) == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("classes", [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 4, 8], [3, 6]])
def test_sklearn_ovo_on_subsets_renormalised(classes):
    skm = pytest.importorskip("sklearn.metrics", reason="scikit-learn is the OvO reference")
    p, y = problem(4000, 10, 5)
    mask = np.isin(y, classes)
    ps, ys = p[mask], y[mask]
    sub = ps[:, classes] / ps[:, classes].sum(1, keepdims=True)
    ref = skm.roc_auc_score(ys, sub if len(classes) > 2 else sub[:, 1], multi_class="ovo")
    assert M.auroc_ovo(ps, ys) == pytest.approx(ref, abs=1e-12)


def test_sklearn_ovo_with_ties():
    skm = pytest.importorskip("sklearn.metrics", reason="scikit-learn is the OvO reference")
    p, y = tied_problem(3000, 6, 6)
    assert M.auroc_ovo(p, y) == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovo"), abs=1e-12)


# ----------------------------------------------------------------------------------------------- netcal


@pytest.mark.parametrize("n,k,seed", [c for c in CASES if c[1] > 2])  # netcal treats <= 2 labels as binary
def test_netcal_top_label_ece_mce(n, k, seed):
    metrics = pytest.importorskip("netcal.metrics", reason="netcal is a top-label ECE reference")
    p, y = problem(n, k, seed)
    assert M.ece(p, y) == pytest.approx(metrics.ECE(bins=15).measure(p, y), abs=1e-10)
    assert M.mce(p, y) == pytest.approx(metrics.MCE(bins=15).measure(p, y), abs=1e-10)


def test_netcal_keeps_confidence_one_in_last_bin():
    metrics = pytest.importorskip("netcal.metrics", reason="netcal is a top-label ECE reference")
    p = np.array([[0.95, 0.03, 0.02], [1.0, 0.0, 0.0], [0.2, 0.7, 0.1]])
    y = np.array([0, 1, 2])
    # netcal clips probabilities to [eps, 1 - eps]: differences of order 1e-16
    assert M.ece(p, y) == pytest.approx(metrics.ECE(bins=15).measure(p, y), abs=1e-12)


def test_netcal_equal_mass_agrees_when_n_is_a_multiple_of_bins():
    metrics = pytest.importorskip("netcal.metrics", reason="netcal is an equal-mass ECE reference")
    p, y = problem(3000, 10, 7)  # 3000 = 200 * 15: np.quantile edges fall between the same samples
    ref = metrics.ECE(bins=15, equal_intervals=False).measure(p, y)
    assert M.ece_equal_mass(p, y) == pytest.approx(ref, abs=1e-10)
    # otherwise netcal's interpolated quantile edges move single samples across bin boundaries
    p, y = problem(3001, 10, 7)
    ref = metrics.ECE(bins=15, equal_intervals=False).measure(p, y)
    assert M.ece_equal_mass(p, y) == pytest.approx(ref, abs=5e-3)


# ----------------------------------------------------------------------------------------- torchmetrics


@pytest.mark.parametrize("n,k,seed", CASES)
def test_torchmetrics_ece_without_confidence_one(n, k, seed):
    torch = pytest.importorskip("torch")
    tmf = pytest.importorskip("torchmetrics.functional.classification", reason="torchmetrics ECE reference")
    p, y = problem(n, k, seed)
    # torchmetrics casts confidences to float32; give both float32 probabilities so the bins are identical
    # (float32 confidences within ~1e-7 of 1.0 also land in torchmetrics' extra bin: leave them out)
    p = p.astype(np.float32)
    keep = p.max(1) < 0.9999
    p, y = p[keep], y[keep]
    tp, ty = torch.from_numpy(p), torch.from_numpy(y)
    ref = tmf.multiclass_calibration_error(tp, ty, num_classes=k, n_bins=15, norm="l1").item()
    ref_max = tmf.multiclass_calibration_error(tp, ty, num_classes=k, n_bins=15, norm="max").item()
    assert M.ece(p, y, inputs="probs") == pytest.approx(ref, abs=1e-6)  # float32 accumulation in torchmetrics
    assert M.mce(p, y, inputs="probs") == pytest.approx(ref_max, abs=1e-6)


def test_torchmetrics_phantom_bin_differs_as_documented():
    torch = pytest.importorskip("torch")
    tmf = pytest.importorskip("torchmetrics.functional.classification", reason="torchmetrics ECE reference")
    p = np.array([[0.95, 0.05], [1.0, 0.0]])
    y = np.array([0, 1])
    ref = tmf.multiclass_calibration_error(torch.from_numpy(p), torch.from_numpy(y), num_classes=2, n_bins=15)
    assert float(ref) == pytest.approx(0.525, abs=1e-6)  # torchmetrics issue #3510: 1.0 in an extra bin
    assert M.ece(p, y) == pytest.approx(0.475, abs=1e-12)


# ---------------------------------------------------------------------------------------------- relplot


@pytest.mark.parametrize("n,k,seed", [(50, 3, 8), (2000, 10, 9), (20000, 5, 10), (3000, 2, 11)])
def test_relplot_smece(n, k, seed):
    relplot = pytest.importorskip("relplot", reason="relplot is the smECE reference")
    p, y = problem(n, k, seed)
    f, c = relplot.multiclass_logits_to_confidences(p, y, probs=True)
    ref, sigma = relplot.smECE(f, c, return_width=True)
    ours = evaluate_predictions(p, y)["smece"]
    assert ours == pytest.approx(ref, abs=1e-4)
    assert ours == pytest.approx(ref, abs=1e-10)  # same discretisation: agreement to rounding
    v, s = M.smooth_ece(f, c, return_sigma=True)
    assert s == sigma and v == pytest.approx(ref, abs=1e-10)


@pytest.mark.parametrize("sigma", [0.3, 0.05, 0.01, 0.003])
def test_relplot_smece_fixed_bandwidth(sigma):
    relplot = pytest.importorskip("relplot", reason="relplot is the smECE reference")
    rng = np.random.default_rng(12)
    f = rng.random(5000)
    y = (rng.random(5000) < f**1.5).astype(float)
    assert M.smooth_ece(f, y, sigma=sigma) == pytest.approx(relplot.smECE_sigma(f, y, sigma), abs=1e-10)


def test_relplot_smece_extremes():
    relplot = pytest.importorskip("relplot", reason="relplot is the smECE reference")
    rng = np.random.default_rng(13)
    f = np.clip(np.round(rng.random(3000), 1), 0, 1)  # ties, exact 0 and 1
    y = (rng.random(3000) < 0.5).astype(float)
    assert M.smooth_ece(f, y) == pytest.approx(relplot.smECE(f, y), abs=1e-10)
    f = np.full(100, 0.99)
    y = (np.arange(100) < 99).astype(float)  # calibrated: tiny bandwidth, FFT path
    assert M.smooth_ece(f, y) == pytest.approx(relplot.smECE(f, y), abs=1e-10)
