"""Plain training: one classification loss (CE or any calibration loss) on augmented images."""

from __future__ import annotations

import torch
from torch import nn

from .base import Criterion, Method, Transform


class Plain(Method):
    name = "plain"

    def __init__(self, criterion: Criterion) -> None:
        self.criterion = criterion

    def to(self, device: torch.device) -> Plain:
        self.criterion.to(device)
        return self

    def start_epoch(self, epoch: int) -> None:
        self.criterion.start_epoch(epoch)

    def loss(self, module: nn.Module, batch: dict[str, torch.Tensor], transform: Transform):
        logits = module(transform(batch["image"])).float()
        loss = self.criterion(logits, batch["label"], batch["index"])
        return loss, logits, batch["label"], {}

    def after_step(self, batch, logits, labels) -> None:
        self.criterion.after_step(logits, labels, batch["index"])

    def end_epoch(self, val_logits, val_labels) -> dict[str, float]:
        return self.criterion.end_epoch(val_logits, val_labels)
