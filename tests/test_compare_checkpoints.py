"""benchmarks/compare_checkpoints.py: paired best/ vs last/ comparison on a run's validation split."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from .conftest import REPO

_spec = importlib.util.spec_from_file_location("compare_checkpoints", REPO / "benchmarks" / "compare_checkpoints.py")
cc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cc)


def _logits(n=300, k=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    z = torch.randn(n, k, generator=g) * 2 + 3 * F.one_hot(y, k)
    return z.numpy(), y.numpy()


def test_per_image_nll_matches_torch_cross_entropy():
    z, y = _logits()
    for t in (1.0, 0.4, 2.5):
        ref = F.cross_entropy(torch.from_numpy(z).double() / t, torch.from_numpy(y), reduction="none").numpy()
        np.testing.assert_allclose(cc.per_image_nll(z, y, t), ref, rtol=1e-10, atol=1e-12)


def test_paired_difference_identities():
    rng = np.random.default_rng(1)
    a, b = rng.gamma(1.0, size=400), rng.gamma(1.2, size=400)
    d = cc.paired_difference(a, b, n_boot=500)
    assert d["mean"] == pytest.approx(a.mean() - b.mean(), abs=1e-12)
    assert d["se"] == pytest.approx(np.std(a - b, ddof=1) / np.sqrt(400), rel=1e-12)
    assert d["low"] < d["mean"] < d["high"]
    # the bootstrap interval's half-width is about 1.96 standard errors
    assert (d["high"] - d["low"]) / 2 == pytest.approx(1.96 * d["se"], rel=0.2)
    # a constant shift has no spread at all: the interval collapses onto it
    c = cc.paired_difference(b + 0.25, b, n_boot=100)
    assert c["se"] == pytest.approx(0.0, abs=1e-12)
    assert c["low"] == pytest.approx(0.25) and c["high"] == pytest.approx(0.25)


def test_rescaled_logits_differ_in_nll_but_not_after_temperature_scaling():
    """z and 4z rank the images identically: the raw NLL tells them apart, the NLL after each one's own temperature
    must not (the temperature of 4z is 4x that of z)."""
    z, y = _logits()
    out = cc.compare({"a": z, "b": 4 * z}, y, n_boot=200)
    assert out["a"]["accuracy"] == out["b"]["accuracy"]
    assert abs(out["a-b"]["nll"]["mean"]) > 0.05
    assert out["b"]["temperature"] == pytest.approx(4 * out["a"]["temperature"], rel=1e-3)
    assert out["a-b"]["ts_nll"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert out["a"]["ts_nll"] <= out["a"]["nll"] + 1e-12


def test_on_a_finished_run(trained_run, tmp_path, capsys):
    """best/ must reproduce the run's val_predictions.npz; the one-epoch run's best and last are the same epoch, so
    every paired difference is zero. A tampered val_predictions.npz or a missing last/ is refused in one line."""
    out = tmp_path / "cmp.json"
    assert cc.main([str(trained_run), "--bootstrap", "100", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    saved = np.load(trained_run / "val_predictions.npz")
    assert res["images"] == len(saved["labels"])
    assert res["best"]["accuracy"] == pytest.approx((saved["logits"].argmax(1) == saved["labels"]).mean())
    assert res["best"]["nll"] == pytest.approx(cc.per_image_nll(saved["logits"], saved["labels"]).mean(), abs=1e-5)
    assert res["best-last"]["nll"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert "NLL after TS best - last" in capsys.readouterr().out

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    np.savez(run / "val_predictions.npz", logits=saved["logits"] + 0.5 * np.eye(saved["logits"].shape[1])[0],
             labels=saved["labels"])
    with pytest.raises(SystemExit, match="not the run's; refusing to compare"):
        cc.main([str(run)])
    with pytest.raises(SystemExit, match="^error: dataset path .* does not exist"):
        cc.main([str(run), "--data", str(tmp_path / "nowhere")])
    shutil.rmtree(run / "last")
    with pytest.raises(SystemExit, match="last' is missing: pass a finished run folder"):
        cc.main([str(run)])
