"""One training epoch: the inner loop shared by the trainer and the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data import BatchTransform
from ..methods import Method

__all__ = ["EpochStats", "StepContext", "train_one_epoch"]


@dataclass
class StepContext:
    """What one optimisation step uses: the prepared module, the method that computes its loss, the optimiser
    and its per-step scheduler, the batch transform (augmentation + normalisation) and the Accelerator."""

    module: nn.Module
    method: Method
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    transform: BatchTransform
    accelerator: Accelerator
    grad_clip_norm: float | None = None  # clip the gradient norm before each optimiser step (None: no clipping)


@dataclass
class EpochStats:
    images: int  # images seen by this process in the epoch (including any before a resumption)
    seconds: float
    loss: float
    accuracy: float  # running training accuracy of the classification term (nan for a stage without one)
    extras: dict[str, float] = field(default_factory=dict)  # method-specific terms (e.g. supcon, refinement)


class _Sums:
    """Running sums of an epoch, kept on the device (read once per epoch, or at a checkpoint)."""

    def __init__(self, device: torch.device, start: dict[str, float] | None = None) -> None:
        start = dict(start or {})
        self.seen = int(start.pop("seen", 0))
        self.seconds = float(start.pop("seconds", 0.0))
        self.values = {k: torch.tensor(v, device=device) for k, v in start.items()}
        self.device = device

    def add(self, key: str, value: torch.Tensor) -> None:
        if key not in self.values:
            self.values[key] = torch.zeros((), device=self.device)
        self.values[key] += value

    def snapshot(self, seconds: float) -> dict[str, float]:
        return {"seen": self.seen, "seconds": self.seconds + seconds,
                **{k: float(v.item()) for k, v in self.values.items()}}


def train_one_epoch(
    step: StepContext,
    loader: DataLoader,
    *,
    max_steps: int | None = None,
    desc: str = "train",
    start_batch: int = 0,
    start_sums: dict[str, float] | None = None,
    on_batch_end: Callable[[int, Callable[[], dict[str, float]]], None] | None = None,
) -> EpochStats:
    """Run ``step``'s optimiser over ``loader`` once (or ``max_steps`` batches).

    Gradient accumulation follows ``accelerator.gradient_accumulation_steps`` (``accelerator.accumulate``); the
    scheduler steps once per optimiser step. ``start_batch``/``start_sums`` continue an epoch interrupted after
    that many batches (the caller passes a loader that skips them); ``on_batch_end(batches_done, snapshot)`` runs
    after every batch (checkpointing), ``snapshot()`` giving the epoch's running sums. Running sums stay on the
    device so the loop does not synchronise with an accelerator every step.
    """
    module, method, optimizer, scheduler = step.module, step.method, step.optimizer, step.scheduler
    transform, accelerator, grad_clip_norm = step.transform, step.accelerator, step.grad_clip_norm
    module.train()
    sums = _Sums(accelerator.device, start_sums)
    t0 = time.perf_counter()
    bar = tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, initial=start_batch,
               total=start_batch + len(loader), disable=None if accelerator.is_local_main_process else True)
    done = start_batch
    for i, batch in enumerate(bar):
        if max_steps is not None and i >= max_steps:
            break
        with accelerator.accumulate(module):
            loss, logits, labels, logs = method.loss(module, batch, transform)
            accelerator.backward(loss)
            if grad_clip_norm and accelerator.sync_gradients:
                accelerator.clip_grad_norm_(module.parameters(), grad_clip_norm)
            optimizer.step()
            if scheduler is not None and accelerator.sync_gradients:
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        method.after_step(batch, logits, labels)
        n = batch["label"].shape[0]
        sums.seen += n
        with torch.no_grad():
            sums.add("loss", loss.detach() * n)
            if logits is not None:
                sums.add("correct", (logits.argmax(1) == labels).float().mean() * n)
            for k, v in logs.items():
                sums.add(f"extra.{k}", torch.nan_to_num(v.detach().float(), nan=0.0) * n)
        done += 1
        if i % 25 == 0 and not bar.disable:  # the only host synchronisation in the step, for the progress bar
            bar.set_postfix(loss=f"{sums.values['loss'].item() / sums.seen:.3f}")
        if on_batch_end is not None:
            on_batch_end(done, lambda: sums.snapshot(time.perf_counter() - t0))
    final = sums.snapshot(time.perf_counter() - t0)
    seen = max(final["seen"], 1)
    mean_loss = final.get("loss", 0.0) / seen
    if not torch.isfinite(torch.tensor(mean_loss)):
        raise FloatingPointError("non-finite training loss; lower train.lr or check the data")
    return EpochStats(
        images=final["seen"], seconds=final["seconds"], loss=mean_loss,
        accuracy=final.get("correct", 0.0) / seen if method.trains_classifier else float("nan"),
        extras={k[len("extra."):]: v / seen for k, v in final.items() if k.startswith("extra.")},
    )
