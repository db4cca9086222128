"""Projection heads and the training-time wrapper that adds one to a timm classifier."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ProjectionHead", "ContrastiveClassifier", "pre_logits_dim"]


def pre_logits_dim(model: nn.Module) -> int:
    """Width of ``model.forward_head(x, pre_logits=True)`` for a timm model."""
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


class ProjectionHead(nn.Module):
    """SupCon projection head: Linear -> ReLU -> Linear, output L2-normalised (Khosla et al. 2020)."""

    def __init__(self, in_dim: int, out_dim: int = 128, hidden_dim: int | None = None) -> None:
        super().__init__()
        hidden_dim = hidden_dim or in_dim
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.fc2(F.relu(self.fc1(x))), dim=1)


class ContrastiveClassifier(nn.Module):
    """A timm classifier (``backbone``) plus a projection head on its pre-logits features.

    ``forward(x)`` returns logits only, so evaluation code treats it like any classifier;
    ``forward(x, with_projection=True)`` returns ``(logits, z)`` with ``z`` the L2-normalised projections used by
    the contrastive loss (one ``forward`` for both, so DDP wrappers see every call). Only the backbone is
    published: the projection head is a training device.
    """

    def __init__(self, backbone: nn.Module, proj_dim: int = 128, proj_hidden_dim: int | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.proj = ProjectionHead(pre_logits_dim(backbone), proj_dim, proj_hidden_dim)

    def forward(
        self, x: torch.Tensor, with_projection: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if not with_projection:
            return self.backbone(x)
        feats = self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)
        return self.backbone.get_classifier()(feats), self.proj(feats)
