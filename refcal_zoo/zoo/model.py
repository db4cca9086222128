"""``ZooModel``: a zoo classifier with its temperature, in Hugging Face's ``from_pretrained`` / ``save_pretrained`` /
``push_to_hub`` shape (the names and arguments of ``huggingface_hub.PyTorchModelHubMixin``).

``ZooModel.from_pretrained(name_or_path)`` (``refcal_zoo.load`` for short) accepts:

1. ``local-dir:FOLDER`` or an existing folder (a run folder or a published folder);
2. ``hf-hub:org/name[@revision]`` through ``huggingface_hub`` (its cache, ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``);
3. a zoo name (``refcal_zoo.list_models()``): the weights shipped inside the package when the index pins them
   (read from disk, no network I/O at all), else the entry's Hub repo through the HF cache (a mirror is an
   ``HF_ENDPOINT``). Every copy is checked against the sha256 pinned in the zoo index (a copy shipped as shards:
   each shard's).
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..calibration import ConformalPredictor, selective_predict, selective_threshold
from ..hub.checks import check_model_name
from ..hub.errors import IntegrityError, NotAvailableError, ResolveError
from ..hub.loading import Resolved, download, load_folder, predict_logits, predict_proba, resolve_folder, resolve_hub_id
from ..hub.publish import VAL_PREDICTIONS, push_folder, save_model_folder
from ..record import RunRecord
from ..weight_files import is_sharded
from .index import DEFAULT_ORG, ZooEntry, get_entry, load_index, shipped_folder, weights_dir, zoo_org

__all__ = ["ZooModel", "load", "resolve"]

_REPO_LIKE = re.compile(r"^[^/\\]+/[^/\\]+$")


def _resolve_zoo(entry: ZooEntry, revision: str | None) -> Resolved:
    rev = revision if revision is not None else entry.revision
    pinned = rev == entry.revision
    pins = [(entry.sha256, f"the zoo index entry '{entry.name}'")] if entry.sha256 and pinned else []
    if pinned:
        shipped = shipped_folder(entry)
        if shipped is not None:  # local files only: no socket, no DNS lookup
            return Resolved(shipped, "embedded", entry.repo_id, rev, entry.name, pins, entry.shards)
    custom_repo = entry.repo is not None or zoo_org() != DEFAULT_ORG
    if not entry.published and not custom_repo and entry.build_command:
        raise NotAvailableError(
            f"zoo model '{entry.name}' is not yet published (status: {entry.status}). Build and publish it from a "
            f"refcal_zoo checkout with `{entry.build_command}` (needs Hub access to {entry.dataset.get('id')}, or a "
            "local copy passed with --data FOLDER; the README's 'Building the zoo' says how long each suite takes "
            "on a CPU and on a GPU)")
    if not entry.published and not custom_repo:
        raise NotAvailableError(
            f"zoo model '{entry.name}' has no published weights yet (status: {entry.status}). Train it from a "
            f"refcal_zoo checkout with `{entry.train_command}`, then load the run folder: "
            f"refcal_zoo.load('runs/{entry.name}') (or publish it with `refcal-zoo publish runs/{entry.name} --to "
            "FOLDER`)")
    try:  # the HF cache first (no network), as timm and huggingface_hub would with HF_HUB_OFFLINE
        folder = download(entry.repo_id, rev, local_only=True, train_command=entry.train_command)
        return Resolved(folder, "hf-cache", entry.repo_id, rev, entry.name, pins)
    except NotAvailableError:
        from huggingface_hub import constants as hf_constants

        if hf_constants.HF_HUB_OFFLINE:
            raise
    folder = download(entry.repo_id, rev, train_command=entry.train_command)
    return Resolved(folder, "hf-hub", entry.repo_id, rev, entry.name, pins)


def _with_shipped_pins(found: Resolved) -> Resolved:
    """A shipped copy given by its path is checked as by its name: its shards' pins live in the index only."""
    folder = found.folder.resolve()
    if found.source != "local" or not is_sharded(folder) or folder.parent != weights_dir().resolve():
        return found
    entry = load_index().get(folder.name)
    if entry is None or not entry.sha256 or entry.shards is None:
        return found
    pins = [(entry.sha256, f"the zoo index entry '{entry.name}'")]
    return Resolved(found.folder, "embedded", entry.repo_id, entry.revision, entry.name, pins, entry.shards)


def resolve(name_or_path: str | os.PathLike, *, revision: str | None = None) -> Resolved:
    """Find the folder holding ``config.json`` + ``model.safetensors`` for ``name_or_path`` (no loading)."""
    if isinstance(name_or_path, os.PathLike):
        name_or_path = os.fspath(name_or_path)
    if not isinstance(name_or_path, str) or not name_or_path:
        raise ResolveError(f"expected a zoo name, a folder or 'hf-hub:org/name', got {name_or_path!r}")
    spec = name_or_path
    if spec.startswith(("hf-hub:", "hf_hub:")):
        hub_spec = spec.split(":", 1)[1]
        repo_id, _, rev = hub_spec.partition("@")
        rev = rev or revision
        pins = [(e.sha256, f"the zoo index entry '{e.name}'") for e in load_index().values()
                if e.published and e.sha256 and e.repo_id == repo_id and (rev or None) == e.revision]
        return resolve_hub_id(hub_spec, revision, pins)
    found = resolve_folder(spec, revision=revision)
    if found is not None:
        return _with_shipped_pins(found)
    index = load_index()
    if spec in index:
        return _resolve_zoo(index[spec], revision)
    if _REPO_LIKE.match(spec) and not spec.startswith((".", "~")):
        raise ResolveError(f"'{spec}' is neither a local folder nor a zoo name; for a Hub repo write "
                           f"'hf-hub:{spec}'")
    check_model_name(spec)
    get_entry(spec)  # raises: unknown name, with close matches
    raise ResolveError(f"cannot resolve '{spec}'")  # pragma: no cover - get_entry raised


class ZooModel(nn.Module):
    """A zoo classifier with its learned temperature: ``model(x)`` returns ``logits / T`` when calibrated.

    ``.model`` is the raw timm classifier; ``.temperature`` a 0-dim buffer (1.0 when the run fitted none);
    ``.pretrained_cfg`` its preprocessing (mean/std/input size); ``.record`` the run record
    (:class:`refcal_zoo.record.RunRecord`, ``None`` for a bare timm folder); ``.zoo_info`` where it came from,
    metrics, dataset and method as plain data.
    """

    def __init__(self, model: nn.Module, temperature: float | None = None, *, calibrated: bool = True,
                 record: RunRecord | None = None, zoo_info: dict[str, Any] | None = None) -> None:
        super().__init__()
        t = 1.0 if temperature is None else float(temperature)
        if not (math.isfinite(t) and t > 0):
            raise IntegrityError(f"temperature must be a positive finite number, got {temperature!r}")
        self.model = model
        self.register_buffer("temperature", torch.tensor(t, dtype=torch.float32), persistent=False)
        self.calibrated = bool(calibrated)
        self.record = record
        self.zoo_info: dict[str, Any] = dict(zoo_info or {})
        self._val: tuple[np.ndarray, np.ndarray] | None = None  # validation logits / labels, read once
        self._fitted: dict[tuple, Any] = {}  # (kind, settings, T) -> fitted ConformalPredictor or threshold

    # ------------------------------------------------------------------------------------- Hub conventions

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        device: str | torch.device | None = None,
        calibrated: bool = True,
    ) -> ZooModel:
        """Load a zoo name, a run/published folder or ``hf-hub:org/name[@revision]``, verified, in eval mode.

        Args:
            pretrained_model_name_or_path: a zoo name (``refcal_zoo.list_models()``), a local folder
                (``local-dir:`` optional) or ``hf-hub:org/name[@revision]``.
            revision: Hub branch, tag or commit (default: the zoo index's pinned revision, else ``main``).
            device: where to put the model (default CPU).
            calibrated: divide the logits by the learned temperature (``model(x) == raw(x) / T``); ``False``
                returns the raw logits (``model.temperature`` still holds T).
        """
        resolved = resolve(pretrained_model_name_or_path, revision=revision)
        loaded = load_folder(resolved.folder, resolved.pins, resolved.shard_pins)
        record = loaded.record
        name = (record.name if record and record.name else None) or resolved.name or resolved.folder.name
        entry = _entry_or_none(resolved.name or name)
        if entry is not None and entry.sha256 != loaded.sha256:
            entry = None  # a run named like an entry is not that entry: no zoo name or timm tag for it
        info = {
            "name": name,
            "source": resolved.source,
            "folder": str(resolved.folder),
            "repo_id": resolved.repo_id,
            "revision": resolved.revision,
            "sha256": loaded.sha256,
            "architecture": loaded.config.get("architecture"),
            "num_classes": loaded.config.get("num_classes"),
            "method": asdict(record.method) if record else None,
            "dataset": asdict(record.dataset) if record else None,
            "budget": asdict(record.budget) if record else None,
            "temperature": record.temperature if record else None,
            "calibrated": calibrated,
            "metrics": loaded.metrics,
            "zoo_name": entry.name if entry is not None else None,
            "timm_tag": entry.timm_tag if entry is not None else None,
        }
        model = cls(loaded.model, record.temperature if record else None, calibrated=calibrated, record=record,
                    zoo_info=info)
        model.eval()
        if device is not None:
            model.to(device)
        return model

    def save_pretrained(self, save_directory: str | os.PathLike, *, repo_id: str | None = None) -> Path:
        """Write this model as a Hub-repo folder (weights, ``config.json`` with the run record, metrics, card).

        ``repo_id`` only adds the card's ``hf-hub:`` line: give it for a folder you are about to push.
        """
        folder = self.zoo_info.get("folder")
        return save_model_folder(self.model, Path(save_directory), record=self.record,
                                 metrics=self.zoo_info.get("metrics") or None, zoo_name=self.zoo_info.get("zoo_name"),
                                 timm_tag=self.zoo_info.get("timm_tag"), repo_id=repo_id,
                                 source=Path(folder) if folder else None)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        token: str | None = None,
        revision: str | None = None,
        private: bool = False,
        commit_message: str | None = None,
    ) -> Any:
        """Upload this model to ``repo_id`` (weights, config with run record, metrics, card); ``CommitInfo``."""
        with tempfile.TemporaryDirectory(prefix="refcal_zoo_push_") as tmp:
            folder = self.save_pretrained(Path(tmp) / (self.zoo_info.get("name") or "model"), repo_id=repo_id)
            return push_folder(folder, repo_id, token=token, revision=revision, private=private,
                               commit_message=commit_message, zoo_name=self.zoo_info.get("zoo_name"),
                               timm_tag=self.zoo_info.get("timm_tag"))

    # ------------------------------------------------------------------------------------- timm-like surface

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
        """Class probabilities (CPU float32 ``[N, K]``) of images; see :func:`refcal_zoo.hub.predict_proba`."""
        return predict_proba(self, images, batch_size=batch_size)

    @torch.no_grad()
    def predict_set(self, images: Any, alpha: float = 0.1, score: str = "thr", classwise: bool = False, *,
                    batch_size: int = 256) -> torch.Tensor:
        """Split-conformal label sets: a bool ``[N, K]`` mask, ``True`` where a label is in the image's set.

        Fitted on the model folder's validation logits / T (``val_predictions.npz``; never test), so that for
        images drawn like the validation split the set holds the true label with probability ``>= 1 - alpha``;
        ``classwise=True`` gives that for every class. ``score``: ``"thr"``, ``"aps"`` or ``"raps"`` (see
        :class:`refcal_zoo.calibration.ConformalPredictor`). The fit is cached per (alpha, score, classwise).
        """
        cp = ConformalPredictor(alpha, score=score, classwise=classwise)  # checks alpha and score first
        t = float(self.temperature)
        key = ("set", cp.alpha, score, cp.classwise, t)
        if key not in self._fitted:
            val_z, val_y = self._validation_predictions()
            self._fitted[key] = cp.fit(val_z / t, val_y)
        z = predict_logits(self.model, images, batch_size=batch_size).double() / t
        return torch.from_numpy(self._fitted[key].predict_sets(z.numpy()))

    @torch.no_grad()
    def predict(self, images: Any, max_risk: float | None = None, *, batch_size: int = 256) -> torch.Tensor:
        """Predicted classes (int64 ``[N]``); with ``max_risk``, ``-1`` (abstain) where the confidence is too low.

        The threshold is :func:`refcal_zoo.calibration.selective_threshold` on the folder's validation logits / T
        (``val_predictions.npz``): the lowest max-softmax confidence at which the answered *validation* images
        have an error rate ``<= max_risk``. The guarantee is empirical - met on the validation split, only
        approximately on new data (no high-probability bound is applied).
        """
        if max_risk is None:
            return predict_logits(self.model, images, batch_size=batch_size).argmax(dim=1)
        if isinstance(max_risk, bool) or not isinstance(max_risk, (int, float)):
            raise ValueError(f"max_risk must be None or a number in [0, 1), e.g. 0.05; got {max_risk!r}")
        key = ("risk", float(max_risk), float(self.temperature))
        if key not in self._fitted:
            val_z, val_y = self._validation_predictions()
            self._fitted[key] = selective_threshold(val_z / key[2], val_y, max_risk)  # also checks max_risk
        z = predict_logits(self.model, images, batch_size=batch_size).double() / key[2]
        return torch.from_numpy(selective_predict(z.numpy(), self._fitted[key]))

    def _validation_predictions(self) -> tuple[np.ndarray, np.ndarray]:
        """The raw validation logits (float64 ``[n, K]``) and labels of the folder the model was loaded from."""
        if self._val is not None:
            return self._val
        folder = self.zoo_info.get("folder")
        how = ("retrain it (or a newer refcal_zoo run of it) and re-publish, e.g. `refcal-zoo publish RUN_DIR --to "
               "FOLDER`, which copies it")
        if not folder:
            raise NotAvailableError(f"this model was not loaded from a folder, so it has no {VAL_PREDICTIONS} "
                                    "(validation logits) to fit prediction sets or abstention on; load a run or "
                                    "published folder with refcal_zoo.load")
        path = Path(folder) / VAL_PREDICTIONS
        if not path.is_file():
            raise NotAvailableError(f"'{path}' does not exist: this model folder predates validation logits, which "
                                    f"predict_set / predict(max_risk=...) are fitted on; {how}")
        try:
            with np.load(path, allow_pickle=False) as f:
                z, y = np.asarray(f["logits"]), np.asarray(f["labels"])
        except (OSError, KeyError, ValueError) as exc:
            raise IntegrityError(f"'{path}' is not a predictions file with 'logits' and 'labels' ({exc}); {how}"
                                 ) from None
        if z.ndim != 2 or z.shape[1] != self.num_classes or y.shape != (z.shape[0],) or y.dtype.kind not in "iu":
            raise IntegrityError(f"'{path}' holds logits {list(z.shape)} and labels {list(y.shape)} ({y.dtype}), not "
                                 f"[n, {self.num_classes}] and [n] integers for this {self.num_classes}-class model; "
                                 f"{how}")
        self._val = (z.astype(np.float64), y.astype(np.int64))
        return self._val

    def extra_repr(self) -> str:
        return f"temperature={float(self.temperature):.4f}, calibrated={self.calibrated}"


def _entry_or_none(name: str | None) -> ZooEntry | None:
    if not name:
        return None
    return load_index().get(name)


def load(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    device: str | torch.device | None = None,
    calibrated: bool = True,
) -> ZooModel:
    """Short form of :meth:`ZooModel.from_pretrained`."""
    return ZooModel.from_pretrained(name_or_path, revision=revision, device=device, calibrated=calibrated)
