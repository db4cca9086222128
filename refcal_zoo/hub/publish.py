"""Publishing: a finished run -> Hub-repo folder (:func:`publish_run`), a model -> folder, a folder -> the Hub.

Every folder is built in a staging sibling and moved into place only when complete. Pushing is always an explicit
step (never a side effect of training) and never modifies the local folder. Published files carry no machine
paths: the dataset appears by identity (Hub id, ``digits`` or a local folder's name), never by path.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import HfApi
from huggingface_hub import constants as hf_constants
from torch import nn

from .. import __version__
from ..fileio import atomic_copy, replace_folder, sha256_file, staging_folder, write_json, write_text, write_yaml
from ..models.export import export_timm_folder
from ..record import RECORD_KEY, V1_KEY, RunRecord, dataset_identity
from ..weight_files import check_safetensors, is_sharded, load_shards
from .card import PREDICTION_SETS, build_model_card, frequency_third_metrics, prediction_set_summary, read_folder
from .checks import check_model_name, check_repo_id, check_user_path
from .errors import PublishError
from .loading import folder_record

__all__ = ["PUBLISHED_FILES", "VAL_PREDICTIONS", "migrate_folder", "publish_run", "push_folder", "save_model_folder"]

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
#: The validation logits and labels that ``ZooModel.predict_set`` / ``predict(max_risk=...)`` are fitted on.
VAL_PREDICTIONS = "val_predictions.npz"


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


def _carry_predictions(source: Path, stage: Path) -> None:
    """Copy ``val_predictions.npz`` and write the prediction-set summary of the card (``prediction_sets.json``):
    computed from ``source``'s validation and test logits when it has both (a run folder), else copied. From the
    test logits, also add the metrics per frequency third to the staged ``metrics.json`` (the card's head / mid /
    tail table where every class is many-shot)."""
    rec = read_folder(source)
    if (source / VAL_PREDICTIONS).is_file():
        atomic_copy(source / VAL_PREDICTIONS, stage / VAL_PREDICTIONS)
    summary = prediction_set_summary(rec)
    if summary is not None:
        write_json(stage / PREDICTION_SETS, summary)
    elif (source / PREDICTION_SETS).is_file():
        atomic_copy(source / PREDICTION_SETS, stage / PREDICTION_SETS)
    thirds = frequency_third_metrics(rec)
    if thirds and (stage / "metrics.json").is_file():
        write_json(stage / "metrics.json", {**json.loads((stage / "metrics.json").read_text()), **thirds})


# ------------------------------------------------------------------------------------------ path-free artefacts


def _public_dataset(path: Any, local: bool | None = None) -> Any:
    return dataset_identity(path, local=local)[0] if isinstance(path, str) and path else path


def public_train_config(cfg: dict[str, Any], *, local: bool | None = None) -> dict[str, Any]:
    """A resolved training config without machine paths: ``dataset.path`` -> its identity, no ``output_dir``.

    ``local``: whether the run read ``dataset.path`` from a folder (its record knows); without it a relative
    ``data/cifar10`` cannot be told from a Hub id and is kept as written.
    """
    out = copy.deepcopy(cfg)
    if isinstance(out.get("dataset"), dict):
        out["dataset"]["path"] = _public_dataset(out["dataset"].get("path"), local)
    if "output_dir" in out:
        out["output_dir"] = None
    return out


def public_lt_record(lt: dict[str, Any], *, local: bool | None = None) -> dict[str, Any]:
    """``lt_indices.json`` with the dataset source by identity instead of by path (``local``: as above, of the
    source; an exported split read in its place is always a folder, ``refcal-zoo dataset export``'s)."""
    out = copy.deepcopy(lt)
    source = out.get("source")
    if isinstance(source, dict) and "path" in source:
        source["path"] = _public_dataset(source["path"], local)
    export = source.get("export") if isinstance(source, dict) else None
    if isinstance(export, dict) and "path" in export:
        export["path"] = _public_dataset(export["path"], local=True)
    return out


def _finish(stage: Path, record: RunRecord | None, name: str | None, notes: Sequence[str] | None = None) -> None:
    """Write the version-2 record (weights sha256, zoo name) into ``config.json``; drop a version-1 block.
    ``notes`` replace ``pretrained_cfg.notes`` (timm's field; the card shows them), ``None`` keeps them."""
    cfg = json.loads((stage / "config.json").read_text())
    cfg.pop(V1_KEY, None)
    if notes is not None:
        cfg.setdefault("pretrained_cfg", {})["notes"] = [notes] if isinstance(notes, str) else [str(n) for n in notes]
    if record is not None:
        record = copy.deepcopy(record)
        if not is_sharded(stage):
            record.provenance.weights_sha256 = sha256_file(stage / "model.safetensors")
        # sharded (a shipped entry): the record keeps the sha256 of the one file the shards were cut from
        if name is not None:
            record.name = name
        cfg[RECORD_KEY] = record.to_dict()
    write_json(stage / "config.json", cfg)
    local = None if record is None or record.dataset.kind == "unknown" else record.dataset.kind == "local"
    lt = json.loads((stage / "lt_indices.json").read_text()) if (stage / "lt_indices.json").is_file() else None
    read_export = isinstance(lt, dict) and isinstance(lt.get("source"), dict) and "export" in lt["source"]
    if (stage / "train_config.yaml").is_file():
        tc = yaml.safe_load((stage / "train_config.yaml").read_text())
        if isinstance(tc, dict):  # dataset.path is what was read: the source, or an export (a folder) standing in
            write_yaml(stage / "train_config.yaml", public_train_config(tc, local=True if read_export else local))
    if isinstance(lt, dict):
        write_json(stage / "lt_indices.json", public_lt_record(lt, local=local))


def _build(folder: Path, fill, *, run_dir: Path | None = None, zoo_name: str | None = None,
           timm_tag: str | None = None, repo_id: str | None = None) -> Path:
    _check_target(folder, run_dir)
    stage = staging_folder(folder)
    try:
        fill(stage)
        write_text(stage / "README.md", str(build_model_card(stage, zoo_name=zoo_name, timm_tag=timm_tag,
                                                             repo_id=repo_id)))
        replace_folder(stage, folder)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return folder


def publish_run(
    run_dir: str | Path,
    folder: str | Path,
    *,
    name: str | None = None,
    zoo_name: str | None = None,
    timm_tag: str | None = None,
    repo_id: str | None = None,
    notes: Sequence[str] | None = None,
) -> Path:
    """Turn a finished run folder (or an earlier published folder) into a Hub-repo folder with a model card.

    Copies the weights, ``config.json`` (its run record completed with the weights' sha256), ``metrics.json``,
    ``temperature.json``, reliability diagrams, ``train_config.yaml``, ``train_log.jsonl`` and
    ``lt_indices.json`` (machine paths replaced by the dataset's identity), ``val_predictions.npz`` (what
    ``ZooModel.predict_set`` is fitted on) and ``prediction_sets.json`` (the card's split-conformal table, from the
    run's validation and test logits). ``name`` renames the record (a suite
    cell published under its zoo name). ``zoo_name`` / ``timm_tag`` / ``repo_id`` only add the card's usage lines
    that work once the entry is in the zoo index / the repo has been pushed. ``notes`` (sentences, e.g. how the
    entry was built and whether its budget is the recipe's) go to ``config.json``'s ``pretrained_cfg.notes`` and the
    card. Returns the folder.
    """
    folder = check_user_path(folder)
    run = check_user_path(run_dir)
    if name is not None:
        check_model_name(name)
    if repo_id is not None:
        check_repo_id(repo_id)
    if not run.is_dir():
        raise PublishError(f"run folder '{run}' does not exist")
    missing = [f for f in _REQUIRED_RUN_FILES if not (run / f).is_file()]
    if missing:
        raise PublishError(f"'{run}' is not a finished run folder (missing {', '.join(missing)}); train it first "
                           "or give the folder that recipes/train.py wrote")
    check_safetensors(run / "model.safetensors")
    record = folder_record(run, json.loads((run / "config.json").read_text()))
    if record is None:
        raise PublishError(f"'{run / 'config.json'}' has no run record; give a folder that recipes/train.py wrote")

    def fill(stage: Path) -> None:
        atomic_copy(run / "model.safetensors", stage / "model.safetensors")
        atomic_copy(run / "config.json", stage / "config.json")
        for dst, sources in PUBLISHED_FILES.items():
            src = next((run / s for s in sources if (run / s).is_file()), None)
            if src is not None:
                atomic_copy(src, stage / dst)
        _carry_predictions(run, stage)
        _finish(stage, record, name, notes)

    return _build(folder, fill, run_dir=run, zoo_name=zoo_name, timm_tag=timm_tag, repo_id=repo_id)


def save_model_folder(
    model: nn.Module,
    folder: str | Path,
    *,
    record: RunRecord | None = None,
    metrics: dict[str, Any] | None = None,
    zoo_name: str | None = None,
    timm_tag: str | None = None,
    repo_id: str | None = None,
    source: str | Path | None = None,
) -> Path:
    """Write a timm model (+ its run record and metrics, if any) as a Hub-repo folder with a card.

    ``source``: the folder the model was loaded from; its ``val_predictions.npz`` and prediction-set summary are
    carried over (they describe the same weights).
    """
    folder = check_user_path(folder)
    cfg = getattr(model, "pretrained_cfg", None)
    if not isinstance(model, nn.Module) or not isinstance(cfg, dict) or not cfg.get("architecture"):
        raise PublishError("the model has no timm pretrained_cfg/architecture; build it with timm.create_model or "
                           "refcal_zoo.load, or publish a run folder with refcal_zoo.publish_run")
    if any(p.device.type != "cpu" for p in model.parameters()):
        model = copy.deepcopy(model).cpu()  # never move the caller's model
    labels = cfg.get("label_names") or [str(k) for k in range(int(model.num_classes))]

    def fill(stage: Path) -> None:
        stage.mkdir(parents=True, exist_ok=True)
        export_timm_folder(model, stage, label_names=list(labels), record=record)
        if metrics:
            write_json(stage / "metrics.json", metrics)
        if source is not None and Path(source).is_dir():
            _carry_predictions(Path(source), stage)
        _finish(stage, record, None)

    return _build(folder, fill, zoo_name=zoo_name, timm_tag=timm_tag, repo_id=repo_id)


def migrate_folder(folder: str | Path, *, zoo_name: str | None = None, timm_tag: str | None = None,
                   repo_id: str | None = None, notes: Sequence[str] | None = None) -> Path:
    """Rewrite a published folder in place to the current layout: version-2 record, no machine paths, new card.

    The weights are untouched (their sha256 pins stay valid); used for the shipped entries of version 1 and to
    re-render shipped cards. A sharded folder (weights over the package's file limit) keeps its shards, checked
    readable first, and its record keeps the sha256 of the one file they were cut from.
    ``notes`` replace the folder's ``pretrained_cfg.notes`` (shown on the card); ``None`` keeps them.
    """
    folder = check_user_path(folder)
    if not _is_publish_folder(folder):
        raise PublishError(f"'{folder}' is not a published folder (config.json + README.md, no config.yaml)")
    if is_sharded(folder):
        load_shards(folder)  # every listed shard present, whole and holding what the index says, before any work
    elif not (folder / "model.safetensors").is_file():
        raise PublishError(f"'{folder}' has no model.safetensors and no shard index; publish it again from its run "
                           "folder (refcal-zoo publish)")
    record = folder_record(folder, json.loads((folder / "config.json").read_text()))

    def fill(stage: Path) -> None:
        for src in folder.iterdir():
            if src.is_file() and src.name != "README.md":
                atomic_copy(src, stage / src.name)
        _finish(stage, record, None, notes)

    tmp = folder.with_name(f".{folder.name}.migrating")
    shutil.rmtree(tmp, ignore_errors=True)
    _build(tmp, fill, zoo_name=zoo_name, timm_tag=timm_tag, repo_id=repo_id)
    replace_folder(tmp, folder)
    return folder


# ------------------------------------------------------------------------------------------------- the Hub


def _token(token: str | None) -> str:
    if token:
        return token
    from huggingface_hub import get_token

    found = get_token()
    if not found:
        raise PublishError("no Hugging Face token: pass token=..., set HF_TOKEN, or run `hf auth login`; "
                           "nothing was uploaded and the local folder is unchanged")
    return found


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    revision: str | None = None,
    private: bool = False,
    repo_type: str = "model",
    commit_message: str | None = None,
    zoo_name: str | None = None,
    timm_tag: str | None = None,
) -> Any:
    """Upload a published folder (or an exported dataset folder) to ``repo_id`` in one commit; ``CommitInfo``.

    A model folder's card is re-rendered for the upload with its ``hf-hub:{repo_id}`` usage line (the local
    folder is only read). Creates the repo if needed and the ``revision`` branch if given. Refuses ids that are
    not ``org/name``, missing tokens and offline mode.
    """
    check_repo_id(repo_id)
    if repo_type not in ("model", "dataset"):
        raise PublishError(f"repo_type must be 'model' or 'dataset', got '{repo_type}'")
    folder = check_user_path(folder)
    if not folder.is_dir():
        raise PublishError(f"'{folder}' is not a folder; publish a run first (`refcal-zoo publish RUN_DIR --to "
                           "FOLDER`)")
    readme: bytes | None = None
    if repo_type == "model":
        missing = [f for f in ("config.json", "model.safetensors", "README.md") if not (folder / f).is_file()]
        if missing:
            raise PublishError(f"'{folder}' is not a published model folder (missing {', '.join(missing)}); create "
                               "it with refcal_zoo.publish_run / `refcal-zoo publish`")
        check_safetensors(folder / "model.safetensors")
        readme = str(build_model_card(folder, zoo_name=zoo_name, timm_tag=timm_tag, repo_id=repo_id)).encode()
    elif not (folder / "README.md").is_file():
        raise PublishError(f"'{folder}' has no README.md dataset card; create it with `refcal-zoo dataset export`")
    if hf_constants.HF_HUB_OFFLINE:
        raise PublishError("HF_HUB_OFFLINE is set: pushing needs the network; unset it on a connected machine. "
                           "Nothing was uploaded")
    tok = _token(token)
    api = HfApi(token=tok, library_name="refcal_zoo", library_version=__version__)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type=repo_type)
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type=repo_type)
    kw = dict(repo_id=repo_id, repo_type=repo_type, revision=revision,
              commit_message=commit_message or f"Upload {folder.name} with refcal_zoo {__version__}",
              ignore_patterns=[".*", "*.tmp", "*.incomplete*"])
    if readme is None:
        return api.upload_folder(folder_path=str(folder), **kw)
    with tempfile.TemporaryDirectory(prefix="refcal_zoo_push_") as tmp:  # the local folder is only read
        upload = Path(tmp) / folder.name
        shutil.copytree(folder, upload, ignore=shutil.ignore_patterns(".*", "*.tmp", "*.incomplete*"))
        (upload / "README.md").write_bytes(readme)
        return api.upload_folder(folder_path=str(upload), **kw)
