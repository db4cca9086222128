"""Supervised contrastive loss (Khosla et al., NeurIPS 2020) and RefCal's refinement loss (notes 2.1-2.2).

Conventions (all functions): ``features`` is ``[batch, views, dim]`` of L2-normalised embeddings (the
projection head output after ``F.normalize``; not checked), ``labels`` is ``[batch]``. Views are flattened
view-major (all first views, then all second views, ...) as SupContrast's ``torch.cat(torch.unbind(features,
1))``, so per-anchor outputs have length ``views * batch`` in that order. Every view is an anchor
(``contrast_mode='all'``). Positives of an anchor are all *other* views with the same label (its own other
views included); the softmax denominator runs over all other views. Half/bfloat16 inputs are computed in
float32, float64 stays float64.
"""

from __future__ import annotations

import torch
from torch import nn

from .distributed import all_gather_no_grad, all_gather_with_local_grad

__all__ = [
    "SupConLoss",
    "supcon_per_anchor",
    "refinement_loss",
    "refinement_loss_per_anchor",
    "gather_features",
]


def _views_to_anchors(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if features.dim() != 3:
        raise ValueError(f"features must be [batch, views, dim], got shape {tuple(features.shape)}")
    if labels.dim() != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(f"labels must be [batch] matching features, got {tuple(labels.shape)}")
    if features.dtype not in (torch.float32, torch.float64):
        features = features.float()
    b, v, d = features.shape
    return features.transpose(0, 1).reshape(v * b, d), labels.to(features.device).repeat(v)


def _supcon_terms(
    features: torch.Tensor, labels: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unscaled per-anchor SupCon (0 where no positive; NaN-free forward and backward), has-positive mask."""
    z, y = _views_to_anchors(features, labels)
    n = z.shape[0]
    logits = z @ z.T / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    pos = (y[:, None] == y[None, :]) & ~self_mask
    n_pos = pos.sum(1)
    has_pos = n_pos > 0
    mean_log_prob_pos = log_prob.masked_fill(~pos, 0.0).sum(1) / n_pos.clamp_min(1).to(log_prob.dtype)
    return -mean_log_prob_pos, has_pos


def supcon_per_anchor(
    features: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 0.1,
    base_temperature: float | None = None,
) -> torch.Tensor:
    """Per-anchor SupCon ``(tau/tau_b) * (LSE_{a != i}(z_i.z_a/tau) - mean_{p in P(i)} z_i.z_p/tau)``.

    Shape ``[views * batch]`` (view-major); NaN for anchors without a positive. ``base_temperature=None``
    means ``tau_b = tau`` (unscaled).
    """
    tb = temperature if base_temperature is None else base_temperature
    loss, has_pos = _supcon_terms(features, labels, temperature)
    loss = (temperature / tb) * loss
    return torch.where(has_pos, loss, torch.full_like(loss, float("nan")))


def gather_features(
    features: torch.Tensor, labels: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """All-gather ``features`` (dim 0) and ``labels`` over the process group, in rank order.

    The local rank's slice of the result *is* the local ``features`` tensor, so gradients flow to the local
    shard; the other ranks' slices are constants. Labels carry no gradient. No-op when ``torch.distributed``
    is not initialised or has one process. A collective: every rank must call it. Batch sizes may differ
    across ranks.
    """
    feats = all_gather_with_local_grad(features)
    if labels is None:
        return feats, None
    return feats, all_gather_no_grad(labels.to(features.device))


class SupConLoss(nn.Module):
    """SupCon "L_out" on L2-normalised embeddings, every view an anchor (``contrast_mode='all'``).

    ``loss_i = -(tau / base_temperature) * mean_{p in P(i)} log softmax_{a != i}(z_i . z_a / tau)[p]``,
    averaged over the anchors that have at least one positive in the batch. Anchors without a positive are
    left out of the mean (not counted as zero, which would dilute the loss as SupContrast does since commit
    72fd989). If no anchor has a positive the loss is a graph-connected 0. ``base_temperature=None`` means an
    unscaled loss (``base_temperature = temperature``); the official SupContrast/RefCal code hard-codes 0.07,
    i.e. a hidden x1.43 scale at ``tau = 0.1`` -- pass ``base_temperature=0.07`` to reproduce it.

    ``gather=True`` all-gathers features and labels over the process group first (:func:`gather_features`) and
    computes the loss over the *global* batch on every rank (identical value on all ranks). Gradient caveat:
    each rank only back-propagates into its own shard, so after DDP's gradient *averaging* the parameter
    gradient is ``1/world_size`` times the gradient of the global loss -- multiply the loss by ``world_size``
    (or scale the learning rate) to recover it exactly. No-op when not distributed.

    Input ``features`` is ``[batch, views, dim]`` and ``labels`` is ``[batch]``.
    """

    def __init__(
        self, temperature: float = 0.1, base_temperature: float | None = None, gather: bool = False
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if base_temperature is not None and base_temperature <= 0:
            raise ValueError(f"base_temperature must be > 0, got {base_temperature}")
        self.temperature = float(temperature)
        self.base_temperature = float(base_temperature if base_temperature is not None else temperature)
        self.gather = bool(gather)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.gather:
            features, labels = gather_features(features, labels)
        loss, has_pos = _supcon_terms(features, labels, self.temperature)
        if not bool(has_pos.any()):
            return loss.sum() * 0.0  # no anchor has a positive: zero loss that keeps the graph
        return (self.temperature / self.base_temperature) * loss[has_pos].mean()

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, base_temperature={self.base_temperature}, gather={self.gather}"
        )


def refinement_loss_per_anchor(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-anchor ``L_ref,i = max_{n in N_i} z_i.z_n - max_{p in P_i} z_i.z_p`` (view-major ``[views *
    batch]``).

    On unit vectors this equals ``min_p 1/2||z_i - z_p||^2 - min_n 1/2||z_i - z_n||^2``. NaN where the anchor
    has no positive or no negative in the batch.
    """
    z, y = _views_to_anchors(features, labels)
    sim = z @ z.T
    self_mask = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    same = y[:, None] == y[None, :]
    pos, neg = same & ~self_mask, ~same
    ok = pos.any(1) & neg.any(1)
    max_neg = sim.masked_fill(~neg, float("-inf")).max(1).values
    max_pos = sim.masked_fill(~pos, float("-inf")).max(1).values
    return torch.where(ok, max_neg - max_pos, torch.full_like(max_neg, float("nan")))


def refinement_loss(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """RefCal's refinement loss ``mean_i [max_{n in N_i} z_i.z_n - max_{p in P_i} z_i.z_p]`` (for monitoring).

    On unit vectors this equals the nearest-positive minus nearest-negative half squared distance. Anchors
    without a positive or without a negative in the batch are left out. Returns NaN if none qualifies.
    Lemma 2 (refcal notes 2.1): for ``0 < tau <= 1`` every anchor's SupCon loss exceeds its ``L_ref,i``.
    """
    per = refinement_loss_per_anchor(features, labels)
    ok = ~torch.isnan(per)
    if not bool(ok.any()):
        return per.new_tensor(float("nan"))
    return per[ok].mean()
