"""Backbones registered in timm: parameter counts against published/independent figures, shapes, interface."""

from __future__ import annotations

import pytest
import timm
import torch

import refcal_zoo
from refcal_zoo.models import CIFAR10_MEAN, CIFAR10_STD, ContrastiveClassifier

OURS = [
    "resnet8_cifar", "resnet20_cifar", "resnet32_cifar", "resnet44_cifar", "resnet56_cifar", "resnet110_cifar",
    "wrn16_8_cifar", "wrn28_2_cifar", "wrn28_10_cifar", "wrn40_2_cifar",
    "efficientvit_b0_cifar", "efficientvit_b1_cifar", "efficientvit_b2_cifar",
]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("arch", "num_classes", "expected"),
    [
        # option-A (zero-padding) shortcuts: He et al. 2016 / LDAM-DRW counts
        ("resnet20_cifar", 10, 269_722),
        ("resnet32_cifar", 10, 464_154),
        ("resnet32_cifar", 100, 470_004),
        ("resnet56_cifar", 10, 853_018),
        ("resnet110_cifar", 10, 1_727_962),
        # Zagoruyko & Komodakis WRN-d-k
        ("wrn28_10_cifar", 10, 36_479_194),
        ("wrn28_10_cifar", 100, 36_536_884),
        ("wrn16_8_cifar", 10, 10_961_370),
        ("wrn28_2_cifar", 10, 1_467_610),
        ("wrn40_2_cifar", 10, 2_243_546),
    ],
)
def test_parameter_counts(arch, num_classes, expected):
    assert n_params(timm.create_model(arch, num_classes=num_classes)) == expected


def test_efficientvit_cifar_keeps_timm_parameters():
    ours = timm.create_model("efficientvit_b0_cifar", num_classes=10)
    theirs = timm.create_model("efficientvit_b0", num_classes=10)
    assert n_params(ours) == n_params(theirs)
    ours.load_state_dict(theirs.state_dict())  # strict: same names and shapes, so timm weights load
    assert ours.forward_features(torch.zeros(2, 3, 32, 32)).shape[-2:] == (4, 4)
    assert theirs.forward_features(torch.zeros(2, 3, 32, 32)).shape[-2:] == (1, 1)


@pytest.mark.parametrize("arch", OURS)
def test_forward_shapes_and_interface(arch):
    model = timm.create_model(arch, num_classes=7).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        logits = model.forward_head(feats)
        full = model(x)
    assert feats.dim() == 4 and feats.shape[0] == 2 and feats.shape[1] == model.num_features
    assert pre.shape == (2, getattr(model, "head_hidden_size", None) or model.num_features)
    assert logits.shape == (2, 7)
    torch.testing.assert_close(full, logits)
    assert model.get_classifier().out_features == 7
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)
    cfg = model.pretrained_cfg
    assert tuple(cfg["input_size"]) == (3, 32, 32)
    assert cfg["crop_pct"] == 1.0
    assert tuple(cfg["mean"]) == CIFAR10_MEAN and tuple(cfg["std"]) == CIFAR10_STD


def test_registry_lists_our_models():
    listed = set(timm.list_models("*_cifar"))
    assert set(OURS) <= listed


@pytest.mark.parametrize("arch", ["resnet32_cifar", "wrn28_2_cifar", "efficientvit_b0_cifar"])
def test_features_only(arch):
    model = timm.create_model(arch, features_only=True)
    outs = model(torch.randn(2, 3, 32, 32))
    assert [o.shape[1] for o in outs] == model.feature_info.channels()
    assert [32 // o.shape[-1] for o in outs] == model.feature_info.reduction()


def test_local_dir_round_trip(tmp_path):
    model = timm.create_model("resnet8_cifar", num_classes=4).eval()
    timm.models.save_for_hf(model, tmp_path, safe_serialization=True)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_create_model_unknown_name_is_clear():
    with pytest.raises(ValueError, match="unknown model architecture 'resnet33_cifar'.*resnet32_cifar"):
        refcal_zoo.create_model("resnet33_cifar")


def test_contrastive_wrapper_matches_backbone():
    backbone = timm.create_model("resnet8_cifar", num_classes=5).eval()
    wrapped = ContrastiveClassifier(backbone, proj_dim=16).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        logits, z = wrapped(x, with_projection=True)
        torch.testing.assert_close(logits, backbone(x))
        torch.testing.assert_close(wrapped(x), backbone(x))
    assert z.shape == (4, 16)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(4))


def test_import_does_not_touch_the_network():
    """Import the package and build a model in a fresh interpreter whose sockets refuse to connect."""
    import subprocess
    import sys

    code = (
        "import socket\n"
        "def refuse(*a, **k):\n"
        "    raise AssertionError('network access during import')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "import refcal_zoo, timm\n"
        "timm.create_model('resnet32_cifar', num_classes=10)\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


@pytest.mark.parametrize("arch", ["resnet20_cifar", "wrn16_8_cifar"])
def test_grad_checkpointing_gives_the_same_gradients(arch):
    torch.manual_seed(0)
    model = timm.create_model(arch, num_classes=3).train()
    x = torch.randn(4, 3, 32, 32)
    grads = []
    for enable in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(enable)
        model(x).pow(2).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)
