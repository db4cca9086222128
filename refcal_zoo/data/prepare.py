"""From a ``DatasetConfig`` to the tensors a run trains and evaluates on.

train = the long-tailed subset of the training split; val = a balanced validation split (the dataset's own, or
carved from training images not drawn into the subset); test = the untouched test split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import DatasetConfig
from ..errors import DataError
from .longtail import LongTailSplit, make_longtail_split
from .sources import ImageSplits, load_image_splits

__all__ = ["PreparedData", "prepare_data"]


@dataclass
class PreparedData:
    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: list[str]
    split: LongTailSplit
    source: dict

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def train_class_counts(self) -> list[int]:
        return self.split.train_counts

    def lt_record(self) -> dict:
        """What ``lt_indices.json`` holds: source, profile, counts, indices and their sha256."""
        rec = {"source": self.source, "num_classes": self.num_classes, "class_names": self.class_names}
        rec.update(self.split.record())
        if self.source.get("val_split"):
            rec["val_indices_are"] = f"indices into split '{self.source['val_split']}'"
        return rec


def prepare_data(cfg: DatasetConfig) -> PreparedData:
    """Load, decode and split the dataset described by ``cfg``; deterministic given ``cfg``."""
    if cfg.rho < 1:
        raise DataError(f"dataset.rho must be >= 1 (n_max / n_min), got {cfg.rho}")
    wanted = [cfg.train_split, cfg.test_split] + ([cfg.val_split] if cfg.val_split else [])
    data: ImageSplits = load_image_splits(
        cfg.path, wanted, config=cfg.config, image_column=cfg.image_column, label_column=cfg.label_column,
        image_size=cfg.image_size,
    )
    k = data.num_classes
    pool_labels = data.labels[cfg.train_split].numpy()
    split = make_longtail_split(
        pool_labels, k, rho=cfg.rho, seed=cfg.lt_seed, n_max=cfg.n_max,
        val_per_class=0 if cfg.val_split else cfg.val_per_class, class_names=list(data.class_names),
    )
    train_idx = torch.from_numpy(split.train_indices)
    if cfg.val_split:
        val_x, val_y = data.images[cfg.val_split], data.labels[cfg.val_split]
        split.val_indices = np.arange(len(val_y))
        split.val_counts = np.bincount(val_y.numpy(), minlength=k).tolist()
    else:
        val_idx = torch.from_numpy(split.val_indices)
        val_x, val_y = data.images[cfg.train_split][val_idx], data.labels[cfg.train_split][val_idx]
    if len(val_y) == 0:
        raise DataError("the validation split is empty; set dataset.val_per_class > 0 or dataset.val_split")
    source = dict(data.info, train_split=cfg.train_split, test_split=cfg.test_split, val_split=cfg.val_split)
    return PreparedData(
        train_images=data.images[cfg.train_split][train_idx],
        train_labels=data.labels[cfg.train_split][train_idx],
        val_images=val_x,
        val_labels=val_y,
        test_images=data.images[cfg.test_split],
        test_labels=data.labels[cfg.test_split],
        class_names=data.class_names,
        split=split,
        source=source,
    )
