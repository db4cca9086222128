"""``refcal_zoo.load``: resolve a name, path or Hub id to a verified, calibrated classifier in eval mode.

Resolution order (see :func:`resolve`):

1. ``local-dir:FOLDER`` or an existing local folder (a run folder or a published folder);
2. ``hf-hub:org/name[@revision]`` through ``huggingface_hub`` (normal HF cache, honours ``HF_HUB_OFFLINE``);
3. a zoo name (``refcal_zoo.list_models()``): the pinned revision from the HF cache, then
   ``$REFCAL_ZOO_MIRROR/<name>/`` (a folder laid out like the Hub repo, for air-gapped clusters), then
   weights shipped inside the package (``refcal_zoo/zoo/weights/<name>/``), then a Hub download
   (unless offline). Every local copy is checked against the sha256 pinned in the zoo index.

Weights are read only from ``model.safetensors`` (never pickle), checked for truncation and sha256, and loaded
strictly: a class-count or shape mismatch between ``config.json`` and the weights is refused.
"""

from __future__ import annotations

import json
import math
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
from torch import nn

from .checks import check_model_name, check_repo_id, check_safetensors, check_user_path
from .errors import IntegrityError, NotAvailableError, ResolveError

__all__ = ["Resolved", "ZooModel", "load", "predict_logits", "predict_proba", "resolve"]

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
OPTIONAL_FILES = ("metrics.json",)
_REPO_LIKE = re.compile(r"^[^/\\]+/[^/\\]+$")


@dataclass
class Resolved:
    """Where a model's files are: a local folder and how it was found."""

    folder: Path
    source: str  # local | hf-hub | hf-cache | mirror | embedded
    repo_id: str | None = None
    revision: str | None = None
    name: str | None = None  # zoo name, if resolved through the index
    pins: list[tuple[str, str]] = field(default_factory=list)  # (sha256, where it was pinned)


# ----------------------------------------------------------------------------------------------- resolution


def _offline() -> bool:
    return bool(hf_constants.HF_HUB_OFFLINE)


def _library_version() -> str:
    from .. import __version__

    return __version__


def _download(repo_id: str, revision: str | None, *, local_only: bool) -> Path:
    """config.json + model.safetensors (+ optional files) of ``repo_id@revision`` into the HF cache."""
    kw = dict(repo_id=repo_id, revision=revision, library_name="refcal_zoo", library_version=_library_version(),
              local_files_only=local_only)
    config = hf_hub_download(filename=CONFIG, **kw)
    hf_hub_download(filename=WEIGHTS, **kw)
    for name in OPTIONAL_FILES:
        try:
            hf_hub_download(filename=name, **kw)
        except (EntryNotFoundError, HfHubHTTPError, OSError):
            pass  # optional extras: the card's numbers also live in config.json's refcal block
    return Path(config).parent


def _how_to_get(repo_id: str, revision: str | None, name: str | None, train_command: str | None) -> str:
    rev = revision or "main"
    ways = []
    if _offline():
        ways.append("unset HF_HUB_OFFLINE on a machine with network access to download it into the HF cache")
    else:
        ways.append("check the network connection to the Hugging Face Hub (or set HF_ENDPOINT)")
    ways.append(f"or fetch it elsewhere with `hf download {repo_id} --revision {rev}` and copy the cache "
                f"({hf_constants.HF_HUB_CACHE}) to this machine")
    if name is not None:
        ways.append(f"or set REFCAL_ZOO_MIRROR to a folder holding {name}/ ({CONFIG}, {WEIGHTS}) for air-gapped use")
    if train_command:
        ways.append(f"or train it yourself: {train_command}")
    return "; ".join(ways)


def _hub(repo_id: str, revision: str | None, *, name: str | None = None, train_command: str | None = None) -> Path:
    try:
        return _download(repo_id, revision, local_only=False)
    except RepositoryNotFoundError:
        raise NotAvailableError(
            f"Hub repo '{repo_id}' was not found (or is private/gated: log in with `hf auth login`)"
            + (f"; train it yourself: {train_command}" if train_command else "")
        ) from None
    except RevisionNotFoundError:
        raise NotAvailableError(f"Hub repo '{repo_id}' has no revision '{revision}'; pass an existing "
                                "branch, tag or commit") from None
    except LocalEntryNotFoundError:
        state = "offline mode is on (HF_HUB_OFFLINE)" if _offline() else "the Hub could not be reached"
        raise NotAvailableError(
            f"'{repo_id}' (revision {revision or 'main'}) is not in the Hugging Face cache and {state}. "
            f"To get it: {_how_to_get(repo_id, revision, name, train_command)}"
        ) from None
    except EntryNotFoundError:
        raise NotAvailableError(f"Hub repo '{repo_id}' has no {CONFIG} or {WEIGHTS}; it is not a refcal_zoo/timm "
                                "model repo") from None
    except (HfHubHTTPError, OSError) as exc:
        raise NotAvailableError(f"cannot download '{repo_id}': {exc}. To get it: "
                                f"{_how_to_get(repo_id, revision, name, train_command)}") from None


def _has_files(folder: Path) -> bool:
    return (folder / CONFIG).is_file() and (folder / WEIGHTS).is_file()


def _mirror_folder(name: str) -> Path | None:
    root = os.environ.get("REFCAL_ZOO_MIRROR")
    if not root:
        return None
    root_path = Path(root).expanduser().resolve()
    folder = (root_path / check_model_name(name)).resolve()
    if root_path not in folder.parents:  # e.g. a symlink pointing out of the mirror
        raise ResolveError(f"mirror entry '{folder}' lies outside REFCAL_ZOO_MIRROR ({root_path}); refusing it")
    return folder


def _resolve_zoo(name: str, revision: str | None) -> Resolved:
    from ..zoo import DEFAULT_ORG, get_entry, weights_dir, zoo_org

    entry = get_entry(name)
    repo_id = entry.repo_id
    pinned = entry.revision
    rev = revision if revision is not None else pinned
    pins = [(entry.sha256, f"the zoo index entry '{name}'")] if entry.sha256 and rev == pinned else []
    if rev == pinned:  # local copies hold the pinned revision only
        try:
            folder = _download(repo_id, rev, local_only=True)
            return Resolved(folder, "hf-cache", repo_id, rev, name, pins)
        except (LocalEntryNotFoundError, EntryNotFoundError, OSError):
            pass
        mirror = _mirror_folder(name)
        if mirror is not None and _has_files(mirror):
            return Resolved(mirror, "mirror", repo_id, rev, name, pins)
        embedded = weights_dir() / name
        if _has_files(embedded):
            return Resolved(embedded, "embedded", repo_id, rev, name, pins)
    custom_repo = entry.repo is not None or zoo_org() != DEFAULT_ORG
    if not entry.published and not custom_repo:
        mirror_hint = f" (REFCAL_ZOO_MIRROR has no {name}/ folder)" if os.environ.get("REFCAL_ZOO_MIRROR") else ""
        raise NotAvailableError(
            f"zoo model '{name}' has no published weights yet (status: {entry.status}){mirror_hint}. Train it from "
            f"a refcal_zoo checkout with `{entry.train_command}`, then load the run folder: "
            f"refcal_zoo.load('runs/{name}') (or publish it with `refcal-zoo publish runs/{name} --to FOLDER`)"
        )
    if _offline():
        raise NotAvailableError(
            f"zoo model '{name}' ({repo_id}, revision {rev or 'main'}) is not in the Hugging Face cache "
            f"({hf_constants.HF_HUB_CACHE}), not in a mirror and not shipped with the package, and offline mode is "
            f"on (HF_HUB_OFFLINE). To get it: {_how_to_get(repo_id, rev, name, entry.train_command)}"
        )
    folder = _hub(repo_id, rev, name=name, train_command=entry.train_command)
    return Resolved(folder, "hf-hub", repo_id, rev, name, pins)


def _resolve_hub_id(spec: str, revision: str | None) -> Resolved:
    repo_id, _, rev = spec.partition("@")
    check_repo_id(repo_id)
    if rev and revision is not None and rev != revision:
        raise ResolveError(f"'hf-hub:{spec}' pins revision '{rev}' but revision='{revision}' was passed; give one")
    rev = rev or revision
    pins = []
    from ..zoo import load_index

    for entry in load_index().values():
        if entry.published and entry.repo_id == repo_id and entry.sha256 and (rev or None) == entry.revision:
            pins.append((entry.sha256, f"the zoo index entry '{entry.name}'"))
    return Resolved(_hub(repo_id, rev), "hf-hub", repo_id, rev, None, pins)


def resolve(name_or_path: str | os.PathLike, *, revision: str | None = None) -> Resolved:
    """Find the folder holding ``config.json`` + ``model.safetensors`` for ``name_or_path`` (no loading)."""
    if isinstance(name_or_path, os.PathLike):
        name_or_path = os.fspath(name_or_path)
    if not isinstance(name_or_path, str) or not name_or_path:
        raise ResolveError(f"expected a zoo name, a folder or 'hf-hub:org/name', got {name_or_path!r}")
    spec = name_or_path
    if spec.startswith(("hf-hub:", "hf_hub:")):
        return _resolve_hub_id(spec.split(":", 1)[1], revision)
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
    from ..zoo import load_index

    if spec in load_index():
        return _resolve_zoo(spec, revision)
    if _REPO_LIKE.match(spec) and not spec.startswith((".", "~")):
        raise ResolveError(f"'{spec}' is neither a local folder nor a zoo name; for a Hub repo write "
                           f"'hf-hub:{spec}'")
    if "/" in spec or "\\" in spec or spec.startswith((".", "~")):
        raise ResolveError(f"folder '{spec}' does not exist")
    check_model_name(spec)
    from ..zoo import get_entry

    get_entry(spec)  # raises: unknown name, with close matches
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------------------------- the module


class ZooModel(nn.Module):
    """A zoo classifier with its learned temperature: ``model(x)`` returns ``logits / T`` when calibrated.

    ``.model`` is the raw timm classifier; ``.temperature`` a 0-dim buffer (1.0 when the run fitted none);
    ``.pretrained_cfg`` its preprocessing (mean/std/input size); ``.zoo_info`` metrics, dataset and method.
    """

    def __init__(self, model: nn.Module, temperature: float | None, *, calibrated: bool = True,
                 zoo_info: dict[str, Any] | None = None) -> None:
        super().__init__()
        t = 1.0 if temperature is None else float(temperature)
        if not (math.isfinite(t) and t > 0):
            raise IntegrityError(f"temperature must be a positive finite number, got {temperature!r}")
        self.model = model
        self.register_buffer("temperature", torch.tensor(t, dtype=torch.float32), persistent=False)
        self.calibrated = bool(calibrated)
        self.zoo_info: dict[str, Any] = dict(zoo_info or {})

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        return self.model.pretrained_cfg

    @property
    def default_cfg(self) -> dict[str, Any]:
        return self.model.pretrained_cfg

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes)

    @property
    def label_names(self) -> list[str] | None:
        names = self.pretrained_cfg.get("label_names")
        return list(names) if names is not None else None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        out = self.model.forward_head(x, pre_logits=pre_logits)
        return out if pre_logits or not self.calibrated else out / self.temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        return logits / self.temperature if self.calibrated else logits

    @torch.no_grad()
    def predict_proba(self, images: Any, *, batch_size: int = 256) -> torch.Tensor:
        """Class probabilities (CPU float32 ``[N, K]``) of images; see :func:`predict_proba`."""
        return predict_proba(self, images, batch_size=batch_size)

    def extra_repr(self) -> str:
        return f"temperature={float(self.temperature):.4f}, calibrated={self.calibrated}"


def _state_error(cfg: dict, weights: Path, state: dict, expected: dict) -> str | None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [(k, tuple(state[k].shape), tuple(expected[k].shape)) for k in expected
              if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    classifier = (cfg.get("pretrained_cfg") or {}).get("classifier") or "fc"
    for key, got, want in shapes:
        if key in (f"{classifier}.weight", f"{classifier}.bias"):
            return (f"{CONFIG} declares num_classes={want[0]} but '{weights}' holds a {got[0]}-class classifier "
                    f"({key} {list(got)}); the config and weights do not belong together - refusing to load "
                    "(no partial/strict=False loading)")
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


def _read_config(folder: Path) -> dict[str, Any]:
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


def _build(folder: Path, resolved: Resolved) -> tuple[nn.Module, dict[str, Any], str]:
    from ..fileio import sha256_file

    cfg = _read_config(folder)
    weights = folder / WEIGHTS
    if not weights.is_file():
        others = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pth", ".pt", ".ckpt"))
        extra = f" (found {', '.join(others)}: refcal_zoo never unpickles weights)" if others else ""
        raise IntegrityError(f"'{folder}' has no {WEIGHTS}{extra}; refcal_zoo loads safetensors only")
    check_safetensors(weights)
    actual = sha256_file(weights)
    refcal = cfg.get("refcal") if isinstance(cfg.get("refcal"), dict) else {}
    pins = list(resolved.pins)
    if refcal.get("weights_sha256"):
        pins.append((refcal["weights_sha256"], f"'{folder / CONFIG}' (refcal.weights_sha256)"))
    for expected, where in pins:
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
    model = timm.create_model(f"local-dir:{folder.resolve()}", pretrained=False)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights), device="cpu")
    except SafetensorError as exc:
        raise IntegrityError(f"'{weights}' cannot be read as safetensors ({exc}); download or copy it again") from None
    problem = _state_error(cfg, weights, state, model.state_dict())
    if problem:
        raise IntegrityError(problem)
    model.load_state_dict(state, strict=True)
    return model, cfg, actual


def _zoo_info(folder: Path, cfg: dict, resolved: Resolved, sha: str, calibrated: bool) -> dict[str, Any]:
    refcal = cfg.get("refcal") if isinstance(cfg.get("refcal"), dict) else {}
    metrics = dict(refcal.get("metrics") or {})
    metrics_file = folder / "metrics.json"
    if metrics_file.is_file():
        try:
            metrics = json.loads(metrics_file.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError):
            pass
    return {
        "name": refcal.get("name") or resolved.name,
        "source": resolved.source,
        "folder": str(folder),
        "repo_id": resolved.repo_id,
        "revision": resolved.revision,
        "sha256": sha,
        "architecture": cfg.get("architecture"),
        "num_classes": cfg.get("num_classes"),
        "method": refcal.get("method"),
        "dataset": refcal.get("dataset"),
        "training": refcal.get("training"),
        "temperature": refcal.get("temperature"),
        "calibrated": calibrated,
        "metrics": metrics,
        "refcal": refcal,
    }


def load(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    device: str | torch.device | None = None,
    calibrated: bool = True,
) -> ZooModel:
    """Load a zoo model, a published/run folder or a Hub repo as a :class:`ZooModel` in eval mode.

    Args:
        name_or_path: a zoo name (``refcal_zoo.list_models()``), a local folder (``local-dir:`` optional) or
            ``hf-hub:org/name[@revision]``.
        revision: Hub branch, tag or commit (default: the zoo index's pinned revision, else ``main``).
        device: where to put the model (default CPU).
        calibrated: divide the logits by the learned temperature (``model(x) == raw(x) / T``); ``False`` returns
            the raw logits (``model.temperature`` still holds T).
    """
    resolved = resolve(name_or_path, revision=revision)
    model, cfg, sha = _build(resolved.folder, resolved)
    refcal = cfg.get("refcal") if isinstance(cfg.get("refcal"), dict) else {}
    info = _zoo_info(resolved.folder, cfg, resolved, sha, calibrated)
    wrapped = ZooModel(model, refcal.get("temperature"), calibrated=calibrated, zoo_info=info)
    wrapped.eval()
    if device is not None:
        wrapped.to(device)
    return wrapped


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
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be [N, 3, H, W] or [3, H, W] (channels first), got {list(images.shape)}")
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
