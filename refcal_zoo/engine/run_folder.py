"""The run folder: built in a staging folder, moved into place only when the run has finished.

A crash never leaves a half-written run folder, and ``--overwrite`` replaces an earlier run only once the new
one is complete (the earlier folder is kept until then).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from ..errors import RunFolderError

__all__ = ["check_output_dir", "finalize_run_dir", "staging_dir", "write_json", "write_text", "write_yaml"]

FINISHED_MARKER = "metrics.json"


def staging_dir(run_dir: Path) -> Path:
    return run_dir.with_name(run_dir.name + ".incomplete")


def check_output_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse an output folder that holds a finished run (unless ``overwrite``) or files that are not a run."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"output path '{run_dir}' exists and is not a folder; choose another output_dir")
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return
    is_run = (run_dir / "config.yaml").is_file()
    if not is_run:
        raise RunFolderError(f"output folder '{run_dir}' exists and is not a refcal_zoo run folder; "
                             "choose another output_dir")
    if not overwrite:
        what = "a finished run" if (run_dir / FINISHED_MARKER).is_file() else "an earlier run"
        raise RunFolderError(f"output folder '{run_dir}' already holds {what}; pass --overwrite to replace it "
                             "(kept until the new run finishes) or set output_dir=...")


def finalize_run_dir(staging: Path, run_dir: Path) -> None:
    """Move the finished staging folder into place, replacing an earlier run only now."""
    old = None
    if run_dir.exists():
        old = run_dir.with_name(f"{run_dir.name}.old-{os.getpid()}")
        os.replace(run_dir, old)
    os.replace(staging, run_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as fh:
        fh.write(data)
    os.chmod(fh.name, 0o666 & ~_umask())  # tempfile creates 0600; give the file normal permissions
    os.replace(fh.name, path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: Path, text: str) -> None:
    _atomic_write(path, text.encode())


def write_json(path: Path, obj: Any) -> None:
    _atomic_write(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def write_yaml(path: Path, obj: Any) -> None:
    _atomic_write(path, yaml.safe_dump(obj, sort_keys=False).encode())
