"""MiSLAS (Zhong et al., "Improving Calibration for Long-Tailed Recognition", CVPR 2021; dvlab-research/MiSLAS).

Stage 1 (:class:`MixupTraining`, ``train.*``): the whole network trained with mixup (``lambda ~ Beta(alpha,
alpha)``, alpha 1; the loss ``lambda * CE(z, y_a) + (1 - lambda) * CE(z, y_b)``), the usual long-tail schedule
(200 epochs, SGD lr 0.1, batch 128, wd 2e-4, x0.1 at epochs 160 and 180, 5 warm-up epochs).

Stage 2 (:class:`ClassifierRetraining`, ``stage2.*``): the encoder is frozen (no gradient) and the classifier is
re-trained for 10 epochs on class-balanced batches (an epoch: as many draws as training images, as the official
loop) with label-aware smoothing (``method.base_loss``), together with
a *learnable weight scaling* (LWS: one multiplier per class on the logits, initialised to 1). The classifier learns
at ``classifier_lr_scale`` times the stage's rate (official ``lr_factor``), the scaling at the full rate (0.1,
cosine). With ``shift_bn`` the encoder's BatchNorm layers stay in training mode, so their running statistics move
to the class-balanced distribution (the "shifted batch normalisation"; official ``shift_bn``). The scaling folds
into the linear classifier when the stage ends (``W' = diag(s) W``, ``b' = s * b``), so the published model is a
plain timm classifier whose logits are those the stage trained.

Departures from the official code, on purpose: the epoch of stage 2 is selected on the validation split
(``train.select``), never on the test split as the official ``model_best`` is; the stage-2 cosine schedule is
stepped per batch instead of per epoch.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import ConfigError
from .base import ClassifierMethod, Criterion, Method, Transform
from .two_stage import FrozenEncoderClassifier

__all__ = ["ClassifierRetraining", "MixupTraining", "ScaledClassifier", "fold_logit_scale"]


class MixupTraining(Method):
    """Plain training on mixed images: ``x = lambda x_i + (1 - lambda) x_j`` over a random pairing of the batch."""

    name = "mislas:mixup"

    def __init__(self, criterion: Criterion, alpha: float = 1.0) -> None:
        if criterion.needs_indices or criterion.needs_validation:
            raise ConfigError("mixup needs a stateless classification loss (not crl or adafocal)")
        if not alpha > 0:
            raise ConfigError(f"method.mislas.mixup_alpha must be > 0, got {alpha}")
        self.criterion = criterion
        self.beta = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha)))

    def to(self, device: torch.device) -> MixupTraining:
        self.criterion.to(device)
        return self

    def loss(self, module: nn.Module, batch: dict[str, torch.Tensor], transform: Transform):
        x, y = transform(batch["image"]), batch["label"]
        lam = float(self.beta.sample())  # the global RNG: checkpointed, so a resumed run draws the same values
        perm = torch.randperm(x.shape[0], device=x.device)
        logits = module(lam * x + (1.0 - lam) * x[perm]).float()
        loss = lam * self.criterion(logits, y, batch["index"]) + (1.0 - lam) * self.criterion(logits, y[perm],
                                                                                                batch["index"])
        return loss, logits, y, {}


def fold_logit_scale(model: nn.Module, scale: torch.Tensor) -> nn.Module:
    """Fold per-class logit multipliers into ``model``'s linear classifier in place: ``s * (W f + b)`` becomes
    ``(diag(s) W) f + s * b``."""
    fc = model.get_classifier()
    with torch.no_grad():
        s = scale.detach().to(fc.weight)
        fc.weight.mul_(s[:, None])
        if fc.bias is not None:
            fc.bias.mul_(s)
    return model


class ScaledClassifier(FrozenEncoderClassifier):
    """A frozen-encoder classifier (only the classifier trains) with a per-class logit scale (LWS); with
    ``shift_bn`` the encoder's BatchNorm layers stay in training mode, so their statistics follow the batches."""

    def __init__(self, model: nn.Module, shift_bn: bool = False) -> None:
        super().__init__(model)
        self.shift_bn = shift_bn
        fc = model.get_classifier()
        self.scale = nn.Parameter(torch.ones(fc.out_features, device=fc.weight.device))

    def train(self, mode: bool = True) -> ScaledClassifier:
        super().train(mode)
        self.model.train(mode and self.shift_bn)
        self.model.get_classifier().train(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.scale


class ClassifierRetraining(ClassifierMethod):
    name = "mislas:classifier"

    def __init__(self, criterion: Criterion, shift_bn: bool = False, classifier_lr_scale: float = 0.2) -> None:
        super().__init__(criterion)
        self.shift_bn = shift_bn
        self.classifier_lr_scale = float(classifier_lr_scale)

    def check_model(self, model: nn.Module) -> None:
        fc = model.get_classifier()
        if not isinstance(fc, nn.Linear):
            raise ConfigError(f"mislas folds its learnable weight scaling into a linear classifier, but "
                              f"{type(model).__name__}.get_classifier() is {type(fc).__name__}; use a model with a "
                              "linear head")

    def wrap(self, model: nn.Module) -> nn.Module:
        self.check_model(model)
        return ScaledClassifier(model, self.shift_bn)

    def param_groups(self, module: nn.Module) -> list[dict]:
        return [{"params": list(module.model.get_classifier().parameters()), "lr_scale": self.classifier_lr_scale},
                {"params": [module.scale], "lr_scale": 1.0}]

    def classifier_of(self, module: nn.Module) -> nn.Module:
        return fold_logit_scale(copy.deepcopy(module.model), module.scale)

    def unwrap(self, module: nn.Module) -> nn.Module:
        model = fold_logit_scale(module.model, module.scale)
        for p in model.parameters():
            p.requires_grad_(True)
        return model
