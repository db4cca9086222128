"""RefCal-joint: base loss on the classifier + lambda * SupCon on an L2-normalised projection head, one stage.

This is the single-stage objective the RefCal abstract describes (the official code trains two stages: see
``two_stage.py``). With ``views=2`` each image is augmented twice, the classification loss sees both views and
SupCon uses the other view of every image as a positive, so every anchor has one; with ``views=1`` only other
same-class images in the batch are positives and anchors without one are left out of the SupCon mean.
``weight_warmup_epochs`` ramps lambda linearly from 0. SupCon and the refinement loss are logged. Under several
processes SupCon is computed over the global batch (projections gathered from every rank).
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import SupConConfig
from ..errors import ConfigError
from ..losses import SupConLoss, refinement_loss
from ..models import ContrastiveClassifier
from .base import Criterion, Method, Transform


class RefCalJoint(Method):
    name = "refcal_joint"

    def __init__(self, criterion: Criterion, supcon: SupConConfig, proj_dim: int = 128,
                 proj_hidden_dim: int | None = None, world_size: int = 1) -> None:
        if supcon.views not in (1, 2):
            raise ConfigError(f"method.supcon.views must be 1 or 2, got {supcon.views}")
        self.criterion = criterion
        # several processes: SupCon over the global batch; each rank back-propagates into its own shard, so the
        # term is scaled by the world size to undo DDP's gradient averaging (see SupConLoss)
        self.supcon = SupConLoss(supcon.temperature, supcon.base_temperature, gather=world_size > 1)
        self.world_size = world_size
        self.full_weight = float(supcon.weight)
        self.warmup = float(supcon.weight_warmup_epochs)
        self.weight = self.full_weight if self.warmup <= 0 else 0.0
        self.views = supcon.views
        self.proj_dim = proj_dim
        self.proj_hidden_dim = proj_hidden_dim

    def wrap(self, model: nn.Module) -> nn.Module:
        return ContrastiveClassifier(model, self.proj_dim, self.proj_hidden_dim)

    def classifier_of(self, module: nn.Module) -> nn.Module:
        return module.backbone

    def to(self, device: torch.device) -> RefCalJoint:
        self.criterion.to(device)
        return self

    def start_epoch(self, epoch: int) -> None:
        self.weight = self.full_weight * (min(1.0, (epoch + 1) / self.warmup) if self.warmup > 0 else 1.0)
        self.criterion.start_epoch(epoch)

    def loss(self, module: nn.Module, batch: dict[str, torch.Tensor], transform: Transform):
        x, y, idx = batch["image"], batch["label"], batch["index"]
        b = x.shape[0]
        inputs = torch.cat([transform(x) for _ in range(self.views)]) if self.views > 1 else transform(x)
        logits, z = module(inputs, with_projection=True)
        logits, z = logits.float(), z.float()
        labels = y.repeat(self.views)
        base = self.criterion(logits, labels, idx.repeat(self.views))
        feats = z.view(self.views, b, -1).transpose(0, 1)  # [B, views, D]
        con = self.supcon(feats, y)
        with torch.no_grad():
            ref = refinement_loss(feats, y)
        logs = {"base_loss": base.detach(), "supcon": con.detach(), "refinement": ref,
                "supcon_weight": torch.tensor(self.weight)}
        return base + self.weight * self.world_size * con, logits, labels, logs

    def after_step(self, batch, logits, labels) -> None:
        b = batch["label"].shape[0]  # one prediction per image and step: the first view's
        self.criterion.after_step(logits[:b], labels[:b], batch["index"])

    def end_epoch(self, val_logits, val_labels) -> dict[str, float]:
        return self.criterion.end_epoch(val_logits, val_labels)
