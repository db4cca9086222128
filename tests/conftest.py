"""Shared fixtures: isolated caches (decoded images, HF datasets, an offline HF home), fresh Accelerate state after
every test, tiny generated datasets in the Hub's CIFAR schemas, and one trimmed training run (and its published
folder) per session for the hub / zoo / CLI tests.

Hub access is always offline: HF_HOME / HF_HUB_CACHE point into tmp dirs, tokens are cleared, sockets can be
disabled, and a seeded cache (``models--org--name/refs/main`` + ``snapshots/<sha>/``) stands in for the Hub.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import yaml
from huggingface_hub import constants as hf_constants

from refcal_zoo.zoo import INDEX_PATH

REPO = Path(__file__).resolve().parents[1]
SHARED_CIFAR10 = REPO.parent / "shared" / "datasets" / "cifar10"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("REFCAL_ZOO_CACHE", str(tmp_path_factory.getbasetemp() / "refcal_cache"))


def reset_accelerate_state() -> None:
    """Forget Accelerate's process-wide singletons, so the next ``Accelerator`` may use other settings."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    yield
    reset_accelerate_state()


def _png(rng: np.random.Generator, size: int = 32) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write_cifar_like(folder: Path, *, schema: str, num_classes: int, train_per_class: int, test_per_class: int,
                     seed: int = 0) -> Path:
    """A small parquet dataset laid out like the Hub repo ``uoft-cs/cifar10`` (schema "cifar10") or
    ``uoft-cs/cifar100`` (schema "cifar100": ``img``, ``fine_label``, ``coarse_label``)."""
    import datasets

    rng = np.random.default_rng(seed)
    names = [f"class_{k}" for k in range(num_classes)]
    if schema == "cifar10":
        feats = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=names)})
        sub = "plain_text"
    elif schema == "cifar100":
        feats = datasets.Features({
            "img": datasets.Image(),
            "fine_label": datasets.ClassLabel(names=names),
            "coarse_label": datasets.ClassLabel(names=[f"super_{k}" for k in range(max(1, num_classes // 5))]),
        })
        sub = "cifar100"
    else:
        raise ValueError(schema)
    (folder / sub).mkdir(parents=True, exist_ok=True)
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = np.repeat(np.arange(num_classes), per_class)
        rng.shuffle(labels)
        rows = {"img": [{"bytes": _png(rng), "path": None} for _ in labels]}
        if schema == "cifar10":
            rows["label"] = labels.tolist()
        else:
            rows["fine_label"] = labels.tolist()
            rows["coarse_label"] = (labels // 5).tolist()
        target = folder / sub / f"{split}-00000-of-00001.parquet"
        datasets.Dataset.from_dict(rows, features=feats).to_parquet(str(target))
    return folder


@pytest.fixture(scope="session")
def cifar10_like(tmp_path_factory) -> Path:
    return write_cifar_like(tmp_path_factory.mktemp("cifar10_like"), schema="cifar10", num_classes=10,
                            train_per_class=30, test_per_class=4)


@pytest.fixture(scope="session")
def cifar100_like(tmp_path_factory) -> Path:
    return write_cifar_like(tmp_path_factory.mktemp("cifar100_like"), schema="cifar100", num_classes=20,
                            train_per_class=12, test_per_class=2)

ZOO_NAME = "resnet8-digitslt-refcal_joint"
REPO_ID = f"refcal-zoo/{ZOO_NAME}"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
_CACHE: dict[str, Path] = {}




@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A finished run folder of the trimmed default recipe (built once per session)."""
    if "run" not in _CACHE:
        from refcal_zoo.config import load_config
        from refcal_zoo.engine import train

        out = tmp_path_factory.mktemp("zoo_run") / "run"
        cfg = load_config(REPO / "recipes" / "configs" / "default.yaml",
                          ["train.epochs=1", "train.batch_size=64", f"output_dir={out}"])
        try:
            train(cfg, overwrite=True)
        finally:
            reset_accelerate_state()
        _CACHE["run"] = out
    return _CACHE["run"]


@pytest.fixture(scope="session")
def published(trained_run, tmp_path_factory) -> Path:
    """``publish_run`` of the session run (read-only for tests: copy before modifying)."""
    if "published" not in _CACHE:
        from refcal_zoo import publish_run

        _CACHE["published"] = publish_run(trained_run, tmp_path_factory.mktemp("zoo_pub") / ZOO_NAME,
                                          repo_id=REPO_ID)
    return _CACHE["published"]


@pytest.fixture(autouse=True)
def _isolated_datasets_cache(tmp_path_factory, monkeypatch):
    """``datasets.load_dataset`` caches Arrow files under HF_DATASETS_CACHE: keep them out of ~/.cache."""
    import datasets

    cache = tmp_path_factory.getbasetemp() / "hf_datasets_cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)


@pytest.fixture
def hf_env(tmp_path, monkeypatch) -> Path:
    """An isolated, offline Hugging Face home: returns the hub cache folder (empty)."""
    home = tmp_path / "hf_home"
    cache = home / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HOME", str(home))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(hf_constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "REFCAL_ZOO_MIRROR", "REFCAL_ZOO_ORG",
                "REFCAL_ZOO_INDEX"):
        monkeypatch.delenv(var, raising=False)
    return cache


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a socket fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def seed_hf_cache(cache: Path, repo_id: str, folder: Path, *, commit: str = COMMIT, ref: str = "main") -> Path:
    """Lay ``folder``'s files out as the HF cache would after a download of ``repo_id`` at ``ref``."""
    org, name = repo_id.split("/")
    repo = cache / f"models--{org}--{name}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for f in folder.iterdir():
        if f.is_file():
            shutil.copy2(f, snapshot / f.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return snapshot


def write_index(folder: Path, updates: dict[str, dict], *, monkeypatch=None) -> Path:
    """A copy of the shipped index with every entry reset to recipe-only (so tests do not depend on what has been
    published) and ``updates`` merged into entries; set as $REFCAL_ZOO_INDEX if asked."""
    data = yaml.safe_load(INDEX_PATH.read_text())
    for entry in data["models"].values():
        entry.update(status="recipe-only", sha256=None, revision=None, metrics=None, temperature=None)
    for name, fields in updates.items():
        data["models"].setdefault(name, dict(data["models"].get(ZOO_NAME, {})))
        data["models"][name].update(fields)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "index.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    if monkeypatch is not None:
        monkeypatch.setenv("REFCAL_ZOO_INDEX", str(path))
    return path


def publish_entry(published: Path, **extra) -> dict:
    """Index fields that mark the session's published folder as the published zoo entry."""
    import json

    sha = hashlib.sha256((published / "model.safetensors").read_bytes()).hexdigest()
    metrics = json.loads((published / "metrics.json").read_text())
    return {"status": "published", "sha256": sha, "revision": None, "metrics": {"accuracy": metrics["accuracy"]},
            **extra}


def tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


def copy_folder(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


_TRAINING_FIXTURES = {"trained_run", "published", "finished_run", "reference_run", "short_run"}


def pytest_collection_modifyitems(config, items):
    """Tests that need a full training run (through the session fixtures) are ``slow``: ``-m 'not slow'`` skips them
    while developing; CI runs everything."""
    for item in items:
        if _TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
