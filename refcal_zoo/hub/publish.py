"""Publishing: a Hub-repo folder from a run (``save_pretrained``) and its upload (``push_to_hub``).

``save_pretrained`` builds the folder in a staging sibling and moves it into place only when complete. Pushing is
always an explicit step (never a side effect of training) and never modifies the local folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import HfApi
from huggingface_hub import constants as hf_constants
from torch import nn

from ..fileio import atomic_copy, replace_folder, sha256_file, staging_folder, write_json, write_text
from .card import build_model_card
from .checks import check_model_name, check_repo_id, check_safetensors, check_user_path
from .errors import PublishError

__all__ = ["PUBLISHED_FILES", "push_to_hub", "save_pretrained"]

#: published file name <- candidate source names (a run folder's, or an earlier published folder's)
PUBLISHED_FILES = {
    "metrics.json": ("metrics.json",),
    "temperature.json": ("temperature.json",),
    "reliability.png": ("reliability.png",),
    "reliability_ts.png": ("reliability_ts.png",),
    "lt_indices.json": ("lt_indices.json",),
    "train_config.yaml": ("config.yaml", "train_config.yaml"),
    "train_log.jsonl": ("log.jsonl", "train_log.jsonl"),
}
_REQUIRED_RUN_FILES = ("config.json", "model.safetensors", "metrics.json")


def _is_publish_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "README.md").is_file() \
        and not (folder / "config.yaml").exists()


def _check_target(folder: Path, run_dir: Path | None) -> None:
    if folder.exists() and not folder.is_dir():
        raise PublishError(f"'{folder}' exists and is not a folder; choose another publish folder")
    if run_dir is not None and folder.resolve() == run_dir.resolve():
        raise PublishError(f"the publish folder must differ from the run folder '{run_dir}' (e.g. {run_dir}/publish)")
    if folder.is_dir() and any(folder.iterdir()) and not _is_publish_folder(folder):
        raise PublishError(f"'{folder}' is not empty and is not a published folder; choose an empty or new folder "
                           "(a published folder is replaced as a whole)")


def _unwrap(model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    from .loading import ZooModel

    if isinstance(model, ZooModel):
        return model.model, model.zoo_info
    if not isinstance(model, nn.Module):
        raise PublishError(f"save_pretrained needs a torch nn.Module (or run_dir=...), got {type(model).__name__}")
    return model, dict(getattr(model, "zoo_info", {}) or {})


def _same_weights(model: nn.Module, weights: Path) -> bool:
    from safetensors.torch import load_file

    saved = load_file(str(weights), device="cpu")
    current = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return set(saved) == set(current) and all(torch.equal(saved[k], current[k]) for k in saved)


def _finish_config(stage: Path, weights_sha: str, name: str | None = None) -> None:
    cfg = json.loads((stage / "config.json").read_text())
    refcal = cfg.setdefault("refcal", {})
    refcal["weights_sha256"] = weights_sha
    if name is not None:
        refcal["name"] = name
    write_json(stage / "config.json", cfg)


def save_pretrained(
    model: nn.Module | None,
    folder: str | Path,
    run_dir: str | Path | None = None,
    *,
    repo_id: str | None = None,
    name: str | None = None,
) -> Path:
    """Write a Hub-repo folder: ``model.safetensors``, timm ``config.json``, ``README.md`` card and the evidence.

    With ``run_dir`` (a finished run folder, or an earlier published folder) everything comes from the run:
    weights, config, ``metrics.json``,
    ``temperature.json``, reliability diagrams, ``train_config.yaml``, ``train_log.jsonl``, ``lt_indices.json``;
    ``model`` may then be ``None`` (if given, its weights must equal the run's). Without ``run_dir`` the model
    (a :class:`~refcal_zoo.hub.loading.ZooModel` or a timm model) is serialised with the metadata it carries.
    ``repo_id`` only fills the card's loading snippet. ``name`` is the zoo name the folder is published under
    (``<arch>-<dataset>-<method>``; default: the run's own name), written to ``config.json`` and the card.
    ``config.json``'s ``refcal.weights_sha256`` pins the weights. Returns the folder.
    """
    folder = check_user_path(folder)
    run = check_user_path(run_dir) if run_dir is not None else None
    if repo_id is not None:
        check_repo_id(repo_id)
    if name is not None:
        check_model_name(name)
    if run is not None:
        if not run.is_dir():
            raise PublishError(f"run folder '{run}' does not exist")
        missing = [f for f in _REQUIRED_RUN_FILES if not (run / f).is_file()]
        if missing:
            raise PublishError(f"'{run}' is not a finished run folder (missing {', '.join(missing)}); train it first "
                               "or give the folder that recipes/train.py wrote")
        check_safetensors(run / "model.safetensors")
        if model is not None and not _same_weights(_unwrap(model)[0], run / "model.safetensors"):
            raise PublishError(f"the model's weights differ from '{run / 'model.safetensors'}', so the run's metrics "
                               "would not describe them; pass run_dir alone (publish the run) or the model alone")
    elif model is None:
        raise PublishError("save_pretrained needs a model or run_dir=<finished run folder>")
    _check_target(folder, run)

    stage = staging_folder(folder)
    try:
        if run is not None:
            atomic_copy(run / "model.safetensors", stage / "model.safetensors")
            atomic_copy(run / "config.json", stage / "config.json")
            for dst, sources in PUBLISHED_FILES.items():
                src = next((run / s for s in sources if (run / s).is_file()), None)
                if src is not None:
                    atomic_copy(src, stage / dst)
        else:
            _save_model(model, stage, folder.name)
        _finish_config(stage, sha256_file(stage / "model.safetensors"), name)
        card = build_model_card(stage, repo_id=repo_id)
        write_text(stage / "README.md", str(card))
        replace_folder(stage, folder)
    except BaseException:
        import shutil

        shutil.rmtree(stage, ignore_errors=True)
        raise
    return folder


def _save_model(model: nn.Module, stage: Path, name: str) -> None:
    from .export import export_timm_folder

    raw, info = _unwrap(model)
    cfg = getattr(raw, "pretrained_cfg", None)
    if not isinstance(cfg, dict) or not timm_arch(raw):
        raise PublishError("the model has no timm pretrained_cfg/architecture; build it with timm.create_model or "
                           "refcal_zoo.load, or publish a run folder with run_dir=...")
    refcal = dict(info.get("refcal") or {})
    refcal.pop("weights_sha256", None)
    refcal.setdefault("name", info.get("name") or name)
    labels = cfg.get("label_names") or [str(k) for k in range(int(raw.num_classes))]
    if any(p.device.type != "cpu" for p in raw.parameters()):
        import copy

        raw = copy.deepcopy(raw).cpu()  # never move the caller's model
    export_timm_folder(raw, stage, label_names=list(labels), refcal=refcal)
    if info.get("metrics"):
        write_json(stage / "metrics.json", info["metrics"])


def timm_arch(model: nn.Module) -> str | None:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("architecture")


def _token(token: str | None) -> str:
    if token:
        return token
    from huggingface_hub import get_token

    found = get_token()
    if not found:
        raise PublishError("no Hugging Face token: pass token=..., set HF_TOKEN, or run `hf auth login`; "
                           "nothing was uploaded and the local folder is unchanged")
    return found


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    revision: str | None = None,
    private: bool = False,
    repo_type: str = "model",
    commit_message: str | None = None,
) -> Any:
    """Upload a published folder (or an exported dataset folder) to ``repo_id``; returns the ``CommitInfo``.

    Creates the repo if needed (``create_repo(exist_ok=True)``) and the ``revision`` branch if given, then
    ``upload_folder``. Reads the folder only. Refuses ids that are not ``org/name``, missing tokens, offline mode.
    """
    check_repo_id(repo_id)
    if repo_type not in ("model", "dataset"):
        raise PublishError(f"repo_type must be 'model' or 'dataset', got '{repo_type}'")
    folder = check_user_path(folder)
    if not folder.is_dir():
        raise PublishError(f"'{folder}' is not a folder; publish a run first (`refcal-zoo publish RUN_DIR --to "
                           "FOLDER`)")
    if repo_type == "model":
        missing = [f for f in ("config.json", "model.safetensors", "README.md") if not (folder / f).is_file()]
        if missing:
            raise PublishError(f"'{folder}' is not a published model folder (missing {', '.join(missing)}); create "
                               "it with refcal_zoo.save_pretrained / `refcal-zoo publish`")
        check_safetensors(folder / "model.safetensors")
    elif not (folder / "README.md").is_file():
        raise PublishError(f"'{folder}' has no README.md dataset card; create it with `refcal-zoo dataset export`")
    if hf_constants.HF_HUB_OFFLINE:
        raise PublishError("HF_HUB_OFFLINE is set: pushing needs the network; unset it on a connected machine. "
                           "Nothing was uploaded")
    tok = _token(token)
    from .. import __version__

    api = HfApi(token=tok, library_name="refcal_zoo", library_version=__version__)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type=repo_type)
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type=repo_type)
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type=repo_type,
        revision=revision,
        commit_message=commit_message or f"Upload {folder.name} with refcal_zoo {__version__}",
        ignore_patterns=[".*", "*.tmp", "*.incomplete*"],
    )
