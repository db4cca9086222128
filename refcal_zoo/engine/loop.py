"""One training epoch: the inner loop shared by the trainer and the throughput benchmark."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data import BatchTransform
from ..methods import Method

__all__ = ["EpochStats", "train_one_epoch"]


@dataclass
class EpochStats:
    images: int  # images seen by this process
    seconds: float
    loss: float
    accuracy: float  # running training accuracy of the classification term (nan for a stage without one)
    extras: dict[str, float] = field(default_factory=dict)  # method-specific terms (e.g. supcon, refinement)


def train_one_epoch(
    module: nn.Module,
    loader: DataLoader,
    method: Method,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    transform: BatchTransform,
    accelerator: Accelerator,
    *,
    grad_clip_norm: float | None = None,
    max_steps: int | None = None,
    desc: str = "train",
) -> EpochStats:
    """Run the optimiser over ``loader`` once (or ``max_steps`` batches). Running sums stay on the device and are
    read once at the end, so the loop does not synchronise with an accelerator every step."""
    module.train()
    dev = accelerator.device
    loss_sum = torch.zeros((), device=dev)
    correct = torch.zeros((), device=dev)
    extras: dict[str, torch.Tensor] = {}
    seen = 0
    t0 = time.perf_counter()
    bar = tqdm(loader, desc=desc, leave=False, dynamic_ncols=True,
               disable=None if accelerator.is_local_main_process else True)
    for step, batch in enumerate(bar):
        if max_steps is not None and step >= max_steps:
            break
        loss, logits, labels, logs = method.loss(module, batch, transform)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if grad_clip_norm:
            accelerator.clip_grad_norm_(module.parameters(), grad_clip_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        method.after_step(batch, logits, labels)
        n = batch["label"].shape[0]
        seen += n
        with torch.no_grad():
            loss_sum += loss.detach() * n
            if logits is not None:
                correct += (logits.argmax(1) == labels).float().mean() * n
            for k, v in logs.items():
                extras[k] = extras.get(k, torch.zeros((), device=dev)) + torch.nan_to_num(v.detach(), nan=0.0) * n
        if step % 25 == 0:
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}")
    seconds = time.perf_counter() - t0
    mean_loss = loss_sum.item() / max(seen, 1)
    if not torch.isfinite(torch.tensor(mean_loss)):
        raise FloatingPointError("non-finite training loss; lower train.lr or check the data")
    return EpochStats(
        images=seen, seconds=seconds, loss=mean_loss,
        accuracy=correct.item() / max(seen, 1) if method.trains_classifier else float("nan"),
        extras={k: v.item() / max(seen, 1) for k, v in extras.items()},
    )
