"""Dataset loading (parquet in the Hub's CIFAR schemas, imagefolder, digits, shared CIFAR-10), columns, cache,
augmentation."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from refcal_zoo.config import DatasetConfig
from refcal_zoo.data import (
    TensorImageDataset,
    detect_columns,
    load_image_splits,
    make_loader,
    prepare_data,
    random_crop_flip,
)
from refcal_zoo.data import sources as sources_mod
from refcal_zoo.errors import DataError

from .conftest import SHARED_CIFAR10


def test_cifar10_schema_parquet(cifar10_like):
    data = prepare_data(DatasetConfig(path=str(cifar10_like), rho=5, val_per_class=3))
    assert data.source["image_column"] == "img" and data.source["label_column"] == "label"
    assert data.num_classes == 10 and data.class_names[0] == "class_0"
    assert data.train_images.dtype == torch.uint8 and data.train_images.shape[1:] == (3, 32, 32)
    assert data.test_images.shape[0] == 40
    assert np.bincount(data.val_labels.numpy(), minlength=10).tolist() == [3] * 10
    assert np.bincount(data.train_labels.numpy(), minlength=10).tolist() == data.train_class_counts
    assert data.train_class_counts[0] == 27 and data.train_class_counts[-1] == 6  # 30 -> 6 at rho 5


def test_cifar100_schema_prefers_fine_label(cifar100_like):
    data = prepare_data(DatasetConfig(path=str(cifar100_like), rho=2, val_per_class=2))
    assert data.source["label_column"] == "fine_label"
    assert data.num_classes == 20
    coarse = prepare_data(DatasetConfig(path=str(cifar100_like), label_column="coarse_label", rho=1,
                                        val_per_class=2))
    assert coarse.num_classes == 4


def test_images_decode_to_the_stored_pixels(cifar10_like):
    raw = datasets.load_dataset(str(cifar10_like))["test"]
    splits = load_image_splits(str(cifar10_like), ["test"])
    first = np.asarray(raw[0]["img"].convert("RGB")).transpose(2, 0, 1)
    np.testing.assert_array_equal(splits.images["test"][0].numpy(), first)
    assert splits.labels["test"][0].item() == raw[0]["label"]


def test_decoded_cache_is_reused(cifar10_like, monkeypatch, tmp_path):
    monkeypatch.setenv("REFCAL_ZOO_CACHE", str(tmp_path))
    first = load_image_splits(str(cifar10_like), ["test"])
    assert len(list((tmp_path / "decoded").glob("*.npy"))) == 1

    def boom(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(sources_mod, "_decode_column", boom)
    second = load_image_splits(str(cifar10_like), ["test"])
    assert torch.equal(first.images["test"], second.images["test"])


def test_imagefolder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for cls in ("cat", "dog", "fox"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                shape = (40, 36, 3) if i == 0 else (32, 32, 3)  # one odd-sized image per class
                Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    with pytest.raises(DataError, match="images have different sizes.*set dataset.image_size"):
        prepare_data(DatasetConfig(path=str(tmp_path), rho=2, val_per_class=1))
    data = prepare_data(DatasetConfig(path=str(tmp_path), rho=2, val_per_class=1, image_size=32))
    assert data.class_names == ["cat", "dog", "fox"]
    assert data.train_images.shape[1:] == (3, 32, 32) and data.test_images.shape[0] == 6


def test_embedded_digits():
    data = prepare_data(DatasetConfig(path="digits", val_split="validation", rho=10))
    assert data.num_classes == 10
    assert data.train_images.shape[1:] == (3, 32, 32)
    assert data.test_labels.bincount().tolist() == [50] * 10
    assert data.val_labels.bincount().tolist() == [20] * 10
    assert data.train_class_counts[0] / data.train_class_counts[-1] == pytest.approx(10, rel=0.1)


@pytest.mark.skipif(not SHARED_CIFAR10.is_dir(), reason="shared CIFAR-10 copy (../shared/datasets/cifar10) absent")
def test_shared_cifar10_lt_counts():
    data = prepare_data(DatasetConfig(path=str(SHARED_CIFAR10), rho=10, val_per_class=0, val_split="test"))
    assert len(data.train_labels) == 20_431
    assert data.train_labels.bincount().tolist() == [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]
    with_val = prepare_data(DatasetConfig(path=str(SHARED_CIFAR10), rho=10, val_per_class=50))
    assert len(with_val.train_labels) == 20_431 - 50 and with_val.val_labels.bincount().tolist() == [50] * 10


def test_column_detection_errors():
    feats = datasets.Features({"pixels": datasets.Value("string"), "label": datasets.ClassLabel(names=["a", "b"])})
    with pytest.raises(DataError, match="no image column"):
        detect_columns(feats)
    feats = datasets.Features({"img": datasets.Image(), "caption": datasets.Value("string")})
    with pytest.raises(DataError, match="no label column"):
        detect_columns(feats)
    feats = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["a"])})
    with pytest.raises(DataError, match="image column 'image' not in the dataset"):
        detect_columns(feats, image_column="image")
    with pytest.raises(DataError, match="'img' is not a class-label column"):
        detect_columns(feats, label_column="img")
    feats = datasets.Features({"img": datasets.Image(), "target": datasets.Value("int64")})
    assert detect_columns(feats) == ("img", "target")


def test_missing_path_and_split(cifar10_like):
    with pytest.raises(DataError, match="does not exist"):
        load_image_splits("./no/such/folder", ["train"])
    with pytest.raises(DataError, match="has no split 'validation'"):
        load_image_splits(str(cifar10_like), ["validation"])


def test_random_crop_flip_matches_per_sample_reference():
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    out = random_crop_flip(x, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    oy = torch.randint(0, 9, (16,), generator=g)
    ox = torch.randint(0, 9, (16,), generator=g)
    flip = torch.rand(16, generator=g) < 0.5
    padded = F.pad(x, (4, 4, 4, 4))
    for i in range(16):
        ref = padded[i, :, oy[i]: oy[i] + 32, ox[i]: ox[i] + 32]
        torch.testing.assert_close(out[i], ref.flip(-1) if flip[i] else ref)
    assert flip.any() and not flip.all()


def test_loader_yields_whole_batches_with_indices():
    ds = TensorImageDataset(torch.zeros(10, 3, 4, 4, dtype=torch.uint8), torch.arange(10))
    batches = list(make_loader(ds, 4, train=True, seed=0))
    assert [b["image"].shape[0] for b in batches] == [4, 4]  # drop_last in training
    for b in batches:
        assert torch.equal(b["label"], b["index"])
    assert [b["image"].shape[0] for b in make_loader(ds, 4, train=False)] == [4, 4, 2]
