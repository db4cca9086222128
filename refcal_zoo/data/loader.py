"""Batches of uint8 tensors for ``torch.utils.data.DataLoader`` (and so for Accelerate's sharding).

The dataset implements ``__getitems__`` so the loader fetches a whole batch with one index operation; each
batch is a dict ``{"image": uint8 [B, 3, H, W], "label": int64 [B], "index": int64 [B]}``. The sample index
lets stateful methods (e.g. CRL's correctness history) track individual training images.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["ClassBalancedSampler", "EpochShuffleSampler", "TensorImageDataset", "make_loader"]


class TensorImageDataset(Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError("images must be a uint8 tensor [N, C, H, W]")
        if labels.shape != (images.shape[0],):
            raise ValueError("labels must be [N] matching images")
        self.images = images
        self.labels = labels.long()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "label": self.labels[i], "index": torch.tensor(i)}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.images.device)
        return {"image": self.images[idx], "label": self.labels[idx], "index": idx}


class _EpochSeededSampler(Sampler[int]):
    """A sampler whose order depends only on ``(seed, epoch)``: call ``set_epoch`` before each epoch."""

    num_samples: int

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)


class EpochShuffleSampler(_EpochSeededSampler):
    """A permutation that depends only on ``(seed, epoch)``: call ``set_epoch`` before each epoch.

    Because the order of epoch e does not depend on what ran before, a run resumed in the middle of epoch e
    sees exactly the batches an uninterrupted run sees (with the first ones skipped).
    """

    def __init__(self, num_samples: int, seed: int = 0) -> None:
        super().__init__(seed)
        self.num_samples = num_samples

    def __iter__(self):
        return iter(torch.randperm(self.num_samples, generator=self._generator()).tolist())


class ClassBalancedSampler(_EpochSeededSampler):
    """Class-aware sampling (Shen et al. 2016; Kang et al. ICLR 2020, used by MiSLAS's classifier stage): every class
    is drawn equally often, whatever its size.

    The classes come in rounds, each round a fresh permutation of the ``K`` classes; class ``c`` contributes its
    images in shuffled passes (a new permutation every time they are used up). An epoch has ``num_samples`` draws
    (default: as many as there are images, as MiSLAS's stage 2, whose epoch stops after ``len(dataset)`` images).
    As :class:`EpochShuffleSampler`, the order depends only on ``(seed, epoch)``, so resuming mid-epoch is exact.
    """

    def __init__(self, labels: torch.Tensor, seed: int = 0, num_samples: int | None = None) -> None:
        super().__init__(seed)
        labels = torch.as_tensor(labels).detach().cpu().long()
        if labels.dim() != 1 or labels.numel() == 0:
            raise ValueError("class-balanced sampling needs a non-empty 1-D tensor of labels")
        self.by_class = [torch.nonzero(labels == c).flatten() for c in torch.unique(labels).tolist()]
        self.num_samples = int(num_samples) if num_samples is not None else labels.numel()
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")

    def __iter__(self):
        g = self._generator()
        k = len(self.by_class)
        n_rounds = -(-self.num_samples // k)
        rounds = torch.stack([torch.randperm(k, generator=g) for _ in range(n_rounds)])  # [rounds, K] class order
        pools = []
        for ix in self.by_class:  # n_rounds draws of each class: whole shuffled passes over its images
            passes = -(-n_rounds // len(ix))
            pools.append(torch.cat([ix[torch.randperm(len(ix), generator=g)] for _ in range(passes)])[:n_rounds])
        pool = torch.stack(pools)  # [K, n_rounds]
        # the r-th round draws the r-th image of every class's pool, in that round's class order
        order = pool[rounds, torch.arange(n_rounds)[:, None].expand(-1, k)]
        return iter(order.flatten()[:self.num_samples].tolist())


def _passthrough(batch):
    return batch


def make_loader(dataset: TensorImageDataset, batch_size: int, *, train: bool, seed: int = 0,
                class_balanced: bool = False) -> DataLoader:
    """Epoch-seeded shuffled loader without the last incomplete batch for training; ordered, complete loader for
    evaluation. ``class_balanced`` (training only): :class:`ClassBalancedSampler` instead of a plain shuffle.

    ``drop_last`` in training keeps BatchNorm away from size-1 batches (e.g. 1x1 maps in EfficientViT). Every
    loader has a private generator, so creating an iterator never draws from the global RNG that augmentation
    and dropout use (which would break bit-identical resumption).
    """
    if class_balanced and not train:
        raise ValueError("class-balanced sampling is for training loaders only")
    sampler = (ClassBalancedSampler(dataset.labels, seed) if class_balanced
               else EpochShuffleSampler(len(dataset), seed) if train else None)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=train and len(sampler if sampler is not None else dataset) > batch_size,
        collate_fn=_passthrough,
        generator=torch.Generator().manual_seed(seed),
        num_workers=0,
    )
