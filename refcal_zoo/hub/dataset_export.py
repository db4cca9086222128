"""Export a long-tailed split as a plain parquet Hugging Face dataset folder (``refcal-zoo dataset export``).

The folder holds ``data/train-*.parquet`` (the LT training subset), ``data/validation-*.parquet`` (our validation
split) and ``data/test-*.parquet`` (the untouched test split), the original image bytes and label feature, the
indices (``lt_indices.json``) and a dataset card recording the source, profile, seed and indices sha256.
``datasets.load_dataset(FOLDER)`` reads it; training on it with ``dataset.rho=1 dataset.val_split=validation``
sees the same training images as training on the source with the same rho/seed. It is also a stand-in for the
source: a recipe that draws the same split (same ``dataset.rho``, ``lt_seed``, ``n_max``, ``val_per_class``...)
with ``dataset.path=FOLDER`` trains on the same tensors and records the source's identity and indices, at about
half the bytes of CIFAR-10 (what travels to a GPU machine).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # imported lazily: `import refcal_zoo` stays light
    import datasets

from ..fileio import replace_folder, staging_folder, write_json, write_text
from .checks import check_user_path
from .errors import PublishError

__all__ = ["export_longtail_dataset"]

SPLITS = ("train", "validation", "test")


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr.transpose(1, 2, 0))).save(buf, format="PNG")
    return buf.getvalue()


def _from_arrays(images, labels, names: list[str]) -> datasets.Dataset:
    import datasets

    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    rows = {"image": [{"bytes": _png(x), "path": None} for x in images.numpy()], "label": labels.tolist()}
    return datasets.Dataset.from_dict(rows, features=feats)


def _embed(ds: datasets.Dataset) -> datasets.Dataset:
    """Image bytes inside the table (image-folder sources store file paths), as ``push_to_hub`` does."""
    from datasets.table import embed_table_storage

    fmt = ds.format
    ds = ds.with_format("arrow").map(embed_table_storage, batched=True, batch_size=1000, keep_in_memory=True)
    return ds.with_format(**fmt)


def export_longtail_dataset(
    dataset: str,
    folder: str | Path,
    *,
    rho: float,
    seed: int = 0,
    val_per_class: int = 50,
    val_split: str | None = None,
    config: str | None = None,
    n_max: int | None = None,
    train_split: str = "train",
    test_split: str = "test",
    image_column: str | None = None,
    label_column: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the LT training split, the validation split and the test split of ``dataset`` to ``folder``.

    Indices come from :func:`refcal_zoo.data.prepare_data` with the same arguments a training run would use, so
    the exported training split is exactly the run's training set (in the same order).
    """
    import datasets

    from .. import __version__
    from ..config import DatasetConfig
    from ..data import prepare_data
    from ..data.sources import _load_dataset_dict, is_embedded

    folder = check_user_path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        if not overwrite or not (folder / "lt_indices.json").is_file():
            raise PublishError(f"'{folder}' exists and is not empty; choose a new folder"
                               + (" (or pass overwrite=True / --overwrite to replace an earlier export)"
                                  if (folder / "lt_indices.json").is_file() else ""))
    cfg = DatasetConfig(path=dataset, config=config, train_split=train_split, test_split=test_split,
                        val_split=val_split, image_column=image_column, label_column=label_column, rho=rho,
                        lt_seed=seed, n_max=n_max, val_per_class=val_per_class)
    data = prepare_data(cfg)
    split = data.split
    if is_embedded(dataset):
        parts = {
            "train": _from_arrays(data.train_images, data.train_labels, data.class_names),
            "validation": _from_arrays(data.val_images, data.val_labels, data.class_names),
            "test": _from_arrays(data.test_images, data.test_labels, data.class_names),
        }
    else:
        dsd = _load_dataset_dict(dataset, config)
        train_src = dsd[train_split]
        parts = {
            "train": train_src.select(split.train_indices.tolist()),
            "validation": dsd[val_split] if val_split else train_src.select(split.val_indices.tolist()),
            "test": dsd[test_split],
        }
    record = dict(data.lt_record())
    record["export"] = {
        "refcal_zoo_version": __version__,
        "splits": {"train": f"LT subset of '{train_split}' (train_indices, in this order)",
                   "validation": (f"the source split '{val_split}'" if val_split else
                                  f"val_indices of '{train_split}' (images outside the LT subset)"),
                   "test": f"the source split '{test_split}', untouched"},
        "sizes": {k: len(v) for k, v in parts.items()},
        "train_with": "dataset.path=<this folder> dataset.rho=1 dataset.val_split=validation",
        # the dataset.* values it was drawn with: a config with these and dataset.path=<this folder> trains on
        # exactly the source's split and records the source's identity (refcal_zoo.data.prepare)
        "arguments": {"config": config, "train_split": train_split, "test_split": test_split, "val_split": val_split,
                      "rho": float(rho), "lt_seed": int(seed), "n_max": n_max, "val_per_class": int(val_per_class)},
    }

    stage = staging_folder(folder)
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        for name in SPLITS:
            ds = _embed(parts[name]) if not is_embedded(dataset) else parts[name]
            target = stage / "data" / f"{name}-00000-of-00001.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            ds.to_parquet(str(target))
        write_json(stage / "lt_indices.json", record)
        write_text(stage / "README.md", str(_card(record, data, parts)))
        replace_folder(stage, folder)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    finally:
        if bars:
            datasets.enable_progress_bars()
    return folder


def _card(record: dict[str, Any], data, parts: dict[str, datasets.Dataset]):
    from huggingface_hub import DatasetCard, DatasetCardData

    src = record["source"]
    path = src.get("path")
    card_data = DatasetCardData(
        pretty_name=f"{Path(str(path)).name}-LT (rho={record['rho']:g}, seed {record['seed']})",
        task_categories=["image-classification"],
        tags=["long-tail", "imbalanced", "calibration", "refcal_zoo"],
        source_datasets=[str(path)],
        configs=[{"config_name": "default",
                  "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in SPLITS]}],
    )
    counts = record["train_counts"]
    rows = "\n".join(f"| {k} | {name} | {c} | {v} |" for k, (name, c, v) in
                     enumerate(zip(data.class_names, counts, record["val_counts"], strict=True)))
    content = f"""---
{card_data.to_yaml()}
---

# {card_data.pretty_name}

A long-tailed training split of `{path}`{f" (config `{src.get('config')}`)" if src.get("config") else ""}, with a
balanced validation split and the untouched test split, written by `refcal-zoo dataset export` (refcal_zoo
{record['export']['refcal_zoo_version']}). Images keep their original bytes and label feature.

## Splits

| split | images | content |
|---|---|---|
""" + "\n".join(f"| {s} | {record['export']['sizes'][s]:,} | {record['export']['splits'][s]} |" for s in SPLITS) + f"""

## Long-tail profile

Exponential profile of LDAM-DRW (Cao et al. 2019): `n_k = int(n_max * (1/rho)^(k/(K-1)))`, drawn with one legacy
NumPy RNG seeded with {record['seed']} (per class: shuffle, keep the first `n_k`).

- imbalance ratio rho: {record['rho']:g}; head-class size n_max: {record['n_max']}; seed: {record['seed']}
- images moved from the LT subset to validation (class: count): {record['moved_to_val'] or 'none'}
- train indices sha256 (sorted int64): `{record['train_sha256']}`
- validation indices sha256: `{record['val_sha256']}`
- the indices themselves: [`lt_indices.json`](lt_indices.json)

| class | name | train | validation |
|---|---|---|---|
{rows}

## Use

```python
import datasets
ds = datasets.load_dataset("<this folder or repo>")
```

Train a refcal_zoo model on exactly this split (no further subsampling):
`accelerate launch recipes/train.py dataset.path=<this folder> dataset.rho=1 dataset.val_split=validation`.
"""
    return DatasetCard(content)
