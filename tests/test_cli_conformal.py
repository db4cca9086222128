"""`refcal-zoo eval --conformal`: coverage and set sizes from the run's validation logits, checked independently."""

from __future__ import annotations

import json

import numpy as np
import pytest

from refcal_zoo.calibration import ConformalPredictor
from refcal_zoo.cli import main


def test_eval_conformal_uses_the_validation_logits(trained_run, tmp_path, capsys):
    out_json = tmp_path / "eval.json"
    code = main(["eval", str(trained_run), "--dataset", "digits", "--conformal", "0.1", "--json", str(out_json)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "conformal prediction sets, alpha=0.1" in out and "validation split (200 images)" in out
    report = json.loads(out_json.read_text())["conformal"]
    # independent recomputation from the files the run wrote (validation and test logits, fitted temperature)
    t = json.loads((trained_run / "temperature.json").read_text())["temperature"]
    with np.load(trained_run / "val_predictions.npz") as v, np.load(trained_run / "test_predictions.npz") as te:
        val_z, val_y, test_z, test_y = v["logits"] / t, v["labels"], te["logits"] / t, te["labels"]
    for key, classwise in (("marginal", False), ("classwise", True)):
        with pytest.warns(UserWarning) if classwise and np.bincount(val_y).min() < 9 else _nothing():
            sets = ConformalPredictor(0.1, classwise=classwise).fit(val_z, val_y).predict_sets(test_z)
        r = report[key]
        assert r["coverage"] == pytest.approx(sets[np.arange(len(test_y)), test_y].mean(), abs=0.01)
        assert r["set_size"] == pytest.approx(sets.sum(1).mean(), abs=0.05)
        assert {"many/coverage", "few/set_size", "min_class_coverage"} <= set(r)


def test_eval_conformal_rejects_a_bad_alpha_before_loading(capsys):
    code = main(["eval", "no-such-model", "--dataset", "digits", "--conformal", "1.5"])
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith("error: --conformal takes a miscoverage level") and len(err.splitlines()) == 1


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
