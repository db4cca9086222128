"""Batches of uint8 tensors for ``torch.utils.data.DataLoader`` (and so for Accelerate's sharding).

The dataset implements ``__getitems__`` so the loader fetches a whole batch with one index operation; each
batch is a dict ``{"image": uint8 [B, 3, H, W], "label": int64 [B], "index": int64 [B]}``. The sample index
lets stateful methods (e.g. CRL's correctness history) track individual training images.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["TensorImageDataset", "make_loader"]


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
        idx = torch.as_tensor(indices, dtype=torch.long)
        return {"image": self.images[idx], "label": self.labels[idx], "index": idx}


def _passthrough(batch):
    return batch


def make_loader(
    dataset: TensorImageDataset, batch_size: int, *, train: bool, generator: torch.Generator | None = None
) -> DataLoader:
    """Shuffled, last-incomplete-batch-dropped loader for training; ordered, complete loader for evaluation.

    ``drop_last`` in training keeps BatchNorm away from size-1 batches (e.g. 1x1 maps in EfficientViT).
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        drop_last=train and len(dataset) > batch_size,
        collate_fn=_passthrough,
        generator=generator,
        num_workers=0,
    )
