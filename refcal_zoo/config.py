"""Run configuration: dataclasses loaded from YAML, with ``base:`` inheritance and ``section.key=value`` overrides.

``base:`` names one file or a list of files (relative to the config's folder), merged in order and then
overridden by the config itself.

Configuration is data: every knob of a run lives here, is written to the run folder as ``config.yaml``, and
can be overridden on the command line (``train.epochs=5 dataset.path=../shared/datasets/cifar10``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError

__all__ = [
    "AUGMENT_CHOICES",
    "RESUMABLE_CHANGES",
    "CalibrationConfig",
    "Config",
    "DatasetConfig",
    "MethodConfig",
    "MislasConfig",
    "ModelConfig",
    "Stage2Config",
    "SupConConfig",
    "TrainConfig",
    "config_problems",
    "config_to_dict",
    "flatten",
    "is_resumable_change",
    "load_config",
    "read_config_yaml",
    "raise_problems",
]

#: batch augmentations (the names of ``refcal_zoo.data.AUGMENTATIONS``; a test keeps the two in step)
AUGMENT_CHOICES = ("none", "crop_flip", "rrc_flip", "simclr")
Augment = Literal["none", "crop_flip", "rrc_flip", "simclr"]


@dataclass
class ModelConfig:
    arch: str = "resnet32_cifar"  # any timm architecture name (ours are registered on import)
    num_classes: int | None = None  # None: taken from the dataset
    drop_rate: float = 0.0
    proj_dim: int = 128  # projection head output (contrastive methods only)
    proj_hidden_dim: int | None = None  # None: same width as the backbone's pre-logits features
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments for timm.create_model


@dataclass
class DatasetConfig:
    path: str = "digits"  # "digits" (embedded), a Hub dataset id, or a local folder (HF layout or imagefolder)
    config: str | None = None  # dataset configuration name (e.g. "plain_text")
    train_split: str = "train"
    test_split: str = "test"
    val_split: str | None = None  # a ready-made validation split; None: carve one from unused train images
    image_column: str | None = None  # None: detected (the column of Image type)
    label_column: str | None = None  # None: detected (the ClassLabel column; fine_label preferred)
    rho: float = 10.0  # imbalance ratio n_max / n_min of the long-tailed training subset (1 = balanced)
    lt_seed: int = 0  # seed of the long-tail subset (legacy NumPy RNG, as LDAM-DRW)
    n_max: int | None = None  # head-class size; None: the smallest per-class count available
    val_per_class: int = 50  # balanced validation images per class, drawn from images not in the LT subset
    image_size: int | None = None  # resize decoded images to this square size; None: keep (must be uniform)
    mean: list[float] | None = None  # normalisation; None: the model's pretrained_cfg mean/std
    std: list[float] | None = None


@dataclass
class SupConConfig:
    temperature: float = 0.1
    base_temperature: float | None = None  # None: unscaled loss; the official SupContrast code uses 0.07
    weight: float = 1.0  # lambda of the joint objective (refcal_joint)
    weight_warmup_epochs: float = 0.0  # refcal_joint: ramp lambda linearly from 0 over these epochs
    views: int = 2  # augmented views per image (refcal_joint: 1 or 2; refcal stage 1 always uses 2)
    augment: Augment = "simclr"  # augmentation of the contrastive stage of two-stage refcal


@dataclass
class MislasConfig:
    """MiSLAS (Zhong et al., CVPR 2021): stage 1 trains with mixup (``train.*``), stage 2 re-trains the classifier
    with learnable weight scaling on frozen features, class-balanced batches and ``method.base_loss`` (label-aware
    smoothing) (``stage2.*``)."""

    mixup_alpha: float = 1.0  # stage 1: mixing weight lambda ~ Beta(alpha, alpha)
    shift_bn: bool = False  # stage 2: update the encoder's BatchNorm statistics on the class-balanced batches
    classifier_lr_scale: float = 0.2  # stage 2: the classifier's lr is stage2.lr times this (the scaling's: stage2.lr)


@dataclass
class MethodConfig:
    # refcal: two-stage SupCon; refcal_joint: one stage; mislas: mixup, then classifier re-training
    name: Literal["plain", "refcal", "refcal_joint", "mislas"] = "plain"
    base_loss: str = "ce"  # the classification loss (refcal, mislas: of stage 2); any name of refcal_zoo.losses
    loss_args: dict[str, Any] = field(default_factory=dict)
    supcon: SupConConfig = field(default_factory=SupConConfig)
    mislas: MislasConfig = field(default_factory=MislasConfig)


@dataclass
class TrainConfig:
    epochs: int = 200
    batch_size: int = 128
    eval_batch_size: int = 1024
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 2e-4
    schedule: Literal["step", "cosine", "constant"] = "step"
    milestones: list[int] = field(default_factory=lambda: [160, 180])
    lr_decay: float = 0.1  # multiplicative decay at each milestone (step schedule)
    warmup_epochs: float = 5.0  # linear warm-up from ~0 to lr
    min_lr: float = 0.0  # floor of the cosine schedule
    wd_exclude_norm_bias: bool = False  # no weight decay on normalisation weights and biases
    # auto: bf16 where the device computes it natively, else fp32 (engine/hardware.py); no | fp16 | bf16;
    # null: whatever `accelerate launch --mixed_precision` says. A bare YAML `no`/`false` means "no".
    mixed_precision: str | None = "auto"
    grad_accum_steps: int = 1  # optimiser step every N batches (effective batch = batch_size * N * processes)
    seed: int = 1234
    augment: Augment = "crop_flip"
    grad_clip_norm: float | None = None
    drw_epoch: int | None = None  # deferred re-weighting (LDAM-DRW): class-balanced weights from this 0-based epoch
    drw_beta: float | None = None  # DRW: w_j ~ (1 - beta) / (1 - beta^n_j) (Cui et al. 2019); None: 0.9999
    # model selection on validation (never test): raw NLL, NLL after temperature scaling (refinement), accuracy
    select: Literal["best_nll", "best_ts_nll", "best_accuracy", "last"] = "best_nll"
    checkpoint_every_epochs: int = 1  # 0: never at epoch ends
    checkpoint_every_steps: int = 0  # 0: never mid-epoch
    keep_checkpoints: int = 2
    log_with: list[str] = field(default_factory=list)  # Accelerate trackers, e.g. [tensorboard]; log.jsonl always
    channels_last: str | bool = "auto"  # auto: NHWC where the kernels prefer it (CUDA, AVX2+ CPUs); true | false
    compile: str | bool = "auto"  # torch.compile the model; auto: on CUDA only (a net loss on small CPUs)

    def __post_init__(self) -> None:
        self.mixed_precision = _normalise_switch(self.mixed_precision, off="no")
        self.channels_last = _normalise_switch(self.channels_last)
        self.compile = _normalise_switch(self.compile)


@dataclass
class Stage2Config(TrainConfig):
    """Stage 2 of the two-stage methods: the classifier on the frozen encoder. The defaults are two-stage refcal's
    (SupContrast's linear recipe); the mislas preset sets MiSLAS's.

    Only the optimisation fields are used; precision, seed, checkpointing, tracking and model selection come
    from ``train``."""

    epochs: int = 100
    batch_size: int = 512
    lr: float = 5.0
    weight_decay: float = 0.0
    milestones: list[int] = field(default_factory=lambda: [60, 75, 90])
    lr_decay: float = 0.2
    warmup_epochs: float = 0.0
    augment: Augment = "rrc_flip"


@dataclass
class CalibrationConfig:
    temperature_scaling: Literal["nll", "ece_grid", "none"] = "nll"  # fitted on validation after training


@dataclass
class Config:
    name: str = "resnet8-digitslt-ce"
    output_dir: str | None = None  # None: runs/<name>
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir or Path("runs") / self.name)


def _normalise_switch(value: Any, off: Any = False) -> Any:
    """YAML reads ``no``/``false`` as a boolean and the config loader may hand it over as the string "False":
    map the spellings of on/off to ``True`` / ``off`` and leave other values (``auto``, ``bf16``) as they are."""
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("false", "no", "off"):
            return off
        if low in ("true", "yes", "on"):
            return True
        return low
    if value is False:
        return off
    return value


#: keys that may differ between a run and its resumption: budget, logging and everything used only after training
#: (a ``section.`` entry covers the whole section), so a run whose training finished can always be completed; and
#: where things are: the run folder may move, and ``dataset.path`` may name another copy of the same data (the
#: trainer checks the prepared splits' identity against the run's ``lt_indices.json``).
RESUMABLE_CHANGES = frozenset({
    "train.epochs", "stage2.epochs", "train.eval_batch_size", "stage2.eval_batch_size", "train.log_with",
    "train.checkpoint_every_epochs", "train.checkpoint_every_steps", "train.keep_checkpoints",
    "calibration.", "output_dir", "dataset.path",
})


def is_resumable_change(key: str) -> bool:
    """Whether the flat config key ``key`` may change when a run is resumed (see ``RESUMABLE_CHANGES``)."""
    return key in RESUMABLE_CHANGES or any(p.endswith(".") and key.startswith(p) for p in RESUMABLE_CHANGES)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("kwargs", "loss_args"):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The resolved configuration as plain data (what ``config.yaml`` holds)."""
    return dataclasses.asdict(cfg)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, *, validate: bool = True,
                extra_checks: Sequence[Callable[[Config], list[str]]] = ()) -> Config:
    """Read a YAML config (following ``base:`` chains), apply ``key=value`` overrides, validate, return it.

    Every problem found (unknown keys, wrong types, values outside a ``Literal``'s choices and, with ``validate``,
    the range and cross-field rules of :func:`config_problems`) is reported at once in one ``ConfigError``.
    The checks that need the registries (architectures, losses, trackers) live above this module
    (``refcal_zoo.engine.validate``); pass ``extra_checks=[registry_problems]`` to have them in the same error.
    ``train`` runs all of them again before preparing any data."""
    data: dict[str, Any] = _read_yaml_chain(Path(path)) if path is not None else {}
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}' is not of the form section.key=value (e.g. train.epochs=5)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override '{item}': the value is not valid YAML ({str(exc).splitlines()[0]}); quote "
                              "the whole override for the shell, e.g. 'method.loss_args={\"tau\": 1.0}'") from None
        _set_dotted(data, key.strip(), value)
    problems: list[str] = []
    cfg = _build(Config, data, "", problems)  # a bad key is reported and left at its default
    if validate:
        problems += config_problems(cfg)
        for check in extra_checks:
            problems += check(cfg)
    raise_problems(list(dict.fromkeys(problems)))
    return cfg


def raise_problems(problems: list[str]) -> None:
    """Raise one ``ConfigError`` listing every problem (one line), or nothing when the list is empty."""
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} problems in the configuration: "
                          + " | ".join(f"({i}) {p}" for i, p in enumerate(problems, 1)))


def config_problems(cfg: Config) -> list[str]:
    """Every range, sign and cross-field rule the configuration breaks (no registry look-ups), as messages."""
    out: list[str] = []

    def need(ok: bool, key: str, rule: str, value: Any) -> None:
        if not ok:
            out.append(f"{key} must be {rule}, got {value!r}")

    m, d, sc = cfg.model, cfg.dataset, cfg.method.supcon
    need(m.num_classes is None or m.num_classes >= 2, "model.num_classes", ">= 2 (or null: from the dataset)",
         m.num_classes)
    need(0 <= m.drop_rate < 1, "model.drop_rate", "in [0, 1)", m.drop_rate)
    need(m.proj_dim >= 1, "model.proj_dim", ">= 1", m.proj_dim)
    need(m.proj_hidden_dim is None or m.proj_hidden_dim >= 1, "model.proj_hidden_dim", ">= 1 (or null)",
         m.proj_hidden_dim)
    need(d.rho >= 1, "dataset.rho", ">= 1 (the imbalance ratio n_max / n_min; 1 = balanced)", d.rho)
    need(d.n_max is None or d.n_max >= 1, "dataset.n_max", ">= 1 (or null)", d.n_max)
    if d.n_max is not None and d.n_max >= 1 and d.rho >= 1 and int(d.n_max * (1.0 / d.rho)) < 1:
        out.append(f"dataset.n_max={d.n_max} with dataset.rho={d.rho:g} leaves the tail class with 0 training "
                   f"images (n_max / rho < 1); raise dataset.n_max to at least {math.ceil(d.rho)} or lower "
                   "dataset.rho")
    need(d.val_per_class >= 0, "dataset.val_per_class", ">= 0", d.val_per_class)
    need(d.image_size is None or d.image_size >= 1, "dataset.image_size", ">= 1 (or null)", d.image_size)
    for key, vals in (("dataset.mean", d.mean), ("dataset.std", d.std)):
        need(vals is None or len(vals) == 3, key, "3 numbers (R, G, B) or null", vals)
    need(d.std is None or all(v > 0 for v in d.std), "dataset.std", "> 0 in every channel", d.std)
    need(sc.temperature > 0, "method.supcon.temperature", "> 0", sc.temperature)
    need(sc.base_temperature is None or sc.base_temperature > 0, "method.supcon.base_temperature", "> 0 (or null)",
         sc.base_temperature)
    need(sc.weight >= 0, "method.supcon.weight", ">= 0", sc.weight)
    need(sc.weight_warmup_epochs >= 0, "method.supcon.weight_warmup_epochs", ">= 0", sc.weight_warmup_epochs)
    need(sc.views in (1, 2), "method.supcon.views", "1 or 2", sc.views)
    ms_cfg = cfg.method.mislas
    need(ms_cfg.mixup_alpha > 0, "method.mislas.mixup_alpha", "> 0", ms_cfg.mixup_alpha)
    need(ms_cfg.classifier_lr_scale > 0, "method.mislas.classifier_lr_scale", "> 0", ms_cfg.classifier_lr_scale)
    if cfg.method.name == "mislas" and cfg.train.drw_epoch is not None:
        out.append("train.drw_epoch has no effect on mislas (stage 1 is mixup cross-entropy); unset it")
    for section in ("train", "stage2"):
        t: TrainConfig = getattr(cfg, section)
        need(t.epochs >= 1, f"{section}.epochs", ">= 1", t.epochs)
        need(t.batch_size >= 1, f"{section}.batch_size", ">= 1", t.batch_size)
        need(t.eval_batch_size >= 1, f"{section}.eval_batch_size", ">= 1", t.eval_batch_size)
        need(t.lr > 0, f"{section}.lr", "> 0", t.lr)
        need(0 <= t.momentum < 1, f"{section}.momentum", "in [0, 1)", t.momentum)
        need(t.weight_decay >= 0, f"{section}.weight_decay", ">= 0", t.weight_decay)
        need(0 < t.lr_decay <= 1, f"{section}.lr_decay", "in (0, 1]", t.lr_decay)
        need(t.warmup_epochs >= 0, f"{section}.warmup_epochs", ">= 0", t.warmup_epochs)
        need(0 <= t.min_lr <= max(t.lr, 0), f"{section}.min_lr", f"in [0, {section}.lr]", t.min_lr)
        ms = t.milestones
        need(all(a > 0 for a in ms) and all(a < b for a, b in zip(ms, ms[1:], strict=False)), f"{section}.milestones",
             "positive and strictly increasing (epochs)", ms)
        need(t.grad_clip_norm is None or t.grad_clip_norm > 0, f"{section}.grad_clip_norm", "> 0 (or null)",
             t.grad_clip_norm)
    t = cfg.train  # precision, accumulation, checkpointing and tracking come from train for every stage
    need(t.grad_accum_steps >= 1, "train.grad_accum_steps", ">= 1", t.grad_accum_steps)
    need(t.checkpoint_every_epochs >= 0, "train.checkpoint_every_epochs", ">= 0 (0: never)", t.checkpoint_every_epochs)
    need(t.checkpoint_every_steps >= 0, "train.checkpoint_every_steps", ">= 0 (0: never)", t.checkpoint_every_steps)
    need(t.keep_checkpoints >= 1, "train.keep_checkpoints", ">= 1", t.keep_checkpoints)
    need(t.mixed_precision in (None, "auto", "no", "fp16", "bf16"), "train.mixed_precision",
         "auto, no, fp16 or bf16 (or null: from `accelerate launch`)", t.mixed_precision)
    for key in ("channels_last", "compile"):
        need(getattr(t, key) in (True, False, "auto"), f"train.{key}", "auto, true or false", getattr(t, key))
    need(bool(cfg.name.strip()), "name", "a non-empty string", cfg.name)
    return out


def read_config_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping a config file sets, merged over its ``base:`` chain, before defaults, overrides and validation
    (what a method preset in ``recipes/configs/methods/`` sets, for tools that apply it to another recipe)."""
    return _read_yaml_chain(Path(path))


def _read_yaml_chain(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    resolved = path.resolve()
    if resolved in seen:
        raise ConfigError(f"config 'base:' chain loops back to '{path}'")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping at the top level")
    base = data.pop("base", None)
    if base is None:
        return data
    bases = [base] if isinstance(base, str) else base
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"config file '{path}': base must be a file name or a list of file names")
    merged: dict[str, Any] = {}
    for b in bases:  # later bases override earlier ones; the file itself overrides all of them
        merged = _deep_merge(merged, _read_yaml_chain(path.parent / b, (*seen, resolved)))
    return _deep_merge(merged, data)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{key}': '{p}' is not a section")
        node = child
    node[parts[-1]] = value


def _build(cls: type, data: Any, prefix: str, problems: list[str]) -> Any:
    if not isinstance(data, dict):
        problems.append(f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {data!r}")
        return cls()
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in (k for k in data if k not in names):
        close = difflib.get_close_matches(key, names, n=1)
        hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(names)}"
        problems.append(f"unknown config key '{prefix}{key}'{hint}")
    kwargs = {}
    for name in names:
        if name in data:
            try:
                kwargs[name] = _coerce(data[name], hints[name], f"{prefix}{name}", problems)
            except ConfigError as exc:  # reported; the key keeps its default so the other checks can run
                problems.append(str(exc))
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, key: str, problems: list[str]) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, f"{key}.", problems)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        if value in args and not isinstance(value, bool):
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"config key '{key}' must be one of {', '.join(map(str, args))}, got {value!r}{hint}")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, problems)
    if tp is Any:
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        return [_coerce(v, args[0], key, problems) for v in value] if args else list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        try:
            number = float(value) if isinstance(value, str) else value  # YAML reads 2e-4 as a string
            if tp is int:
                if float(number) != int(number):
                    raise ValueError
                return int(number)
            number = float(number)
        except (TypeError, ValueError):
            raise ConfigError(f"config key '{key}' must be {'an integer' if tp is int else 'a number'}, "
                              f"got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
        return number
    if tp is str:
        if value is None or isinstance(value, (dict, list)):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return str(value)
    return value
