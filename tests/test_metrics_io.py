"""refcal_zoo.metrics: reliability diagram PNGs, the Hugging Face `evaluate` module, dependency hygiene."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

import refcal_zoo.metrics as M
from refcal_zoo.metrics import evaluate_predictions

METRICS_DIR = Path(M.__file__).parent
HF_MODULE_DIR = METRICS_DIR / "hf_evaluate" / "refcal_calibration"


def problem(n: int = 500, k: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    z = rng.standard_normal((n, k)) * 2
    z[np.arange(n), y] += 1.5
    return z, y


def test_reliability_diagram_writes_png(tmp_path):
    z, y = problem()
    pyplot_loaded = "matplotlib.pyplot" in sys.modules
    import matplotlib

    backend = dict.__getitem__(matplotlib.rcParams, "backend")  # raw value: reading it must not resolve it
    out = M.reliability_diagram(z, y, tmp_path / "sub" / "rel.png", title="resnet32 / cifar10lt")
    assert out == tmp_path / "sub" / "rel.png"
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert sorted(p.name for p in out.parent.iterdir()) == ["rel.png"]  # no temp file left behind
    assert dict.__getitem__(matplotlib.rcParams, "backend") == backend
    if not pyplot_loaded:
        assert "matplotlib.pyplot" not in sys.modules  # object API only, caller's pyplot state untouched
    M.reliability_diagram(z, y, tmp_path / "plain.png", smooth=False, n_bins=10)
    assert (tmp_path / "plain.png").read_bytes()[:4] == b"\x89PNG"


def test_reliability_diagram_is_atomic(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    target = tmp_path / "rel.png"
    target.write_bytes(b"old")

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        M.reliability_diagram(*problem(), target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["rel.png"]


def test_reliability_diagram_validates_input(tmp_path):
    with pytest.raises(ValueError, match="NaN"):
        M.reliability_diagram([[np.nan, 1.0]], [0], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_hf_evaluate_module_loads_offline(tmp_path, monkeypatch):
    evaluate = pytest.importorskip("evaluate", reason="`evaluate` is optional (dev extra)")
    monkeypatch.setattr(evaluate.config, "HF_MODULES_CACHE", tmp_path / "modules")
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metric = evaluate.load(str(HF_MODULE_DIR), cache_dir=str(tmp_path / "cache"))
    z, y = problem(300, 4, 1)
    expected = evaluate_predictions(z, y, inputs="logits")
    got = metric.compute(predictions=z.tolist(), references=y.tolist(), inputs="logits")
    assert got == pytest.approx(expected, rel=1e-12)
    for start in range(0, 300, 100):  # incremental use
        metric.add_batch(predictions=z[start : start + 100], references=y[start : start + 100])
    counts = [200, 50, 10, 3]
    with pytest.warns(M.UndefinedMetricWarning):  # the single-class groups have no OvO AUROC
        got = metric.compute(inputs="logits", train_class_counts=counts)
        expected = evaluate_predictions(z, y, inputs="logits", train_class_counts=counts)
    assert got == pytest.approx(expected, rel=1e-12, nan_ok=True)
    assert "few/ece" in got and got["few/n"] == int(np.sum(y >= 2))


def test_hf_module_has_one_import_per_line():
    text = (HF_MODULE_DIR / "refcal_calibration.py").read_text()
    for line in text.splitlines():
        if re.match(r"^(import|from)\s", line):
            assert "," not in line and "(" not in line, line


def test_reference_libraries_are_not_imported_by_the_package():
    banned = ("relplot", "netcal", "torchmetrics", "evaluate")
    for path in METRICS_DIR.rglob("*.py"):
        if HF_MODULE_DIR in path.parents:
            continue
        for line in path.read_text().splitlines():
            m = re.match(r"^\s*(?:import|from)\s+([\w.]+)", line)
            if m:
                assert m.group(1).split(".")[0] not in banned, f"{path.name}: {line.strip()}"
