"""From a ``DatasetConfig`` to the tensors a run trains and evaluates on.

train = the long-tailed subset of the training split; val = a balanced validation split (the dataset's own, or
carved from training images not drawn into the subset); test = the untouched test split. A folder written by
``refcal-zoo dataset export`` stands in for its source when the config draws the same split from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import DatasetConfig
from ..errors import DataError
from .longtail import LongTailSplit, make_longtail_split
from .sources import ImageSplits, is_embedded, load_image_splits

__all__ = ["PreparedData", "export_record", "prepare_data"]

EXPORT_SPLITS = ("train", "validation", "test")  # the splits of a ``refcal-zoo dataset export`` folder


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


def export_record(path: str) -> dict | None:
    """The ``lt_indices.json`` record of a folder written by ``refcal-zoo dataset export``; None for anything else."""
    if is_embedded(path):
        return None
    file = Path(path).expanduser() / "lt_indices.json"
    if not file.is_file():
        return None
    try:
        record = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"dataset folder '{path}': its lt_indices.json is unreadable ({exc}); export it again "
                        "with refcal-zoo dataset export --overwrite") from None
    return record if isinstance(record, dict) and isinstance(record.get("export"), dict) else None


def _plain_use_of_export(cfg: DatasetConfig) -> bool:
    """The export's own recipe: its splits as they are (``dataset.rho=1 dataset.val_split=validation``)."""
    return cfg.rho == 1 and cfg.n_max is None and cfg.val_split == "validation"


def _from_export(cfg: DatasetConfig, record: dict) -> PreparedData:
    """``cfg`` drawn from an export of its source: the export's splits are the source's, so the same tensors and the
    source's identity (path, fingerprints, indices) result, without reading the source; a differing draw is refused."""
    args = record["export"].get("arguments")
    if not isinstance(args, dict):
        raise DataError(f"dataset folder '{cfg.path}' is an export without the arguments it was drawn with (an "
                        "older refcal_zoo); export it again with refcal-zoo dataset export --overwrite, or train on "
                        "it as it is with dataset.rho=1 dataset.val_split=validation")
    wanted = {"config": cfg.config, "train_split": cfg.train_split, "test_split": cfg.test_split,
              "val_split": cfg.val_split, "rho": float(cfg.rho), "lt_seed": int(cfg.lt_seed), "n_max": cfg.n_max}
    if cfg.val_split is None:
        wanted["val_per_class"] = int(cfg.val_per_class)
    differ = [f"dataset.{k}={v} (the export: {args.get(k)})" for k, v in wanted.items() if args.get(k) != v]
    if differ:
        raise DataError(f"dataset folder '{cfg.path}' is an export of another split: {', '.join(differ)}; use the "
                        "export's values, export the source again with yours, or train on the folder as it is with "
                        "dataset.rho=1 dataset.val_split=validation")
    data = load_image_splits(cfg.path, list(EXPORT_SPLITS), image_column=cfg.image_column,
                             label_column=cfg.label_column, image_size=cfg.image_size)
    split = LongTailSplit(
        train_indices=np.asarray(record["train_indices"], dtype=np.int64),
        val_indices=np.asarray(record["val_indices"], dtype=np.int64),
        profile_counts=list(record["profile_counts"]), train_counts=list(record["train_counts"]),
        val_counts=list(record["val_counts"]), rho=float(record["rho"]), seed=int(record["seed"]),
        n_max=record["n_max"], moved_to_val={int(k): v for k, v in (record.get("moved_to_val") or {}).items()},
    )
    k = data.num_classes
    for name, counts in (("train", split.train_counts), ("validation", split.val_counts)):
        if np.bincount(data.labels[name].numpy(), minlength=k).tolist() != counts:
            raise DataError(f"dataset folder '{cfg.path}': its {name} split does not hold the per-class counts its "
                            "lt_indices.json records (edited or damaged?); export it again with --overwrite")
    # the source's identity; what was read is kept beside it
    source = dict(record["source"], export={"folder": Path(str(cfg.path)).name, **data.info})
    return PreparedData(
        train_images=data.images["train"], train_labels=data.labels["train"],
        val_images=data.images["validation"], val_labels=data.labels["validation"],
        test_images=data.images["test"], test_labels=data.labels["test"],
        class_names=list(record.get("class_names") or data.class_names), split=split, source=source,
    )


def prepare_data(cfg: DatasetConfig) -> PreparedData:
    """Load, decode and split the dataset described by ``cfg``; deterministic given ``cfg``."""
    if cfg.rho < 1:
        raise DataError(f"dataset.rho must be >= 1 (n_max / n_min), got {cfg.rho}")
    record = export_record(cfg.path)
    if record is not None and not _plain_use_of_export(cfg):
        return _from_export(cfg, record)
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
