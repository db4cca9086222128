"""The method-comparison harness: the CI smoke version of the digits suite, resumption, the interval arithmetic."""

from __future__ import annotations

import csv
import importlib.util
import math
import subprocess
import sys

import pytest

from .conftest import REPO

_spec = importlib.util.spec_from_file_location("compare_methods", REPO / "benchmarks" / "compare_methods.py")
compare = importlib.util.module_from_spec(_spec)
sys.modules["compare_methods"] = compare  # dataclasses look their module up
_spec.loader.exec_module(compare)


def test_interval_over_seeds_is_the_student_t_one():
    rows = [{"method": "m", "seed": s, "train_seconds": 1.0, "accuracy": a} for s, a in enumerate((0.5, 0.6, 0.7))]
    (entry,) = compare.summarize(rows, keys=("accuracy",))
    mean, half = entry["accuracy"]
    assert mean == pytest.approx(0.6)
    assert half == pytest.approx(4.302652729911275 * 0.1 / math.sqrt(3))  # t(0.975, 2 dof) * sd / sqrt(n)
    (single,) = compare.summarize(rows[:1], keys=("accuracy",))
    assert single["accuracy"][0] == 0.5 and math.isnan(single["accuracy"][1])
    assert "0.6000 ± 0.2484" in compare.markdown_table([entry], keys=("accuracy",))


def test_digits_smoke_suite_runs_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / "smoke"
    assert compare.main(["--suite", "digits", "--smoke", "--plots", "--out", str(out)]) == 0
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["method"], r["seed"], r["epochs"]) for r in rows] == [("ce", "0", "1"), ("ls005", "0", "1")]
    assert all(0 <= float(r["accuracy"]) <= 1 and r["ts/ece"] for r in rows)
    assert "| ce | 1 |" in (out / "results.md").read_text()
    assert {"reliability_grid.png", "accuracy_ece_auroc.png", "risk_coverage.png"} <= {p.name for p in out.iterdir()}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(subprocess, "run", no_training)
    assert compare.main(["--suite", "digits", "--smoke", "--out", str(out)]) == 0  # finished cells are skipped


def test_every_suite_names_existing_configs():
    for name in ("digits", "cifar10lt", "cifar100lt-gpu", "cifar10lt-budget"):
        suite = compare.get_suite(name, "/data")
        assert suite.cells
        for cell in suite.cells:
            assert (compare.CONFIGS / cell.config).is_file(), (name, cell.config)
