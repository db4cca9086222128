"""Plain training: one classification loss on augmented images."""

from __future__ import annotations

import torch
from torch import nn

from .base import Method, Transform


class Plain(Method):
    name = "plain"

    def __init__(self, criterion: nn.Module) -> None:
        self.criterion = criterion

    def loss(self, module: nn.Module, batch: dict[str, torch.Tensor], transform: Transform):
        logits = module(transform(batch["image"])).float()
        loss = self.criterion(logits, batch["label"])
        return loss, logits, batch["label"], {}
