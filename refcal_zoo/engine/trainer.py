"""The training run: config -> data -> model -> method -> Accelerate loop -> evaluation -> run folder.

Modelled on accelerate's ``examples/complete_cv_example.py``: one readable loop, the ``Accelerator`` does the
device, precision and distribution work; only the main process writes files.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from .. import __version__
from ..config import Config, config_to_dict
from ..data import BatchTransform, PreparedData, TensorImageDataset, make_loader, prepare_data
from ..errors import ConfigError
from ..hub import export_timm_folder
from ..methods import build_method
from ..models import create_model
from .evaluate import predict_logits
from .optim import build_optimizer, build_scheduler
from .run_folder import check_output_dir, finalize_run_dir, staging_dir, write_json, write_yaml

__all__ = ["RunResult", "train"]

HEADLINE = ("accuracy", "nll", "ece", "auroc_misclassification")


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, float]
    train_seconds: float
    train_images_per_second: float


def _validate_before_writing(cfg: Config, overwrite: bool) -> None:
    check_output_dir(cfg.run_dir, overwrite)
    arch = cfg.model.arch.split(".", 1)[0]
    if not timm.is_model(arch):
        create_model(cfg.model.arch)  # raises the ValueError with close matches
    if cfg.train.epochs < 1:
        raise ConfigError(f"train.epochs must be >= 1, got {cfg.train.epochs}")
    if cfg.train.batch_size < 1:
        raise ConfigError(f"train.batch_size must be >= 1, got {cfg.train.batch_size}")
    if cfg.train.mixed_precision not in ("no", "fp16", "bf16"):
        raise ConfigError(f"train.mixed_precision must be no, fp16 or bf16, got '{cfg.train.mixed_precision}'")
    if cfg.dataset.rho < 1:
        raise ConfigError(f"dataset.rho must be >= 1 (n_max / n_min), got {cfg.dataset.rho}")


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


def train(cfg: Config, *, overwrite: bool = False) -> RunResult:
    """Train, evaluate and write the run folder described by ``cfg`` (see README: run folder)."""
    _validate_before_writing(cfg, overwrite)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg.train.mixed_precision)
    set_seed(cfg.train.seed)
    data = prepare_data(cfg.dataset)
    model, mean, std = _build_model(cfg, data)
    method = build_method(cfg.method, cfg.model)
    module = method.wrap(model)

    gen = torch.Generator().manual_seed(cfg.train.seed)
    train_loader = make_loader(TensorImageDataset(data.train_images, data.train_labels), cfg.train.batch_size,
                               train=True, generator=gen)
    val_loader = make_loader(TensorImageDataset(data.val_images, data.val_labels), cfg.train.eval_batch_size,
                             train=False)
    test_loader = make_loader(TensorImageDataset(data.test_images, data.test_labels), cfg.train.eval_batch_size,
                              train=False)
    optimizer = build_optimizer(module, cfg.train)
    module, optimizer, train_loader, val_loader, test_loader = accelerator.prepare(
        module, optimizer, train_loader, val_loader, test_loader
    )
    scheduler = build_scheduler(optimizer, len(train_loader), cfg.train)
    train_tf = BatchTransform(mean, std, augment=cfg.train.augment)
    eval_tf = BatchTransform(mean, std, augment="none")

    run_dir = cfg.run_dir
    stage = staging_dir(run_dir)
    if accelerator.is_main_process:
        if stage.exists():
            accelerator.print(f"note: removing the unfinished staging folder {stage} of an earlier run")
            shutil.rmtree(stage)
        stage.mkdir(parents=True)
        write_yaml(stage / "config.yaml", config_to_dict(cfg))
        write_json(stage / "lt_indices.json", data.lt_record())
    accelerator.print(
        f"{cfg.name}: {cfg.model.arch} on {cfg.dataset.path} (rho={cfg.dataset.rho:g}) | train {len(data.train_labels)}"
        f" / val {len(data.val_labels)} / test {len(data.test_labels)} images, {data.num_classes} classes | "
        f"method {method.name} ({cfg.method.base_loss}) | {cfg.train.epochs} epochs | device {accelerator.device}"
        f" x{accelerator.num_processes}"
    )

    train_seconds, train_images = 0.0, 0
    log_path = stage / "log.jsonl"
    for epoch in range(cfg.train.epochs):
        module.train()
        t0 = time.perf_counter()
        seen, loss_sum, correct = 0, 0.0, 0
        extra: dict[str, float] = {}
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False,
                   disable=None if accelerator.is_local_main_process else True, dynamic_ncols=True)
        for batch in bar:
            loss, logits, labels, logs = method.loss(module, batch, train_tf)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss at epoch {epoch + 1}; lower train.lr")
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            if cfg.train.grad_clip_norm:
                accelerator.clip_grad_norm_(module.parameters(), cfg.train.grad_clip_norm)
            optimizer.step()
            scheduler.step()
            n = batch["label"].shape[0]
            seen += n
            loss_sum += loss.item() * n
            correct += (logits.argmax(1) == labels).sum().item() * n / labels.shape[0]
            for k, v in logs.items():
                if torch.isfinite(v):
                    extra[k] = extra.get(k, 0.0) + v.item() * n
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
        epoch_time = time.perf_counter() - t0
        train_seconds += epoch_time
        train_images += seen * accelerator.num_processes
        val_logits, val_labels = predict_logits(module, val_loader, eval_tf, accelerator)
        val_nll = torch.nn.functional.cross_entropy(val_logits, val_labels).item()
        val_acc = (val_logits.argmax(1) == val_labels).float().mean().item()
        record = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            **{f"train_{k}": v / max(seen, 1) for k, v in extra.items()},
            "val_accuracy": val_acc,
            "val_nll": val_nll,
            "lr": optimizer.param_groups[0]["lr"],
            "images_per_second": seen * accelerator.num_processes / epoch_time,
        }
        if accelerator.is_main_process:
            with open(log_path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        accelerator.print(
            f"epoch {epoch + 1:>3}/{cfg.train.epochs}  loss {record['train_loss']:.4f}  "
            f"train_acc {record['train_accuracy']:.3f}  val_acc {val_acc:.3f}  val_nll {val_nll:.3f}  "
            f"lr {record['lr']:.4g}  {record['images_per_second']:.0f} img/s"
        )

    test_logits, test_labels = predict_logits(module, test_loader, eval_tf, accelerator)
    metrics = _evaluate(test_logits, test_labels, data)
    images_per_second = train_images / train_seconds if train_seconds > 0 else math.nan
    if accelerator.is_main_process:
        classifier = method.unwrap(accelerator.unwrap_model(module))
        refcal_block = _refcal_block(cfg, data, metrics, images_per_second, train_seconds)
        export_timm_folder(classifier.cpu(), stage, label_names=data.class_names, refcal=refcal_block)
        write_json(stage / "metrics.json", metrics)  # written last: marks the run as finished
        finalize_run_dir(stage, run_dir)
        _print_table(accelerator, cfg, metrics, run_dir)
    accelerator.wait_for_everyone()
    return RunResult(run_dir, metrics, train_seconds, images_per_second)


def _evaluate(logits: torch.Tensor, labels: torch.Tensor, data: PreparedData) -> dict[str, Any]:
    from ..metrics import evaluate_predictions

    return evaluate_predictions(logits.numpy(), labels.numpy(), train_class_counts=data.train_class_counts)


def _refcal_block(cfg: Config, data: PreparedData, metrics: dict, ips: float, seconds: float) -> dict[str, Any]:
    rec = data.split
    return {
        "name": cfg.name,
        "version": __version__,
        "method": {"name": cfg.method.name, "base_loss": cfg.method.base_loss, "loss_args": cfg.method.loss_args,
                   "supcon": config_to_dict(cfg.method.supcon) if cfg.method.name != "plain" else None},
        "dataset": {"path": data.source.get("path"), "config": data.source.get("config"),
                    "image_column": data.source.get("image_column"), "label_column": data.source.get("label_column"),
                    "rho": rec.rho, "lt_seed": rec.seed, "n_max": rec.n_max, "train_counts": rec.train_counts,
                    "val_counts": rec.val_counts, "train_sha256": rec.record()["train_sha256"],
                    "val_sha256": rec.record()["val_sha256"], "test_split": cfg.dataset.test_split},
        "training": {"epochs": cfg.train.epochs, "batch_size": cfg.train.batch_size, "lr": cfg.train.lr,
                     "schedule": cfg.train.schedule, "seed": cfg.train.seed, "train_seconds": round(seconds, 1),
                     "train_images_per_second": round(ips, 1)},
        "temperature": None,
        "metrics": {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in metrics.items()
                    if "/" not in k},
    }


def _print_table(accelerator: Accelerator, cfg: Config, metrics: dict[str, Any], run_dir: Path) -> None:
    keys = [k for k in metrics if "/" not in k and k != "n"]
    width = max(len(k) for k in keys)
    lines = [f"\nResults on the test split ({int(metrics.get('n', 0))} images) - {cfg.name}", "-" * (width + 12)]
    lines += [f"{k:<{width}}  {metrics[k]:>8.4f}" for k in keys]
    lines += ["-" * (width + 12), f"run folder: {run_dir}"]
    accelerator.print("\n".join(lines))
