"""MiSLAS: label-aware smoothing against hand computations, class-balanced sampling, learnable weight scaling folded
into the published classifier, mixup against its definition, the method's validation, and a run killed in either
stage resuming bit-identically."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from refcal_zoo.config import load_config
from refcal_zoo.data import ClassBalancedSampler, TensorImageDataset, make_loader
from refcal_zoo.engine import build_optimizer
from refcal_zoo.engine.validate import validate_config
from refcal_zoo.errors import ConfigError
from refcal_zoo.losses import LabelAwareSmoothingLoss, build_loss, label_aware_smoothing_factors
from refcal_zoo.methods import (
    ClassifierRetraining,
    Criterion,
    MixupTraining,
    ScaledClassifier,
    build_stages,
    fold_logit_scale,
)

from .conftest import REPO, reset_accelerate_state
from .test_engine import assert_same_run, run_in_process, run_killed_at

MISLAS = REPO / "recipes" / "configs" / "resnet32-cifar10lt-mislas.yaml"


def _mislas_overrides() -> list[str]:
    import importlib.util
    import sys

    if "compare_methods" not in sys.modules:
        spec = importlib.util.spec_from_file_location("compare_methods", REPO / "benchmarks" / "compare_methods.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["compare_methods"] = module
        spec.loader.exec_module(module)
    return sys.modules["compare_methods"].preset_overrides("mislas")


# ------------------------------------------------------------------------------------------ label-aware smoothing
def test_smoothing_factors_by_hand():
    counts = [500, 300, 100, 50]  # n_1 = 500, n_K = 50
    eps = label_aware_smoothing_factors(counts, 0.3, 0.1, "concave")
    u = [(n - 50) / 450 for n in counts]
    assert eps == pytest.approx([0.1 + 0.2 * math.sin(math.pi / 2 * x) for x in u], abs=1e-12)
    assert eps[0] == pytest.approx(0.3) and eps[-1] == pytest.approx(0.1)
    assert label_aware_smoothing_factors(counts, 0.3, 0.1, "linear") == pytest.approx([0.1 + 0.2 * x for x in u])
    # the official convex form: head + (head - tail) * sin(1.5 pi + u pi / 2)
    convex = [0.3 + 0.2 * math.sin(1.5 * math.pi + x * math.pi / 2) for x in u]
    assert label_aware_smoothing_factors(counts, 0.3, 0.1, "convex") == pytest.approx(convex, abs=1e-12)
    assert label_aware_smoothing_factors(counts, 0.3, 0.1, "exp", power=2.0) == pytest.approx(
        [0.1 + 0.2 * x ** 2 for x in u])
    assert label_aware_smoothing_factors([7, 7, 7], 0.2, 0.0).tolist() == [0.2, 0.2, 0.2]  # balanced: all head


@pytest.mark.parametrize("bad", [dict(smooth_head=1.0), dict(smooth_tail=-0.1), dict(shape="square"),
                                 dict(shape="exp")])
def test_smoothing_rejects_bad_arguments(bad):
    with pytest.raises(ValueError, match="label-aware smoothing"):
        build_loss("label_aware_smoothing", class_counts=[10, 5, 2], **bad)


def test_loss_is_cross_entropy_with_each_class_smoothing():
    torch.manual_seed(0)
    counts = [400, 120, 40, 10, 4]
    loss = build_loss("label_aware_smoothing", class_counts=counts, smooth_head=0.3, smooth_tail=0.05)
    assert isinstance(loss, LabelAwareSmoothingLoss)
    logits, y = torch.randn(64, 5) * 3, torch.randint(0, 5, (64,))
    eps = label_aware_smoothing_factors(counts, 0.3, 0.05)
    # PyTorch's uniform label smoothing, one sample at a time with that sample's class factor
    ref = torch.stack([F.cross_entropy(logits[i:i + 1], y[i:i + 1], label_smoothing=float(eps[int(y[i])]))
                       for i in range(64)]).mean()
    assert loss(logits, y).item() == pytest.approx(ref.item(), rel=1e-6)
    plain = build_loss("label_aware_smoothing", class_counts=counts, smooth_head=0.0, smooth_tail=0.0)
    assert plain(logits, y).item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)


# ---------------------------------------------------------------------------------------- class-balanced sampling
def test_class_balanced_sampler_draws_every_class_equally():
    labels = torch.tensor([0] * 50 + [1] * 12 + [2] * 5 + [3] * 1)
    s = ClassBalancedSampler(labels, seed=3, num_samples=200)
    order = torch.tensor(list(s))
    assert len(order) == len(s) == 200
    assert torch.bincount(labels[order]).tolist() == [50, 50, 50, 50]
    rounds = labels[order].view(50, 4)
    assert all(sorted(r.tolist()) == [0, 1, 2, 3] for r in rounds)  # every round a permutation of the classes
    uses = torch.bincount(order, minlength=len(labels))
    assert uses[:50].tolist() == [1] * 50  # the largest class: each image once
    assert set(uses[50:62].tolist()) <= {4, 5} and uses[50:62].sum() == 50  # whole passes, then part of one
    assert uses[67] == 50
    assert list(s) == order.tolist()  # (seed, epoch) alone decide the order
    s.set_epoch(1)
    assert list(s) != order.tolist()
    default = ClassBalancedSampler(labels, seed=3)  # MiSLAS: an epoch as long as the dataset
    drawn = labels[torch.tensor(list(default))]
    assert len(drawn) == len(labels) == 68 and torch.bincount(drawn).tolist() == [17, 17, 17, 17]


def test_make_loader_class_balanced_batches():
    ds = TensorImageDataset(torch.zeros(30, 3, 4, 4, dtype=torch.uint8), torch.tensor([0] * 27 + [1] * 3))
    loader = make_loader(ds, 5, train=True, seed=0, class_balanced=True)
    assert len(loader) == 6  # 30 class-balanced draws = 6 batches of 5
    labels = torch.cat([b["label"] for b in loader])
    assert torch.bincount(labels).tolist() == [15, 15]
    with pytest.raises(ValueError, match="training loaders only"):
        make_loader(ds, 9, train=False, class_balanced=True)


# ------------------------------------------------------------------------------------ learnable weight scaling
def _tiny_model(num_classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet8_cifar", num_classes=num_classes)


def test_folding_the_scale_reproduces_the_scaled_logits():
    model = _tiny_model().eval()
    x = torch.randn(6, 3, 32, 32)
    scale = torch.tensor([0.5, 2.0, 1.0, 3.0])
    with torch.no_grad():
        expected = model(x) * scale
        folded = fold_logit_scale(model, scale)(x)
    torch.testing.assert_close(folded, expected, rtol=1e-5, atol=1e-5)


def test_scaled_classifier_trains_only_the_head_and_keeps_or_shifts_batchnorm():
    for shift in (False, True):
        model = _tiny_model()
        wrapped = ScaledClassifier(model, shift_bn=shift).train()
        trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
        assert trainable == {"scale", "model.fc.weight", "model.fc.bias"}
        before = model.bn1.running_mean.clone()
        out = wrapped(torch.randn(8, 3, 32, 32) * 3 + 1)
        out.sum().backward()
        assert model.conv1.weight.grad is None and wrapped.scale.grad is not None
        assert model.bn1.training is shift and model.fc.training
        assert torch.equal(model.bn1.running_mean, before) is (not shift)


def test_classifier_retraining_learning_rates_and_published_model():
    method = ClassifierRetraining(Criterion(build_loss("ce")), classifier_lr_scale=0.2)
    model = _tiny_model()
    module = method.wrap(model)
    cfg = load_config(MISLAS).stage2
    opt = build_optimizer(method.param_groups(module), cfg)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1 * 0.2, 0.1])
    with torch.no_grad():
        module.scale.copy_(torch.tensor([1.0, 0.5, 2.0, 1.5]))
    x = torch.randn(5, 3, 32, 32)
    module.eval()
    with torch.no_grad():
        expected = module(x)
        exported = method.classifier_of(module)  # a folded copy: the training module is unchanged
        torch.testing.assert_close(exported.eval()(x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(module(x), expected)
        final = method.unwrap(module)
        torch.testing.assert_close(final.eval()(x), expected, rtol=1e-5, atol=1e-5)
    assert all(p.requires_grad for p in final.parameters())


def test_classifier_retraining_needs_a_linear_head():
    class NoLinear(nn.Module):
        def get_classifier(self):
            return nn.Identity()

    with pytest.raises(ConfigError, match="linear classifier"):
        ClassifierRetraining(Criterion(build_loss("ce"))).check_model(NoLinear())


# ------------------------------------------------------------------------------------------------------- mixup
def test_mixup_loss_is_the_mixture_of_the_two_labels_losses():
    model = _tiny_model().eval()
    method = MixupTraining(Criterion(build_loss("ce")), alpha=1.0)
    batch = {"image": torch.randn(8, 3, 32, 32), "label": torch.randint(0, 4, (8,)), "index": torch.arange(8)}
    torch.manual_seed(5)
    loss, logits, labels, _ = method.loss(model, batch, lambda x: x)
    torch.manual_seed(5)  # the same draws by hand: lambda ~ Beta(1, 1), then the pairing
    lam = float(torch.distributions.Beta(torch.tensor(1.0), torch.tensor(1.0)).sample())
    perm = torch.randperm(8)
    x, y = batch["image"], batch["label"]
    with torch.no_grad():
        z = model(lam * x + (1 - lam) * x[perm])
    ref = lam * F.cross_entropy(z, y) + (1 - lam) * F.cross_entropy(z, y[perm])
    assert 0 < lam < 1 and loss.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(logits, z, rtol=1e-5, atol=1e-5)
    assert torch.equal(labels, y)
    with pytest.raises(ConfigError, match="stateless"):
        MixupTraining(Criterion(build_loss("crl", num_samples=8)))


# ----------------------------------------------------------------------------------------------- configuration
def test_mislas_recipes_follow_the_official_settings():
    c10, c100 = load_config(MISLAS), load_config(str(MISLAS).replace("cifar10lt", "cifar100lt"))
    for cfg in (c10, c100):
        validate_config(cfg)
        assert (cfg.method.name, cfg.method.base_loss, cfg.method.mislas.mixup_alpha) == (
            "mislas", "label_aware_smoothing", 1.0)
        assert (cfg.train.epochs, cfg.train.lr, cfg.train.lr_decay, cfg.train.milestones) == (200, 0.1, 0.1, [160, 180])
        s2 = cfg.stage2
        assert (s2.epochs, s2.batch_size, s2.lr, s2.weight_decay, s2.schedule, s2.augment) == (
            10, 128, 0.1, 2e-4, "cosine", "crop_flip")
    assert (c10.method.loss_args["smooth_head"], c10.method.mislas.shift_bn,
            c10.method.mislas.classifier_lr_scale) == (0.1, False, 0.2)
    assert (c100.method.loss_args["smooth_head"], c100.method.mislas.shift_bn,
            c100.method.mislas.classifier_lr_scale) == (0.2, True, 0.1)
    stages = build_stages(c10, 100, class_counts=[50, 30, 20, 10, 5, 5, 5, 5, 5, 5])
    assert [(s.name, type(s.method).__name__, s.sampler) for s in stages] == [
        ("mixup", "MixupTraining", "shuffle"), ("classifier", "ClassifierRetraining", "class_balanced")]


@pytest.mark.parametrize("override, match", [
    ("method.mislas.mixup_alpha=0", "method.mislas.mixup_alpha must be > 0"),
    ("method.mislas.classifier_lr_scale=-1", "classifier_lr_scale must be > 0"),
    ("train.drw_epoch=3", "drw_epoch has no effect on mislas"),
    ("method.mislas.shift_bm=true", "did you mean 'method.mislas.shift_bn'"),
])
def test_bad_mislas_settings_are_one_line_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(MISLAS, [override])


# ---------------------------------------------------------------------------------------------------- training
# digits-LT: stage 1 13 batches of 32; stage 2 13 class-balanced batches of 32 (an epoch of len(dataset) draws)
STAGES = ["train.epochs=1", "stage2.epochs=1", "stage2.batch_size=32"]


@pytest.fixture(scope="module")
def mislas_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("mislas") / "reference"
    run_in_process(out, *_mislas_overrides(), *STAGES)
    reset_accelerate_state()
    return out


def test_mislas_run_publishes_the_logits_it_selected_on(mislas_reference):
    out = mislas_reference
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in log] == ["mixup", "classifier"]
    counts = json.loads((out / "config.json").read_text())["run_record"]["dataset"]["train_counts"]
    assert log[1]["epoch"] == 1 and log[1]["images_per_second"] > 0 and len(counts) == 10
    # the validation NLL logged from the scaled training module equals the published (folded) model's
    val = np.load(out / "val_predictions.npz")
    nll = F.cross_entropy(torch.from_numpy(val["logits"]), torch.from_numpy(val["labels"])).item()
    assert nll == pytest.approx(log[1]["val_nll"], rel=1e-4)
    model = timm.create_model("resnet8_cifar", num_classes=10)
    model.load_state_dict(load_file(str(out / "model.safetensors")))
    assert set(load_file(str(out / "model.safetensors"))) == set(model.state_dict())  # no scale parameter left


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [7, 17], ids=["in-mixup-stage", "in-classifier-stage"])
def test_mislas_killed_in_either_stage_resumes_bit_identical(mislas_reference, tmp_path, kill_at):
    """Batch 7 of stage 1 (newest checkpoint step_5: mixup's lambda and pairing come from the restored RNG) or
    batch 4 of stage 2 (step_15: the class-balanced order, the classifier and the scale restored mid-epoch)."""
    out = tmp_path / "killed"
    run_killed_at(out, kill_at, *_mislas_overrides(), *STAGES)
    run_in_process(out, *_mislas_overrides(), *STAGES, resume=True)
    assert_same_run(mislas_reference, out)
