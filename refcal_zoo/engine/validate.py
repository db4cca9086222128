"""The whole-configuration check that runs before any data is prepared or any file is written.

``refcal_zoo.config`` checks types, choices and ranges on its own (it is the lowest layer); the rules that need
the registries live here, above it: the model architecture (timm), the loss and its arguments (the loss
registry), the method's stages (``build_stages`` dry run) and the experiment trackers (Accelerate). Every
problem is reported at once, in one ``ConfigError``.
"""

from __future__ import annotations

import difflib

from ..config import AUGMENT_CHOICES, Config, config_problems, raise_problems
from ..errors import ConfigError

__all__ = ["registry_problems", "validate_config"]


def _tracker_problems(names: list[str]) -> list[str]:
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    installed = {str(getattr(t, "value", t)) for t in get_available_trackers()}
    out = []
    for name in names:
        if name == "all":
            continue
        if name not in LOGGER_TYPE_TO_CLASS:
            close = difflib.get_close_matches(name, list(LOGGER_TYPE_TO_CLASS), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            out.append(f"train.log_with: unknown tracker '{name}' (choose from "
                       f"{', '.join(sorted(LOGGER_TYPE_TO_CLASS))}){hint}")
        elif name not in installed:
            out.append(f"train.log_with: tracker '{name}' is not installed; pip install {name} or remove it")
    return out


def _model_kwargs_problems(cfg: Config) -> list[str]:
    """``model.kwargs`` the architecture refuses (an unknown name, a bad classifier type), found by building the
    model on the meta device (no memory, no weights), and an LDAM loss on a cosine head that would scale twice."""
    import torch

    from ..models import create_model

    kwargs = {k: v for k, v in cfg.model.kwargs.items() if k not in ("pretrained", "checkpoint_path")}  # no I/O
    try:
        with torch.device("meta"):
            create_model(cfg.model.arch, num_classes=cfg.model.num_classes or 2, **kwargs)
    except (TypeError, ValueError) as exc:
        return [f"model.kwargs {cfg.model.kwargs} do not fit '{cfg.model.arch}': {exc}"]
    except Exception:  # noqa: BLE001  (an architecture that cannot be built on the meta device: checked when built)
        pass
    if cfg.model.kwargs.get("classifier") == "cosine" and cfg.method.base_loss == "ldam":
        args, scale = cfg.method.loss_args, cfg.model.kwargs.get("cosine_scale", 30.0)
        if not args.get("prescaled", False):
            return ["method.loss_args: LDAM on a cosine classifier (model.kwargs.classifier: cosine) needs "
                    "prescaled: true, since the head already multiplies by cosine_scale (see methods/ldam_drw.yaml)"]
        if isinstance(args.get("s", 30.0), (int, float)) and float(args.get("s", 30.0)) != float(scale):
            return [f"method.loss_args.s ({args.get('s', 30.0)}) must equal model.kwargs.cosine_scale ({scale}): "
                    "prescaled LDAM assumes the logits are s * cos"]
    return []


def registry_problems(cfg: Config) -> list[str]:
    """The problems only the registries can see: architecture, loss name and arguments, method (when its own
    ranges are fine, so nothing is reported twice), trackers."""
    import timm

    from ..data.augment import AUGMENTATIONS
    from ..methods import build_stages

    out: list[str] = []
    arch = cfg.model.arch
    if ":" not in arch and not timm.is_model(arch.split(".", 1)[0]):
        from ..models import create_model

        try:
            create_model(arch)  # raises the ConfigError with close matches
        except ConfigError as exc:
            out.append(str(exc))
    elif cfg.model.kwargs and ":" not in arch:  # a hub / local-dir arch would need its files: checked when built
        out += _model_kwargs_problems(cfg)
    if not any(p.startswith("method.") for p in config_problems(cfg)):
        try:
            # the loss (name, arguments) and the method's own checks, no training; placeholder class counts stand in
            # for the data's (the long-tail losses and DRW need some, their values are checked once data exists)
            build_stages(cfg, num_train=1, class_counts=[2, 1])
        except ValueError as exc:  # ConfigError, or a loss constructor refusing an argument's value
            out.append(str(exc) if isinstance(exc, ConfigError) else f"method.base_loss / method.loss_args: {exc}")
    missing = set(AUGMENT_CHOICES) ^ set(AUGMENTATIONS)
    if missing:  # the config's Literal and the data package disagree: a programming error, said plainly
        out.append(f"augmentation names out of step between config and data: {sorted(missing)}")
    out += _tracker_problems(cfg.train.log_with)
    return out


def validate_config(cfg: Config) -> None:
    """Raise one ``ConfigError`` listing every problem of ``cfg`` (ranges, choices, registries); else return.

    Reads nothing from disk and writes nothing: run it before preparing data (``train`` does)."""
    raise_problems(list(dict.fromkeys(config_problems(cfg) + registry_problems(cfg))))  # once each
