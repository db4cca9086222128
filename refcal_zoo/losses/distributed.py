"""Small ``torch.distributed`` helpers shared by SupCon (feature gathering) and CRL (history sync).

All of them are no-ops (they return their input) when ``torch.distributed`` is unavailable, not initialised,
or the world size is 1. They are collectives: under multi-process training **every rank must call them the
same number of times, in the same order**. Tensors must live on a device the backend supports (CUDA for NCCL,
CPU for gloo). Ranks may contribute different batch sizes (the first dimension is padded internally).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["is_distributed", "all_gather_no_grad", "all_gather_with_local_grad"]


def is_distributed() -> bool:
    """True when torch.distributed is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _gather_padded(t: torch.Tensor) -> tuple[list[torch.Tensor], list[int]]:
    world = dist.get_world_size()
    n = torch.tensor([t.shape[0]], device=t.device, dtype=torch.long)
    sizes_t = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes_t, n)
    sizes = [int(s.item()) for s in sizes_t]
    n_max = max(sizes)
    local = t.detach()
    if local.shape[0] < n_max:
        local = torch.cat([local, local.new_zeros((n_max - local.shape[0], *local.shape[1:]))])
    out = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(out, local.contiguous())
    return out, sizes


def all_gather_no_grad(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` from all ranks along dim 0, in rank order; the result carries no gradient.

    Bool tensors are not supported by every backend: convert them first (e.g. ``.long()``).
    """
    if not is_distributed():
        return t
    out, sizes = _gather_padded(t)
    return torch.cat([o[:s] for o, s in zip(out, sizes, strict=True)])


def all_gather_with_local_grad(t: torch.Tensor) -> torch.Tensor:
    """Like :func:`all_gather_no_grad`, but the local rank's slice is ``t`` itself, so gradients flow to it.

    Gradients do **not** flow to the other ranks' slices (they are constants here); see
    :class:`~refcal_zoo.losses.SupConLoss` for what that means for DDP gradient averaging.
    """
    if not is_distributed():
        return t
    out, sizes = _gather_padded(t)
    parts = [o[:s] for o, s in zip(out, sizes, strict=True)]
    parts[dist.get_rank()] = t
    return torch.cat(parts)
