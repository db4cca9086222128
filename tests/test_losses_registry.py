"""build_loss registry: names, kwargs, errors and trainer flags."""

from __future__ import annotations

import pytest
import torch

from refcal_zoo.losses import (
    LOSSES,
    AdaFocalLoss,
    CRLLoss,
    FLSD53Loss,
    MDCALoss,
    available_losses,
    build_loss,
)

EXPECTED = {
    "ce",
    "ls",
    "focal",
    "flsd53",
    "brier",
    "mmce",
    "dca",
    "mdca",
    "mbls",
    "logitnorm",
    "crl",
    "adafocal",
    "logitadjusted",
    "balancedsoftmax",
    "ldam",
    "labelawaresmoothing",
}


def test_registry_names():
    assert set(LOSSES) == EXPECTED
    assert available_losses() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_loss_builds_and_runs(name):
    kwargs = {"num_samples": 10} if name == "crl" else {}
    if LOSSES[name].needs_class_counts:
        kwargs["class_counts"] = [50, 20, 5, 2]
    loss = build_loss(name, **kwargs)
    z, y = torch.randn(6, 4), torch.randint(0, 4, (6,))
    out = loss(z, y, torch.arange(6)) if loss.needs_indices else loss(z, y)
    assert out.dim() == 0 and torch.isfinite(out)


def test_flags():
    for name in EXPECTED:
        cls = LOSSES[name]
        assert cls.needs_indices is (name == "crl"), name
        assert cls.needs_validation is (name == "adafocal"), name
    assert CRLLoss.needs_indices and AdaFocalLoss.needs_validation


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as ei:
        build_loss("focal_loss_typo")
    msg = str(ei.value)
    for name in EXPECTED:
        assert name in msg


def test_unknown_kwarg_lists_valid_kwargs():
    with pytest.raises(ValueError) as ei:
        build_loss("focal", gama=2.0)
    assert "gama" in str(ei.value) and "gamma" in str(ei.value)
    with pytest.raises(ValueError, match="beta"):
        build_loss("mdca", lamda=1.0)
    with pytest.raises(ValueError):
        build_loss("ce", alpha=0.1)


def test_name_normalisation_and_kwargs_pass_through():
    loss = build_loss("FLSD-53")
    assert isinstance(loss, FLSD53Loss)
    m = build_loss("mdca", base="focal", gamma=2.0, beta=5.0)
    assert isinstance(m, MDCALoss) and (m.base, m.gamma, m.beta) == ("focal", 2.0, 5.0)
    assert build_loss("ls", alpha=0.05, convention="others").convention == "others"
    assert build_loss("crl", num_samples=7).history.num_samples == 7


def test_crl_requires_history_or_num_samples():
    with pytest.raises(ValueError):
        build_loss("crl")
    with pytest.raises(ValueError):
        CRLLoss(history=None, num_samples=None)
