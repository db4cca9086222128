"""An exported long-tailed split stands in for its source: same tensors, same run, the source's identity.

``refcal-zoo dataset export`` writes the LT train / validation / test splits with their original bytes (about half
of CIFAR-10's bytes: what travels to a GPU machine). A recipe that draws the same split with ``dataset.path`` set to
the export must train exactly as on the source and record the source, not the export; any other draw is refused.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from refcal_zoo.config import DatasetConfig, load_config
from refcal_zoo.data import prepare_data
from refcal_zoo.engine import train
from refcal_zoo.errors import DataError
from refcal_zoo.hub import export_longtail_dataset
from refcal_zoo.hub.publish import public_lt_record
from refcal_zoo.record import dataset_identity

from .conftest import REPO

TENSORS = ("train_images", "train_labels", "val_images", "val_labels", "test_images", "test_labels")


@pytest.fixture(scope="module")
def exported(cifar10_like, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "c10lt"
    export_longtail_dataset(str(cifar10_like), out, rho=10, seed=0, val_per_class=5)
    return out


def test_the_export_prepares_the_sources_tensors_and_identity(cifar10_like, exported):
    cfg = DatasetConfig(path=str(cifar10_like), rho=10, lt_seed=0, val_per_class=5)
    source = prepare_data(cfg)
    stand_in = prepare_data(replace(cfg, path=str(exported)))
    for name in TENSORS:
        assert torch.equal(getattr(stand_in, name), getattr(source, name)), name
    assert stand_in.split.record() == source.split.record()  # indices into the source, counts, moved_to_val
    assert stand_in.class_names == source.class_names
    read = stand_in.source.pop("export")
    assert stand_in.source == source.source  # the source's path, columns and fingerprints
    assert read["folder"] == "c10lt" and set(read["fingerprints"]) == {"train", "validation", "test"}
    # publishing drops the machine paths of both
    public = public_lt_record({"source": dict(stand_in.source, export=read)})
    assert public["source"]["path"] == cifar10_like.name and public["source"]["export"]["path"] == "c10lt"


@pytest.mark.parametrize("change, named", [
    ({"rho": 100.0}, "dataset.rho=100.0 (the export: 10.0)"),
    ({"lt_seed": 1}, "dataset.lt_seed=1 (the export: 0)"),
    ({"val_per_class": 6}, "dataset.val_per_class=6 (the export: 5)"),
    ({"n_max": 20}, "dataset.n_max=20 (the export: None)"),
])
def test_another_draw_from_the_export_is_a_one_line_error(exported, change, named):
    cfg = DatasetConfig(path=str(exported), rho=10, lt_seed=0, val_per_class=5)
    with pytest.raises(DataError) as err:
        prepare_data(replace(cfg, **change))
    message = str(err.value)
    assert named in message and "dataset.rho=1 dataset.val_split=validation" in message and "\n" not in message


def test_the_exports_own_recipe_reads_it_as_it_is(exported):
    plain = prepare_data(DatasetConfig(path=str(exported), rho=1, val_split="validation"))
    assert plain.split.rho == 1 and "export" not in plain.source
    assert plain.source["path"] == str(exported)


def test_an_export_without_its_arguments_or_with_damaged_counts_is_refused(exported, tmp_path):
    import shutil

    cfg = DatasetConfig(path=str(tmp_path / "old"), rho=10, lt_seed=0, val_per_class=5)
    shutil.copytree(exported, tmp_path / "old")
    record = json.loads((tmp_path / "old" / "lt_indices.json").read_text())
    del record["export"]["arguments"]
    (tmp_path / "old" / "lt_indices.json").write_text(json.dumps(record))
    with pytest.raises(DataError, match="export it again"):
        prepare_data(cfg)
    record = json.loads((exported / "lt_indices.json").read_text())
    record["train_counts"] = record["train_counts"][::-1]
    (tmp_path / "old" / "lt_indices.json").write_text(json.dumps(record))
    with pytest.raises(DataError, match="per-class counts"):
        prepare_data(cfg)


def test_training_on_the_export_is_the_same_run(cifar10_like, exported, tmp_path):
    """Bit-identical weights and the same dataset record, trained once from each."""
    common = ["model.arch=resnet8_cifar", "dataset.rho=10", "dataset.val_per_class=5", "dataset.val_split=null",
              "dataset.mean=[0.5,0.5,0.5]", "dataset.std=[0.25,0.25,0.25]", "train.epochs=1", "train.batch_size=32",
              "train.warmup_epochs=0"]
    runs = {}
    for label, path in (("source", cifar10_like), ("export", exported)):
        cfg = load_config(REPO / "recipes" / "configs" / "default.yaml",
                          [*common, f"dataset.path={path}", f"output_dir={tmp_path / label}"])
        runs[label] = train(cfg, overwrite=True).run_dir
    weights = {k: load_file(v / "model.safetensors") for k, v in runs.items()}
    assert weights["source"].keys() == weights["export"].keys()
    for key in weights["source"]:
        assert torch.equal(weights["source"][key], weights["export"][key]), key
    records = {k: json.loads((v / "config.json").read_text())["run_record"]["dataset"] for k, v in runs.items()}
    assert records["export"] == records["source"]
    assert records["source"]["id"] == cifar10_like.name and records["source"]["kind"] == "local"


def test_a_recorded_path_stays_a_folder_where_it_does_not_exist():
    # the source of an export made elsewhere: never mistaken for a Hub id
    assert dataset_identity("/elsewhere/datasets/cifar10", local=False) == ("cifar10", "local")
    assert dataset_identity("../shared/datasets/cifar10", local=False) == ("cifar10", "local")
    assert dataset_identity("uoft-cs/cifar10", local=False) == ("uoft-cs/cifar10", "hub")


def test_resuming_on_other_data_is_refused(tmp_path):
    from refcal_zoo.engine.trainer import _check_same_data
    from refcal_zoo.errors import ConfigError

    saved = {"train_sha256": "a", "val_sha256": "b", "train_counts": [3, 1], "val_counts": [1, 1], "rho": 10.0,
             "seed": 0, "n_max": 3, "source": {"path": "/x/cifar10", "fingerprints": {"train": "f1"}}}
    (tmp_path / "lt_indices.json").write_text(json.dumps(saved))
    moved = dict(saved, source={"path": "/y/cifar10-lt", "fingerprints": {"train": "f1"}, "export": {}})
    _check_same_data(tmp_path / "lt_indices.json", moved, "/y/cifar10-lt")  # another copy of the same data
    for other, named in ((dict(saved, train_sha256="c"), "train_sha256"),
                         (dict(saved, source={"fingerprints": {"train": "f2"}}), "source fingerprints")):
        with pytest.raises(ConfigError, match=f"cannot resume: dataset.path=/z gives other data.*{named}"):
            _check_same_data(tmp_path / "lt_indices.json", other, "/z")
