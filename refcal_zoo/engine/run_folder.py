"""The run folder: built in a staging folder, moved into place only when the run has finished.

A crash never leaves a half-written run folder, and ``--overwrite`` replaces an earlier run only once the new
one is complete (the earlier folder is kept until then).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import RunFolderError
from ..fileio import replace_folder

__all__ = ["FINISHED_MARKER", "check_output_dir", "finalize_run_dir", "staging_dir"]

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
    replace_folder(staging, run_dir)
