"""``ZooModel.predict_set`` / ``predict(max_risk=...)`` and the card's split-conformal table, checked against
independent recomputations from the files a run wrote (``val_predictions.npz``, ``test_predictions.npz``)."""

from __future__ import annotations

import json
import math
import re
import shutil
import warnings

import numpy as np
import pytest
import timm
import torch

import refcal_zoo
from refcal_zoo import ZooModel
from refcal_zoo.calibration import ConformalPredictor, conformal_report, selective_threshold
from refcal_zoo.hub import IntegrityError, NotAvailableError
from refcal_zoo.zoo.update_index import register

from .conftest import REPO, ZOO_NAME, copy_folder, write_index


@pytest.fixture(scope="module")
def test_split():
    """The digits-LT test images and labels of the session run (same recipe: same split)."""
    from refcal_zoo.config import load_config
    from refcal_zoo.data import prepare_data

    cfg = load_config(REPO / "recipes" / "configs" / "default.yaml", [])
    data = prepare_data(cfg.dataset)
    return data.test_images, data.test_labels.numpy()


def _npz(path):
    with np.load(path) as f:
        return f["logits"].astype(np.float64), f["labels"].astype(np.int64)


def _raw_logits(model: ZooModel, images: torch.Tensor) -> np.ndarray:
    """Logits by hand: uint8 -> [0, 1] -> the pretrained_cfg's mean/std -> the raw timm classifier (no T)."""
    cfg = model.pretrained_cfg
    mean = torch.tensor(cfg["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        return model.model((images.float() / 255.0 - mean) / std).double().numpy()


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_predict_set_equals_a_predictor_fitted_by_hand(trained_run, test_split):
    model = refcal_zoo.load(trained_run)
    images, _ = test_split
    t = json.loads((trained_run / "temperature.json").read_text())["temperature"]
    assert float(model.temperature) == pytest.approx(t, rel=1e-6)
    t = float(model.temperature)
    val_z, val_y = _npz(trained_run / "val_predictions.npz")
    z = _raw_logits(model, images) / t
    p = _softmax(z)
    # marginal "thr" by hand: qhat = the ceil((n + 1)(1 - alpha))-th smallest 1 - p_y on validation
    alpha = 0.1
    s = 1.0 - _softmax(val_z / t)[np.arange(len(val_y)), val_y]
    qhat = np.sort(s)[math.ceil((len(s) + 1) * (1 - alpha)) - 1]
    sets = model.predict_set(images, alpha=alpha)
    assert sets.dtype == torch.bool and tuple(sets.shape) == (len(images), model.num_classes)
    clear = np.abs((1.0 - p) - qhat) > 1e-6  # away from float ties with the threshold
    assert np.array_equal(sets.numpy()[clear], ((1.0 - p) <= qhat)[clear])
    # every score and the class-conditional variant, against ConformalPredictor fitted on the folder's npz
    for score, classwise in (("thr", True), ("aps", False), ("raps", False), ("aps", True)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # tiny classes at alpha 0.1: infinite thresholds
            expected = ConformalPredictor(0.1, score=score, classwise=classwise).fit(val_z / t, val_y)
            got = model.predict_set(images, alpha=0.1, score=score, classwise=classwise).numpy()
        want = expected.predict_sets(z)
        assert (got != want).mean() < 1e-3, (score, classwise)  # identical up to float ties
    assert len(model._fitted) == 5
    model.predict_set(images[:4], alpha=0.1, score="aps")  # cached fit: no new entry
    assert len(model._fitted) == 5


def test_predict_set_covers_held_out_test_images(trained_run, test_split):
    model = refcal_zoo.load(trained_run)
    images, labels = test_split
    t = float(model.temperature)
    test_z, test_y = _npz(trained_run / "test_predictions.npz")
    assert np.array_equal(test_y, labels)  # the split the run evaluated
    val_z, val_y = _npz(trained_run / "val_predictions.npz")
    loose = model.predict_set(images, alpha=0.2).numpy()
    for alpha in (0.1, 0.05):
        sets = model.predict_set(images, alpha=alpha).numpy()
        coverage = sets[np.arange(len(labels)), labels].mean()
        # 1 - alpha up to sampling noise of the 200 calibration and the test images (about 3 standard errors)
        noise = 3 * math.sqrt(alpha * (1 - alpha) * (1 / len(val_y) + 1 / len(labels)))
        assert coverage >= 1 - alpha - noise, (alpha, coverage)
        # the trainer's own test logits give the same coverage
        report = conformal_report(val_z / t, val_y, test_z / t, test_y, alpha)
        assert coverage == pytest.approx(report["coverage"], abs=2 / len(labels))
        assert sets.sum(1).mean() == pytest.approx(report["set_size"], abs=0.02)
        assert not (loose & ~sets).any()  # nested: a smaller alpha only adds labels


def test_predict_abstains_exactly_below_the_validation_threshold(trained_run, test_split):
    model = refcal_zoo.load(trained_run)
    images, _ = test_split
    t = float(model.temperature)
    val_z, val_y = _npz(trained_run / "val_predictions.npz")
    p = _softmax(_raw_logits(model, images) / t)
    top = model.predict(images)
    assert top.dtype == torch.int64 and np.array_equal(top.numpy(), p.argmax(1))
    for max_risk in (0.05, 0.2):
        thr = selective_threshold(val_z / t, val_y, max_risk)
        # the threshold's meaning, by hand: the answered validation images have error rate <= max_risk
        pv = _softmax(val_z / t)
        answered = pv.max(1) >= thr
        assert (pv.argmax(1)[answered] != val_y[answered]).mean() <= max_risk
        pred = model.predict(images, max_risk=max_risk).numpy()
        conf = p.max(1)
        clear = np.abs(conf - thr) > 1e-6
        assert np.array_equal((pred == -1)[clear], (conf < thr)[clear])
        assert np.array_equal(pred[pred >= 0], p.argmax(1)[pred >= 0])
    with pytest.raises(ValueError, match="max_risk must be"):
        model.predict(images[:2], max_risk=1.5)


def test_a_folder_without_val_predictions_gives_a_one_line_error(published, tmp_path, hf_env, no_network):
    folder = copy_folder(published, tmp_path / "old")
    (folder / "val_predictions.npz").unlink()
    model = refcal_zoo.load(folder)
    x = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    for call in (lambda: model.predict_set(None), lambda: model.predict(None, max_risk=0.05)):  # before any forward
        with pytest.raises(NotAvailableError) as err:
            call()
        msg = str(err.value)
        assert len(msg.splitlines()) == 1 and "val_predictions.npz" in msg and "re-publish" in msg
    assert model.predict(x).shape == (2,)  # plain prediction needs no validation logits
    with pytest.raises(ValueError, match="alpha must be a number in"):
        model.predict_set(x, alpha=1.5)
    with pytest.raises(NotAvailableError, match="not loaded from a folder"):
        ZooModel(timm.create_model("resnet8_cifar", num_classes=10)).predict_set(x)


@pytest.mark.parametrize("name", ["resnet8-digitslt-ce"])
def test_shipped_entries_without_val_predictions_still_load(name, hf_env, no_network):
    model = refcal_zoo.load(name)  # embedded, sha256-pinned; rebuilt entries will carry val_predictions.npz
    assert model.zoo_info["source"] == "embedded"
    x = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    assert model.predict(x).shape == (1,)
    with pytest.raises(NotAvailableError, match="val_predictions.npz' does not exist"):
        model.predict_set(x)


def _card_rows(text: str) -> list[list[str]]:
    section = text.split("## Prediction sets (split conformal)", 1)[1].split("\n## ", 1)[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()
            if re.match(r"^\| 0\.\d+ \|", line)]


def _fmt(v: float, digits: int = 4) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:.{digits}f}"


def test_published_card_shows_the_conformal_table(trained_run, published):
    assert (published / "val_predictions.npz").read_bytes() == (trained_run / "val_predictions.npz").read_bytes()
    assert not (published / "test_predictions.npz").exists()
    text = (published / "README.md").read_text()
    assert "fitted on the\nvalidation split" in text
    assert "the finite-sample guarantee is approximate here" in " ".join(text.split())  # the split chose more
    rows = _card_rows(text)
    assert len(rows) == 4
    record = json.loads((trained_run / "config.json").read_text())["run_record"]
    t, counts = record["temperature"], record["dataset"]["train_counts"]
    val_z, val_y = _npz(trained_run / "val_predictions.npz")
    test_z, test_y = _npz(trained_run / "test_predictions.npz")
    i = 0
    for alpha in (0.1, 0.05):
        for classwise in (False, True):
            r = conformal_report(val_z / t, val_y, test_z / t, test_y, alpha, counts, classwise=classwise)
            assert rows[i] == [f"{alpha:g}", "class-conditional" if classwise else "marginal", _fmt(r["coverage"]),
                               _fmt(r["set_size"], 3), _fmt(r["min_class_coverage"]), _fmt(r["few/coverage"])]
            i += 1
    # the same table when the card is rendered from the run folder itself
    from refcal_zoo.hub import build_model_card

    assert _card_rows(build_model_card(trained_run).text) == rows


def test_save_pretrained_and_embedding_carry_val_predictions(published, tmp_path, hf_env, no_network, monkeypatch,
                                                              test_split):
    images, _ = test_split
    model = refcal_zoo.load(published)
    out = model.save_pretrained(tmp_path / "again")
    assert (out / "val_predictions.npz").read_bytes() == (published / "val_predictions.npz").read_bytes()
    card_rows = _card_rows((published / "README.md").read_text())
    assert _card_rows((out / "README.md").read_text()) == card_rows
    sets = model.predict_set(images, alpha=0.1)
    assert torch.equal(refcal_zoo.load(out).predict_set(images, alpha=0.1), sets)
    # register --embed ships it inside the package; the index's sha256 pin of the weights still applies
    index = write_index(tmp_path / "zoo", {}, monkeypatch=monkeypatch)
    register(published, index=index, embed=True)
    shipped = index.parent / "weights" / ZOO_NAME
    assert (shipped / "val_predictions.npz").read_bytes() == (published / "val_predictions.npz").read_bytes()
    assert _card_rows((shipped / "README.md").read_text()) == card_rows
    embedded = refcal_zoo.load(ZOO_NAME)
    assert embedded.zoo_info["source"] == "embedded"
    assert torch.equal(embedded.predict_set(images, alpha=0.1), sets)
    blob = bytearray((shipped / "model.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (shipped / "model.safetensors").write_bytes(bytes(blob))
    with pytest.raises(IntegrityError, match="pins"):
        refcal_zoo.load(ZOO_NAME)
    shutil.rmtree(shipped)



def test_hub_downloads_bring_val_predictions(published, hf_env, tmp_path, monkeypatch, test_split):
    """``hf-hub:`` loading downloads val_predictions.npz with the weights (a fake Hub serves the published files
    one by one into an empty snapshot, so only requested files arrive)."""
    import refcal_zoo.hub.loading as loading

    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()

    def fake_download(*, repo_id, filename, **kw):
        shutil.copy2(published / filename, snapshot / filename)
        return str(snapshot / filename)

    monkeypatch.setattr(loading, "hf_hub_download", fake_download)
    images, _ = test_split
    model = refcal_zoo.load("hf-hub:my-org/my-model")  # no zoo index pin for this repo
    assert model.zoo_info["source"] == "hf-hub" and (snapshot / "val_predictions.npz").is_file()
    want = refcal_zoo.load(published).predict_set(images, alpha=0.05)
    assert torch.equal(model.predict_set(images, alpha=0.05), want)
