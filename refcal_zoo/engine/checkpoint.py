"""Checkpoints for exact resumption: Accelerate's state plus the trainer's and the method's own state.

Each checkpoint is ``checkpoints/step_<global step>/`` in the run's staging folder, written to a temporary
folder first and renamed when complete, so a crash mid-save leaves the previous checkpoint valid. It holds what
``accelerator.save_state`` writes (model weights as safetensors, optimizer, RNG states of every process), the
method's state (CRL history, AdaFocal gammas) as safetensors, and ``trainer_state.json`` (stage, epoch, step,
schedule, best score, partial epoch sums), written last. Nothing here is unpickled beyond what Accelerate loads
with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

__all__ = ["TrainerState", "complete_checkpoints", "latest_checkpoint", "restore_checkpoint", "save_checkpoint"]

STATE_FILE = "trainer_state.json"
METHOD_FILE = "method_state.safetensors"
_STEP_DIR = re.compile(r"^step_(\d+)$")


@dataclass
class TrainerState:
    stage: int = 0  # index of the stage in progress
    epoch: int = 0  # epoch in progress within the stage (0-based)
    step_in_epoch: int = 0  # batches of that epoch already trained
    global_step: int = 0  # optimiser steps over the whole run
    best_score: float | None = None  # model selection on the validation split
    best_epoch: int | None = None
    train_seconds: float = 0.0
    train_images: int = 0
    scheduler: dict[str, Any] = field(default_factory=dict)
    epoch_sums: dict[str, float] = field(default_factory=dict)  # running sums of the epoch in progress
    # the precision, layout and compilation the run started with (``SpeedChoice`` as a dict); a resumed run keeps
    # them even where ``auto`` would now resolve otherwise. None: a checkpoint written before they were recorded
    speed: dict[str, Any] | None = None
    # where the run trained: [first epoch (1-based, counted over all stages), device name, mixed precision] per
    # stretch of training; a run resumed on another machine (a GPU lent for minutes), or in another precision
    # (--respeed), adds one. Empty: a checkpoint from before the record; no precision: from before that was recorded
    devices: list[list[Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrainerState:
        return cls(**json.loads(text))


def complete_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint folders that finished writing, newest first."""
    root = folder / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found, reverse=True) if (p / STATE_FILE).is_file()]


def save_checkpoint(accelerator: Accelerator, folder: Path, state: TrainerState,
                    method_state: dict[str, torch.Tensor], keep: int = 2) -> Path | None:
    """Write ``checkpoints/step_<n>`` atomically (every process takes part; the main one writes the files)."""
    root = folder / "checkpoints"
    final = root / f"step_{state.global_step}"
    tmp = root / f".tmp-step_{state.global_step}"
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()  # every process has written its own files (e.g. its RNG state) into tmp
    if accelerator.is_main_process:
        save_file({k: v.detach().cpu().contiguous() for k, v in method_state.items()}, str(tmp / METHOD_FILE))
        (tmp / STATE_FILE).write_text(state.to_json())  # last: marks the checkpoint as complete
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in complete_checkpoints(folder)[keep:]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _readable(ckpt: Path) -> None:
    """Raise if a checkpoint's files are missing or unreadable (cheap checks before committing to it)."""
    TrainerState.from_json((ckpt / STATE_FILE).read_text())
    models = sorted(ckpt.glob("model*.safetensors"))
    if not models:
        raise FileNotFoundError("no model*.safetensors")
    for f in [*models, ckpt / METHOD_FILE]:
        load_file(str(f))  # parses the safetensors header and data: a truncated file fails here
    if not (ckpt / "optimizer.bin").is_file() or not list(ckpt.glob("random_states_*.pkl")):
        raise FileNotFoundError("optimizer.bin or random_states_*.pkl missing")


def latest_checkpoint(folder: Path) -> tuple[TrainerState, Path] | None:
    """The newest complete, readable checkpoint; corrupt or partial ones are skipped with a warning."""
    for ckpt in complete_checkpoints(folder):
        try:
            _readable(ckpt)
            return TrainerState.from_json((ckpt / STATE_FILE).read_text()), ckpt
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is skipped, the previous one tried
            warnings.warn(f"skipping unreadable checkpoint {ckpt}: {type(exc).__name__}: {exc}", stacklevel=2)
    return None


def restore_checkpoint(accelerator: Accelerator, ckpt: Path) -> dict[str, torch.Tensor]:
    """Load Accelerate's state (after ``prepare`` of the same objects) and return the method's saved state."""
    accelerator.load_state(str(ckpt))
    return load_file(str(ckpt / METHOD_FILE))
