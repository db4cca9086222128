"""Recipes as composition: every ``recipes/configs/resnet32-*`` file is a dataset base plus a method preset
(``recipes/configs/methods/``), and the benchmarks' digits suite takes its losses from the same presets.

``fixtures/resolved_configs.json`` holds every config's resolved settings (and every digits-suite cell's) as
main's loader produced them from the flat files before the presets existed; each must still resolve to them. One
intended change since: the ldam_drw entries train LDAM-DRW's cosine classifier at s 30 (``model.kwargs``).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys

import pytest
import yaml

from refcal_zoo.config import config_to_dict, flatten, load_config, read_config_yaml
from refcal_zoo.errors import ConfigError
from refcal_zoo.losses import LOSSES
from refcal_zoo.methods.base import _drw

from .conftest import REPO

CONFIGS = REPO / "recipes" / "configs"
SNAPSHOT = json.loads((REPO / "tests" / "fixtures" / "resolved_configs.json").read_text())
CIFAR10 = sorted(CONFIGS.glob("resnet32-cifar10lt-*.yaml"))
#: methods added after the snapshot was taken (nothing to compare them with); MiSLAS's official CIFAR-100-LT stage 2
#: differs from its CIFAR-10-LT one (smoothing, BatchNorm shift, classifier lr), so its CIFAR-100 recipe sets those
NEW_SINCE_SNAPSHOT = {"mislas"}
DATASET_SPECIFIC = {"mislas": {"method.loss_args", "method.mislas.shift_bn", "method.mislas.classifier_lr_scale",
                               "method.mislas.mixup_alpha"}}


def _compare_methods():
    if "compare_methods" not in sys.modules:  # test_benchmarks.py may have loaded it already
        spec = importlib.util.spec_from_file_location("compare_methods", REPO / "benchmarks" / "compare_methods.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["compare_methods"] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules["compare_methods"]


def _flat(cfg) -> dict:
    return flatten(json.loads(json.dumps(config_to_dict(cfg))))  # tuples -> lists, as in the JSON snapshot


def _snapshot(entry: dict) -> dict:
    return {**SNAPSHOT["defaults"], **entry}


def _now(flat: dict) -> dict:
    """The keys the snapshot knows (keys added to Config since have their defaults and are not compared)."""
    return {k: flat.get(k, "<missing>") for k in SNAPSHOT["defaults"]}


@pytest.mark.parametrize("name", sorted(SNAPSHOT["configs"]))
def test_every_config_resolves_as_before_the_presets(name):
    assert (CONFIGS / name).is_file(), f"{name} was removed"
    assert _now(_flat(load_config(CONFIGS / name))) == _snapshot(SNAPSHOT["configs"][name])


def test_snapshot_covers_the_cifar_recipes():
    assert len(CIFAR10) >= 24
    for path in CIFAR10:
        if path.stem.removeprefix("resnet32-cifar10lt-") in NEW_SINCE_SNAPSHOT:
            continue
        assert path.name in SNAPSHOT["configs"]
        assert path.name.replace("cifar10lt", "cifar100lt") in SNAPSHOT["configs"]


@pytest.mark.parametrize("path", CIFAR10, ids=lambda p: p.stem.removeprefix("resnet32-cifar10lt-"))
def test_cifar100_config_is_its_cifar10_twin_but_for_the_data(path):
    twin = path.with_name(path.name.replace("cifar10lt", "cifar100lt"))
    a, b = _flat(load_config(path)), _flat(load_config(twin))
    differ = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    method = path.stem.removeprefix("resnet32-cifar10lt-")
    assert differ - DATASET_SPECIFIC.get(method, set()) == {"name", "dataset.path", "dataset.val_per_class",
                                                            "dataset.mean", "dataset.std"}
    assert b["name"] == a["name"].replace("cifar10lt", "cifar100lt") == twin.stem
    assert (a["dataset.path"], b["dataset.path"]) == ("uoft-cs/cifar10", "uoft-cs/cifar100")


@pytest.mark.parametrize("path", [*CIFAR10, *(p.with_name(p.name.replace("cifar10lt", "cifar100lt")) for p in CIFAR10)],
                         ids=lambda p: p.stem)
def test_cifar_config_is_a_dataset_base_plus_a_method_preset(path):
    data = yaml.safe_load(path.read_text())
    method = path.stem.split("-", 2)[2]
    base = "bases/cifar100-lt-resnet.yaml" if "cifar100lt" in path.name else "bases/cifar-lt-resnet.yaml"
    own = {k: v for k, v in data.items() if k not in ("base", "name")}
    assert data == {"base": [base, f"methods/{method}.yaml"], "name": path.stem, **own}
    allowed = DATASET_SPECIFIC.get(method, set()) if "cifar100lt" in path.name else set()
    assert set(flatten(own)) <= allowed, f"{path.name} sets more than its dataset base and method preset"


def test_method_presets_hold_no_data_or_model_choice():
    presets = sorted((CONFIGS / "methods").glob("*.yaml"))
    assert {p.stem for p in presets} == {p.stem.removeprefix("resnet32-cifar10lt-") for p in CIFAR10}
    for path in presets:
        sections = set(read_config_yaml(path))
        assert "method" in sections and sections <= {"method", "train", "stage2", "model"}, path.name
        # no architecture: SupCon's projection sizes, or the head type (LDAM-DRW's cosine classifier) as kwargs
        model = read_config_yaml(path).get("model", {})
        assert set(model) <= {"proj_dim", "proj_hidden_dim", "kwargs"}, path.name
        assert set(model.get("kwargs", {})) <= {"classifier", "cosine_scale"}, path.name


def test_preset_overrides_apply_the_loss_not_the_budget():
    compare = _compare_methods()
    assert compare.preset_overrides("ldam_drw") == [
        "method.name=plain", "method.base_loss=ldam", 'method.loss_args={"max_m": 0.5, "s": 30.0, "prescaled": true}',
        'model.kwargs={"classifier": "cosine", "cosine_scale": 30.0}', "train.drw_beta=0.9999"]
    # inherited from refcal_joint.yaml (base:), SupCon left to the recipe it is applied to
    assert compare.preset_overrides("refcal_joint_la") == [
        "method.name=refcal_joint", "method.base_loss=logit_adjusted", 'method.loss_args={"tau": 1.0}']
    cfg = load_config(CONFIGS / "default.yaml", compare.preset_overrides("mdca"))
    assert (cfg.method.name, cfg.method.base_loss) == ("plain", "mdca")
    assert cfg.method.loss_args == {"base": "nll", "beta": 1.0}
    with pytest.raises(ConfigError, match="does not exist"):
        compare.preset_overrides("no_such_method")


def _loss_default(base_loss: str, key: str):
    cls = LOSSES[base_loss.replace("_", "")]
    return inspect.signature(cls.__init__).parameters[key].default


def test_digits_cells_resolve_as_before_the_presets():
    """Same settings as the digits suite's hand-written overrides; where a preset spells out a value the old cell
    left to its default (three losses' arguments, DRW's beta), the effective value is the same."""
    suite = _compare_methods().get_suite("digits", None)
    assert sorted(c.method for c in suite.cells if c.method not in NEW_SINCE_SNAPSHOT) == sorted(
        SNAPSHOT["digits_cells"])
    spelled_out = set()
    for cell in (c for c in suite.cells if c.method not in NEW_SINCE_SNAPSHOT):
        now, before = _now(_flat(load_config(CONFIGS / cell.config, cell.overrides))), _snapshot(
            SNAPSHOT["digits_cells"][cell.method])
        for key in {k for k in now if now[k] != before[k]}:
            spelled_out.add((cell.method, key))
            if key == "method.loss_args":
                old, new = before[key], now[key]
                assert old.items() <= new.items()
                for k in new.keys() - old.keys():
                    assert new[k] == _loss_default(now["method.base_loss"], k), (cell.method, k)
            elif key == "train.drw_beta":
                cfg_now = load_config(CONFIGS / cell.config, cell.overrides)
                cfg_before = load_config(CONFIGS / cell.config, [*cell.overrides, "train.drw_beta=null"])
                (e1, w1), (e0, w0) = _drw(cfg_now.train, "train", [50, 20, 5]), _drw(cfg_before.train, "train",
                                                                                      [50, 20, 5])
                assert e1 == e0 == 48 and w1.equal(w0)
            else:
                pytest.fail(f"digits cell {cell.method}: {key} changed from {before[key]!r} to {now[key]!r}")
    assert spelled_out == {("mbls", "method.loss_args"), ("logitnorm", "method.loss_args"),
                           ("crl", "method.loss_args"), ("ldam_drw", "train.drw_beta")}


OTHER_BACKBONES = sorted(p for p in CONFIGS.glob("*.yaml") if p.name.startswith(("wrn28_10-", "efficientvit_b0-")))


@pytest.mark.parametrize("path", OTHER_BACKBONES, ids=lambda p: p.stem)
def test_other_backbone_config_is_its_resnet32_twin_plus_a_backbone_preset(path):
    """wrn28_10-* / efficientvit_b0-* = the ResNet-32 entry's data base and method preset, with a backbone preset
    between them that changes exactly its own keys (architecture; for EfficientViT the optimiser too)."""
    arch, rest = path.stem.split("-", 1)
    twin = CONFIGS / f"resnet32-{rest}.yaml"
    data = yaml.safe_load(path.read_text())
    twin_base = yaml.safe_load(twin.read_text())["base"]
    assert data == {"base": [twin_base[0], f"backbones/{arch}.yaml", twin_base[1]], "name": path.stem}
    preset = set(flatten(yaml.safe_load((CONFIGS / "backbones" / f"{arch}.yaml").read_text())))
    a, b = _flat(load_config(path)), _flat(load_config(twin))
    assert {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)} == {"name"} | preset
    assert len(OTHER_BACKBONES) == 10  # WRN-28-10 {ce, refcal_joint, refcal}, EfficientViT-B0 {ce, refcal_joint}; x 2
