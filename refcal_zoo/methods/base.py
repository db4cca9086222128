"""The method interface used by the engine, the stateful-loss bookkeeping, and how a config becomes stages."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import Config, TrainConfig
from ..errors import ConfigError

__all__ = ["ClassifierMethod", "Criterion", "Method", "Stage", "build_base_loss", "build_stages"]

Transform = Callable[[torch.Tensor], torch.Tensor]


class Criterion:
    """A classification loss from ``refcal_zoo.losses`` plus the bookkeeping its state needs.

    CRL (``needs_indices``) gets the batch's sample indices, its correctness history updated after every step
    and its epoch counter advanced after every epoch; AdaFocal (``needs_validation``) gets its per-bin gammas
    updated from the whole validation set after every epoch. Stateless losses pass straight through. With
    ``sync=True`` (several processes) CRL's history update gathers indices and correctness from every rank.
    """

    def __init__(self, loss: nn.Module, sync: bool = False, drw: tuple[int, torch.Tensor] | None = None) -> None:
        self.loss = loss
        self.sync = sync
        self.needs_indices = bool(getattr(loss, "needs_indices", False))
        self.needs_validation = bool(getattr(loss, "needs_validation", False))
        if drw is not None and not getattr(loss, "supports_class_weight", False):
            raise ConfigError(f"deferred re-weighting (drw_epoch) needs a loss with class weights (ce, logit_adjusted, "
                              f"balanced_softmax, ldam), not {type(loss).__name__}; unset drw_epoch or change the loss")
        self.drw = drw  # (first 0-based epoch, class weights [K]) of deferred re-weighting, or None

    def start_epoch(self, epoch: int) -> None:
        """DRW: the class weights are on from epoch ``drw[0]`` (0-based), off before (set every epoch, so resuming
        mid-run restores them)."""
        if self.drw is not None:
            self.loss.set_class_weight(self.drw[1] if epoch >= self.drw[0] else None)

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, labels, indices) if self.needs_indices else self.loss(logits, labels)

    def after_step(self, logits: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> None:
        if self.needs_indices:
            self.loss.update_history(logits.detach(), labels, indices, sync=self.sync)

    def end_epoch(self, val_logits: torch.Tensor | None, val_labels: torch.Tensor | None) -> dict[str, float]:
        logs: dict[str, float] = {}
        if self.needs_indices:
            self.loss.next_epoch()
        if self.needs_validation:
            if val_logits is None:
                raise RuntimeError("AdaFocal needs the validation logits at the end of every epoch")
            state = self.loss.update_from_validation(val_logits, val_labels, inputs="logits")
            logs["adafocal_gamma_mean"] = float(state["gamma"].float().mean())
        return logs

    def to(self, device: torch.device) -> Criterion:
        self.loss.to(device)
        return self


class Method:
    """How a stage trains: wraps the classifier, computes the loss of a batch, keeps per-epoch state.

    ``wrap(model)`` returns the module the optimiser trains (only its ``requires_grad`` parameters are
    optimised); ``unwrap(module)`` returns the classifier inside it. ``loss(module, batch, transform)`` returns
    ``(loss, logits, labels, logs)``: the logits/labels of the classification term (``None`` for a stage that
    trains no classifier) and scalar tensors to report. The hooks are called by the engine.
    """

    name = "method"
    trains_classifier = True
    criterion: Criterion | None = None

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors of the method's own state (e.g. CRL history, AdaFocal gammas) for checkpoints."""
        if self.criterion is None:
            return {}
        return {f"criterion.{k}": v for k, v in self.criterion.loss.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if self.criterion is not None:
            own = {k[len("criterion."):]: v for k, v in state.items() if k.startswith("criterion.")}
            self.criterion.loss.load_state_dict(own)

    def wrap(self, model: nn.Module) -> nn.Module:
        return model

    def unwrap(self, module: nn.Module) -> nn.Module:
        return self.classifier_of(module)

    def classifier_of(self, module: nn.Module) -> nn.Module:
        """The classifier inside ``module``, without changing anything (e.g. for saving the best epoch)."""
        return module

    def to(self, device: torch.device) -> Method:
        return self

    def check_model(self, model: nn.Module) -> None:
        """Raise ``ConfigError`` if the method cannot train ``model`` (called before any training)."""

    def param_groups(self, module: nn.Module) -> list[dict] | None:
        """Optimiser parameter groups of the wrapped ``module``, each ``{"params": [...], "lr_scale": x}`` (its
        learning rate is the stage's times ``x``); ``None``: every trainable parameter at the stage's rate."""
        return None

    def loss(self, module: nn.Module, batch: dict[str, torch.Tensor], transform: Transform):
        raise NotImplementedError

    def start_epoch(self, epoch: int) -> None:
        """Called before epoch ``epoch`` (0-based) of the stage."""

    def after_step(self, batch: dict[str, torch.Tensor], logits: torch.Tensor | None,
                   labels: torch.Tensor | None) -> None:
        """Called after every optimiser step with the batch and the logits the step was computed from."""

    def end_epoch(self, val_logits: torch.Tensor | None, val_labels: torch.Tensor | None) -> dict[str, float]:
        """Called after every epoch with the whole validation set's logits (None for non-classifier stages)."""
        return {}


class ClassifierMethod(Method):
    """A stage that trains a classifier with one ``Criterion`` on the (augmented) images: plain training, and the
    classifier stages of the two-stage methods (which add how the model is wrapped)."""

    def __init__(self, criterion: Criterion) -> None:
        self.criterion = criterion

    def to(self, device: torch.device) -> ClassifierMethod:
        self.criterion.to(device)
        return self

    def start_epoch(self, epoch: int) -> None:
        self.criterion.start_epoch(epoch)

    def loss(self, module: nn.Module, batch: dict[str, torch.Tensor], transform: Transform):
        logits = module(transform(batch["image"])).float()
        return self.criterion(logits, batch["label"], batch["index"]), logits, batch["label"], {}

    def after_step(self, batch, logits, labels) -> None:
        self.criterion.after_step(logits, labels, batch["index"])

    def end_epoch(self, val_logits, val_labels) -> dict[str, float]:
        return self.criterion.end_epoch(val_logits, val_labels)


@dataclass
class Stage:
    """One training stage: a method, the optimisation settings it uses, its augmentation and its batch sampling
    (``shuffle``, or ``class_balanced``: every class drawn equally often)."""

    name: str
    method: Method
    train: TrainConfig
    augment: str
    sampler: str = "shuffle"


def build_base_loss(name: str, args: dict[str, Any], num_train: int,
                    class_counts: list[int] | None = None) -> nn.Module:
    """A registry loss; CRL gets ``num_samples`` (the training-set size) unless given a history, the long-tail
    losses (``needs_class_counts``) get ``class_counts`` (the training images per class) unless given them."""
    from ..losses import LOSSES, build_loss

    key = name.lower().replace("-", "").replace("_", "").strip()
    args = dict(args)
    if getattr(LOSSES.get(key), "needs_indices", False) and "history" not in args:
        args.setdefault("num_samples", num_train)
    if getattr(LOSSES.get(key), "needs_class_counts", False) and "class_counts" not in args:
        if class_counts is None:
            raise ConfigError(f"loss '{name}' needs the training class counts; pass class_counts= to build_stages")
        args["class_counts"] = list(class_counts)
    try:
        return build_loss(name, **args)
    except ValueError as exc:
        raise ConfigError(f"method.base_loss / method.loss_args: {exc}") from None


def _drw(train: TrainConfig, section: str, class_counts: list[int] | None) -> tuple[int, torch.Tensor] | None:
    if train.drw_epoch is None:
        return None
    beta = 0.9999 if train.drw_beta is None else train.drw_beta  # LDAM-DRW's value
    if train.drw_epoch < 0 or not 0.0 <= beta < 1.0:
        raise ConfigError(f"{section}.drw_epoch must be >= 0 and {section}.drw_beta in [0, 1), got "
                          f"{train.drw_epoch} and {beta}")
    if class_counts is None:
        raise ConfigError(f"{section}.drw_epoch needs the training class counts; pass class_counts= to build_stages")
    from ..losses import drw_class_weights

    return train.drw_epoch, drw_class_weights(class_counts, beta)


TWO_STAGE_METHODS = {"refcal": ("contrastive", "classifier"), "mislas": ("mixup", "classifier")}  # stage names


def stage_plan(cfg: Config) -> list[tuple[str, int]]:
    """``(stage name, epochs)`` of each stage :func:`build_stages` makes for ``cfg.method``, building nothing
    (e.g. to report how far an interrupted run got)."""
    if cfg.method.name in TWO_STAGE_METHODS:
        first, second = TWO_STAGE_METHODS[cfg.method.name]
        return [(first, cfg.train.epochs), (second, cfg.stage2.epochs)]
    return [("train", cfg.train.epochs)]


def build_stages(cfg: Config, num_train: int, *, world_size: int = 1,
                 class_counts: list[int] | None = None) -> list[Stage]:
    """The stages of ``cfg.method``: plain and refcal_joint train in one stage, refcal and mislas in two.

    ``class_counts`` (training images per class) feed the long-tail losses and DRW (``train.drw_epoch``; for
    two-stage refcal ``stage2.drw_epoch``, the stage whose classifier loss it re-weights). For mislas,
    ``method.base_loss`` is the loss of stage 2 (label-aware smoothing); stage 1 is mixup cross-entropy.
    With ``world_size > 1`` (several processes) CRL's history is synchronised across ranks every step and SupCon
    is computed over the global batch (features gathered from every rank)."""
    sync = world_size > 1
    from .joint import RefCalJoint
    from .mislas import ClassifierRetraining, MixupTraining
    from .plain import Plain
    from .two_stage import LinearProbe, SupConPretrain

    m = cfg.method
    if m.name == "refcal" and cfg.train.drw_epoch is not None:
        raise ConfigError("train.drw_epoch has no effect on refcal's contrastive stage (no classifier loss); set "
                          "stage2.drw_epoch to re-weight the classifier stage")
    if m.name == "mislas" and cfg.train.drw_epoch is not None:
        raise ConfigError("train.drw_epoch has no effect on mislas (stage 1 is mixup cross-entropy); unset it")
    two_stage = m.name in TWO_STAGE_METHODS
    train = cfg.stage2 if two_stage else cfg.train
    section = "stage2" if two_stage else "train"
    criterion = Criterion(build_base_loss(m.base_loss, m.loss_args, num_train, class_counts), sync=sync,
                          drw=_drw(train, section, class_counts))
    if m.name == "plain":
        return [Stage("train", Plain(criterion), cfg.train, cfg.train.augment)]
    if m.name == "refcal_joint":
        method = RefCalJoint(criterion, m.supcon, cfg.model.proj_dim, cfg.model.proj_hidden_dim, world_size)
        return [Stage("train", method, cfg.train, cfg.train.augment)]
    if m.name == "refcal":
        return [
            Stage("contrastive", SupConPretrain(m.supcon, cfg.model.proj_dim, cfg.model.proj_hidden_dim, world_size),
                  cfg.train, m.supcon.augment),
            Stage("classifier", LinearProbe(criterion), cfg.stage2, cfg.stage2.augment),
        ]
    if m.name == "mislas":
        mixup = MixupTraining(Criterion(build_base_loss("ce", {}, num_train, class_counts)), m.mislas.mixup_alpha)
        retrain = ClassifierRetraining(criterion, m.mislas.shift_bn, m.mislas.classifier_lr_scale)
        return [
            Stage("mixup", mixup, cfg.train, cfg.train.augment),
            Stage("classifier", retrain, cfg.stage2, cfg.stage2.augment, sampler="class_balanced"),
        ]
    raise ConfigError(f"unknown method.name '{m.name}' (choose plain, refcal, refcal_joint or mislas)")
