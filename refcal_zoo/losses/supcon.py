"""Supervised contrastive loss (Khosla et al., NeurIPS 2020) and the RefCal refinement loss."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SupConLoss", "refinement_loss"]


def _views_to_anchors(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if features.dim() != 3:
        raise ValueError(f"features must be [batch, views, dim], got shape {tuple(features.shape)}")
    if labels.dim() != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(f"labels must be [batch] matching features, got {tuple(labels.shape)}")
    b, v, d = features.shape
    # View-major order, as SupContrast's torch.cat(torch.unbind(features, 1)): all first views, then second...
    return features.transpose(0, 1).reshape(v * b, d), labels.repeat(v)


class SupConLoss(nn.Module):
    """SupCon "L_out" on L2-normalised embeddings, every view an anchor (``contrast_mode='all'``).

    ``loss_i = -(tau / base_temperature) * mean_{p in P(i)} log softmax_{a != i}(z_i . z_a / tau)[p]``, averaged
    over the anchors that have at least one positive in the batch. Anchors without a positive are left out
    of the mean (not counted as zero, which would dilute the loss). ``base_temperature=None`` means an
    unscaled loss (``base_temperature = temperature``); the official SupContrast code uses 0.07.

    Input ``features`` is ``[batch, views, dim]`` and ``labels`` is ``[batch]``. Computed in float32.
    """

    def __init__(self, temperature: float = 0.1, base_temperature: float | None = None) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.base_temperature = float(base_temperature if base_temperature is not None else temperature)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        z, y = _views_to_anchors(features.float(), labels)
        n = z.shape[0]
        logits = z @ z.T / self.temperature
        self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
        logits = logits.masked_fill(self_mask, float("-inf"))
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        pos = (y[:, None] == y[None, :]) & ~self_mask
        n_pos = pos.sum(1)
        has_pos = n_pos > 0
        if not bool(has_pos.any()):
            return z.sum() * 0.0  # no anchor has a positive: zero loss that keeps the graph
        mean_log_prob_pos = log_prob.masked_fill(~pos, 0.0).sum(1)[has_pos] / n_pos[has_pos]
        return -(self.temperature / self.base_temperature) * mean_log_prob_pos.mean()


def refinement_loss(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """RefCal's refinement loss ``mean_i [max_{n in N_i} z_i.z_n - max_{p in P_i} z_i.z_p]`` (for monitoring).

    On unit vectors this equals the nearest-positive minus nearest-negative half squared distance. Anchors
    without a positive or without a negative in the batch are left out. Returns NaN if none qualifies.
    """
    z, y = _views_to_anchors(features.float(), labels)
    sim = z @ z.T
    self_mask = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    same = y[:, None] == y[None, :]
    pos, neg = same & ~self_mask, ~same
    ok = pos.any(1) & neg.any(1)
    if not bool(ok.any()):
        return sim.new_tensor(float("nan"))
    max_neg = sim.masked_fill(~neg, float("-inf")).max(1).values
    max_pos = sim.masked_fill(~pos, float("-inf")).max(1).values
    return (max_neg - max_pos)[ok].mean()
