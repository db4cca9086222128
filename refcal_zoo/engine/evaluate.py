"""Collect logits over a whole split, across processes, with the padding Accelerate adds removed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader

from ..data import BatchTransform

__all__ = ["full_float32", "predict_logits"]


@contextmanager
def full_float32() -> Iterator[None]:
    """Switch off TF32 for convolutions and matrix products, then restore the settings: PyTorch lets cuDNN run
    float32 convolutions in TF32 (10-bit mantissa) by default on Ampere and later GPUs, which moves logits enough to
    flip near-tie predictions (a GPU-evaluated ResNet-32 differed from its CPU re-evaluation on 2 of 10,000 test
    images). Evaluation is meant to be float32 on every device."""
    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn, matmul


@torch.no_grad()
def predict_logits(
    model: nn.Module, loader: DataLoader, transform: BatchTransform, accelerator: Accelerator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits float32 [N, K], labels [N])`` on CPU for every sample of ``loader``'s dataset, exactly once.

    The model is put in eval mode (BatchNorm running statistics, no dropout) and restored afterwards; TF32 is off
    meanwhile (``full_float32``).
    """
    was_training = model.training
    model.eval()
    all_logits, all_labels = [], []
    with full_float32():
        for batch in loader:
            logits = model(transform(batch["image"])).float()
            logits, labels = accelerator.gather_for_metrics((logits, batch["label"]))
            all_logits.append(logits.cpu())
            all_labels.append(labels.cpu())
    model.train(was_training)
    return torch.cat(all_logits), torch.cat(all_labels)
