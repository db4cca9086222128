"""Two-stage RefCal, as the official release trains it (paper-faithful).

Stage 1 (``SupConPretrain``): encoder + projection head (Linear-ReLU-Linear to 128-d, L2-normalised) trained with
the supervised contrastive loss only, on two SimCLR-augmented views per image, every one of the 2N views an anchor.
Stage 2 (``LinearProbe``): the encoder is frozen (eval mode, so BatchNorm uses its running statistics, and no
gradient) and only the linear classifier is trained, with the chosen base loss ("RefCal + X" = stage 2 with loss
X). Temperature scaling on the validation split follows, as for every method.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import SupConConfig
from ..losses import SupConLoss, refinement_loss
from ..models import ContrastiveClassifier
from .base import ClassifierMethod, Method, Transform

__all__ = ["FrozenEncoderClassifier", "LinearProbe", "SupConPretrain"]


class SupConPretrain(Method):
    name = "refcal:contrastive"
    trains_classifier = False

    def __init__(self, supcon: SupConConfig, proj_dim: int = 128, proj_hidden_dim: int | None = None,
                 world_size: int = 1) -> None:
        # several processes: the global batch's SupCon, scaled by the world size (see RefCalJoint)
        self.supcon = SupConLoss(supcon.temperature, supcon.base_temperature, gather=world_size > 1)
        self.world_size = world_size
        self.proj_dim = proj_dim
        self.proj_hidden_dim = proj_hidden_dim

    def wrap(self, model: nn.Module) -> nn.Module:
        model.get_classifier().requires_grad_(False)  # stage 1 trains the encoder and the projection head only
        return ContrastiveClassifier(model, self.proj_dim, self.proj_hidden_dim)

    def classifier_of(self, module: nn.Module) -> nn.Module:
        return module.backbone

    def unwrap(self, module: nn.Module) -> nn.Module:
        backbone = module.backbone
        backbone.get_classifier().requires_grad_(True)
        return backbone

    def loss(self, module: nn.Module, batch: dict[str, torch.Tensor], transform: Transform):
        x, y = batch["image"], batch["label"]
        b = x.shape[0]
        _, z = module(torch.cat([transform(x), transform(x)]), with_projection=True)
        feats = z.float().view(2, b, -1).transpose(0, 1)  # [B, 2, D]
        con = self.supcon(feats, y)
        with torch.no_grad():
            ref = refinement_loss(feats, y)
        return con * self.world_size, None, None, {"supcon": con.detach(), "refinement": ref}


class FrozenEncoderClassifier(nn.Module):
    """A timm classifier whose encoder is frozen: only ``get_classifier()`` trains; the rest stays in eval mode."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        for p in model.parameters():
            p.requires_grad_(False)
        for p in model.get_classifier().parameters():
            p.requires_grad_(True)

    def train(self, mode: bool = True) -> FrozenEncoderClassifier:
        super().train(mode)
        self.model.eval()  # BatchNorm running statistics, no dropout, in the encoder
        self.model.get_classifier().train(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            feats = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        return self.model.get_classifier()(feats)


class LinearProbe(ClassifierMethod):
    name = "refcal:classifier"

    def wrap(self, model: nn.Module) -> nn.Module:
        return FrozenEncoderClassifier(model)

    def classifier_of(self, module: nn.Module) -> nn.Module:
        return module.model

    def unwrap(self, module: nn.Module) -> nn.Module:
        model = module.model
        for p in model.parameters():
            p.requires_grad_(True)
        return model
