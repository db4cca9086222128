"""Collect logits over a whole split, across processes, with the padding Accelerate adds removed."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader

from ..data import BatchTransform

__all__ = ["predict_logits"]


@torch.no_grad()
def predict_logits(
    model: nn.Module, loader: DataLoader, transform: BatchTransform, accelerator: Accelerator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits float32 [N, K], labels [N])`` on CPU for every sample of ``loader``'s dataset, exactly once.

    The model is put in eval mode (BatchNorm running statistics, no dropout) and restored afterwards.
    """
    was_training = model.training
    model.eval()
    all_logits, all_labels = [], []
    for batch in loader:
        logits = model(transform(batch["image"])).float()
        logits, labels = accelerator.gather_for_metrics((logits, batch["label"]))
        all_logits.append(logits.cpu())
        all_labels.append(labels.cpu())
    model.train(was_training)
    return torch.cat(all_logits), torch.cat(all_labels)
