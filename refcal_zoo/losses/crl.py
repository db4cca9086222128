"""Correctness Ranking Loss (Moon, Kim, Shin, Hwang, ICML 2020; reference notes A.7).

Unlike the RefCal release (where the history is never updated and the ranking term is identically 0, refcal
notes section 7.1), the history here must be -- and is documented to be -- updated by the trainer after every
step.

Trainer protocol (single process)::

    crl = CRLLoss(num_samples=len(train_set)).to(device)    # dataset must also return each sample's index
    for epoch in range(epochs):
        for x, y, idx in loader:
            logits = model(x)
            loss = crl(logits, y, idx)                      # CE + rank_weight * ranking term
            opt.zero_grad(); loss.backward(); opt.step()
            crl.update_history(logits, y, idx)              # after the step: correctness of *these* logits
        crl.next_epoch()                                    # once at the end of every epoch
    torch.save({"model": ..., "crl": crl.state_dict()}, path)   # history is a buffer -> checkpointable

Multi-process (DDP): indices are global dataset indices (``DistributedSampler`` yields them). Every rank must
hold the same history, so pass ``sync=True`` to :meth:`CRLLoss.update_history` /
:meth:`CorrectnessHistory.update` (all-gathers indices and correctness over ranks before adding; a collective,
so every rank must call it every step). Alternatively gather them yourself (e.g. ``accelerator.gather``) and
call ``update`` with the gathered tensors and ``sync=False`` -- never both. With NCCL the history must live on
the GPU (``crl.to(device)``). ``DistributedSampler`` pads the epoch by repeating a few samples; those are
counted once per visit.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .base import CalibrationLoss, as_float, check_logits_targets
from .distributed import all_gather_no_grad

__all__ = ["CorrectnessHistory", "CRLLoss"]

RankTarget = Literal["softmax", "entropy", "margin"]


class CorrectnessHistory(nn.Module):
    """Per-training-sample count ``h_i`` of minibatch visits in which sample ``i`` was classified correctly.

    Buffers (so ``state_dict()`` / ``load_state_dict()`` and ``.to(device)`` work): ``correct_count`` (int64
    ``[num_samples]``) and ``epochs_completed`` (int64 scalar).

    Normalised correctness (official ``correctness_normalize``): ``c_i = (h_i - min_j h_j) / (e - min_j h_j)``
    with the epoch counter ``e = max(1, epochs_completed)`` -- i.e. ``e`` starts at 1 and grows by one at the
    end of every epoch from the second on, exactly like the official ``max_correctness_update``. Deviation:
    when ``e - min h`` is 0 (every sample right at every visit so far) the official code divides by zero
    (NaN); the denominator is floored at 1 here, which changes nothing in any other case (all quantities are
    integers).
    """

    def __init__(self, num_samples: int) -> None:
        super().__init__()
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.register_buffer("correct_count", torch.zeros(int(num_samples), dtype=torch.long))
        self.register_buffer("epochs_completed", torch.zeros((), dtype=torch.long))

    @property
    def num_samples(self) -> int:
        return self.correct_count.shape[0]

    @property
    def epoch_counter(self) -> torch.Tensor:
        """``e`` of the normalisation (>= 1)."""
        return self.epochs_completed.clamp_min(1)

    @torch.no_grad()
    def update(self, indices: torch.Tensor, correct: torch.Tensor, *, sync: bool = False) -> None:
        """Add ``correct`` (bool/0-1, ``[n]``) to the counts of the dataset samples ``indices`` (``[n]``).

        Repeated indices are all counted. ``sync=True`` first all-gathers ``indices`` and ``correct`` over the
        process group (no-op when not distributed) so that every rank applies the same global update.
        """
        indices = torch.as_tensor(indices).reshape(-1)
        correct = torch.as_tensor(correct).reshape(-1)
        if indices.shape != correct.shape:
            raise ValueError(
                f"indices {tuple(indices.shape)} and correct {tuple(correct.shape)} differ in length"
            )
        if indices.is_floating_point():
            raise ValueError(f"indices must be integer dataset indices, got {indices.dtype}")
        dev = self.correct_count.device
        indices = indices.to(device=dev, dtype=torch.long)
        correct = correct.to(device=dev).long()
        if sync:
            indices = all_gather_no_grad(indices)
            correct = all_gather_no_grad(correct)
        self.correct_count.index_add_(0, indices, correct)

    @torch.no_grad()
    def next_epoch(self) -> None:
        """Call once at the end of every training epoch."""
        self.epochs_completed += 1

    def normalized(self, indices: torch.Tensor) -> torch.Tensor:
        """Normalised correctness ``c_i`` (float32, on the history's device) of the samples ``indices``."""
        h = self.correct_count
        h_min = h.min()
        denom = (self.epoch_counter - h_min).clamp_min(1)
        idx = torch.as_tensor(indices).reshape(-1).to(device=h.device, dtype=torch.long)
        return (h[idx] - h_min).float() / denom.float()

    def extra_repr(self) -> str:
        return f"num_samples={self.num_samples}"


class CRLLoss(CalibrationLoss):
    """``L = CE_mean + rank_weight * L_rank`` with the correctness ranking term of Moon et al.

    ``L_rank = mean_i relu(-s_i (k_i - k_i') + |c_i - c_i'|)``, ``s_i = sign(c_i - c_i')``, pairing each
    sample with the next one in the batch (``roll(-1)``); ``k`` is the confidence (``rank_target``:
    ``"softmax"`` max probability (default), ``"entropy"`` negative entropy / ln K, ``"margin"`` top-1 minus
    top-2 probability) and ``c`` the normalised correctness from :class:`CorrectnessHistory`. Gradient flows
    through both ``k_i`` and ``k_i'``; pairs with equal correctness give 0 but count in the mean.

    Construct with an existing ``history`` or with ``num_samples`` (creates one). The history is a submodule,
    so ``crl.state_dict()`` contains it. ``forward(logits, targets, indices)`` -- ``needs_indices = True``:
    see the module docstring for the exact trainer protocol (``update_history`` after every step,
    ``next_epoch`` after every epoch).
    """

    needs_indices = True

    def __init__(
        self,
        history: CorrectnessHistory | None = None,
        rank_weight: float = 1.0,
        rank_target: RankTarget = "softmax",
        *,
        num_samples: int | None = None,
    ) -> None:
        super().__init__()
        if (history is None) == (num_samples is None):
            raise ValueError("pass exactly one of history= (a CorrectnessHistory) or num_samples= (an int)")
        if history is None:
            history = CorrectnessHistory(int(num_samples))  # type: ignore[arg-type]
        if not isinstance(history, CorrectnessHistory):
            raise ValueError(f"history must be a CorrectnessHistory, got {type(history).__name__}")
        if rank_target not in ("softmax", "entropy", "margin"):
            raise ValueError(f"rank_target must be 'softmax', 'entropy' or 'margin', got {rank_target!r}")
        if rank_weight < 0:
            raise ValueError(f"rank_weight must be >= 0, got {rank_weight}")
        self.history = history
        self.rank_weight = float(rank_weight)
        self.rank_target: RankTarget = rank_target

    def confidence(self, logits: torch.Tensor) -> torch.Tensor:
        p = F.softmax(logits, dim=1)
        if self.rank_target == "softmax":
            return p.max(dim=1).values
        if self.rank_target == "entropy":
            neg_entropy = (p * F.log_softmax(logits, dim=1)).sum(1)
            return neg_entropy / math.log(logits.shape[1])
        top2 = p.topk(2, dim=1).values
        return top2[:, 0] - top2[:, 1]

    def ranking_loss(self, logits: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The ranking term alone (unweighted)."""
        conf = self.confidence(as_float(logits))
        c = self.history.normalized(indices).to(device=conf.device, dtype=conf.dtype)
        if c.shape != conf.shape:
            raise ValueError(f"indices must be [batch] = [{conf.shape[0]}], got {c.shape[0]} entries")
        c2, conf2 = c.roll(-1), conf.roll(-1)
        s = torch.sign(c - c2)
        return F.relu(-s * (conf - conf2) + (c - c2).abs()).mean()

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        check_logits_targets(logits, targets)
        logits = as_float(logits)
        return F.cross_entropy(logits, targets) + self.rank_weight * self.ranking_loss(logits, indices)

    @torch.no_grad()
    def update_history(
        self, logits: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor, *, sync: bool = False
    ) -> None:
        """Record ``argmax(logits) == targets`` for ``indices``; call after every optimiser step."""
        check_logits_targets(logits, targets)
        self.history.update(indices, logits.argmax(dim=1) == targets, sync=sync)

    def next_epoch(self) -> None:
        """Call once at the end of every training epoch (advances the history's epoch counter)."""
        self.history.next_epoch()

    def extra_repr(self) -> str:
        return f"rank_weight={self.rank_weight}, rank_target={self.rank_target!r}"
