"""Shared fixtures: an isolated decode cache, tiny generated datasets in the Hub's CIFAR schemas."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_CIFAR10 = REPO.parent / "shared" / "datasets" / "cifar10"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("REFCAL_ZOO_CACHE", str(tmp_path_factory.getbasetemp() / "refcal_cache"))


def _png(rng: np.random.Generator, size: int = 32) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write_cifar_like(folder: Path, *, schema: str, num_classes: int, train_per_class: int, test_per_class: int,
                     seed: int = 0) -> Path:
    """A small parquet dataset laid out like the Hub repo ``uoft-cs/cifar10`` (schema "cifar10") or
    ``uoft-cs/cifar100`` (schema "cifar100": ``img``, ``fine_label``, ``coarse_label``)."""
    import datasets

    rng = np.random.default_rng(seed)
    names = [f"class_{k}" for k in range(num_classes)]
    if schema == "cifar10":
        feats = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=names)})
        sub = "plain_text"
    elif schema == "cifar100":
        feats = datasets.Features({
            "img": datasets.Image(),
            "fine_label": datasets.ClassLabel(names=names),
            "coarse_label": datasets.ClassLabel(names=[f"super_{k}" for k in range(max(1, num_classes // 5))]),
        })
        sub = "cifar100"
    else:
        raise ValueError(schema)
    (folder / sub).mkdir(parents=True, exist_ok=True)
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = np.repeat(np.arange(num_classes), per_class)
        rng.shuffle(labels)
        rows = {"img": [{"bytes": _png(rng), "path": None} for _ in labels]}
        if schema == "cifar10":
            rows["label"] = labels.tolist()
        else:
            rows["fine_label"] = labels.tolist()
            rows["coarse_label"] = (labels // 5).tolist()
        target = folder / sub / f"{split}-00000-of-00001.parquet"
        datasets.Dataset.from_dict(rows, features=feats).to_parquet(str(target))
    return folder


@pytest.fixture(scope="session")
def cifar10_like(tmp_path_factory) -> Path:
    return write_cifar_like(tmp_path_factory.mktemp("cifar10_like"), schema="cifar10", num_classes=10,
                            train_per_class=30, test_per_class=4)


@pytest.fixture(scope="session")
def cifar100_like(tmp_path_factory) -> Path:
    return write_cifar_like(tmp_path_factory.mktemp("cifar100_like"), schema="cifar100", num_classes=20,
                            train_per_class=12, test_per_class=2)
