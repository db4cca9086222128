"""Long-tail losses (logit adjustment, balanced softmax, LDAM) and DRW weights against hand computation, and their
wiring through build_stages and short digits-LT runs (plain, refcal_joint, refcal stage 2)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from refcal_zoo.config import Config, load_config
from refcal_zoo.errors import ConfigError
from refcal_zoo.losses import (
    BalancedSoftmaxLoss,
    CELoss,
    LDAMLoss,
    LogitAdjustedLoss,
    build_loss,
    drw_class_weights,
)
from refcal_zoo.methods import Criterion, build_stages

from .conftest import REPO

COUNTS = [100, 10, 1]
Z = [[2.0, 0.5, -1.0], [0.0, 1.0, 0.3], [-0.5, 0.2, 0.9], [1.5, -0.3, 0.0]]
Y = [0, 1, 2, 2]


def ce_by_hand(row, label):
    m = max(row)
    return -(row[label] - m - math.log(sum(math.exp(v - m) for v in row)))


def test_logit_adjusted_by_hand():
    tau = 1.5
    total = sum(COUNTS)
    expected = np.mean([ce_by_hand([z + tau * math.log(c / total) for z, c in zip(row, COUNTS, strict=True)], y)
                        for row, y in zip(Z, Y, strict=True)])
    loss = build_loss("logit_adjusted", class_counts=COUNTS, tau=tau)
    assert isinstance(loss, LogitAdjustedLoss)
    assert loss(torch.tensor(Z), torch.tensor(Y)).item() == pytest.approx(expected, rel=1e-6)
    # tau = 0 is plain cross-entropy
    plain = np.mean([ce_by_hand(row, y) for row, y in zip(Z, Y, strict=True)])
    assert LogitAdjustedLoss(COUNTS, tau=0)(torch.tensor(Z), torch.tensor(Y)).item() == pytest.approx(plain, rel=1e-6)


def test_balanced_softmax_by_hand_and_equals_logit_adjustment_at_tau_1():
    expected = np.mean([ce_by_hand([z + math.log(c) for z, c in zip(row, COUNTS, strict=True)], y)
                        for row, y in zip(Z, Y, strict=True)])
    z, y = torch.tensor(Z), torch.tensor(Y)
    bs = build_loss("balanced-softmax", class_counts=COUNTS)
    assert isinstance(bs, BalancedSoftmaxLoss)
    assert bs(z, y).item() == pytest.approx(expected, rel=1e-6)
    assert bs(z, y).item() == pytest.approx(LogitAdjustedLoss(COUNTS, tau=1.0)(z, y).item(), rel=1e-6)


def test_ldam_margins_and_loss_by_hand():
    # Delta_j = C / n_j^(1/4), largest 0.5: n = 100, 10, 1 -> 0.5 * (1/100^.25, 1/10^.25, 1) / 1
    margins = [0.5 * c ** -0.25 / 1.0 for c in COUNTS]
    assert margins == pytest.approx([0.15811388, 0.28117066, 0.5], rel=1e-6)
    loss = build_loss("ldam", class_counts=COUNTS)
    assert isinstance(loss, LDAMLoss) and loss.s == 30.0 and loss.max_m == 0.5
    np.testing.assert_allclose(loss.margins.numpy(), margins, rtol=1e-6)
    expected = []
    for row, y in zip(Z, Y, strict=True):
        shifted = [30.0 * (v - (margins[y] if j == y else 0.0)) for j, v in enumerate(row)]
        expected.append(ce_by_hand(shifted, y))
    assert loss(torch.tensor(Z), torch.tensor(Y)).item() == pytest.approx(np.mean(expected), rel=1e-6)
    # the margin is on the true class only: gradient w.r.t. a wrong class equals s * softmax there
    z = torch.tensor(Z, requires_grad=True)
    LDAMLoss(COUNTS, s=2.0)(z, torch.tensor(Y)).backward()
    assert torch.all(z.grad[torch.arange(4), torch.tensor(Y)] < 0)


def test_drw_weights_by_hand():
    beta = 0.9999
    raw = [(1 - beta) / (1 - beta ** n) for n in COUNTS]
    expected = [w / sum(raw) * len(COUNTS) for w in raw]
    w = drw_class_weights(COUNTS, beta)
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6)
    assert w.sum().item() == pytest.approx(3.0)
    assert w[2] > w[1] > w[0]  # rarer classes weigh more
    np.testing.assert_allclose(drw_class_weights(COUNTS, 0.0).numpy(), [1, 1, 1])  # beta 0: no re-weighting


@pytest.mark.parametrize("name", ["ce", "logit_adjusted", "balanced_softmax", "ldam"])
def test_class_weights_give_the_weighted_mean(name):
    kwargs = {} if name == "ce" else {"class_counts": COUNTS}
    loss = build_loss(name, **kwargs)
    z, y = torch.tensor(Z), torch.tensor(Y)
    per_sample = [loss(z[i:i + 1], y[i:i + 1]).item() for i in range(4)]
    w = drw_class_weights(COUNTS)
    loss.set_class_weight(w)
    wy = [w[t].item() for t in Y]
    expected = sum(a * b for a, b in zip(wy, per_sample, strict=True)) / sum(wy)
    assert loss(z, y).item() == pytest.approx(expected, rel=1e-5)
    loss.set_class_weight(None)
    assert loss(z, y).item() == pytest.approx(np.mean(per_sample), rel=1e-5)
    assert "class_weight" not in loss.state_dict()  # DRW sets them every epoch; checkpoints stay as they were


def test_criterion_switches_drw_on_at_its_epoch():
    crit = Criterion(build_loss("ldam", class_counts=COUNTS), drw=(3, drw_class_weights(COUNTS)))
    for epoch, on in [(0, False), (2, False), (3, True), (10, True), (1, False)]:
        crit.start_epoch(epoch)
        assert (crit.loss.class_weight is not None) is on, epoch


def test_bad_inputs():
    with pytest.raises(ValueError, match="class_counts must be positive"):
        LogitAdjustedLoss([10, 0, 3])
    with pytest.raises(ValueError, match="class_counts has 3"):
        BalancedSoftmaxLoss(COUNTS)(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ConfigError, match="class weights"):
        Criterion(build_loss("focal"), drw=(1, drw_class_weights(COUNTS)))


def test_build_stages_passes_counts_and_checks_drw():
    cfg = Config()
    cfg.method.name, cfg.method.base_loss = "plain", "logit_adjusted"
    with pytest.raises(ConfigError, match="needs the training class counts"):
        build_stages(cfg, 100)
    stage = build_stages(cfg, 100, class_counts=COUNTS)[0]
    assert stage.method.criterion.loss.class_counts.tolist() == COUNTS and stage.method.criterion.drw is None
    cfg.train.drw_epoch = 4
    drw = build_stages(cfg, 100, class_counts=COUNTS)[0].method.criterion.drw
    assert drw[0] == 4 and torch.allclose(drw[1], drw_class_weights(COUNTS, 0.9999))
    cfg.train.drw_beta = 1.0
    with pytest.raises(ConfigError, match="drw_beta"):
        build_stages(cfg, 100, class_counts=COUNTS)
    cfg.method.name, cfg.train.drw_beta = "refcal", None
    with pytest.raises(ConfigError, match="stage2.drw_epoch"):
        build_stages(cfg, 100, class_counts=COUNTS)
    cfg.train.drw_epoch, cfg.stage2.drw_epoch = None, 2
    stages = build_stages(cfg, 100, class_counts=COUNTS)
    assert stages[1].method.criterion.drw[0] == 2


@pytest.mark.parametrize(
    "overrides",
    [
        ["method.name=plain", "method.base_loss=ldam", "method.loss_args={s: 1.0}", "train.drw_epoch=1",
         "train.epochs=2"],
        ["method.name=refcal_joint", "method.base_loss=logit_adjusted", "train.epochs=1", "method.supcon.views=1"],
        ["method.name=refcal", "method.base_loss=balanced_softmax", "train.epochs=1", "stage2.epochs=2",
         "stage2.drw_epoch=1", "stage2.batch_size=128", "stage2.lr=0.5"],
    ],
    ids=["ldam_drw", "joint_la", "two_stage_bs"],
)
@pytest.mark.slow
def test_short_digits_runs_with_long_tail_losses(tmp_path, overrides):
    from refcal_zoo.engine import train

    cfg = load_config(REPO / "recipes" / "configs" / "default.yaml", [*overrides, f"output_dir={tmp_path / 'run'}"])
    result = train(cfg)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["n"] == 500 and 0 <= metrics["accuracy"] <= 1
    log = [json.loads(line) for line in (result.run_dir / "log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["train_loss"]) for r in log)
    val = np.load(result.run_dir / "val_predictions.npz")
    assert val["logits"].dtype == np.float32 and val["labels"].dtype == np.int64
    assert val["logits"].shape == (len(val["labels"]), 10)
    assert isinstance(CELoss(), CELoss)
