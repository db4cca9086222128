"""Load image-classification splits as uint8 tensors from the embedded digits set, a Hub id or a local folder.

Every source goes through ``datasets.load_dataset`` except the embedded digits: a Hub id (``uoft-cs/cifar10``,
``uoft-cs/cifar100``), a local copy laid out like a Hub dataset repo (``../shared/datasets/cifar10``), a folder
of parquet files, or a plain folder of class sub-folders of images (HF's ``imagefolder``; use ``train/`` and
``test/`` sub-folders for the splits). Images are decoded once and cached on disk as uint8 arrays keyed by the
dataset's fingerprint, so later runs skip decoding.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch

from ..errors import DataError
from .columns import detect_columns
from .digits import load_digits_splits

__all__ = ["ImageSplits", "cache_root", "is_embedded", "load_image_splits"]

EMBEDDED = ("digits", "sklearn:digits")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_DECODE_VERSION = "1"


@dataclass
class ImageSplits:
    """Decoded splits: ``images[split]`` uint8 ``[N, 3, H, W]``, ``labels[split]`` int64 ``[N]``."""

    images: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    class_names: list[str]
    info: dict = field(default_factory=dict)  # provenance: path, config, columns, fingerprints

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def is_embedded(path: str) -> bool:
    return path in EMBEDDED


def cache_root() -> Path:
    """Where decoded arrays are cached: ``$REFCAL_ZOO_CACHE`` or ``~/.cache/refcal_zoo``."""
    return Path(os.environ.get("REFCAL_ZOO_CACHE", Path.home() / ".cache" / "refcal_zoo"))


def load_image_splits(
    path: str,
    splits: list[str],
    *,
    config: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    image_size: int | None = None,
) -> ImageSplits:
    """Load and decode ``splits`` of the dataset at ``path`` (see the module docstring for what it accepts)."""
    if is_embedded(path):
        return _load_embedded(splits, image_size)
    dsd = _load_dataset_dict(path, config)
    missing = [s for s in splits if s not in dsd]
    if missing:
        raise DataError(f"dataset '{path}' has no split '{missing[0]}' (it has: {', '.join(dsd)}); "
                        "set dataset.train_split / dataset.test_split / dataset.val_split, or arrange a local "
                        "image folder as train/<class>/... and test/<class>/...")
    features = dsd[splits[0]].features
    image_col, label_col = detect_columns(features, image_column, label_column)
    label_feature = features[label_col]
    if isinstance(label_feature, datasets.ClassLabel):
        class_names = list(label_feature.names)
    else:
        top = max(int(np.max(dsd[s][label_col])) for s in splits if len(dsd[s]))
        class_names = [str(k) for k in range(top + 1)]

    images, labels, fingerprints = {}, {}, {}
    for split in splits:
        ds = dsd[split]
        if len(ds) == 0:
            raise DataError(f"split '{split}' of dataset '{path}' is empty")
        y = np.asarray(ds[label_col], dtype=np.int64)
        if y.min() < 0 or y.max() >= len(class_names):
            raise DataError(f"split '{split}' has labels outside [0, {len(class_names)}) in column '{label_col}'")
        images[split] = torch.from_numpy(_decoded(ds, image_col, image_size))
        labels[split] = torch.from_numpy(y)
        fingerprints[split] = ds._fingerprint
    info = dict(path=path, config=config, image_column=image_col, label_column=label_col,
                fingerprints=fingerprints)
    return ImageSplits(images, labels, class_names, info)


def _load_embedded(splits: list[str], image_size: int | None) -> ImageSplits:
    data, names = load_digits_splits(image_size or 32)
    missing = [s for s in splits if s not in data]
    if missing:
        raise DataError(f"the embedded digits dataset has no split '{missing[0]}' (it has: {', '.join(data)})")
    images = {s: torch.from_numpy(data[s][0]) for s in splits}
    labels = {s: torch.from_numpy(data[s][1]) for s in splits}
    info = dict(path="digits", config=None, image_column=None, label_column=None,
                source="sklearn.datasets.load_digits, upsampled to 32x32 RGB")
    return ImageSplits(images, labels, names, info)


def _load_dataset_dict(path: str, config: str | None) -> datasets.DatasetDict:
    local = Path(path).expanduser()
    if local.exists():
        if not local.is_dir():
            raise DataError(f"dataset path '{path}' is a file; give the folder that holds the dataset")
        target = str(local)
    elif _HUB_ID.match(path) and not path.startswith((".", "/", "~")):
        target = path
    else:
        raise DataError(f"dataset path '{path}' does not exist (give a local folder, a Hub id like "
                        "'uoft-cs/cifar10', or 'digits' for the embedded default)")
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        dsd = datasets.load_dataset(target, name=config)
    except (FileNotFoundError, ConnectionError, OSError) as exc:
        hint = " (offline? HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set or the Hub is unreachable; use a local copy)" \
            if target == path and not local.exists() else ""
        raise DataError(f"cannot load dataset '{path}'{hint}: {exc}") from None
    except ValueError as exc:
        raise DataError(f"cannot load dataset '{path}' (config={config!r}): {exc}") from None
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
    if not isinstance(dsd, datasets.DatasetDict):
        raise DataError(f"dataset '{path}' did not load as a set of splits")
    return dsd


def _decoded(ds: datasets.Dataset, column: str, image_size: int | None) -> np.ndarray:
    """uint8 ``[N, 3, H, W]`` for the image column, from the on-disk cache when the fingerprint matches."""
    key = hashlib.sha256(f"{_DECODE_VERSION}|{ds._fingerprint}|{column}|{image_size}|{len(ds)}".encode())
    path = cache_root() / "decoded" / f"{key.hexdigest()[:32]}.npy"
    if path.is_file():
        try:
            arr = np.load(path, allow_pickle=False)
            if arr.dtype == np.uint8 and arr.ndim == 4 and arr.shape[0] == len(ds):
                return arr
        except (OSError, ValueError):
            pass  # a corrupt cache entry is rebuilt below
    arr = _decode_column(ds, column, image_size)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as fh:
            np.save(fh, arr, allow_pickle=False)
        os.replace(fh.name, path)
    except OSError:
        pass  # caching is an optimisation; a read-only cache location must not fail the run
    return arr


def _decode_column(ds: datasets.Dataset, column: str, image_size: int | None) -> np.ndarray:
    from PIL import Image

    out: np.ndarray | None = None
    pos = 0
    for batch in ds.select_columns([column]).iter(batch_size=1024):
        for im in batch[column]:
            im = im.convert("RGB")
            if image_size is not None and im.size != (image_size, image_size):
                im = im.resize((image_size, image_size), Image.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
            if out is None:
                out = np.empty((len(ds), 3, *a.shape[:2]), dtype=np.uint8)
            elif a.shape[:2] != out.shape[2:]:
                raise DataError(f"images have different sizes ({a.shape[1]}x{a.shape[0]} vs "
                                f"{out.shape[3]}x{out.shape[2]}); set dataset.image_size to resize them")
            out[pos] = a.transpose(2, 0, 1)
            pos += 1
    assert out is not None and pos == len(ds)
    return out
