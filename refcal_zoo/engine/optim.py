"""Optimisers and per-step learning-rate schedules (linear warm-up, then step decay or cosine)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import TrainConfig
from ..errors import ConfigError

__all__ = ["build_optimizer", "build_scheduler", "lr_factor"]


def build_optimizer(params: list[nn.Parameter] | list[dict] | nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or AdamW over the trainable parameters, optionally without weight decay
    on biases and normalisation parameters (``wd_exclude_norm_bias``). ``params`` may also be a method's parameter
    groups ``[{"params": [...], "lr_scale": x}, ...]`` (a group learns at ``cfg.lr * x``; the schedule scales
    every group alike)."""
    if isinstance(params, list) and params and isinstance(params[0], dict):
        if cfg.wd_exclude_norm_bias:
            raise ConfigError("wd_exclude_norm_bias is not supported with a method's own parameter groups; unset it")
        groups = [{"params": list(g["params"]), "weight_decay": cfg.weight_decay,
                   "lr": cfg.lr * float(g.get("lr_scale", 1.0))} for g in params]
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if isinstance(params, nn.Module):
        named = [(n, p) for n, p in params.named_parameters() if p.requires_grad]
    else:
        named = [(str(i), p) for i, p in enumerate(params)]
    if cfg.wd_exclude_norm_bias:  # 1-D tensors are biases and normalisation scales/shifts
        groups = [{"params": [p for _, p in named if p.ndim > 1], "weight_decay": cfg.weight_decay},
                  {"params": [p for _, p in named if p.ndim <= 1], "weight_decay": 0.0}]
    else:
        groups = [{"params": [p for _, p in named], "weight_decay": cfg.weight_decay}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise ConfigError(f"unknown train.optimizer '{cfg.optimizer}' (choose sgd or adamw)")


def lr_factor(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based)."""
    epoch = step / steps_per_epoch
    warmup_steps = cfg.warmup_epochs * steps_per_epoch
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.lr_decay ** sum(epoch >= m for m in cfg.milestones)
    if cfg.schedule == "cosine":
        total = cfg.epochs * steps_per_epoch
        progress = min(1.0, (step - warmup_steps) / max(1.0, total - warmup_steps))
        floor = cfg.min_lr / cfg.lr if cfg.lr > 0 else 0.0
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ConfigError(f"unknown train.schedule '{cfg.schedule}' (choose step, cosine or constant)")


def build_scheduler(
    optimizer: torch.optim.Optimizer, steps_per_epoch: int, cfg: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepped once per optimiser step, following ``lr_factor``."""
    lr_factor(0, max(1, steps_per_epoch), cfg)  # validates the schedule name before training starts
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, max(1, steps_per_epoch), cfg)
    )
