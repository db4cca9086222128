"""Config loading: YAML bases, overrides, type coercion and clear errors."""

from __future__ import annotations

import pytest

from refcal_zoo.config import config_to_dict, load_config
from refcal_zoo.errors import ConfigError

from .conftest import REPO


def test_overrides_and_coercion():
    cfg = load_config(None, ["train.epochs=5", "train.weight_decay=2e-4", "dataset.mean=[0.1, 0.2, 0.3]",
                             "method.supcon.weight=0.5", "dataset.val_split=null"])
    assert cfg.train.epochs == 5 and cfg.train.weight_decay == pytest.approx(2e-4)
    assert cfg.dataset.mean == [0.1, 0.2, 0.3] and cfg.method.supcon.weight == 0.5
    assert cfg.dataset.val_split is None


def test_base_chain(tmp_path):
    (tmp_path / "bases").mkdir()
    (tmp_path / "bases" / "b.yaml").write_text("train: {epochs: 7, lr: 0.2}\nmodel: {arch: resnet20_cifar}\n")
    (tmp_path / "c.yaml").write_text("base: bases/b.yaml\nname: x\ntrain: {lr: 0.05}\n")
    cfg = load_config(tmp_path / "c.yaml", ["train.batch_size=32"])
    assert (cfg.name, cfg.model.arch, cfg.train.epochs, cfg.train.lr, cfg.train.batch_size) == \
        ("x", "resnet20_cifar", 7, 0.05, 32)
    assert config_to_dict(cfg)["train"]["lr"] == 0.05


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoch=5", "unknown config key 'train.epoch'; did you mean 'train.epochs'"),
        ("train.epochs=abc", "'train.epochs' must be an integer"),
        ("train.epochs=1.5", "'train.epochs' must be an integer"),
        ("train", "not of the form section.key=value"),
        ("train.nesterov=3", "must be true or false"),
        ("model=3", "config section 'model' must be a mapping"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_every_shipped_config_loads():
    paths = sorted((REPO / "recipes" / "configs").glob("*.yaml"))
    assert paths
    for path in paths:
        load_config(path)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
