"""Register a published checkpoint in the zoo index: sha256, revision, headline metrics, status ``published``.

    refcal-zoo zoo register PUBLISHED_FOLDER [--name NAME] [--revision REV] [--repo ORG/NAME] [--embed]
    python -m refcal_zoo.zoo.update_index PUBLISHED_FOLDER ...        (same)

``PUBLISHED_FOLDER`` is what ``refcal-zoo publish`` wrote (and ``refcal-zoo push`` uploaded). ``--revision`` pins
the Hub commit or tag that ``push`` printed; ``--embed`` also copies the folder into
``<index folder>/weights/<name>/`` so the package ships the weights (models up to 10 MB; weights over 5 MB as
shards, each pinned in the index).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from ..fileio import atomic_copy, replace_folder, sha256_file, write_yaml
from ..hub.card import read_folder
from ..hub.checks import check_model_name, check_repo_id, check_user_path
from ..hub.errors import IntegrityError, PublishError
from ..hub.publish import migrate_folder
from ..hub.shards import write_shards
from ..weight_files import check_safetensors, is_sharded
from .index import HEADLINE_KEYS, ZooEntry, index_path, load_index

__all__ = ["EMBED_FILES", "MAX_EMBED_FILE_BYTES", "MAX_EMBED_MODEL_BYTES", "add_recipe_entries", "entry_from_config",
           "embed_problem", "main", "register", "write_index"]

HEADER = ("# refcal_zoo model index (format 1). One entry per zoo model, named <arch>-<dataset>-<method>.\n"
          "# Edited by `refcal-zoo zoo register PUBLISHED_FOLDER` (refcal_zoo/zoo/update_index.py); see "
          "refcal_zoo/zoo/README.md.\n")
EMBED_FILES = ("config.json", "model.safetensors", "README.md", "metrics.json", "temperature.json", "reliability.png",
               "reliability_ts.png", "train_config.yaml", "lt_indices.json", "train_log.jsonl", "val_predictions.npz",
               "prediction_sets.json")
#: Largest file the package ships: the repository keeps tracked files under 5 MB (git is no weight store), so
#: larger weights (a WRN-28-2 is 5.9 MB, an EfficientViT-B0 8.6 MB) ship as shards of at most this size
#: (:mod:`refcal_zoo.hub.shards`, Hugging Face's sharded-safetensors layout; a tensor that alone is larger, as
#: EfficientViT-B0's 5.2 MB classifier weight, is cut into parts).
MAX_EMBED_FILE_BYTES = 5_000_000
#: Largest model the package ships (sharded); larger ones (a WRN-28-10: 146 MB) are published to the Hub only.
MAX_EMBED_MODEL_BYTES = 10_000_000
KNOWN_DATASETS = {"uoft-cs/cifar10": ("CIFAR-10-LT", 10), "uoft-cs/cifar100": ("CIFAR-100-LT", 100),
                  "digits": ("digits-LT", 10), "sklearn:digits": ("digits-LT", 10)}


def write_index(path: Path, entries: dict[str, ZooEntry]) -> None:
    """Write ``entries`` (sorted by name) as a format-1 index, atomically."""
    data: dict[str, Any] = {"format": 1, "models": {n: entries[n].to_dict() for n in sorted(entries)}}
    yaml.safe_dump(data)  # fail before writing on anything YAML cannot hold
    write_yaml(path, data, header=HEADER)


def entry_from_config(recipe: Path, recipe_ref: str, overrides: list[str] | None = None) -> ZooEntry:
    """A ``recipe-only`` entry describing what ``recipe`` (+ ``overrides``) trains."""
    from ..config import load_config

    cfg = load_config(recipe, list(overrides or []))
    known = KNOWN_DATASETS.get(cfg.dataset.path)
    num_classes = cfg.model.num_classes or (known[1] if known else None)
    if num_classes is None:
        raise PublishError(f"{recipe}: unknown class count of dataset '{cfg.dataset.path}'; set model.num_classes")
    comment = next((line[1:].strip() for line in recipe.read_text().splitlines() if line.startswith("#")), "")
    return ZooEntry(
        name=check_model_name(cfg.name), arch=cfg.model.arch, num_classes=int(num_classes),
        dataset={"id": cfg.dataset.path, "config": cfg.dataset.config,
                 "name": known[0] if known else Path(cfg.dataset.path).name, "rho": cfg.dataset.rho,
                 "lt_seed": cfg.dataset.lt_seed},
        method=cfg.method.name, base_loss=cfg.method.base_loss, recipe=recipe_ref, overrides=list(overrides or []),
        notes=comment,
    )


def add_recipe_entries(recipes_dir: str | Path, *, index: str | Path | None = None,
                       root: str | Path | None = None) -> list[str]:
    """Add a ``recipe-only`` entry for every ``<recipes_dir>/*.yaml`` whose config name is not in the index.

    Existing entries are never changed. ``root`` is what recipe paths are written relative to (default: the
    parent of ``recipes/``). Returns the added names.
    """
    recipes_dir = Path(recipes_dir)
    root = Path(root) if root is not None else recipes_dir.resolve().parent.parent
    path = Path(index) if index is not None else index_path()
    entries = load_index(path)
    added = []
    for recipe in sorted(recipes_dir.glob("*.yaml")):
        ref = recipe.resolve().relative_to(root.resolve()).as_posix()
        entry = entry_from_config(recipe, ref)
        if entry.name not in entries:
            entries[entry.name] = entry
            added.append(entry.name)
    if added:
        write_index(path, entries)
    return added


def _new_entry(name: str, rec) -> ZooEntry:
    ds = rec.record.dataset
    return ZooEntry(
        name=name, arch=rec.config["architecture"], num_classes=int(rec.config["num_classes"]),
        dataset={"id": ds.id, "config": ds.config, "name": None, "rho": ds.rho, "lt_seed": ds.lt_seed},
        method=rec.record.method.name, base_loss=rec.record.method.base_loss,
        recipe=f"recipes/configs/{name}.yaml", overrides=[], notes="",
    )


def _check_matches(entry: ZooEntry, rec, folder: Path) -> None:
    ds = rec.record.dataset
    method = rec.record.method.name
    problems = []
    if entry.arch != rec.config.get("architecture"):
        problems.append(f"architecture {rec.config.get('architecture')} != {entry.arch}")
    if entry.num_classes != rec.config.get("num_classes"):
        problems.append(f"num_classes {rec.config.get('num_classes')} != {entry.num_classes}")
    if method is not None and entry.method != method:
        problems.append(f"method {method} != {entry.method}")
    rho = entry.dataset.get("rho")
    if rho is not None and ds.rho is not None and float(ds.rho) != float(rho):
        problems.append(f"rho {ds.rho} != {rho}")
    if problems:
        raise PublishError(f"'{folder}' does not match the index entry '{entry.name}' ({'; '.join(problems)}); "
                           "register it under the right --name")


def register(
    folder: str | Path,
    *,
    name: str | None = None,
    revision: str | None = None,
    repo: str | None = None,
    index: str | Path | None = None,
    embed: bool = False,
) -> ZooEntry:
    """Fill (or create) the index entry of a published folder and mark it ``published``; returns the entry."""
    folder = check_user_path(folder)
    rec = read_folder(folder)
    weights = folder / "model.safetensors"
    if not weights.is_file() or not (folder / "README.md").is_file():
        raise PublishError(f"'{folder}' is not a published folder (needs model.safetensors and README.md); create it "
                           "with `refcal-zoo publish RUN_DIR --to FOLDER`")
    if rec.metrics is None or rec.record is None:
        raise PublishError(f"'{folder}' has no metrics.json or run record; publish it from a finished run "
                           "(refcal-zoo publish)")
    check_safetensors(weights)
    if embed and (problem := embed_problem(folder)):
        raise PublishError(problem)  # before the index is touched
    sha = sha256_file(weights)
    pinned = rec.record.provenance.weights_sha256
    if pinned and pinned != sha:
        raise IntegrityError(f"sha256 of '{weights}' is {sha} but its config.json pins {pinned}; re-publish it")
    name = check_model_name(name or rec.name)
    if repo is not None:
        check_repo_id(repo)
    path = Path(index) if index is not None else index_path()
    entries = load_index(path)
    entry = entries.get(name) or _new_entry(name, rec)
    _check_matches(entry, rec, folder)
    previous_sha, entry.sha256 = entry.sha256, sha
    entry.revision = revision if revision is not None else entry.revision
    entry.repo = repo if repo is not None else entry.repo
    entry.temperature = rec.record.temperature
    entry.metrics = {k: rec.metrics.get(k) for k in HEADLINE_KEYS if k in rec.metrics}
    entry.status = "published"
    entries[name] = entry
    target = path.parent / "weights" / name
    stage = target.with_name(f".{name}.embedding")
    other_shipped = is_sharded(target) and previous_sha != sha or (
        (target / "model.safetensors").is_file() and sha256_file(target / "model.safetensors") != sha)
    try:
        if embed:  # the slow copy first, beside the shipped folder; swapped in only once the index pins it
            _embed(folder, stage)
            migrate_folder(stage, zoo_name=name, timm_tag=entry.timm_tag)  # its card: the zoo name and timm tag
            entry.shards = _shard_if_large(stage)
        elif other_shipped:
            entry.shards = None
        write_index(path, entries)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if embed:
        replace_folder(stage, target)
    elif other_shipped:
        shutil.rmtree(target)  # a shipped copy of other weights would now fail the index's sha256 pins
    return entry


def embed_problem(folder: str | Path) -> str | None:
    """Why ``folder`` cannot ship inside the package (weights over :data:`MAX_EMBED_MODEL_BYTES`, another file over
    :data:`MAX_EMBED_FILE_BYTES`), or ``None``."""
    folder = Path(folder)
    limits = {f: MAX_EMBED_MODEL_BYTES if f == "model.safetensors" else MAX_EMBED_FILE_BYTES for f in EMBED_FILES}
    big = [(f, (folder / f).stat().st_size) for f in EMBED_FILES
           if (folder / f).is_file() and (folder / f).stat().st_size > limits[f]]
    if not big:
        return None
    f, size = big[0]
    what = "models (weights sharded)" if f == "model.safetensors" else "files"
    return (f"'{folder / f}' is {size / 1e6:.1f} MB; the package ships {what} up to {limits[f] / 1e6:.0f} MB only - "
            "register it without --embed and push the folder to the Hub (refcal-zoo push)")


def _shard_if_large(folder: Path) -> dict[str, str] | None:
    """Replace ``folder``'s ``model.safetensors`` by shards when it is over :data:`MAX_EMBED_FILE_BYTES`; returns
    the shards' sha256 pins (``None``: the one file ships as it is)."""
    weights = folder / "model.safetensors"
    if weights.stat().st_size <= MAX_EMBED_FILE_BYTES:
        return None
    pins = write_shards(weights, folder, MAX_EMBED_FILE_BYTES)
    weights.unlink()
    return pins


def _embed(folder: Path, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)  # a stage left by an interrupted register
    for f in EMBED_FILES:
        if (folder / f).is_file():
            atomic_copy(folder / f, target / f)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="refcal-zoo zoo register", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    from ..errors import RefCalZooError

    try:
        run(args)
    except RefCalZooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="published folder (refcal-zoo publish RUN_DIR --to FOLDER)")
    parser.add_argument("--name", help="zoo entry name (default: the folder's refcal name)")
    parser.add_argument("--revision", help="Hub commit or tag to pin (what `refcal-zoo push` printed)")
    parser.add_argument("--repo", help="Hub repo id if not <REFCAL_ZOO_ORG>/<name>")
    parser.add_argument("--index", help="index file to edit (default: $REFCAL_ZOO_INDEX or the package's)")
    parser.add_argument("--embed", action="store_true",
                        help="also ship the folder inside the package (models up to 10 MB; over 5 MB as shards)")


def run(args: argparse.Namespace) -> None:
    entry = register(args.folder, name=args.name, revision=args.revision, repo=args.repo, index=args.index,
                     embed=args.embed)
    m = entry.metrics or {}
    print(f"registered {entry.name}: sha256 {entry.sha256}, revision {entry.revision or 'main'}, repo "
          f"{entry.repo_id}, accuracy {m.get('accuracy')}, ece {m.get('ece')} -> ts/ece {m.get('ts/ece')}")
    if args.embed and entry.shards:
        print(f"shipped as {len(entry.shards)} shards (each sha256-pinned): {', '.join(sorted(entry.shards))}")


if __name__ == "__main__":
    sys.exit(main())
