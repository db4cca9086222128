"""Methods wired into the engine: two-stage RefCal freezes the encoder, CRL and AdaFocal update their state,
every shipped config builds its stages, and short joint / two-stage runs on digits-LT finish."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from accelerate import Accelerator

from refcal_zoo.config import Config, SupConConfig, TrainConfig, load_config
from refcal_zoo.data import BatchTransform, TensorImageDataset, make_loader
from refcal_zoo.engine import StepContext, build_optimizer, build_scheduler, predict_logits, train_one_epoch
from refcal_zoo.losses import build_loss
from refcal_zoo.methods import Criterion, LinearProbe, Plain, RefCalJoint, SupConPretrain, build_stages, stage_plan

from .conftest import REPO


@pytest.fixture()
def accelerator():
    return Accelerator(cpu=True)


def tiny_data(n=96, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % k
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    images[:, 0] = (labels * 60).to(torch.uint8)[:, None, None]  # learnable: the red channel encodes the class
    return images, labels


def run_stage(method, model, accelerator, images, labels, epochs=1, augment="crop_flip", lr=0.05, batch=32):
    cfg = TrainConfig(epochs=epochs, batch_size=batch, lr=lr, warmup_epochs=0, schedule="constant")
    module = method.wrap(model)
    loader = make_loader(TensorImageDataset(images, labels), batch, train=True, seed=0)
    opt = build_optimizer(module, cfg)
    module, opt, loader = accelerator.prepare(module, opt, loader)
    sched = build_scheduler(opt, len(loader), cfg)
    tf = BatchTransform([0.5] * 3, [0.25] * 3, augment=augment)
    eval_loader = accelerator.prepare(make_loader(TensorImageDataset(images, labels), 64, train=False))
    logs = []
    for epoch in range(epochs):
        method.start_epoch(epoch)
        stats = train_one_epoch(StepContext(module, method, opt, sched, tf, accelerator), loader)
        val = predict_logits(module, eval_loader, BatchTransform([0.5] * 3, [0.25] * 3), accelerator) \
            if method.trains_classifier else (None, None)
        logs.append((stats, method.end_epoch(*val)))
    return method.unwrap(accelerator.unwrap_model(module)), logs


def test_two_stage_keeps_the_encoder_bit_identical(accelerator):
    torch.manual_seed(0)
    images, labels = tiny_data()
    model = timm.create_model("resnet8_cifar", num_classes=4)
    classifier_before_stage1 = {k: v.clone() for k, v in model.get_classifier().state_dict().items()}
    model, logs = run_stage(SupConPretrain(SupConConfig(temperature=0.1), proj_dim=16), model, accelerator,
                            images, labels, augment="simclr")
    assert logs[0][0].extras["supcon"] > 0 and "refinement" in logs[0][0].extras
    for k, v in model.get_classifier().state_dict().items():  # stage 1 does not train the classifier
        assert torch.equal(v, classifier_before_stage1[k])
    after_stage1 = {k: v.clone() for k, v in model.state_dict().items()}
    model, _ = run_stage(LinearProbe(Criterion(build_loss("ce"))), model, accelerator, images, labels,
                         epochs=2, augment="rrc_flip")
    after_stage2 = model.state_dict()
    head = {f"fc.{k}" for k in model.get_classifier().state_dict()}
    for k, v in after_stage2.items():
        if k in head:
            assert not torch.equal(v, after_stage1[k]), f"classifier {k} did not train"
        else:
            assert torch.equal(v, after_stage1[k]), f"encoder tensor {k} changed in stage 2"
    assert all(p.requires_grad for p in model.parameters())  # unwrap restores a normal model


def test_crl_history_is_updated_and_ranks(accelerator):
    torch.manual_seed(0)
    images, labels = tiny_data()
    crl = build_loss("crl", num_samples=len(labels))
    model = timm.create_model("resnet8_cifar", num_classes=4)
    model, logs = run_stage(Plain(Criterion(crl)), model, accelerator, images, labels, epochs=2)
    hist = crl.history
    assert int(hist.epoch_counter) == 2  # next_epoch called after each epoch (counter starts at 1, +1 from epoch 2)
    counts = hist.correct_count
    assert counts.sum() > 0 and counts.max() <= 2  # one prediction per sample and epoch
    model.eval()
    x = BatchTransform([0.5] * 3, [0.25] * 3)(images)
    with torch.no_grad():
        assert crl.ranking_loss(model(x), torch.arange(len(labels))).item() > 0


def test_adafocal_gammas_move_with_validation(accelerator):
    torch.manual_seed(0)
    images, labels = tiny_data()
    ada = build_loss("adafocal")
    before = ada.gammas.clone()
    model = timm.create_model("resnet8_cifar", num_classes=4)
    _, logs = run_stage(Plain(Criterion(ada)), model, accelerator, images, labels, epochs=1)
    assert "adafocal_gamma_mean" in logs[0][1]
    assert not torch.equal(ada.gammas, before)
    assert int(ada.num_updates) == 1


def test_joint_lambda_warmup():
    method = RefCalJoint(Criterion(build_loss("ce")), SupConConfig(weight=0.8, weight_warmup_epochs=4))
    weights = []
    for epoch in range(6):
        method.start_epoch(epoch)
        weights.append(method.weight)
    assert weights == pytest.approx([0.2, 0.4, 0.6, 0.8, 0.8, 0.8])


def test_every_shipped_config_builds_its_stages():
    for path in sorted((REPO / "recipes" / "configs").glob("*.yaml")):
        cfg = load_config(path)
        stages = build_stages(cfg, num_train=100, class_counts=[500, 50] * 5)  # long-tail losses need counts
        expected = 2 if cfg.method.name in ("refcal", "mislas") else 1
        assert len(stages) == expected, path.name
        for st in stages:
            BatchTransform([0.5] * 3, [0.25] * 3, augment=st.augment)
        assert stage_plan(cfg) == [(st.name, st.train.epochs) for st in stages], path.name  # what progress reads


def test_bad_method_config():
    from refcal_zoo.errors import ConfigError

    cfg = Config()
    cfg.method.name = "refcal2"
    with pytest.raises(ConfigError, match="unknown method.name 'refcal2'"):
        build_stages(cfg, 10)
    cfg.method.name = "plain"
    cfg.method.base_loss = "focal"
    cfg.method.loss_args = {"gama": 2}
    with pytest.raises(ConfigError, match="gama"):
        build_stages(cfg, 10)



@pytest.mark.parametrize(
    "overrides",
    [
        ["method.name=refcal_joint", "train.epochs=1", "method.supcon.views=1"],
        ["method.name=refcal", "train.epochs=1", "stage2.epochs=1", "stage2.batch_size=128", "stage2.lr=0.5"],
    ],
    ids=["joint", "two_stage"],
)
@pytest.mark.slow
def test_short_runs_on_digits_finish(tmp_path, overrides):
    from refcal_zoo.engine import train

    cfg = load_config(REPO / "recipes" / "configs" / "default.yaml", [*overrides, f"output_dir={tmp_path / 'run'}"])
    result = train(cfg)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["n"] == 500 and 0 <= metrics["accuracy"] <= 1 and "ts/ece" in metrics
    log = [json.loads(line) for line in (result.run_dir / "log.jsonl").read_text().splitlines()]
    assert all("train_supcon" in r and "train_refinement" in r for r in log if r["stage"] != "classifier")
    if cfg.method.name == "refcal":
        assert [r["stage"] for r in log] == ["contrastive", "classifier"]
