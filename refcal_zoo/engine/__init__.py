"""The training engine: Accelerate loop, schedules, evaluation gathering, run folder."""

from .evaluate import predict_logits
from .loop import EpochStats, StepContext, train_one_epoch
from .optim import build_optimizer, build_scheduler, lr_factor
from .trainer import RunResult, Trainer, train
from .validate import registry_problems, validate_config

__all__ = [
    "EpochStats",
    "RunResult",
    "StepContext",
    "Trainer",
    "build_optimizer",
    "build_scheduler",
    "lr_factor",
    "predict_logits",
    "registry_problems",
    "train",
    "train_one_epoch",
    "validate_config",
]
