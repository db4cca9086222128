"""The zoo index: which models exist, how they were (or are to be) trained, and where their weights live.

The index is a data file shipped with the package (``refcal_zoo/zoo/index.yaml``; ``$REFCAL_ZOO_INDEX``
points at another one). Each entry is named ``<arch>-<dataset>-<method>`` and records the timm architecture,
dataset, method, recipe (config + overrides), Hub repo (``$REFCAL_ZOO_ORG/<name>`` unless pinned), revision,
sha256 of ``model.safetensors`` (and of each shard of a copy shipped sharded), headline metrics and a status:
``published`` (weights exist) or ``recipe-only`` (train it yourself with :attr:`ZooEntry.train_command`).
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..hub.checks import check_model_name, check_repo_id
from ..hub.errors import ResolveError
from ..record import timm_tag
from ..weight_files import is_sharded

__all__ = [
    "DEFAULT_ORG",
    "HEADLINE_KEYS",
    "INDEX_PATH",
    "STATUSES",
    "WEIGHTS_DIR",
    "ZooEntry",
    "format_table",
    "get_entry",
    "index_path",
    "list_models",
    "load_index",
    "print_table",
    "shipped_folder",
    "weights_dir",
    "zoo_org",
]

INDEX_PATH = Path(__file__).resolve().parent / "index.yaml"
#: Mirror-layout folder of weights shipped inside the package (``WEIGHTS_DIR/<name>/model.safetensors`` ...).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_ORG = "refcal-zoo"
STATUSES = ("published", "recipe-only")
HEADLINE_KEYS = ("accuracy", "nll", "brier", "ece", "auroc_misclassification", "auroc_ovo",
                 "ts/nll", "ts/brier", "ts/ece")
_ENTRY_NAME = re.compile(r"^[a-z0-9_]+-[a-z0-9_]+-[a-z0-9_]+$")
_FIELDS = ("arch", "num_classes", "dataset", "method", "base_loss", "recipe", "overrides", "repo", "revision",
           "sha256", "shards", "temperature", "metrics", "status", "notes", "build")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def zoo_org() -> str:
    """The Hub organisation of zoo repos: ``$REFCAL_ZOO_ORG`` or ``refcal-zoo``."""
    org = os.environ.get("REFCAL_ZOO_ORG") or DEFAULT_ORG
    check_repo_id(f"{org}/x")
    return org


def index_path() -> Path:
    """The index in use: ``$REFCAL_ZOO_INDEX`` or the one shipped with the package."""
    return Path(os.environ.get("REFCAL_ZOO_INDEX") or INDEX_PATH)


def weights_dir() -> Path:
    """Mirror-layout folder of shipped weights next to the index in use (``<index folder>/weights/<name>/``)."""
    return index_path().parent / "weights"


def shipped_folder(entry: ZooEntry) -> Path | None:
    """The folder of weights shipped inside the package for ``entry`` (``<index dir>/weights/<name>/``), if any:
    one ``model.safetensors``, or shards when the index pins them."""
    folder = weights_dir() / check_model_name(entry.name)
    if not entry.sha256 or not (folder / "config.json").is_file():
        return None
    weights = (folder / "model.safetensors").is_file() or (entry.shards is not None and is_sharded(folder))
    return folder if weights else None


@dataclass
class ZooEntry:
    name: str
    arch: str
    num_classes: int
    dataset: dict[str, Any]
    method: str
    base_loss: str = "ce"
    recipe: str = ""
    overrides: list[str] = field(default_factory=list)
    repo: str | None = None  # None: <REFCAL_ZOO_ORG>/<name>
    revision: str | None = None  # pinned Hub revision (tag or commit); None: main
    sha256: str | None = None  # of model.safetensors
    shards: dict[str, str] | None = None  # sha256 of each shard of the copy shipped sharded (refcal_zoo.hub.shards)
    temperature: float | None = None
    metrics: dict[str, float | None] | None = None
    status: str = "recipe-only"
    notes: str = ""
    build: str | None = None  # the benchmarks/build_zoo.py suite that trains and publishes it (a GPU suite)

    @property
    def repo_id(self) -> str:
        return check_repo_id(self.repo) if self.repo else f"{zoo_org()}/{self.name}"

    @property
    def published(self) -> bool:
        return self.status == "published"

    @property
    def timm_tag(self) -> str:
        """timm's ``<arch>.<method>_<dataset>`` name of this entry: ``resnet32_cifar.refcal_joint_cifar10lt``."""
        _, dataset, method = self.name.split("-", 2)
        return timm_tag(self.arch, method, dataset)

    @property
    def train_command(self) -> str:
        """The exact command (from a refcal_zoo checkout) that trains this entry into ``runs/<name>``."""
        parts = ["accelerate launch recipes/train.py --config", self.recipe, *(_quote(o) for o in self.overrides)]
        return " ".join(parts)

    @property
    def build_command(self) -> str | None:
        """The one command (from a refcal_zoo checkout) that trains and publishes this entry, if a suite builds it."""
        if not self.build:
            return None
        return f"python benchmarks/build_zoo.py --suite {self.build} --entries {self.name}"

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in _FIELDS}
        for key in ("build", "shards"):  # most entries: keep the index free of empty keys
            if data[key] is None:
                del data[key]
        return data


def _quote(arg: str) -> str:
    return shlex.quote(arg)


def _entry(name: str, raw: Any, source: Path) -> ZooEntry:
    if not isinstance(raw, dict):
        raise ResolveError(f"zoo index {source}: entry '{name}' must be a mapping")
    unknown = sorted(set(raw) - set(_FIELDS))
    missing = [k for k in ("arch", "num_classes", "dataset", "method", "recipe", "status") if k not in raw]
    if unknown or missing:
        raise ResolveError(f"zoo index {source}: entry '{name}' has unknown keys {unknown} / lacks {missing}")
    if raw.get("build") is not None and not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", str(raw["build"])):
        raise ResolveError(f"zoo index {source}: entry '{name}' has build '{raw['build']}'; name a suite of "
                           "benchmarks/build_zoo.py, e.g. cifar100lt-full")
    if raw["status"] not in STATUSES:
        raise ResolveError(f"zoo index {source}: entry '{name}' has status '{raw['status']}' "
                           f"(use one of {', '.join(STATUSES)})")
    check_model_name(name)
    if not _ENTRY_NAME.match(name):
        raise ResolveError(f"zoo index {source}: entry '{name}' is not named <arch>-<dataset>-<method> (lower-case "
                           "letters, digits, '_'), e.g. resnet32-cifar10lt-refcal_joint")
    entry = ZooEntry(name=name, **{k: v for k, v in raw.items()})
    entry.overrides = list(entry.overrides or [])
    if entry.shards is not None and (not isinstance(entry.shards, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and _SHA256.match(v) for k, v in entry.shards.items())):
        raise ResolveError(f"zoo index {source}: entry '{name}' has shards that are not {{file: sha256}}; register "
                           "it again with `refcal-zoo zoo register PUBLISHED_FOLDER --embed`")
    if entry.published and not entry.sha256:
        raise ResolveError(f"zoo index {source}: published entry '{name}' has no sha256; register it with "
                           "`refcal-zoo zoo register PUBLISHED_FOLDER`")
    return entry


def load_index(path: str | Path | None = None) -> dict[str, ZooEntry]:
    """``{name: ZooEntry}`` of the index file (default: :func:`index_path`)."""
    path = Path(path) if path is not None else index_path()
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ResolveError(f"zoo index '{path}' does not exist (check $REFCAL_ZOO_INDEX)") from None
    except yaml.YAMLError as exc:
        raise ResolveError(f"zoo index '{path}' is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != 1 or not isinstance(data.get("models"), dict):
        raise ResolveError(f"zoo index '{path}' is not a format-1 index (a mapping with 'format: 1' and 'models:')")
    return {name: _entry(name, raw, path) for name, raw in data["models"].items()}


def list_models(pattern: str = "*", *, status: str | None = None) -> list[str]:
    """Sorted zoo names matching the fnmatch ``pattern`` (e.g. ``"*cifar100lt*"``), optionally by status."""
    if status is not None and status not in STATUSES:
        raise ResolveError(f"status must be one of {', '.join(STATUSES)}, got '{status}'")
    index = load_index()
    return sorted(n for n, e in index.items()
                  if fnmatch.fnmatchcase(n, pattern) and (status is None or e.status == status))


def close_matches(name: str, names: list[str] | None = None) -> list[str]:
    names = names if names is not None else list(load_index())
    return difflib.get_close_matches(name, names, n=5, cutoff=0.5)


def get_entry(name: str) -> ZooEntry:
    """The index entry ``name``; an unknown name raises with the closest names."""
    index = load_index()
    if name in index:
        return index[name]
    close = close_matches(name, list(index))
    hint = f" Close matches: {', '.join(close)}." if close else ""
    raise ResolveError(f"unknown zoo model '{name}'.{hint} See refcal_zoo.list_models() or `refcal-zoo list`.")


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_table(names: list[str] | None = None) -> str:
    """A plain-text table of the entries (all by default): name, arch, dataset, method, status, metrics."""
    index = load_index()
    names = sorted(index) if names is None else names
    header = ("name", "arch", "dataset", "rho", "method", "loss", "status", "acc", "ece", "ece(TS)", "auroc")
    rows = []
    for n in names:
        e = index[n]
        m = e.metrics or {}
        rows.append((n, e.arch, str(e.dataset.get("name") or e.dataset.get("id")), f"{e.dataset.get('rho', '-'):g}"
                     if isinstance(e.dataset.get("rho"), (int, float)) else "-", e.method, e.base_loss, e.status,
                     _fmt(m.get("accuracy")), _fmt(m.get("ece")), _fmt(m.get("ts/ece")),
                     _fmt(m.get("auroc_misclassification"))))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(s.rstrip() for s in out)


def print_table(pattern: str = "*") -> None:
    """Print :func:`format_table` of the entries matching ``pattern``."""
    print(format_table(list_models(pattern)))
