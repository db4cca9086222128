"""The training run: config -> data -> model -> method -> Accelerate loop -> evaluation -> run folder.

Modelled on accelerate's ``examples/complete_cv_example.py``: one readable loop, the ``Accelerator`` does the
device, precision and distribution work; only the main process writes files. ``Trainer`` holds the run's state
and names its stages (setup, fit each method stage, select and export, evaluate and write); ``train()`` drives it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from .. import __version__
from ..calibration import fit_temperature, temperature_scaled_nll
from ..config import RESUMABLE_CHANGES, Config, config_to_dict, flatten, is_resumable_change
from ..data import BatchTransform, PreparedData, TensorImageDataset, indices_sha256, make_loader, prepare_data
from ..errors import ConfigError, RunFolderError
from ..fileio import write_json, write_yaml
from ..methods import Stage, build_stages
from ..metrics import UndefinedMetricWarning, evaluate_with_temperature, reliability_diagram
from ..models import create_model
from ..models.export import export_timm_folder
from ..record import (
    BudgetRecord,
    DatasetRecord,
    DeviceStretch,
    MethodRecord,
    PrecisionRecord,
    ProvenanceRecord,
    RunRecord,
    SelectionRecord,
    dataset_identity,
    join_and,
)
from .checkpoint import TrainerState, complete_checkpoints, latest_checkpoint, restore_checkpoint, save_checkpoint
from .evaluate import predict_logits
from .hardware import SpeedChoice, keep_freed_host_memory, resolve_speed
from .loop import StepContext, train_one_epoch
from .optim import build_optimizer, build_scheduler
from .run_folder import RunLock, check_output_dir, finalize_run_dir, staging_dir
from .tracking import JsonlTracker, truncate_log
from .validate import validate_config

__all__ = ["RunResult", "Trainer", "train"]

@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, float]
    train_seconds: float
    train_images_per_second: float


def _validate_before_writing(cfg: Config, overwrite: bool) -> None:
    validate_config(cfg)  # every range, choice and registry rule at once, before any data or file


def config_differences(saved: dict[str, Any], cfg: Config) -> list[str]:
    """Flat keys whose value in ``cfg`` differs from the checkpointed ``saved`` config (a nested dict) in a way
    that forbids resuming. A key absent from ``saved`` (added to the schema since) counts only if its value now
    differs from its default; budget, logging and post-training keys (``RESUMABLE_CHANGES``) never count."""
    flat_saved = flatten(saved)
    now = flatten(config_to_dict(cfg))
    defaults = flatten(config_to_dict(Config()))
    differ = []
    for k in sorted(set(flat_saved) | set(now)):
        if is_resumable_change(k):
            continue
        if k not in flat_saved and k in defaults and now.get(k) == defaults[k]:
            continue  # a newer key at its default: the checkpointed run behaved exactly so
        if flat_saved.get(k) != now.get(k):
            differ.append(k)
    return differ


def _resume_point(cfg: Config, stage_dir: Path) -> tuple[TrainerState, Path]:
    """The checkpoint to resume from, after checking that the configuration still describes the same run."""
    found = latest_checkpoint(stage_dir) if stage_dir.is_dir() else None
    if found is None:
        raise RunFolderError(f"nothing to resume: no complete checkpoint in '{stage_dir}'; run without --resume")
    saved = yaml.safe_load((stage_dir / "config.yaml").read_text()) or {}
    differ = config_differences(saved, cfg)
    if differ:
        flat_saved, now = flatten(saved), flatten(config_to_dict(cfg))
        detail = ", ".join(f"{k}: {flat_saved.get(k, '(absent)')!r} -> {now.get(k, '(absent)')!r}" for k in differ)
        may = ", ".join(sorted(k + "*" if k.endswith(".") else k for k in RESUMABLE_CHANGES))
        raise ConfigError(f"cannot resume: the configuration differs from the checkpointed run in {detail} "
                          f"(only budget, logging and post-training keys may change: {may})")
    return found


#: what identifies a run's data in its ``lt_indices.json``: the split indices and counts, the source's fingerprints
_DATA_IDENTITY = ("train_sha256", "val_sha256", "train_counts", "val_counts", "rho", "seed", "n_max")


def _check_same_data(saved_file: Path, now: dict, path: str) -> None:
    """Refuse to resume on other data than the checkpointed run's (``dataset.path`` may name another copy)."""
    if not saved_file.is_file():
        return  # a run interrupted before writing it has no checkpoint either
    saved = json.loads(saved_file.read_text())
    keys = [k for k in _DATA_IDENTITY if saved.get(k) != now.get(k)]
    prints = ((saved.get("source") or {}).get("fingerprints"), (now.get("source") or {}).get("fingerprints"))
    if prints[0] and prints[1] and prints[0] != prints[1]:
        keys.append("source fingerprints")
    if keys:
        raise ConfigError(f"cannot resume: dataset.path={path} gives other data than the checkpointed run "
                          f"({', '.join(keys)} differ); point dataset.path at the run's dataset (or a copy or "
                          "export of it)")


def _is_launch_main_process() -> bool:
    """Rank 0 of a ``torchrun`` / ``accelerate launch`` group (or a plain process), known before Accelerate starts."""
    return os.environ.get("RANK", "0") == "0"


def _check_unfinished(stage_dir: Path, overwrite: bool) -> None:
    if stage_dir.is_dir() and complete_checkpoints(stage_dir) and not overwrite:
        raise RunFolderError(f"an unfinished run with checkpoints is in '{stage_dir}'; pass --resume to continue "
                             "it or --overwrite to discard it and start over")


def _make_accelerator(cfg: Config, stage_dir: Path, speed: SpeedChoice) -> Accelerator:
    trackers = [JsonlTracker(stage_dir / "log.jsonl"), *cfg.train.log_with]
    return Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=speed.mixed_precision,
        gradient_accumulation_steps=cfg.train.grad_accum_steps,
        log_with=trackers,
        project_config=ProjectConfiguration(project_dir=str(stage_dir), logging_dir=str(stage_dir / "tracking")),
        dynamo_backend="inductor" if speed.compile else None,
    )


def selection_score(rule: str, record: dict[str, Any]) -> float:
    """What ``train.select`` minimises over the epochs' validation records (lower is better)."""
    if rule == "best_nll":
        return record["val_nll"]
    if rule == "best_ts_nll":
        return record["val_ts_nll"]
    if rule == "best_accuracy":
        return -record["val_accuracy"]
    raise ValueError(f"no selection score for train.select={rule!r}")


def improves(score: float | None, best: float | None) -> bool:
    """Whether an epoch's selection score beats the best so far; a non-finite score (a diverged epoch) never does,
    nor does it become the best that later epochs must beat."""
    return score is not None and math.isfinite(score) and (best is None or score < best)


def _fault_injection(batches: int) -> None:
    """Test hook: SIGKILL this process after a given number of training batches (REFCAL_ZOO_KILL_AT_BATCH)."""
    target = os.environ.get("REFCAL_ZOO_KILL_AT_BATCH")
    if target is not None and int(target) == batches:
        os.kill(os.getpid(), signal.SIGKILL)


def _build_model(cfg: Config, data: PreparedData) -> tuple[torch.nn.Module, tuple, tuple]:
    k = data.num_classes
    if cfg.model.num_classes is not None and cfg.model.num_classes != k:
        raise ConfigError(f"model.num_classes={cfg.model.num_classes} but the dataset has {k} classes; "
                          "remove model.num_classes or fix it")
    probe_cfg = timm.models.get_pretrained_cfg(cfg.model.arch.split(".", 1)[0])
    default_mean = tuple(probe_cfg.mean) if probe_cfg is not None else (0.5, 0.5, 0.5)
    default_std = tuple(probe_cfg.std) if probe_cfg is not None else (0.5, 0.5, 0.5)
    mean = tuple(cfg.dataset.mean) if cfg.dataset.mean else default_mean
    std = tuple(cfg.dataset.std) if cfg.dataset.std else default_std
    h, w = data.train_images.shape[-2:]
    overlay = dict(mean=mean, std=std, num_classes=k, input_size=(3, int(h), int(w)), crop_pct=1.0,
                   label_names=tuple(data.class_names))
    model = create_model(cfg.model.arch, num_classes=k, drop_rate=cfg.model.drop_rate,
                         pretrained_cfg_overlay=overlay, **cfg.model.kwargs)
    return model, mean, std


def train(cfg: Config, *, overwrite: bool = False, resume: bool = False, respeed: bool = False) -> RunResult:
    """Train, evaluate and write the run folder described by ``cfg`` (see README: run folder).

    ``resume=True`` continues the unfinished run of the same configuration from its newest complete checkpoint;
    the result is bit-identical to an uninterrupted run on the same hardware, because the resumed run keeps the
    precision, memory layout and compilation it started with. ``respeed=True`` (with ``resume``) chooses them
    again for this machine instead, e.g. to finish on a CPU without native bf16 a run started in bf16 on a lent
    GPU (emulated bf16 is several times slower than fp32 there); the run record then names each stretch's
    precision, and the result is no longer bit-identical to an uninterrupted run.
    """
    if respeed and not resume:
        raise ConfigError("respeed only applies to a resumed run: pass --resume with --respeed, or drop --respeed")
    _validate_before_writing(cfg, overwrite)
    lock = RunLock(cfg.run_dir) if _is_launch_main_process() else None  # one owner from start to final rename
    if lock is not None:
        lock.acquire()
    try:
        return Trainer(cfg, overwrite=overwrite, resume=resume, respeed=respeed).run()
    finally:
        if lock is not None:
            lock.release()


class Trainer:
    """One training run in stages: :meth:`setup` (run folder, Accelerator, data, model, method stages), then
    :meth:`fit_stage` for every stage (:meth:`run_epoch` per epoch, :meth:`checkpoint` on schedule), then
    :meth:`select_and_export` and :meth:`evaluate_and_write`. ``self.state`` is what a checkpoint holds;
    ``train()`` takes the run folder's lock and drives :meth:`run`."""

    def __init__(self, cfg: Config, *, overwrite: bool = False, resume: bool = False, respeed: bool = False) -> None:
        self.cfg, self.overwrite, self.resume, self.respeed = cfg, overwrite, resume, respeed
        self.run_dir = cfg.run_dir
        self.stage_dir = staging_dir(self.run_dir)
        self.epochs_before = 0  # epochs of the stages before the current one: the tracker's step offset

    def run(self) -> RunResult:
        self.setup()
        for index, stage in enumerate(self.stages):
            self.fit_stage(index, stage)
        self.select_and_export()
        return self.evaluate_and_write()

    # ------------------------------------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Check the run folder (or the checkpoint to resume), then build the Accelerator, data, model and stages
        and open the staging folder and trackers."""
        cfg, run_dir, stage_dir = self.cfg, self.run_dir, self.stage_dir
        if self.resume:
            self.state, self.ckpt = _resume_point(cfg, stage_dir)
            if not self.overwrite and run_dir.is_dir() and any(run_dir.iterdir()):
                raise RunFolderError(f"output folder '{run_dir}' holds another run that the resumed run would "
                                     "replace; pass --overwrite with --resume to replace it, or move it away")
        else:
            check_output_dir(run_dir, self.overwrite)
            _check_unfinished(stage_dir, self.overwrite)
            self.state, self.ckpt = TrainerState(), None
        earlier_precision = (self.state.speed or {}).get("mixed_precision")  # until this restart (None: unknown)
        if self.resume and self.state.speed is not None and not self.respeed:
            self.speed = SpeedChoice(**self.state.speed)  # a run keeps the precision it started with
        else:  # a new run, a respeed, or a checkpoint from before the record (`auto` as it resolved back then)
            self.speed = resolve_speed(cfg.train.mixed_precision, cfg.train.channels_last, cfg.train.compile,
                                       "cuda" if torch.cuda.is_available() else "cpu",
                                       legacy_cpu_bf16=self.resume and not self.respeed)
            if self.respeed and self.state.speed is not None and self.state.speed != asdict(self.speed):
                print(f"respeed: {_speed_words(SpeedChoice(**self.state.speed))} until now, "
                      f"{_speed_words(self.speed)} from here on", flush=True)
        self.state.speed = asdict(self.speed)
        self.accelerator = accelerator = _make_accelerator(cfg, stage_dir, self.speed)
        # numerics unchanged; on CPU it saves the kernel time of re-faulting freed activations every step
        self.host_memory_kept = accelerator.device.type == "cpu" and keep_freed_host_memory()
        set_seed(cfg.train.seed)
        self.data = data = prepare_data(cfg.dataset)
        if self.resume:
            _check_same_data(stage_dir / "lt_indices.json", data.lt_record(), cfg.dataset.path)
        self.model, self.mean, self.std = _build_model(cfg, data)
        if self.speed.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.stages = build_stages(cfg, len(data.train_labels), world_size=accelerator.num_processes,
                                   class_counts=data.train_class_counts)
        _note_device(self.state, _device_name(accelerator), [st.train.epochs for st in self.stages], self.resume,
                     precision=str(accelerator.mixed_precision), earlier_precision=earlier_precision)
        for st in self.stages:
            BatchTransform(self.mean, self.std, augment=st.augment)  # validates augmentation names before writing
            st.method.check_model(self.model)  # e.g. mislas needs a linear head: known now, not after stage 1

        # data stays uint8; on a GPU the whole (small) training set lives on the device and batches are gathered there
        on_gpu = accelerator.device.type == "cuda"
        self.train_set = TensorImageDataset(*(t.to(accelerator.device) if on_gpu else t
                                              for t in (data.train_images, data.train_labels)))
        self.val_loader, self.test_loader = accelerator.prepare(
            make_loader(TensorImageDataset(data.val_images, data.val_labels), cfg.train.eval_batch_size, train=False),
            make_loader(TensorImageDataset(data.test_images, data.test_labels), cfg.train.eval_batch_size,
                        train=False),
        )
        self.eval_tf = BatchTransform(self.mean, self.std, augment="none", channels_last=self.speed.channels_last)
        if accelerator.is_main_process:
            if not self.resume:
                if stage_dir.exists():
                    shutil.rmtree(stage_dir)
                stage_dir.mkdir(parents=True)
                write_json(stage_dir / "lt_indices.json", data.lt_record())
            else:
                done_before = (self.state.stage, self.state.epoch)  # epochs finished before the checkpoint stay
                truncate_log(stage_dir / "log.jsonl", lambda r: (r["stage_index"], r["epoch"]) <= done_before)
            write_yaml(stage_dir / "config.yaml", config_to_dict(cfg))
        accelerator.wait_for_everyone()
        accelerator.init_trackers(cfg.name, config=_tracker_config(cfg))
        plan = " then ".join(f"{st.name} ({st.train.epochs} epochs)" for st in self.stages)
        accelerator.print(
            f"{cfg.name}: {cfg.model.arch} on {cfg.dataset.path} (rho={cfg.dataset.rho:g}) | train "
            f"{len(data.train_labels)} / val {len(data.val_labels)} / test {len(data.test_labels)} images, "
            f"{data.num_classes} classes | method {cfg.method.name} ({cfg.method.base_loss}): {plan} | device "
            f"{accelerator.device} x{accelerator.num_processes}, precision {accelerator.mixed_precision}"
            f"{'' if not self.resume else ' (chosen again: respeed)' if self.respeed else ' (as checkpointed)'}"
            f"{', channels-last' if self.speed.channels_last else ''}{', compiled' if self.speed.compile else ''}"
            f"{', freed host memory kept' if self.host_memory_kept else ''}"
            + (f" | resuming from {self.ckpt.name}" if self.ckpt else "")
        )

    # ----------------------------------------------------------------------------------------------- stages
    def fit_stage(self, index: int, st: Stage) -> None:
        """Train stage ``index`` (or, when the checkpoint is past it, rebuild only its structure)."""
        accelerator, state, cfg = self.accelerator, self.state, self.cfg
        method = st.method.to(accelerator.device)
        if index < state.stage:  # finished before the checkpoint: rebuild the structure only
            self.model = method.unwrap(method.wrap(self.model))
            self.epochs_before += st.train.epochs
            return
        accelerator.free_memory()  # checkpoints of this stage hold this stage's model and optimizer only
        module = method.wrap(self.model)
        raw_loader = make_loader(self.train_set, st.train.batch_size, train=True, seed=cfg.train.seed + index,
                                 class_balanced=st.sampler == "class_balanced")
        optimizer = build_optimizer(method.param_groups(module) or module, st.train)
        module, optimizer, train_loader = accelerator.prepare(module, optimizer, raw_loader)
        scheduler = build_scheduler(optimizer, math.ceil(len(train_loader) / cfg.train.grad_accum_steps), st.train)
        step = StepContext(module, method, optimizer, scheduler,
                           BatchTransform(self.mean, self.std, augment=st.augment,
                                          channels_last=self.speed.channels_last),
                           accelerator, grad_clip_norm=st.train.grad_clip_norm)
        start_batch, start_sums = 0, None
        if self.ckpt is not None and index == state.stage:
            method.load_state_dict(restore_checkpoint(accelerator, self.ckpt))
            scheduler.load_state_dict(state.scheduler)
            start_batch, start_sums = state.step_in_epoch, state.epoch_sums or None
            self.ckpt = None  # it holds this stage's objects only: the next stage starts fresh
        else:
            state.epoch, state.step_in_epoch, state.best_score, state.best_epoch = 0, 0, None, None
        for epoch in range(state.epoch, st.train.epochs):
            self.run_epoch(index, st, step, train_loader, epoch, start_batch, start_sums)
            start_batch, start_sums = 0, None
        # without Accelerate's autocast wrapper: the final validation/test logits are computed in float32
        self.model = method.unwrap(accelerator.unwrap_model(module, keep_fp32_wrapper=False, keep_torch_compile=False))
        self.epochs_before += st.train.epochs
        state.stage, state.epoch = index + 1, 0

    def run_epoch(self, index: int, st: Stage, step: StepContext, train_loader: DataLoader, epoch: int,
                  start_batch: int = 0, start_sums: dict[str, float] | None = None) -> None:
        """One epoch of stage ``index``: train (checkpointing every ``checkpoint_every_steps``), validate, select,
        log, and checkpoint at the epoch's end when due."""
        accelerator, state, cfg, method = self.accelerator, self.state, self.cfg, step.method
        prefix = f"{st.name} " if len(self.stages) > 1 else ""
        method.start_epoch(epoch)
        loader = accelerator.skip_first_batches(train_loader, start_batch) if start_batch else train_loader
        loader.set_epoch(epoch)  # the permutation of this epoch (Accelerate also passes it to our sampler)
        n_batches = len(train_loader)

        def on_batch_end(done: int, snapshot: Callable[[], dict[str, float]]) -> None:
            state.global_step += 1
            _fault_injection(state.global_step)
            every = cfg.train.checkpoint_every_steps
            if every and state.global_step % every == 0 and done < n_batches:
                self.checkpoint(index, step, epoch, done, snapshot())

        stats = train_one_epoch(step, loader, start_batch=start_batch, start_sums=start_sums,
                                on_batch_end=on_batch_end, desc=f"{prefix}epoch {epoch + 1}/{st.train.epochs}")
        state.train_seconds += stats.seconds
        state.train_images += stats.images * accelerator.num_processes
        record = {"stage": st.name, "stage_index": index, "epoch": epoch + 1, "train_loss": stats.loss}
        if method.trains_classifier:
            record["train_accuracy"] = stats.accuracy
        record.update({f"train_{k}": v for k, v in stats.extras.items()})
        if method.trains_classifier:
            record.update(self._validate_and_select(step, epoch))
        else:
            record.update(method.end_epoch(None, None))
        record["lr"] = step.optimizer.param_groups[0]["lr"]
        record["images_per_second"] = stats.images * accelerator.num_processes / max(stats.seconds, 1e-9)
        accelerator.log(record, step=self.epochs_before + epoch + 1)
        accelerator.print(_epoch_line(prefix, epoch, st.train.epochs, record))
        every = cfg.train.checkpoint_every_epochs
        if every and ((epoch + 1) % every == 0 or epoch + 1 == st.train.epochs):
            self.checkpoint(index, step, epoch + 1, 0, None)

    def _validate_and_select(self, step: StepContext, epoch: int) -> dict[str, Any]:
        """The epoch's validation accuracy, NLL and NLL after temperature scaling, the method's end-of-epoch update,
        and model selection (the selected weights are exported to ``best/``)."""
        accelerator, state, method, select = self.accelerator, self.state, step.method, self.cfg.train.select
        record: dict[str, Any] = {}
        val_logits, val_labels = predict_logits(step.module, self.val_loader, self.eval_tf, accelerator)
        record["val_accuracy"] = (val_logits.argmax(1) == val_labels).float().mean().item()
        record["val_nll"] = torch.nn.functional.cross_entropy(val_logits, val_labels).item()
        finite = bool(torch.isfinite(val_logits).all())  # else no temperature exists, and the epoch is never selected
        record["val_ts_nll"] = (temperature_scaled_nll(val_logits.double().numpy(), val_labels.numpy()) if finite
                                else math.nan)
        record.update(method.end_epoch(val_logits.to(accelerator.device), val_labels.to(accelerator.device)))
        score = selection_score(select, record) if select != "last" else None
        if improves(score, state.best_score):
            state.best_score, state.best_epoch = score, epoch + 1
            if accelerator.is_main_process:
                plain = accelerator.unwrap_model(step.module, keep_torch_compile=False)  # no _orig_mod. keys
                _export(method.classifier_of(plain), self.stage_dir / "best", self.data)
            record["selected"] = True
        return record

    def checkpoint(self, index: int, step: StepContext, epoch: int, batches: int,
                   sums: dict[str, float] | None) -> None:
        """Save a checkpoint at ``batches`` batches into ``epoch`` of stage ``index`` (``sums``: the epoch's
        running sums so far)."""
        state = self.state
        state.stage, state.epoch, state.step_in_epoch = index, epoch, batches
        state.scheduler, state.epoch_sums = step.scheduler.state_dict(), sums or {}
        save_checkpoint(self.accelerator, self.stage_dir, state, step.method.state_dict(),
                        keep=self.cfg.train.keep_checkpoints)

    # -------------------------------------------------------------------------------------------- finishing
    def select_and_export(self) -> None:
        """Export the last weights to ``last/`` and load the selected epoch's (``best/``) for the evaluation."""
        if self.accelerator.is_main_process:
            _export(self.model, self.stage_dir / "last", self.data)
        self.accelerator.wait_for_everyone()
        best = self.stage_dir / "best" / "model.safetensors"
        if self.cfg.train.select != "last" and best.is_file():
            self.model.load_state_dict(load_file(str(best)))  # copied to the device

    def evaluate_and_write(self) -> RunResult:
        """Fit the temperature on validation, evaluate on test, write the run folder and rename it into place."""
        cfg, accelerator, state, stage_dir, data = self.cfg, self.accelerator, self.state, self.stage_dir, self.data
        select = cfg.train.select
        val_logits, val_labels = predict_logits(self.model, self.val_loader, self.eval_tf, accelerator)
        test_logits, test_labels = predict_logits(self.model, self.test_loader, self.eval_tf, accelerator)
        images_per_second = state.train_images / state.train_seconds if state.train_seconds > 0 else math.nan
        metrics: dict[str, Any] = {}
        if accelerator.is_main_process:  # every process holds all logits (gathered); one evaluates and writes
            temperature = _fit_temperature(cfg, val_logits, val_labels)  # on validation only, never on test
            metrics = _evaluate(test_logits, test_labels, data, temperature)
            total_epochs = sum(st.train.epochs for st in self.stages)
            record = _run_record(cfg, data, metrics, images_per_second, state.train_seconds,
                                 describe_devices(state.devices, total_epochs), temperature,
                                 SelectionRecord(select, state.best_epoch if select != "last" else None),
                                 describe_precisions(state.devices, total_epochs, str(accelerator.mixed_precision)),
                                 self.speed.channels_last)
            export_timm_folder(self.model, stage_dir, label_names=data.class_names, record=record)
            _write_diagrams(stage_dir, cfg, test_logits, test_labels, temperature)
            _write_npz(stage_dir / "test_predictions.npz", logits=test_logits.numpy().astype(np.float32),
                       labels=test_labels.numpy().astype(np.int64))  # raw test logits, for later analysis
            _write_npz(stage_dir / "val_predictions.npz", logits=val_logits.numpy().astype(np.float32),
                       labels=val_labels.numpy().astype(np.int64))  # raw validation logits: conformal/selective fits
            if temperature is not None:
                write_json(stage_dir / "temperature.json", {
                    "temperature": temperature, "method": cfg.calibration.temperature_scaling,
                    "fitted_on": "validation", "n": len(val_labels)})
            shutil.rmtree(stage_dir / "checkpoints", ignore_errors=True)  # the run is complete: resumption state goes
            write_json(stage_dir / "metrics.json", _json_ready(metrics))  # written last: marks the run as finished
            finalize_run_dir(stage_dir, self.run_dir, overwrite=self.overwrite)
            _print_table(accelerator, cfg, metrics, self.run_dir, temperature)
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return RunResult(self.run_dir, metrics, state.train_seconds, images_per_second)


def _write_npz(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)


def _export(model: torch.nn.Module, folder: Path, data: PreparedData) -> None:
    export_timm_folder(model, folder, label_names=data.class_names)  # best/ last/: weights only, no record


def _tracker_config(cfg: Config) -> dict[str, Any]:
    """The flat configuration with values every tracker accepts (numbers, strings, booleans)."""
    out = {}
    for k, v in flatten(config_to_dict(cfg)).items():
        out[k] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def _fit_temperature(cfg: Config, val_logits: torch.Tensor, val_labels: torch.Tensor) -> float | None:
    how = cfg.calibration.temperature_scaling
    if how == "none":
        return None
    return float(fit_temperature(val_logits.double().numpy(), val_labels.numpy(), method=how))


def _evaluate(
    logits: torch.Tensor, labels: torch.Tensor, data: PreparedData, temperature: float | None
) -> dict[str, Any]:
    """Every metric on the test logits; with a temperature, also after scaling as ``ts/<key>``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UndefinedMetricWarning)
        metrics = evaluate_with_temperature(logits.double().numpy(), labels.numpy(), temperature,
                                            train_class_counts=data.train_class_counts)
    for message in dict.fromkeys(str(w.message) for w in caught):  # once each, not once per evaluation
        print(f"note: {message}")
    return {k: (int(v) if k == "n" or k.endswith("/n") else float(v)) for k, v in metrics.items()}


def _write_diagrams(folder: Path, cfg: Config, logits: torch.Tensor, labels: torch.Tensor,
                    temperature: float | None) -> None:
    z, y = logits.double().numpy(), labels.numpy()
    reliability_diagram(z, y, folder / "reliability.png", inputs="logits", title=f"{cfg.name} (test)")
    if temperature is not None:
        reliability_diagram(z / temperature, y, folder / "reliability_ts.png", inputs="logits",
                            title=f"{cfg.name} (test, T={temperature:.3f})")


def _epoch_line(prefix: str, epoch: int, epochs: int, r: dict[str, Any]) -> str:
    parts = [f"{prefix}epoch {epoch + 1:>3}/{epochs}", f"loss {r['train_loss']:.4f}"]
    for key, label, fmt in (("train_accuracy", "train_acc", ".3f"), ("train_supcon", "supcon", ".3f"),
                            ("train_refinement", "L_ref", ".3f"), ("val_accuracy", "val_acc", ".3f"),
                            ("val_nll", "val_nll", ".3f"), ("val_ts_nll", "val_nll@T", ".3f"), ("lr", "lr", ".4g"),
                            ("images_per_second", "img/s", ".0f")):
        if key in r:
            parts.append(f"{label} {r[key]:{fmt}}")
    return "  ".join(parts)


def _json_ready(metrics: dict[str, Any]) -> dict[str, Any]:
    """Undefined metrics (nan) become JSON null rather than the non-standard NaN token."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}


def _device_name(accelerator: Accelerator) -> str:
    """What the timings were measured on: the accelerator's name, or the CPU and its thread count."""
    device = accelerator.device
    procs = f" x {accelerator.num_processes} processes" if accelerator.num_processes > 1 else ""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}{procs}"
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return f"CPU, {threads} thread{'s' if threads != 1 else ''}{procs}"
    return f"{device.type}{procs}"


def _speed_words(speed: SpeedChoice) -> str:
    return (f"precision {speed.mixed_precision}{', channels-last' if speed.channels_last else ''}"
            f"{', compiled' if speed.compile else ''}")


def _note_device(state: TrainerState, device: str, stage_epochs: list[int], resumed: bool, *,
                 precision: str | None = None, earlier_precision: str | None = None) -> None:
    """Start a new stretch in ``state.devices`` when this (re)start trains on another device, or (``--respeed``) in
    another precision, than the last one. A stretch is [first epoch, device, precision]; those recorded before
    precisions were have no third item and get ``earlier_precision``, what the run used until this restart (a run
    kept its precision then)."""
    first_epoch = sum(stage_epochs[:state.stage]) + state.epoch + 1
    if resumed and not state.devices and first_epoch > 1:
        state.devices.append([1, None])  # a checkpoint from before the record: the earlier device is not known
    for stretch in state.devices:
        if len(stretch) == 2:
            stretch.append(earlier_precision)
    if state.devices and state.devices[-1][0] == first_epoch:
        state.devices.pop()  # the last stretch did not finish an epoch: this one takes its place
    if not state.devices or state.devices[-1][1:] != [device, precision]:
        state.devices.append([first_epoch, device, precision])


def _stretches(devices: list[list[Any]], total_epochs: int) -> list[tuple[int, int, str | None, str | None]]:
    """(first epoch, last epoch, device, precision) per stretch of ``devices``."""
    out = []
    for i, (first, name, *precision) in enumerate(devices):
        last = devices[i + 1][0] - 1 if i + 1 < len(devices) else total_epochs
        out.append((first, last, name, precision[0] if precision else None))
    return out


def _span(first: int, last: int) -> str:
    return DeviceStretch("", first, last).span  # the form BudgetRecord.device_stretches reads back


def describe_devices(devices: list[list[Any]], total_epochs: int) -> str:
    """One device's name, or each device with its epochs (``"CPU, 1 thread (epochs 1-168) and NVIDIA H200 (epochs
    169-200)"``) for a run that moved between machines, so the card never credits one device with all of it. Where
    the precision changed along the way (``--respeed``), each stretch names its own (``"NVIDIA H200, bf16 (epochs
    1-150) and CPU, 2 threads, fp32 (epochs 151-200)"``)."""
    stretches = _stretches(devices, total_epochs)
    if len(stretches) == 1:
        return str(stretches[0][2])
    changed = len({p for *_, p in stretches}) > 1
    return join_and([f"{name or 'a device not recorded'}"
                     + (f", {_precision_words(p)}" if changed else "")
                     + f" ({_span(first, last)})" for first, last, name, p in stretches])


def describe_precisions(devices: list[list[Any]], total_epochs: int, current: str) -> str:
    """The run's mixed-precision setting (``no``, ``fp16``, ``bf16``: ``current``), or, where it changed along the
    way (``--respeed``), each with its epochs: ``"bf16 (epochs 1-150) and fp32 (epochs 151-200)"``."""
    merged: list[list[Any]] = []  # [first, last, precision]; neighbouring stretches in one precision join
    for first, last, _, p in _stretches(devices, total_epochs):
        if merged and merged[-1][2] == p:
            merged[-1][1] = last
        else:
            merged.append([first, last, p])
    if len(merged) <= 1:
        return current
    return join_and([f"{_precision_words(p)} ({_span(first, last)})" for first, last, p in merged])


def _precision_words(precision: str | None) -> str:
    return "fp32" if precision == "no" else precision or "precision not recorded"


def _run_record(cfg: Config, data: PreparedData, metrics: dict, ips: float, seconds: float, device: str,
                temperature: float | None, selection: SelectionRecord, mixed_precision: str,
                channels_last: bool) -> RunRecord:
    """The typed run record (``refcal_zoo.record``) written to ``config.json``: identities, never machine paths."""
    rec = data.split
    path = data.source.get("path")
    ident, kind = dataset_identity(path, local=bool(path) and Path(str(path)).expanduser().exists())
    return RunRecord(
        name=cfg.name,
        method=MethodRecord(cfg.method.name, cfg.method.base_loss, dict(cfg.method.loss_args or {}),
                            config_to_dict(cfg.method.supcon) if cfg.method.name.startswith("refcal") else None),
        dataset=DatasetRecord(
            id=ident, kind=kind, config=data.source.get("config"),
            fingerprints=dict(data.source.get("fingerprints") or {}),
            image_column=data.source.get("image_column"), label_column=data.source.get("label_column"),
            rho=rec.rho, lt_seed=rec.seed, n_max=rec.n_max, train_counts=list(rec.train_counts),
            val_counts=list(rec.val_counts), train_sha256=indices_sha256(rec.train_indices),
            val_sha256=indices_sha256(rec.val_indices), test_split=cfg.dataset.test_split),
        budget=BudgetRecord(epochs=cfg.train.epochs, batch_size=cfg.train.batch_size, lr=cfg.train.lr,
                            schedule=cfg.train.schedule, seed=cfg.train.seed, train_seconds=round(seconds, 1),
                            train_images_per_second=round(ips, 1), device=device),
        selection=selection,
        temperature=temperature,
        precision=PrecisionRecord(mixed_precision=str(mixed_precision), channels_last=channels_last),
        metrics={k: v for k, v in _json_ready(metrics).items()
                 if "/" not in k or (k.startswith("ts/") and k.count("/") == 1)},
        provenance=ProvenanceRecord(library_version=__version__),
    )


def _print_table(accelerator: Accelerator, cfg: Config, metrics: dict[str, Any], run_dir: Path,
                 temperature: float | None) -> None:
    keys = [k for k in metrics if "/" not in k and k != "n"]
    has_ts = any(k.startswith("ts/") for k in metrics)
    width = max(len(k) for k in keys)
    rule = "-" * (width + (24 if has_ts else 12))
    head = f"{'metric':<{width}}  {'raw':>8}" + (f"  {'after TS':>10}" if has_ts else "")
    lines = [f"\nResults on the test split ({int(metrics.get('n', 0))} images) - {cfg.name}", rule, head, rule]
    for k in keys:
        row = f"{k:<{width}}  {metrics[k]:>8.4f}"
        if has_ts:
            row += f"  {metrics[f'ts/{k}']:>10.4f}"
        lines.append(row)
    if temperature is not None:
        how = "validation NLL" if cfg.calibration.temperature_scaling == "nll" else "validation ECE grid"
        lines.append(f"temperature (fitted on {how}): {temperature:.4f}")
    lines += [rule, f"run folder: {run_dir}"]
    accelerator.print("\n".join(lines))
