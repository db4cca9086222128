"""AdaFocal (Ghosh, Schaaf, Gormley, NeurIPS 2022; reference notes A.11).

Unlike the RefCal release (where ``update_bin_stats`` is never called and AdaFocal degenerates to focal loss
with gamma = 1, refcal notes section 7.2), the gammas here move only through
:meth:`AdaFocalLoss.update_from_validation`, which the trainer must call -- normally once at the end of every
epoch::

    ada = AdaFocalLoss().to(device)
    for epoch in range(epochs):
        for x, y in train_loader:
            loss = ada(model(x), y); ...
        val_logits, val_labels = collect(model.eval(), val_loader)  # full validation set, no grad
        stats = ada.update_from_validation(val_logits, val_labels)  # new bins + gammas (log them)
    torch.save({"model": ..., "adafocal": ada.state_dict()}, path)

Under DDP every rank must call ``update_from_validation`` with the *whole* validation set (gather the logits
and labels first), so that all ranks keep identical gammas. Never feed it test data.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from .base import CalibrationLoss, as_float, check_logits_targets

__all__ = ["AdaFocalLoss"]


class AdaFocalLoss(CalibrationLoss):
    """Focal / inverse-focal loss with one gamma per confidence bin, adapted from validation calibration gaps.

    State (buffers, in ``state_dict``): ``gammas`` ``[num_bins]``, ``bin_lowers`` / ``bin_uppers``
    ``[num_bins]`` (initially equal-width, ``b/B .. (b+1)/B``; after an update the equal-mass validation bins)
    and ``num_updates``.

    Loss for a training sample with true-class probability ``p_t``: its bin ``b`` is found by looking ``p_t``
    (detached) up among the stored bin boundaries with ``[lower, upper)`` membership, the first bin open below
    and the last open above; then with ``g = gammas[b]``

    * ``g >= 0``: ``-(1 - p_t + 1e-20)^g log p_t``  (focal),
    * ``g < 0``:  ``-(1 + p_t)^|g| log p_t``        (inverse focal),

    averaged over the batch (mean reduction; the official code sums).

    Defaults are the paper's: 15 bins, ``lam = 1``, ``gamma_initial = 1``, ``switch_point = 0.2``,
    ``gamma_min = -2``, ``gamma_max = 20``. ``needs_validation = True``.
    """

    needs_validation = True

    def __init__(
        self,
        num_bins: int = 15,
        lam: float = 1.0,
        gamma_initial: float = 1.0,
        switch_point: float = 0.2,
        gamma_min: float = -2.0,
        gamma_max: float = 20.0,
    ) -> None:
        super().__init__()
        if int(num_bins) < 1:
            raise ValueError(f"num_bins must be >= 1, got {num_bins}")
        if not gamma_min <= gamma_initial <= gamma_max:
            raise ValueError(
                f"need gamma_min <= gamma_initial <= gamma_max, got {gamma_min}, {gamma_initial}, {gamma_max}"
            )
        if switch_point < 0:
            raise ValueError(f"switch_point must be >= 0, got {switch_point}")
        self.num_bins = int(num_bins)
        self.lam = float(lam)
        self.gamma_initial = float(gamma_initial)
        self.switch_point = float(switch_point)
        self.gamma_min, self.gamma_max = float(gamma_min), float(gamma_max)
        edges = torch.linspace(0.0, 1.0, self.num_bins + 1)
        self.register_buffer("gammas", torch.full((self.num_bins,), self.gamma_initial))
        self.register_buffer("bin_lowers", edges[:-1].clone())
        self.register_buffer("bin_uppers", edges[1:].clone())
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------ loss
    def gamma_for(self, pt: torch.Tensor) -> torch.Tensor:
        """Per-sample gamma for true-class probabilities ``pt`` (no gradient)."""
        pt = pt.detach()
        inner = self.bin_lowers[1:].to(device=pt.device, dtype=pt.dtype).contiguous()
        idx = torch.bucketize(pt, inner, right=True)  # bin b  <=>  lower_b <= pt < lower_{b+1}
        return self.gammas.to(device=pt.device, dtype=pt.dtype)[idx]

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        check_logits_targets(logits, targets)
        logpt = F.log_softmax(as_float(logits), dim=1).gather(1, targets[:, None]).squeeze(1)
        pt = logpt.exp()
        gamma = self.gamma_for(pt)
        g = gamma.abs()
        focal = (-torch.expm1(logpt)).clamp_min(1e-20) ** g
        inverse = (1.0 + pt) ** g
        factor = torch.where(gamma >= 0, focal, inverse)
        return (-factor * logpt).mean()

    # ------------------------------------------------------------------ state update
    @torch.no_grad()
    def update_from_validation(
        self,
        val_probs_or_logits: torch.Tensor,
        val_labels: torch.Tensor,
        *,
        inputs: Literal["auto", "logits", "probs"] = "auto",
    ) -> dict[str, torch.Tensor]:
        """Recompute the equal-mass validation bins and update every bin's gamma (the AdaFocal rule).

        ``val_probs_or_logits`` is ``[N, K]`` for the *whole* validation set (``N >= num_bins``).
        ``inputs="auto"`` treats it as probabilities when every entry is in [0, 1] and every row sums to 1
        (+-1e-3), else as logits.

        Bins: the validation samples sorted by top-label confidence are split into ``num_bins`` chunks of
        (almost) equal size (every sample counted, ties split arbitrarily). For bin b, ``gap_b = mean conf -
        accuracy``; the stored boundaries become ``lower_0 = 0``, ``lower_b = `` smallest confidence of chunk
        b, ``upper_b = lower_{b+1}``, ``upper_{B-1} = 1``. Update, per bin::

            gamma_b <- gamma_b * exp(lam * gap_b)    if gamma_b > 0
            gamma_b <- gamma_b * exp(-lam * gap_b)   otherwise
            if |gamma_b| < switch_point: gamma_b <- -switch_point if gamma_b > 0 else +switch_point
            gamma_b <- clip(gamma_b, gamma_min, gamma_max)

        So an over-confident bin (gap > 0) raises a positive gamma (more focal) and an under-confident one
        lowers it, eventually switching to inverse focal. Returns ``{"gap", "gamma", "lower", "upper",
        "count"}`` (CPU tensors) for logging.
        """
        x = torch.as_tensor(val_probs_or_logits).detach().to("cpu", torch.float64)
        y = torch.as_tensor(val_labels).detach().to("cpu")
        if x.dim() != 2 or x.shape[1] < 2:
            raise ValueError(f"validation predictions must be [N, K >= 2], got shape {tuple(x.shape)}")
        if y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"validation labels must be [N] = [{x.shape[0]}], got shape {tuple(y.shape)}")
        if y.is_floating_point():
            raise ValueError("validation labels must be integer class indices")
        if x.shape[0] < self.num_bins:
            raise ValueError(f"need at least num_bins = {self.num_bins} validation samples, got {x.shape[0]}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("validation predictions contain NaN or inf")
        if inputs not in ("auto", "logits", "probs"):
            raise ValueError(f"inputs must be 'auto', 'logits' or 'probs', got {inputs!r}")
        if inputs == "auto":
            is_probs = bool(((x >= 0) & (x <= 1)).all()) and bool(((x.sum(1) - 1).abs() <= 1e-3).all())
        else:
            is_probs = inputs == "probs"
        probs = x if is_probs else torch.softmax(x, dim=1)
        conf, pred = probs.max(dim=1)
        correct = (pred == y).to(torch.float64)

        order = torch.argsort(conf, stable=True)
        chunks = torch.tensor_split(order, self.num_bins)
        gap = torch.stack([conf[c].mean() - correct[c].mean() for c in chunks])
        count = torch.tensor([c.numel() for c in chunks])
        lowers = torch.stack([conf[c[0]] for c in chunks])
        lowers[0] = 0.0
        uppers = torch.cat([lowers[1:], lowers.new_ones(1)])

        g = self.gammas.detach().to("cpu", torch.float64)
        new = torch.where(g > 0, g * torch.exp(self.lam * gap), g * torch.exp(-self.lam * gap))
        small = new.abs() < self.switch_point
        new = torch.where(
            small, torch.where(new > 0, -self.switch_point, self.switch_point).to(new.dtype), new
        )
        new = new.clamp(self.gamma_min, self.gamma_max)

        self.gammas.copy_(new.to(self.gammas.dtype))
        self.bin_lowers.copy_(lowers.to(self.bin_lowers.dtype))
        self.bin_uppers.copy_(uppers.to(self.bin_uppers.dtype))
        self.num_updates += 1
        return {"gap": gap, "gamma": new, "lower": lowers, "upper": uppers, "count": count}

    def extra_repr(self) -> str:
        return (
            f"num_bins={self.num_bins}, lam={self.lam}, gamma_initial={self.gamma_initial}, "
            f"switch_point={self.switch_point}, gamma_min={self.gamma_min}, gamma_max={self.gamma_max}"
        )
