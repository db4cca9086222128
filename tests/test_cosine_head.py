"""LDAM-DRW's cosine classifier (``classifier="cosine"``): the official ``NormedLinear`` formula, the prescaled LDAM
loss against the official ``CE(s * (cos - m onehot))``, export round trips (timm ``local-dir:`` and our loader), the
config checks and a short digits-LT training with the LDAM-DRW preset."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from refcal_zoo.config import load_config
from refcal_zoo.engine.validate import registry_problems
from refcal_zoo.errors import ConfigError
from refcal_zoo.hub.loading import load_folder
from refcal_zoo.losses import LDAMLoss
from refcal_zoo.models._common import NormedLinear
from refcal_zoo.models.export import export_timm_folder

from .conftest import REPO

CONFIGS = REPO / "recipes" / "configs"
COUNTS = [500, 120, 40, 9]


def official_normed_linear(x: torch.Tensor, weight_in_out: torch.Tensor) -> torch.Tensor:
    """kaidic/LDAM-DRW models/resnet_cifar.py NormedLinear.forward, weight of shape [in_features, out_features]."""
    return F.normalize(x, dim=1).mm(F.normalize(weight_in_out, dim=0))


def official_margins(cls_num_list: list[int], max_m: float) -> torch.Tensor:
    """kaidic/LDAM-DRW losses.py LDAMLoss.__init__."""
    m_list = 1.0 / np.sqrt(np.sqrt(cls_num_list))
    return torch.tensor(m_list * (max_m / np.max(m_list)), dtype=torch.float32)


@pytest.mark.parametrize("arch", ["resnet8_cifar", "wrn16_8_cifar"])
def test_cosine_head_is_the_official_normed_linear(arch):
    torch.manual_seed(0)
    model = timm.create_model(arch, num_classes=4, classifier="cosine", cosine_scale=30).eval()
    head = model.get_classifier()
    assert isinstance(head, NormedLinear) and head.scale == 30.0
    assert set(dict(head.named_parameters())) == {"weight"}  # no bias, as the official layer
    torch.testing.assert_close(head.weight.norm(dim=1), torch.ones(4))  # renorm_(...).mul_(1e5): unit class vectors
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        feats = model.forward_head(model.forward_features(x), pre_logits=True)
        cos = official_normed_linear(feats, head.weight.t())
        logits = model(x)
    torch.testing.assert_close(logits, 30.0 * cos)
    assert logits.abs().max() <= 30.0 + 1e-4
    model.reset_classifier(7)  # keeps the head type and scale
    assert isinstance(model.get_classifier(), NormedLinear) and model.get_classifier().scale == 30.0
    assert model(x).shape == (5, 7)
    linear = timm.create_model(arch, num_classes=4)
    assert type(linear.get_classifier()) is torch.nn.Linear and linear.classifier_args() == {}


def test_bad_classifier_arguments_are_one_line_errors():
    with pytest.raises(ValueError, match="classifier must be one of 'linear', 'cosine', got 'cosin'"):
        timm.create_model("resnet8_cifar", classifier="cosin")
    with pytest.raises(ValueError, match="cosine_scale must be a number > 0"):
        timm.create_model("resnet8_cifar", classifier="cosine", cosine_scale=0)


def test_prescaled_ldam_on_a_cosine_head_is_the_official_loss():
    torch.manual_seed(1)
    model = timm.create_model("resnet8_cifar", num_classes=len(COUNTS), classifier="cosine", cosine_scale=30.0)
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 3, 2])
    feats = model.forward_head(model.forward_features(x), pre_logits=True)
    cos = official_normed_linear(feats, model.get_classifier().weight.t())
    onehot = F.one_hot(y, len(COUNTS)).float()
    margins = official_margins(COUNTS, 0.5)
    official = F.cross_entropy(30.0 * (cos - margins[None, :] * onehot), y)
    ours = LDAMLoss(COUNTS, max_m=0.5, s=30.0, prescaled=True)(model(x), y)
    torch.testing.assert_close(ours, official)
    # gradients reach the backbone identically
    g_ours = torch.autograd.grad(ours, model.get_classifier().weight, retain_graph=True)[0]
    g_official = torch.autograd.grad(official, model.get_classifier().weight)[0]
    torch.testing.assert_close(g_ours, g_official)
    # prescaled=False (the default) still scales the logits it is given: CE(s * (z - m onehot))
    z = torch.randn(6, len(COUNTS))
    torch.testing.assert_close(LDAMLoss(COUNTS, s=30.0)(z, y), F.cross_entropy(30.0 * (z - margins * onehot), y))
    torch.testing.assert_close(LDAMLoss(COUNTS, s=1.0)(z, y), F.cross_entropy(z - margins * onehot, y))
    with pytest.raises(ValueError, match="prescaled must be true"):
        LDAMLoss(COUNTS, prescaled="yes")


def test_cosine_export_round_trips_through_timm_and_our_loader(tmp_path):
    torch.manual_seed(2)
    # built without naming cosine_scale: the export still records it (from the head), so the default may change
    model = timm.create_model("resnet8_cifar", num_classes=4, classifier="cosine").eval()
    export_timm_folder(model, tmp_path, label_names=["a", "b", "c", "d"])
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_args"]["classifier"] == "cosine" and cfg["model_args"]["cosine_scale"] == 30.0
    x = torch.randn(3, 3, 32, 32)
    via_timm = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    via_ours = load_folder(tmp_path).model
    with torch.no_grad():
        expected = model(x)
        assert isinstance(via_timm.get_classifier(), NormedLinear)
        torch.testing.assert_close(via_timm(x), expected, rtol=0, atol=0)
        torch.testing.assert_close(via_ours(x), expected, rtol=0, atol=0)
    # from a file, timm needs the kwargs; the architecture alone (linear head) refuses the weights (strict load)
    file_cfg = dict(file=str(tmp_path / "model.safetensors"), num_classes=4)
    via_file = timm.create_model("resnet8_cifar", num_classes=4, classifier="cosine", pretrained=True,
                                 pretrained_cfg_overlay=file_cfg).eval()
    with torch.no_grad():
        torch.testing.assert_close(via_file(x), expected, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="fc.bias"):
        timm.create_model("resnet8_cifar", num_classes=4, pretrained=True, pretrained_cfg_overlay=file_cfg)


def test_linear_export_records_no_classifier_args(tmp_path):
    export_timm_folder(timm.create_model("resnet8_cifar", num_classes=3), tmp_path, label_names=["a", "b", "c"])
    assert "classifier" not in json.loads((tmp_path / "config.json").read_text()).get("model_args", {})


def test_ldam_drw_preset_is_the_official_setting_and_bad_kwargs_fail_early():
    cfg = load_config(CONFIGS / "resnet32-cifar10lt-ldam_drw.yaml", extra_checks=[registry_problems])
    assert cfg.model.kwargs == {"classifier": "cosine", "cosine_scale": 30.0}
    assert cfg.method.loss_args == {"max_m": 0.5, "s": 30.0, "prescaled": True}
    cases = {
        "model.kwargs={classifier: cosin}": r"model.kwargs .* do not fit 'resnet32_cifar': classifier must be one of",
        "model.kwargs={classifier: cosine, typo: 1}": "unexpected keyword argument 'typo'",
        "method.loss_args={s: 30.0}": "needs prescaled: true",
        "model.kwargs={classifier: cosine, cosine_scale: 16}": r"loss_args.s \(30.0\) must equal .*cosine_scale \(16\)",
    }
    for override, message in cases.items():
        with pytest.raises(ConfigError, match=message) as info:
            load_config(CONFIGS / "resnet32-cifar10lt-ldam_drw.yaml", [override], extra_checks=[registry_problems])
        assert "\n" not in str(info.value)


@pytest.mark.slow
def test_cosine_ldam_drw_trains_on_digits(tmp_path):
    """The digits suite's LDAM-DRW cell (the preset: cosine head, s 30, prescaled) on digits-LT, ResNet-8, a short
    budget: the run folder is written, test accuracy is far above chance (10%) and the published logits are 30 * cos.
    Measured once by hand: 48.6% test accuracy after these 5 epochs; 68.8% after 12 (DRW from epoch 10; see
    ``LDAMLoss``'s docstring for the command and the linear-head figures)."""
    from refcal_zoo.engine import train

    from .test_config_presets import _compare_methods

    overrides = _compare_methods().preset_overrides("ldam_drw")
    assert 'model.kwargs={"classifier": "cosine", "cosine_scale": 30.0}' in overrides
    cfg = load_config(CONFIGS / "default.yaml", [*overrides, "train.epochs=5", "train.drw_epoch=4",
                                                 f"output_dir={tmp_path / 'run'}"])
    result = train(cfg)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["n"] == 500 and metrics["accuracy"] > 0.3, metrics["accuracy"]
    log = [json.loads(line) for line in (result.run_dir / "log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["train_loss"]) for r in log if "train_loss" in r)
    test = np.load(result.run_dir / "test_predictions.npz")["logits"]
    assert np.abs(test).max() <= 30.0 + 1e-3 and np.abs(test).max() > 1.0  # 30 * cos, not cos
    loaded = load_folder(result.run_dir)
    assert isinstance(loaded.model.get_classifier(), NormedLinear) and loaded.model.get_classifier().scale == 30.0


def test_timm_tag_of_a_cosine_head_entry_rebuilds_its_head(tmp_path, monkeypatch):
    """timm's pretrained cfgs carry no model arguments: the tag of a published cosine-head entry registers its head
    arguments, which the model factory applies, so ``timm.create_model(tag, pretrained=True)`` loads its weights."""
    from timm.models import _registry

    from refcal_zoo.models._common import TAG_HEAD_ARGS
    from refcal_zoo.zoo import index, tags
    from refcal_zoo.zoo.index import ZooEntry

    torch.manual_seed(0)
    model = timm.create_model("resnet8_cifar", num_classes=10, classifier="cosine", cosine_scale=30.0).eval()
    export_timm_folder(model, tmp_path / "resnet8-digitslt-ldam_drw", label_names=[str(i) for i in range(10)])
    entry = ZooEntry(name="resnet8-digitslt-ldam_drw", arch="resnet8_cifar", num_classes=10,
                     dataset={"id": "digits", "name": "digits-LT"}, method="plain", base_loss="ldam",
                     sha256="0" * 64, status="published")
    monkeypatch.setattr(index, "weights_dir", lambda: tmp_path)
    monkeypatch.setattr(tags, "load_index", lambda: {entry.name: entry})
    monkeypatch.setitem(_registry._model_pretrained_cfgs, entry.timm_tag, None)  # restored after the test
    monkeypatch.setattr(_registry, "_model_has_pretrained", set(_registry._model_has_pretrained))
    try:
        assert entry.timm_tag in tags.register_timm_tags()
        assert TAG_HEAD_ARGS[entry.timm_tag] == {"classifier": "cosine", "cosine_scale": 30.0}
        loaded = timm.create_model(entry.timm_tag, pretrained=True).eval()
        assert isinstance(loaded.get_classifier(), NormedLinear)
        x = torch.randn(3, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x))
        plain = timm.create_model("resnet8_cifar", num_classes=10)  # no tag: the default linear head, as before
        assert isinstance(plain.get_classifier(), torch.nn.Linear)
    finally:
        TAG_HEAD_ARGS.pop(entry.timm_tag, None)
        default = _registry._model_default_cfgs.get("resnet8_cifar")
        tag = entry.timm_tag.split(".", 1)[1]
        if default is not None and tag in default.cfgs:
            del default.cfgs[tag]
            default.tags.remove(tag)
        if entry.timm_tag in _registry._model_with_tags["resnet8_cifar"]:
            _registry._model_with_tags["resnet8_cifar"].remove(entry.timm_tag)
