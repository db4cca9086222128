"""Experiment tracking through Accelerate's tracker API, plus a JSON-lines tracker that always runs.

Every run folder gets ``log.jsonl`` (one record per epoch); ``train.log_with`` adds Accelerate's own trackers
(e.g. ``tensorboard``, written under ``<run>/tracking/``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from accelerate.tracking import GeneralTracker, on_main_process

from ..errors import RunFolderError
from ..fileio import write_text

__all__ = ["JsonlTracker", "truncate_log"]


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _plain(value.item())
    return value


class JsonlTracker(GeneralTracker):
    """Appends ``{"step": step, **values}`` as one JSON line per ``accelerator.log`` call."""

    name = "jsonl"
    requires_logging_directory = False

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)

    @property
    def tracker(self):
        return self.path

    @on_main_process
    def store_init_configuration(self, values: dict) -> None:
        pass  # the resolved configuration is config.yaml

    @on_main_process
    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        record = {"step": step, **{k: _plain(v) for k, v in values.items()}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")


def truncate_log(path: Path, keep) -> None:
    """Keep only the records for which ``keep(record)`` is true (used when resuming from a checkpoint), rewriting
    the file atomically. A last line cut short (a process killed while appending) is dropped: its epoch ended after
    the newest checkpoint, since records are logged before the epoch's checkpoint is written."""
    if not path.is_file():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append((line, json.loads(line)))
        except json.JSONDecodeError:
            if number < len(lines):
                raise RunFolderError(f"{path} line {number} is not a JSON record; the run's log is damaged "
                                     "(repair or remove that line, then resume)") from None
    write_text(path, "".join(line + "\n" for line, record in records if keep(record)))
