"""The run record: one typed, versioned description of a trained model, written by the engine, read by everyone.

It lives in ``config.json`` (timm's Hub config) under the top-level key ``"run_record"`` (timm ignores unknown
top-level keys; unknown keys inside ``pretrained_cfg`` would break ``timm.create_model``). The engine writes it,
and the model card, publishing, the zoo index and the benchmarks read it through :func:`read_record` only.

Version 2 (this module) records a dataset by identity - a Hub id, the embedded ``digits``, or the *name* of a local
folder - plus its ``datasets`` fingerprints and the sha256 of the split indices; never a machine path.

Version 1 (refcal_zoo <= 0.1.0.dev0 run folders, before this module) was an untyped block under the key
``"refcal"`` with ``dataset.path`` (a Hub id or a local path, possibly absolute), ``training`` (epochs, batch size,
lr, schedule, seed, seconds, images/s, device), ``selection``, ``temperature``, ``metrics``, ``weights_sha256``.
:func:`read_record` reads it as a version-2 record (the path becomes an identity: see :func:`dataset_identity`);
:func:`migrate_config` rewrites such a ``config.json`` in place of the old block.

This module imports nothing from refcal_zoo but its errors, so every layer may use it.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from .errors import RefCalZooError

__all__ = [
    "RECORD_KEY",
    "RECORD_VERSION",
    "V1_KEY",
    "BudgetRecord",
    "DatasetRecord",
    "DeviceStretch",
    "MethodRecord",
    "PrecisionRecord",
    "ProvenanceRecord",
    "RecordError",
    "RunRecord",
    "SelectionRecord",
    "dataset_identity",
    "dataset_slug",
    "join_and",
    "migrate_config",
    "read_record",
    "timm_tag",
]

RECORD_KEY = "run_record"
RECORD_VERSION = 2
V1_KEY = "refcal"
BUILTIN_DATASETS = {"digits": "digits", "sklearn:digits": "digits"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: Hub ids and builtin names -> the zoo's dataset family name (the ``<dataset>`` of ``<arch>-<dataset>-<method>``).
_FAMILIES = {"uoft-cs/cifar10": "cifar10", "uoft-cs/cifar100": "cifar100", "cifar10": "cifar10",
             "cifar100": "cifar100", "digits": "digits"}


class RecordError(RefCalZooError):
    """A run record that cannot be read (unknown version, wrong types)."""


def _is_abs(path: str) -> bool:
    return PurePosixPath(path).is_absolute() or PureWindowsPath(path).is_absolute() or path.startswith("~")


def dataset_identity(path: str | None, *, local: bool | None = None) -> tuple[str, str]:
    """``(id, kind)`` of a ``dataset.path``: kind ``hub`` (the Hub id), ``builtin`` (``digits``) or ``local``.

    A local folder is recorded by its last component only (``/data/copies/cifar10`` -> ``cifar10``): the machine
    path means nothing elsewhere, the fingerprints and split hashes identify the data. ``local`` says whether the
    path exists on this machine (the engine knows); without it, anything that is not ``org/name`` is local. An
    absolute or ``./``-relative path is a folder's even where it does not exist (the source of an exported split).
    """
    if not path:
        return "unknown", "unknown"
    if path in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[path], "builtin"
    is_path = path.startswith(".") or _is_abs(path)
    looks_hub = bool(_HUB_ID.match(path)) and not is_path
    if (local is False and not is_path) or (local is None and looks_hub):
        return path, "hub"
    name = PureWindowsPath(path).name if "\\" in path else PurePosixPath(path.rstrip("/")).name
    return name or "local", "local"


def dataset_slug(dataset_id: str, rho: float | None) -> str:
    """The zoo's ``<dataset>`` part: ``cifar10lt``, ``cifar100lt100``, ``digitslt`` (``lt`` = rho 10)."""
    family = _FAMILIES.get(dataset_id, re.sub(r"[^a-z0-9]", "", dataset_id.rsplit("/", 1)[-1].lower()) or "data")
    if rho is None or rho <= 1:
        return family
    return f"{family}lt" if float(rho) == 10.0 else f"{family}lt{float(rho):g}"


def timm_tag(arch: str, method: str, dataset: str) -> str:
    """timm's ``<architecture>.<pretrained tag>`` for a zoo entry: ``resnet32_cifar.refcal_joint_cifar10lt``.

    ``method`` is the zoo name's method part (``ce``, ``refcal``, ``refcal_joint``, ``ls005``...), ``dataset`` its
    dataset part (``cifar10lt``, ``digitslt``).
    """
    return f"{arch}.{method}_{dataset}"


def _from(cls, raw: Any, where: str):
    """A record dataclass from a mapping, refusing unknown keys (a newer writer) with a one-line error."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise RecordError(f"run record: '{where}' must be a mapping, got {type(raw).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise RecordError(f"run record: unknown keys {unknown} in '{where}' (written by a newer refcal_zoo? "
                          "upgrade refcal_zoo)")
    return cls(**raw)


@dataclass
class MethodRecord:
    name: str  # plain | refcal | refcal_joint
    base_loss: str = "ce"
    loss_args: dict[str, Any] = field(default_factory=dict)
    supcon: dict[str, Any] | None = None


@dataclass
class DatasetRecord:
    id: str  # Hub id, "digits", or the name of a local folder (never a path)
    kind: str = "hub"  # hub | builtin | local | unknown
    config: str | None = None
    revision: str | None = None  # Hub commit of the dataset, when known
    fingerprints: dict[str, str] = field(default_factory=dict)  # datasets fingerprint per split
    image_column: str | None = None
    label_column: str | None = None
    rho: float | None = None
    lt_seed: int | None = None
    n_max: int | None = None
    train_counts: list[int] | None = None
    val_counts: list[int] | None = None
    train_sha256: str | None = None  # of the sorted int64 training indices
    val_sha256: str | None = None
    test_split: str = "test"

    @property
    def slug(self) -> str:
        return dataset_slug(self.id, self.rho)


@dataclass(frozen=True)
class DeviceStretch:
    """Epochs ``first_epoch``-``last_epoch`` (counted over every stage) trained on ``device``; both ``None`` for a run
    that never moved."""

    device: str  # as the run record words it, with the stretch's precision where that changed
    first_epoch: int | None = None
    last_epoch: int | None = None

    @property
    def span(self) -> str:
        """``"epochs 1-150"``, ``"epoch 3"``, or ``""`` for a run that never moved."""
        if self.first_epoch is None:
            return ""
        if self.first_epoch == self.last_epoch:
            return f"epoch {self.first_epoch}"
        return f"epochs {self.first_epoch}-{self.last_epoch}"


def join_and(items: list) -> str:
    """``a``, ``a and b``, ``a, b and c``: the list form of a moved run's device description (which ``_STRETCH`` reads
    back), used for every such list in our text."""
    words = [str(item) for item in items]
    return " and ".join([", ".join(words[:-1]), words[-1]] if len(words) > 1 else words)


#: one stretch of a moved run's device description (``refcal_zoo.engine.trainer.describe_devices`` writes them)
_STRETCH = re.compile(r"(.+?) \(epochs? (\d+)(?:-(\d+))?\)(?:, | and |$)")


@dataclass
class BudgetRecord:
    """The budget actually used (not the recipe's): epochs of the (last) stage, seconds, throughput."""

    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    schedule: str | None = None
    seed: int | None = None
    train_seconds: float | None = None
    train_images_per_second: float | None = None  # over the whole run, every device together
    device: str | None = None  # one device, or each with its epochs: "CPU, 1 thread (epochs 1-168) and NVIDIA H200 ..."

    def device_stretches(self) -> list[DeviceStretch]:
        """The devices the run trained on, each with its epochs (see :attr:`device`); one stretch without epochs for a
        run that never moved (or a description in no known form), none where the device was not recorded."""
        if not self.device:
            return []
        stretches, end = [], 0
        for m in _STRETCH.finditer(self.device):
            if m.start() != end:
                break
            first = int(m.group(2))
            stretches.append(DeviceStretch(m.group(1), first, int(m.group(3) or first)))
            end = m.end()
        if not stretches or end != len(self.device):
            return [DeviceStretch(self.device)]
        return stretches


@dataclass
class SelectionRecord:
    rule: str = "last"  # best_nll | best_ts_nll | best_accuracy | last (on the validation split)
    epoch: int | None = None


@dataclass
class PrecisionRecord:
    mixed_precision: str | None = None  # no | fp16 | bf16 (None: not recorded)
    channels_last: bool | None = None


@dataclass
class ProvenanceRecord:
    library_version: str | None = None
    weights_sha256: str | None = None  # of model.safetensors; set when the folder is published
    migrated_from: int | None = None  # record version this one was converted from


@dataclass
class RunRecord:
    """What a run trained, on which data, with which budget, how it was selected and calibrated, what it scored."""

    name: str
    method: MethodRecord
    dataset: DatasetRecord
    budget: BudgetRecord = field(default_factory=BudgetRecord)
    selection: SelectionRecord = field(default_factory=SelectionRecord)
    temperature: float | None = None
    precision: PrecisionRecord = field(default_factory=PrecisionRecord)
    metrics: dict[str, float | None] = field(default_factory=dict)  # headline keys + ts/<key> (test split)
    provenance: ProvenanceRecord = field(default_factory=ProvenanceRecord)
    version: int = RECORD_VERSION

    def __post_init__(self) -> None:
        t = self.temperature
        if t is not None and not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0):
            raise RecordError(f"run record '{self.name}': temperature must be a positive finite number, got {t!r}")

    def method_slug(self) -> str:
        """The method part of a zoo name this record would get by default: ``ce``, ``refcal``, ``refcal_joint``."""
        if self.method.name == "plain":
            return self.method.base_loss
        return self.method.name if self.method.base_loss == "ce" else f"{self.method.name}_{self.method.base_loss}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunRecord:
        """A version-2 record from its ``to_dict`` form."""
        if not isinstance(raw, dict):
            raise RecordError(f"run record must be a mapping, got {type(raw).__name__}")
        version = raw.get("version")
        if version != RECORD_VERSION:
            raise RecordError(f"run record version {version!r} is not supported (this refcal_zoo reads "
                              f"{RECORD_VERSION} and the version-1 '{V1_KEY}' block); upgrade refcal_zoo")
        subs = {"method": MethodRecord, "dataset": DatasetRecord, "budget": BudgetRecord,
                "selection": SelectionRecord, "precision": PrecisionRecord, "provenance": ProvenanceRecord}
        out = {k: _from(c, raw.get(k), k) for k, c in subs.items() if raw.get(k) is not None}
        if "method" not in out or "dataset" not in out:
            raise RecordError("run record lacks 'method' or 'dataset'")
        rest = {k: v for k, v in raw.items() if k not in subs}
        unknown = sorted(set(rest) - {"name", "temperature", "metrics", "version"})
        if unknown:
            raise RecordError(f"run record: unknown keys {unknown} (written by a newer refcal_zoo? upgrade it)")
        return cls(name=str(rest.get("name") or ""), temperature=rest.get("temperature"),
                   metrics=dict(rest.get("metrics") or {}), **out)

    @classmethod
    def from_v1(cls, block: dict[str, Any], *, lt: dict[str, Any] | None = None) -> RunRecord:
        """The version-1 ``"refcal"`` block (+ the run's ``lt_indices.json`` for the fingerprints) as a record."""
        ds = dict(block.get("dataset") or {})
        ident, kind = dataset_identity(ds.get("path"))
        fingerprints = dict(((lt or {}).get("source") or {}).get("fingerprints") or {})
        method = dict(block.get("method") or {"name": "unknown"})
        training = dict(block.get("training") or {})
        selection = dict(block.get("selection") or {})
        return cls(
            name=str(block.get("name") or ""),
            method=MethodRecord(name=method.get("name", "unknown"), base_loss=method.get("base_loss", "ce"),
                                loss_args=dict(method.get("loss_args") or {}), supcon=method.get("supcon")),
            dataset=DatasetRecord(
                id=ident, kind=kind, config=ds.get("config"), fingerprints=fingerprints,
                image_column=ds.get("image_column"), label_column=ds.get("label_column"), rho=ds.get("rho"),
                lt_seed=ds.get("lt_seed"), n_max=ds.get("n_max"), train_counts=ds.get("train_counts"),
                val_counts=ds.get("val_counts"), train_sha256=ds.get("train_sha256"),
                val_sha256=ds.get("val_sha256"), test_split=ds.get("test_split") or "test"),
            budget=BudgetRecord(**{k: training.get(k) for k in (f.name for f in fields(BudgetRecord))}),
            selection=SelectionRecord(rule=selection.get("rule") or "last", epoch=selection.get("epoch")),
            temperature=block.get("temperature"),
            metrics=dict(block.get("metrics") or {}),
            provenance=ProvenanceRecord(library_version=block.get("version"),
                                        weights_sha256=block.get("weights_sha256"), migrated_from=1),
        )


def read_record(config: dict[str, Any], *, lt: dict[str, Any] | None = None) -> RunRecord | None:
    """The run record of a ``config.json`` (version 2, or the version-1 ``"refcal"`` block); ``None`` if it has none.

    ``lt`` (the folder's ``lt_indices.json``) completes a version-1 record with the datasets fingerprints.
    """
    if not isinstance(config, dict):
        raise RecordError(f"config.json must be a mapping, got {type(config).__name__}")
    if config.get(RECORD_KEY) is not None:
        return RunRecord.from_dict(config[RECORD_KEY])
    block = config.get(V1_KEY)
    if isinstance(block, dict) and ("method" in block or "dataset" in block):
        return RunRecord.from_v1(block, lt=lt)
    return None


def migrate_config(config: dict[str, Any], *, lt: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of a ``config.json`` whose version-1 ``"refcal"`` block is replaced by the version-2 record."""
    out = {k: v for k, v in config.items() if k != V1_KEY}
    record = read_record(config, lt=lt)
    if record is not None:
        out[RECORD_KEY] = record.to_dict()
    return out
