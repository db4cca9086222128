"""The training run: config -> data -> model -> method -> Accelerate loop -> evaluation -> run folder.

Modelled on accelerate's ``examples/complete_cv_example.py``: one readable loop, the ``Accelerator`` does the
device, precision and distribution work; only the main process writes files.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from .. import __version__
from ..calibration import fit_temperature
from ..config import Config, config_to_dict
from ..data import BatchTransform, PreparedData, TensorImageDataset, make_loader, prepare_data
from ..errors import ConfigError
from ..hub import export_timm_folder
from ..methods import build_stages
from ..metrics import UndefinedMetricWarning, evaluate_predictions, reliability_diagram
from ..models import create_model
from .evaluate import predict_logits
from .loop import train_one_epoch
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
    stages = build_stages(cfg, len(data.train_labels), sync=accelerator.num_processes > 1)
    for st in stages:
        BatchTransform(mean, std, augment=st.augment)  # validates augmentation names before anything is written

    train_set = TensorImageDataset(data.train_images, data.train_labels)
    val_loader = make_loader(TensorImageDataset(data.val_images, data.val_labels), cfg.train.eval_batch_size,
                             train=False)
    test_loader = make_loader(TensorImageDataset(data.test_images, data.test_labels), cfg.train.eval_batch_size,
                              train=False)
    val_loader, test_loader = accelerator.prepare(val_loader, test_loader)
    eval_tf = BatchTransform(mean, std, augment="none")

    run_dir = cfg.run_dir
    stage_dir = staging_dir(run_dir)
    if accelerator.is_main_process:
        if stage_dir.exists():
            accelerator.print(f"note: removing the unfinished staging folder {stage_dir} of an earlier run")
            shutil.rmtree(stage_dir)
        stage_dir.mkdir(parents=True)
        write_yaml(stage_dir / "config.yaml", config_to_dict(cfg))
        write_json(stage_dir / "lt_indices.json", data.lt_record())
    plan = " then ".join(f"{st.name} ({st.train.epochs} epochs)" for st in stages)
    accelerator.print(
        f"{cfg.name}: {cfg.model.arch} on {cfg.dataset.path} (rho={cfg.dataset.rho:g}) | train {len(data.train_labels)}"
        f" / val {len(data.val_labels)} / test {len(data.test_labels)} images, {data.num_classes} classes | "
        f"method {cfg.method.name} ({cfg.method.base_loss}): {plan} | device {accelerator.device}"
        f" x{accelerator.num_processes}"
    )

    train_seconds, train_images = 0.0, 0
    log_path = stage_dir / "log.jsonl"
    val_logits = val_labels = None
    for index, st in enumerate(stages):
        method = st.method.to(accelerator.device)
        module = method.wrap(model)
        train_loader = make_loader(train_set, st.train.batch_size, train=True,
                                   generator=torch.Generator().manual_seed(cfg.train.seed + index))
        optimizer = build_optimizer(module, st.train)
        module, optimizer, train_loader = accelerator.prepare(module, optimizer, train_loader)
        scheduler = build_scheduler(optimizer, len(train_loader), st.train)
        train_tf = BatchTransform(mean, std, augment=st.augment)
        prefix = f"{st.name} " if len(stages) > 1 else ""
        for epoch in range(st.train.epochs):
            method.start_epoch(epoch)
            stats = train_one_epoch(module, train_loader, method, optimizer, scheduler, train_tf, accelerator,
                                    grad_clip_norm=st.train.grad_clip_norm,
                                    desc=f"{prefix}epoch {epoch + 1}/{st.train.epochs}")
            train_seconds += stats.seconds
            train_images += stats.images * accelerator.num_processes
            record = {"stage": st.name, "epoch": epoch + 1, "train_loss": stats.loss}
            if method.trains_classifier:
                record["train_accuracy"] = stats.accuracy
            record.update({f"train_{k}": v for k, v in stats.extras.items()})
            if method.trains_classifier:
                val_logits, val_labels = predict_logits(module, val_loader, eval_tf, accelerator)
                record["val_accuracy"] = (val_logits.argmax(1) == val_labels).float().mean().item()
                record["val_nll"] = torch.nn.functional.cross_entropy(val_logits, val_labels).item()
                record.update(method.end_epoch(val_logits.to(accelerator.device), val_labels.to(accelerator.device)))
            else:
                record.update(method.end_epoch(None, None))
            record["lr"] = optimizer.param_groups[0]["lr"]
            record["images_per_second"] = stats.images * accelerator.num_processes / stats.seconds
            if accelerator.is_main_process:
                with open(log_path, "a") as fh:
                    fh.write(json.dumps(record) + "\n")
            accelerator.print(_epoch_line(prefix, epoch, st.train.epochs, record))
        model = method.unwrap(accelerator.unwrap_model(module))

    # val_logits: the final model's, from the last epoch's evaluation
    test_logits, test_labels = predict_logits(model, test_loader, eval_tf, accelerator)
    temperature = _fit_temperature(cfg, val_logits, val_labels)  # on validation only, never on test
    metrics = _evaluate(test_logits, test_labels, data, temperature)
    images_per_second = train_images / train_seconds if train_seconds > 0 else math.nan
    if accelerator.is_main_process:
        classifier = model
        refcal_block = _refcal_block(cfg, data, metrics, images_per_second, train_seconds)
        refcal_block["temperature"] = temperature
        export_timm_folder(classifier.cpu(), stage_dir, label_names=data.class_names, refcal=refcal_block)
        _write_diagrams(stage_dir, cfg, test_logits, test_labels, temperature)
        if temperature is not None:
            write_json(stage_dir / "temperature.json", {
                "temperature": temperature, "method": cfg.calibration.temperature_scaling,
                "fitted_on": "validation", "n": len(val_labels)})
        write_json(stage_dir / "metrics.json", _json_ready(metrics))  # written last: marks the run as finished
        finalize_run_dir(stage_dir, run_dir)
        _print_table(accelerator, cfg, metrics, run_dir, temperature)
    accelerator.wait_for_everyone()
    return RunResult(run_dir, metrics, train_seconds, images_per_second)


def _fit_temperature(cfg: Config, val_logits: torch.Tensor, val_labels: torch.Tensor) -> float | None:
    how = cfg.calibration.temperature_scaling
    if how == "none":
        return None
    return float(fit_temperature(val_logits.double().numpy(), val_labels.numpy(), method=how))


def _evaluate(
    logits: torch.Tensor, labels: torch.Tensor, data: PreparedData, temperature: float | None
) -> dict[str, Any]:
    """Every metric on the test logits; with a temperature, also after scaling as ``ts/<key>``."""
    z, y = logits.double().numpy(), labels.numpy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UndefinedMetricWarning)
        metrics = evaluate_predictions(z, y, train_class_counts=data.train_class_counts, inputs="logits")
        if temperature is not None:
            scaled = evaluate_predictions(z / temperature, y, train_class_counts=data.train_class_counts,
                                          inputs="logits")
            metrics.update({f"ts/{k}": v for k, v in scaled.items() if k != "n" and not k.endswith("/n")})
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
                            ("val_nll", "val_nll", ".3f"), ("lr", "lr", ".4g"), ("images_per_second", "img/s", ".0f")):
        if key in r:
            parts.append(f"{label} {r[key]:{fmt}}")
    return "  ".join(parts)


def _json_ready(metrics: dict[str, Any]) -> dict[str, Any]:
    """Undefined metrics (nan) become JSON null rather than the non-standard NaN token."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}


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
        "metrics": {k: v for k, v in _json_ready(metrics).items()
                    if "/" not in k or (k.startswith("ts/") and k.count("/") == 1)},
    }


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
