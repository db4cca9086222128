"""The zoo: the index of entries (``index.yaml``), their timm pretrained tags, and :class:`ZooModel`.

The index is a data file shipped with the package (``refcal_zoo/zoo/index.yaml``; ``$REFCAL_ZOO_INDEX`` points at
another one). Each entry is named ``<arch>-<dataset>-<method>`` and records the timm architecture, dataset,
method, recipe (config + overrides), Hub repo (``$REFCAL_ZOO_ORG/<name>`` unless pinned), revision, sha256 of
``model.safetensors``, headline metrics and a status: ``published`` (weights exist) or ``recipe-only`` (train it
yourself with :attr:`ZooEntry.train_command`). Importing this package registers the published entries as timm
pretrained tags (``resnet8_cifar.ce_digitslt``); it reads local files only.

Layering: :mod:`refcal_zoo.hub` (folders, the Hub, cards) never imports this package; this package builds on it.
"""

from __future__ import annotations

from .index import (
    DEFAULT_ORG,
    HEADLINE_KEYS,
    INDEX_PATH,
    STATUSES,
    WEIGHTS_DIR,
    ZooEntry,
    close_matches,
    format_table,
    get_entry,
    index_path,
    list_models,
    load_index,
    print_table,
    weights_dir,
    zoo_org,
)
from .model import ZooModel, load, resolve
from .tags import register_timm_tags

__all__ = [
    "DEFAULT_ORG",
    "HEADLINE_KEYS",
    "INDEX_PATH",
    "STATUSES",
    "WEIGHTS_DIR",
    "ZooEntry",
    "ZooModel",
    "close_matches",
    "format_table",
    "get_entry",
    "index_path",
    "list_models",
    "load",
    "load_index",
    "print_table",
    "register_timm_tags",
    "resolve",
    "weights_dir",
    "zoo_org",
]

register_timm_tags()
