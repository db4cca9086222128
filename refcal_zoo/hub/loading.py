"""Hub-repo folders -> verified timm classifiers: resolve a folder or ``hf-hub:`` id, check the files, build.

This layer knows folders and Hub repos only; zoo names are resolved by :mod:`refcal_zoo.zoo`, which builds on it.

* :func:`resolve_folder`: ``local-dir:FOLDER`` / an existing folder, or ``hf-hub:org/name[@revision]`` through
  ``huggingface_hub`` (its cache, ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` - a mirror is an ``HF_ENDPOINT``).
* :func:`load_folder`: ``model.safetensors`` (or its shards, :mod:`.shards`) only, never pickle, checked for
  truncation, sha256 pins, a classifier whose size matches ``config.json``'s ``num_classes`` and finite values,
  then loaded strictly into the timm model.
* :func:`predict_logits` / :func:`predict_proba`: the model's own preprocessing, with checked inputs.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from .. import __version__
from ..fileio import sha256_file
from ..record import RecordError, RunRecord, read_record
from ..weight_files import check_safetensors, is_sharded, load_shards
from .checks import check_repo_id, check_user_path
from .errors import IntegrityError, NotAvailableError, ResolveError

__all__ = ["LoadedFolder", "Resolved", "download", "load_folder", "predict_logits", "predict_proba",
           "resolve_folder", "resolve_hub_id"]

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
# val_predictions.npz: what ZooModel.predict_set / predict(max_risk) fit on; prediction_sets.json: its card table
OPTIONAL_FILES = ("metrics.json", "lt_indices.json", "val_predictions.npz", "prediction_sets.json")
_REPO_LIKE = re.compile(r"^[^/\\]+/[^/\\]+$")


@dataclass
class Resolved:
    """Where a model's files are: a local folder and how it was found."""

    folder: Path
    source: str  # local | hf-hub | embedded
    repo_id: str | None = None
    revision: str | None = None
    name: str | None = None  # zoo name, if resolved through the zoo index
    pins: list[tuple[str, str]] = field(default_factory=list)  # (sha256, where it was pinned)
    shard_pins: dict[str, str] | None = None  # {shard file: sha256} of a sharded copy (refcal_zoo.hub.shards)


@dataclass
class LoadedFolder:
    """A verified, loaded folder: the raw timm model (eval mode), its config, run record and weights sha256."""

    model: nn.Module
    config: dict[str, Any]
    record: RunRecord | None
    sha256: str | None  # of model.safetensors (of a sharded copy: the pinned file it was cut from, if any)
    metrics: dict[str, Any]


# ----------------------------------------------------------------------------------------------- resolution


def _offline() -> bool:
    return bool(hf_constants.HF_HUB_OFFLINE)


def how_to_get(repo_id: str, revision: str | None, train_command: str | None = None) -> str:
    """The ways to get a Hub repo onto a machine that lacks it (one line)."""
    rev = revision or "main"
    ways = ["unset HF_HUB_OFFLINE on a machine with network access to download it into the HF cache" if _offline()
            else "check the network connection to the Hugging Face Hub (or set HF_ENDPOINT to a mirror)"]
    ways.append(f"or fetch it elsewhere with `hf download {repo_id} --revision {rev}` and copy the cache "
                f"({hf_constants.HF_HUB_CACHE}) to this machine")
    if train_command:
        ways.append(f"or train it yourself: {train_command}")
    return "; ".join(ways)


def download(repo_id: str, revision: str | None, *, local_only: bool = False,
             train_command: str | None = None) -> Path:
    """``config.json`` + ``model.safetensors`` (+ optional files) of ``repo_id@revision`` via the HF cache."""
    kw = dict(repo_id=repo_id, revision=revision, library_name="refcal_zoo", library_version=__version__,
              local_files_only=local_only or _offline())
    try:
        config = hf_hub_download(filename=CONFIG, **kw)
        hf_hub_download(filename=WEIGHTS, **kw)
    except RepositoryNotFoundError:
        raise NotAvailableError(f"Hub repo '{repo_id}' was not found (or is private/gated: log in with "
                                "`hf auth login`)" + (f"; train it yourself: {train_command}" if train_command
                                                      else "")) from None
    except RevisionNotFoundError:
        raise NotAvailableError(f"Hub repo '{repo_id}' has no revision '{revision}'; pass an existing "
                                "branch, tag or commit") from None
    except LocalEntryNotFoundError:
        state = "offline mode is on (HF_HUB_OFFLINE)" if _offline() else (
            "only the cache was asked" if local_only else "the Hub could not be reached")
        raise NotAvailableError(f"'{repo_id}' (revision {revision or 'main'}) is not in the Hugging Face cache "
                                f"and {state}. To get it: {how_to_get(repo_id, revision, train_command)}") from None
    except EntryNotFoundError:
        raise NotAvailableError(f"Hub repo '{repo_id}' has no {CONFIG} or {WEIGHTS}; it is not a refcal_zoo/timm "
                                "model repo") from None
    except (HfHubHTTPError, OSError) as exc:
        raise NotAvailableError(f"cannot download '{repo_id}': {exc}. To get it: "
                                f"{how_to_get(repo_id, revision, train_command)}") from None
    for name in OPTIONAL_FILES:
        try:
            hf_hub_download(filename=name, **kw)
        except (EntryNotFoundError, LocalEntryNotFoundError, HfHubHTTPError, OSError):
            pass  # optional extras: the metrics also live in config.json's run record
    return Path(config).parent


def resolve_hub_id(spec: str, revision: str | None, pins: list[tuple[str, str]] | None = None) -> Resolved:
    """``org/name[@revision]`` -> its folder in the HF cache (downloading unless offline)."""
    repo_id, _, rev = spec.partition("@")
    check_repo_id(repo_id)
    if rev and revision is not None and rev != revision:
        raise ResolveError(f"'hf-hub:{spec}' pins revision '{rev}' but revision='{revision}' was passed; give one")
    rev = rev or revision
    return Resolved(download(repo_id, rev), "hf-hub", repo_id, rev, None, list(pins or []))


def resolve_folder(spec: str | os.PathLike, *, revision: str | None = None) -> Resolved | None:
    """A local folder (``local-dir:`` optional) or ``hf-hub:`` id; ``None`` for anything else (e.g. a zoo name)."""
    spec = os.fspath(spec)
    if spec.startswith(("hf-hub:", "hf_hub:")):
        return resolve_hub_id(spec.split(":", 1)[1], revision)
    explicit_dir = spec.startswith("local-dir:")
    if explicit_dir:
        spec = spec.split(":", 1)[1]
    path = check_user_path(spec)
    if path.exists() or explicit_dir:
        if not path.is_dir():
            what = "does not exist" if not path.exists() else "is a file"
            raise ResolveError(f"'{spec}' {what}; give the folder that holds {CONFIG} and {WEIGHTS}")
        if revision is not None:
            raise ResolveError(f"revision='{revision}' applies to Hub repos, not to the local folder '{spec}'")
        return Resolved(path, "local")
    if _REPO_LIKE.match(spec) and not spec.startswith((".", "~")):
        return None  # the caller decides (zoo name? then "write hf-hub:")
    if "/" in spec or "\\" in spec or spec.startswith((".", "~")):
        raise ResolveError(f"folder '{spec}' does not exist")
    return None


# ----------------------------------------------------------------------------------------------- loading


def read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG
    if not path.is_file():
        raise ResolveError(f"'{folder}' has no {CONFIG}; give a refcal_zoo run or published folder (or a timm Hub "
                           "folder)")
    try:
        cfg = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"'{path}' is not valid JSON ({exc}); download or copy it again") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("architecture"), str):
        raise IntegrityError(f"'{path}' is not a timm config (no 'architecture')")
    return cfg


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def folder_record(folder: Path, cfg: dict[str, Any]) -> RunRecord | None:
    """The run record of a folder's ``config.json`` (version 2, or version 1 read with its ``lt_indices.json``)."""
    try:
        return read_record(cfg, lt=_read_json(folder / "lt_indices.json"))
    except RecordError as exc:
        raise IntegrityError(f"'{folder / CONFIG}': {exc}") from None


def _check_classifier(cfg: dict, weights: Path, header: dict) -> None:
    """config.json's num_classes against the classifier's rows in the safetensors header (before reading tensors)."""
    classifier = (cfg.get("pretrained_cfg") or {}).get("classifier") or "fc"
    key = f"{classifier}.weight"
    num_classes = cfg.get("num_classes")
    meta = header.get(key)
    if isinstance(meta, dict) and isinstance(num_classes, int) and meta.get("shape"):
        rows = int(meta["shape"][0])
        if rows != num_classes:
            raise IntegrityError(
                f"'{weights.parent / CONFIG}' declares num_classes={num_classes} but '{weights}' holds a {rows}-class "
                f"classifier ({key} {list(meta['shape'])}): the config and weights do not belong together; use the "
                f"{CONFIG} published with these weights (or publish the run again) - refusing to load")


def _check_finite(state: dict[str, torch.Tensor], weights: Path) -> None:
    for key, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise IntegrityError(f"'{weights}' holds non-finite values (NaN/inf) in '{key}': the training diverged "
                                 "or the file is corrupt; retrain (e.g. with a lower learning rate) or copy it again "
                                 "- refusing to load")


def _state_error(cfg: dict, weights: Path, state: dict, expected: dict) -> str | None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [(k, tuple(state[k].shape), tuple(expected[k].shape)) for k in expected
              if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if shapes or missing or unexpected:
        parts = []
        if shapes:
            parts.append("shape mismatches " + ", ".join(f"{k} {list(g)} vs {list(w)}" for k, g, w in shapes[:3]))
        if missing:
            parts.append(f"missing {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}")
        return (f"'{weights}' does not fit architecture '{cfg.get('architecture')}' from {CONFIG} ("
                + "; ".join(parts) + "); refusing to load")
    return None


def load_folder(folder: str | Path, pins: list[tuple[str, str]] | None = None,
                shard_pins: dict[str, str] | None = None) -> LoadedFolder:
    """Verify and load ``folder`` (``config.json`` + ``model.safetensors``, or its shards) as a timm model in eval
    mode. ``pins`` are sha256 pins of ``model.safetensors``; a sharded copy is checked against ``shard_pins``."""
    folder = Path(folder)
    cfg = read_config(folder)
    weights = folder / WEIGHTS
    sharded = is_sharded(folder)
    if not weights.is_file() and not sharded:
        others = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pth", ".pt", ".ckpt"))
        extra = f" (found {', '.join(others)}: refcal_zoo never unpickles weights)" if others else ""
        raise IntegrityError(f"'{folder}' has no {WEIGHTS}{extra}; refcal_zoo loads safetensors only")
    record = folder_record(folder, cfg)
    if sharded:
        if pins and shard_pins is None:
            raise IntegrityError(f"'{folder}' holds sharded weights, but only the sha256 of one {WEIGHTS} is pinned "
                                 "(no shard pins): refusing to load it unchecked; copy it again from its source")
        state, header = load_shards(folder, shard_pins)
        actual = pins[0][0].lower() if pins else None  # the shards are what the index pinned beside this sha256
    else:
        header = check_safetensors(weights)
        actual = sha256_file(weights)
        all_pins = list(pins or [])
        if record is not None and record.provenance.weights_sha256:
            all_pins.append((record.provenance.weights_sha256, f"'{folder / CONFIG}' (run_record.provenance)"))
        for expected, where in all_pins:
            if not isinstance(expected, str) or expected.lower() != actual:
                raise IntegrityError(f"sha256 of '{weights}' is {actual}, but {where} pins {expected}: the file is "
                                     "corrupt or was replaced; refusing to load it (delete it and download or copy "
                                     "it again)")
    arch = cfg["architecture"]
    if not timm.is_model(arch.split(".", 1)[0]):
        raise ResolveError(f"{CONFIG} in '{folder}' names architecture '{arch}', which is not registered in timm "
                           "(a newer refcal_zoo may be needed)")
    label_names = cfg.get("label_names")
    num_classes = cfg.get("num_classes")
    if label_names is not None and num_classes is not None and len(label_names) != num_classes:
        raise IntegrityError(f"'{folder / CONFIG}' declares num_classes={num_classes} but {len(label_names)} "
                             "label_names; the file is inconsistent")
    _check_classifier(cfg, weights, header)
    if not sharded:
        try:
            state = load_file(str(weights), device="cpu")
        except SafetensorError as exc:
            raise IntegrityError(f"'{weights}' cannot be read as safetensors ({exc}); download or copy it "
                                 "again") from None
    _check_finite(state, weights)
    model = timm.create_model(f"local-dir:{folder.resolve()}", pretrained=False)
    problem = _state_error(cfg, weights, state, model.state_dict())
    if problem:
        raise IntegrityError(problem)
    model.load_state_dict(state, strict=True)
    model.eval()
    metrics = _read_json(folder / "metrics.json")
    if not isinstance(metrics, dict):
        metrics = dict(record.metrics) if record is not None else {}
    return LoadedFolder(model, cfg, record, actual, metrics)


# ----------------------------------------------------------------------------------------------- prediction


def _pil_to_tensor(img: Any, size: tuple[int, int]) -> torch.Tensor:
    from PIL import Image

    img = img.convert("RGB")
    if img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def _as_batch(images: Any, size: tuple[int, int]) -> torch.Tensor:
    """uint8 or float ``[N, 3, H, W]`` from tensors, arrays, PIL images or lists of them."""
    try:
        from PIL import Image
        pil_type: tuple = (Image.Image,)
    except ImportError:  # pragma: no cover - Pillow is a dependency of torchvision
        pil_type = ()
    if pil_type and isinstance(images, pil_type):
        images = [images]
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("predict_proba got an empty list of images")
        if pil_type and all(isinstance(im, pil_type) for im in images):
            return torch.stack([_pil_to_tensor(im, size) for im in images])
        tensors = [torch.as_tensor(np.asarray(im)) if not isinstance(im, torch.Tensor) else im for im in images]
        tensors = [t.unsqueeze(0) if t.dim() == 3 else t for t in tensors]
        images = torch.cat(tensors)
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"predict_proba takes tensors/arrays [N,3,H,W] or [3,H,W], or PIL images; got {type(images)}")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4:
        raise ValueError(f"images must have rank 4 [N, 3, H, W] or 3 [3, H, W], got rank {images.dim()} "
                         f"{list(images.shape)}; stack single images into one batch")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"images must be [N, 3, H, W] or [3, H, W] (channels first), got {list(images.shape)}")
    if images.shape[0] == 0 or images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"predict_proba got an empty batch {list(images.shape)}; pass at least one image")
    if images.is_floating_point() and not bool(torch.isfinite(images).all()):
        raise ValueError("images contain non-finite values (NaN/inf); clean or drop those images first")
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return images


def _to_unit_float(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    if x.is_floating_point():
        x = x.float()
        if x.numel() and (x.min() < -1e-6 or x.max() > 1 + 1e-6):
            raise ValueError(f"float images must be in [0, 1] (got values in [{x.min():.3g}, {x.max():.3g}]); pass "
                             "uint8 images or divide by 255 - normalisation is applied here")
        return x
    raise TypeError(f"images must be uint8 or float, got {x.dtype}")


@torch.no_grad()
def predict_logits(model: nn.Module, images: Any, *, batch_size: int = 256) -> torch.Tensor:
    """Logits (CPU float32 ``[N, K]``) of ``images`` with the model's own preprocessing; see :func:`predict_proba`."""
    cfg = model.pretrained_cfg
    size = tuple(int(s) for s in cfg.get("input_size", (3, 32, 32))[1:])
    mean = torch.tensor(cfg.get("mean", (0.5, 0.5, 0.5)), dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(cfg.get("std", (0.5, 0.5, 0.5)), dtype=torch.float32).view(1, -1, 1, 1)
    mode = "bicubic" if cfg.get("interpolation") == "bicubic" else "bilinear"
    batch = _as_batch(images, size)
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, batch.shape[0], batch_size):
            x = _to_unit_float(batch[start:start + batch_size]).to(device)
            if tuple(x.shape[-2:]) != size:
                x = F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True).clamp_(0, 1)
            x = (x - mean.to(device)) / std.to(device)
            out.append(model(x).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def predict_proba(model: nn.Module, images: Any, *, batch_size: int = 256) -> torch.Tensor:
    """Class probabilities of ``images`` under ``model`` (a :class:`ZooModel` or a timm model), ``[N, K]`` on CPU.

    ``images``: uint8 (0-255) or float (in [0, 1]) tensors/arrays ``[N, 3, H, W]`` / ``[3, H, W]``, a PIL image or
    a list of them. The model's own ``pretrained_cfg`` normalisation is applied and images are resized to its
    ``input_size`` when needed. A calibrated :class:`ZooModel` gives temperature-scaled probabilities.
    """
    return torch.softmax(predict_logits(model, images, batch_size=batch_size), dim=1)
