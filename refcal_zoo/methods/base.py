"""The method interface used by the engine."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..config import MethodConfig, ModelConfig
from ..errors import ConfigError

__all__ = ["Method", "build_method", "build_base_loss"]

Transform = Callable[[torch.Tensor], torch.Tensor]


class Method:
    """Wraps a classifier for training and computes the loss of one batch.

    ``wrap(model)`` returns the module the optimiser trains (e.g. classifier + projection head);
    ``loss(module, batch, transform)`` returns ``(loss, logits, labels, logs)`` where logits/labels are
    those of the classification term (for running accuracy) and ``logs`` holds scalars to report.
    """

    name = "method"

    def wrap(self, model: nn.Module) -> nn.Module:
        return model

    def unwrap(self, module: nn.Module) -> nn.Module:
        """The publishable classifier inside the trained module."""
        return module

    def loss(
        self, module: nn.Module, batch: dict[str, torch.Tensor], transform: Transform
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError


def build_base_loss(name: str, args: dict) -> nn.Module:
    from ..losses import build_loss

    return build_loss(name, **args)


def build_method(cfg: MethodConfig, model_cfg: ModelConfig) -> Method:
    """The method named by ``cfg.name`` with its losses built from the config."""
    from .joint import RefCalJoint
    from .plain import Plain

    if cfg.name == "plain":
        return Plain(build_base_loss(cfg.base_loss, cfg.loss_args))
    if cfg.name == "refcal_joint":
        return RefCalJoint(build_base_loss(cfg.base_loss, cfg.loss_args), cfg.supcon,
                           model_cfg.proj_dim, model_cfg.proj_hidden_dim)
    raise ConfigError(f"unknown method.name '{cfg.name}' (choose plain or refcal_joint)")
