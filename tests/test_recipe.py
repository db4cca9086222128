"""The recipe end to end (trimmed default on digits-LT) and its refusals of bad input."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys

import datasets
import numpy as np
import pytest
import timm
import torch
import yaml

from refcal_zoo.config import DatasetConfig
from refcal_zoo.data import indices_sha256, normalize, prepare_data
from refcal_zoo.metrics import METRIC_KEYS

from .conftest import REPO

TRAIN_PY = REPO / "recipes" / "train.py"
_spec = importlib.util.spec_from_file_location("recipe_train", TRAIN_PY)
recipe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(recipe)

TRIM = ["train.epochs=2", "train.batch_size=64"]



@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "default"
    assert recipe.main([*TRIM, f"output_dir={out}"]) == 0
    return out


def test_default_recipe_writes_a_complete_run_folder(finished_run):
    names = {p.name for p in finished_run.iterdir()}
    assert {"config.yaml", "config.json", "model.safetensors", "metrics.json", "lt_indices.json", "log.jsonl",
            "temperature.json", "reliability.png", "reliability_ts.png", "test_predictions.npz", "best",
            "last"} <= names
    assert not finished_run.with_name("default.incomplete").exists()
    metrics = json.loads((finished_run / "metrics.json").read_text())
    for key in METRIC_KEYS:
        assert key in metrics and f"ts/{key}" in metrics
    assert metrics["n"] == 500
    assert any(k.startswith("many/") for k in metrics) and any(k.startswith("few/") for k in metrics)
    log = [json.loads(line) for line in (finished_run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and all(r["images_per_second"] > 0 for r in log)
    cfg = yaml.safe_load((finished_run / "config.yaml").read_text())
    assert cfg["train"]["epochs"] == 2 and cfg["model"]["arch"] == "resnet8_cifar"


def test_published_weights_reproduce_the_metrics(finished_run):
    """Load the folder with plain timm (local-dir:), normalise with its pretrained_cfg, re-evaluate the test split."""
    model = timm.create_model(f"local-dir:{finished_run}", pretrained=True).eval()
    cfg = model.pretrained_cfg
    data = prepare_data(DatasetConfig(path="digits", val_split="validation", rho=10))
    x = normalize(data.test_images, torch.tensor(cfg["mean"]), torch.tensor(cfg["std"]))
    with torch.no_grad():
        logits = model(x).double()
    y = data.test_labels
    metrics = json.loads((finished_run / "metrics.json").read_text())
    acc = (logits.argmax(1) == y).double().mean().item()
    nll = torch.nn.functional.cross_entropy(logits, y).item()
    assert acc == pytest.approx(metrics["accuracy"], abs=1e-12)
    assert nll == pytest.approx(metrics["nll"], rel=1e-5)
    temperature = json.loads((finished_run / "temperature.json").read_text())["temperature"]
    ts_nll = torch.nn.functional.cross_entropy(logits / temperature, y).item()
    assert ts_nll == pytest.approx(metrics["ts/nll"], rel=1e-5)
    block = json.loads((finished_run / "config.json").read_text())["run_record"]
    assert block["temperature"] == temperature and block["metrics"]["accuracy"] == metrics["accuracy"]


def test_lt_indices_record_matches_the_data(finished_run):
    rec = json.loads((finished_run / "lt_indices.json").read_text())
    assert rec["train_sha256"] == indices_sha256(rec["train_indices"])
    data = prepare_data(DatasetConfig(path="digits", val_split="validation", rho=10))
    assert rec["train_counts"] == data.train_class_counts
    assert rec["train_sha256"] == indices_sha256(data.split.train_indices)


def _tree_digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_refuses_a_finished_run_unless_overwrite(finished_run, capsys):
    before = _tree_digest(finished_run)
    assert recipe.main([*TRIM, f"output_dir={finished_run}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "already holds a finished run" in err and "--overwrite" in err
    assert len(err.splitlines()) == 1
    assert _tree_digest(finished_run) == before


@pytest.mark.slow
def test_overwrite_replaces_the_run(tmp_path):
    out = tmp_path / "run"
    assert recipe.main(["train.epochs=1", f"output_dir={out}"]) == 0
    assert recipe.main(["train.epochs=1", "train.seed=7", f"output_dir={out}", "--overwrite"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["seed"] == 7
    assert not any(p.name.startswith("run.old") for p in tmp_path.iterdir())


def _no_image_dataset(folder):
    feats = datasets.Features({"pixels": datasets.Sequence(datasets.Value("uint8")),
                               "label": datasets.ClassLabel(names=["a", "b"])})
    (folder / "data").mkdir(parents=True)
    for split in ("train", "test"):
        datasets.Dataset.from_dict({"pixels": [[0] * 4] * 4, "label": [0, 1, 0, 1]}, features=feats).to_parquet(
            str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return folder


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.arch=resnet33_cifar"], "unknown model architecture 'resnet33_cifar'"),
        (["dataset.path=./no/such/dataset"], "dataset path './no/such/dataset' does not exist"),
        (["dataset.rho=0.5"], "rho must be >= 1"),
        (["train.epoch=3"], "unknown config key 'train.epoch'"),
        ("NO_IMAGE", "has no image column"),
    ],
)
def test_bad_input_is_one_clear_line_and_writes_nothing(tmp_path, capsys, overrides, message):
    if overrides == "NO_IMAGE":
        overrides = [f"dataset.path={_no_image_dataset(tmp_path / 'noimg')}", "dataset.val_split=null"]
        capsys.readouterr()  # drop the progress output of writing the parquet files
    out = tmp_path / "out"
    assert recipe.main([*overrides, f"output_dir={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and len(err.splitlines()) == 1
    assert not out.exists() and not out.with_name("out.incomplete").exists()


@pytest.mark.slow
def test_accelerate_launch_runs_the_recipe(tmp_path):
    out = tmp_path / "launched"
    env = dict(os.environ, ACCELERATE_CONFIG_FILE=str(tmp_path / "none.yaml"))
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--mixed_precision", "no",
         "--num_machines", "1", "--dynamo_backend", "no", str(TRAIN_PY), "train.epochs=1", f"output_dir={out}"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Results on the test split" in proc.stdout
    assert np.isfinite(json.loads((out / "metrics.json").read_text())["accuracy"])
