"""Pipeline wiring that a wrong sign, a dropped factor or a swapped split would break.

- ``RefCalJoint.loss`` on a fixed batch equals cross-entropy + lambda * world_size * SupCon, with SupCon written
  here from its formula (Khosla et al. 2020, eq. 2, every view an anchor), independent of ``refcal_zoo.losses``.
- The temperature in a run's ``temperature.json`` is the validation-NLL optimum of the run's saved weights,
  recomputed with plain timm + scipy (not ``fit_temperature``), and differs from the test-split optimum.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import timm
import torch
import yaml
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from refcal_zoo.config import DatasetConfig, SupConConfig, load_config
from refcal_zoo.data import normalize, prepare_data
from refcal_zoo.losses import build_loss
from refcal_zoo.methods import Criterion, RefCalJoint
from refcal_zoo.models import create_model

from .conftest import REPO, reset_accelerate_state


def supcon_from_formula(z: torch.Tensor, y: torch.Tensor, tau: float) -> float:
    """``mean_i -1/|P(i)| sum_{p in P(i)} log(exp(z_i.z_p/tau) / sum_{a != i} exp(z_i.z_a/tau))``, plain loops
    in float64 over the anchors ``z`` ([N, D], every view a row) with labels ``y`` ([N])."""
    z = z.double()
    n = z.shape[0]
    total, anchors = 0.0, 0
    for i in range(n):
        denom = sum(math.exp(float(z[i] @ z[a]) / tau) for a in range(n) if a != i)
        positives = [p for p in range(n) if p != i and int(y[p]) == int(y[i])]
        if not positives:
            continue
        total += -sum(math.log(math.exp(float(z[i] @ z[p]) / tau) / denom) for p in positives) / len(positives)
        anchors += 1
    return total / anchors


@pytest.mark.parametrize("world_size", [1, 2])
def test_refcal_joint_loss_is_ce_plus_lambda_times_supcon(world_size):
    torch.manual_seed(0)
    lam, tau, b = 0.7, 0.1, 12
    method = RefCalJoint(Criterion(build_loss("ce")), SupConConfig(temperature=tau, weight=lam, views=2),
                         proj_dim=16, world_size=world_size)
    module = method.wrap(create_model("resnet8_cifar", num_classes=4)).eval()
    x = torch.randn(b, 3, 16, 16)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0, 0, 1, 3])
    batch = {"image": x, "label": y, "index": torch.arange(b)}
    with torch.no_grad():
        loss, logits, labels, logs = method.loss(module, batch, lambda t: t)  # identity transform
        ref_logits, z = module(torch.cat([x, x]), with_projection=True)
    assert torch.equal(labels, y.repeat(2)) and torch.allclose(logits, ref_logits)
    ce = torch.nn.functional.cross_entropy(ref_logits.double(), y.repeat(2)).item()  # both views classified
    con = supcon_from_formula(z, y.repeat(2), tau)  # view-major anchors: all first views, then all second views
    assert float(logs["supcon"]) == pytest.approx(con, rel=1e-5)
    assert float(loss) == pytest.approx(ce + lam * world_size * con, rel=1e-5)
    assert con > 0.5  # the term is large enough that a flipped sign or a lost factor cannot hide in the tolerance


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    from refcal_zoo.engine import train

    out = tmp_path_factory.mktemp("wiring") / "run"
    cfg = load_config(REPO / "recipes" / "configs" / "default.yaml",
                      ["method.name=plain", "train.epochs=3", "train.warmup_epochs=0", f"output_dir={out}"])
    try:
        train(cfg)
    finally:
        reset_accelerate_state()
    return out


def nll_optimal_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    def nll(t: float) -> float:
        return float(-log_softmax(logits / t, axis=1)[np.arange(len(labels)), labels].mean())

    res = minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded", options={"xatol": 1e-9})
    return float(res.x)


def test_temperature_is_fitted_on_the_validation_logits_of_the_saved_weights(short_run):
    saved = yaml.safe_load((short_run / "config.yaml").read_text())
    record = json.loads((short_run / "temperature.json").read_text())
    model = timm.create_model(f"local-dir:{short_run}", pretrained=True).eval()
    mean, std = torch.tensor(model.pretrained_cfg["mean"]), torch.tensor(model.pretrained_cfg["std"])
    data = prepare_data(DatasetConfig(**saved["dataset"]))
    with torch.no_grad():
        val = model(normalize(data.val_images, mean, std)).double().numpy()
        test = model(normalize(data.test_images, mean, std)).double().numpy()
    t_val = nll_optimal_temperature(val, data.val_labels.numpy())
    t_test = nll_optimal_temperature(test, data.test_labels.numpy())
    assert record["fitted_on"] == "validation" and record["n"] == len(data.val_labels)
    assert 0.06 < t_val < 19  # an interior optimum, not a search bound
    assert record["temperature"] == pytest.approx(t_val, rel=1e-4)
    assert abs(t_test - t_val) > 1e-3 * t_val  # fitting on test would have given another value
