"""Model cards: huggingface_hub ``ModelCard`` with a ``model-index`` of ``EvalResult``s and a practitioner's body.

Every number in a card comes from the folder it describes (``metrics.json``, ``config.json``'s run record,
``config.yaml``/``train_config.yaml``, ``lt_indices.json``, ``temperature.json``); nothing is typed by hand.
Raw metrics have ``metric_config: raw``; after temperature scaling ``metric_config: temperature_scaled`` (the
``ts/<key>`` of ``metrics.json``). :func:`card_metrics` reads them back.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..methods.base import TWO_STAGE_METHODS
from ..record import DatasetRecord, DeviceStretch, MethodRecord, RecordError, RunRecord, read_record
from ..weight_files import check_safetensors, is_sharded, shard_files
from .errors import PublishError

__all__ = ["CARD_METRICS", "CONFORMAL_ALPHAS", "PREDICTION_SETS", "FolderRecord", "build_model_card", "card_metrics",
           "frequency_third_metrics", "prediction_set_summary", "read_folder"]

#: Metrics reported in the model-index, raw and after temperature scaling.
CARD_METRICS = ("accuracy", "auroc_misclassification", "auroc_ovo", "ece", "sce", "ace", "smece", "nll", "brier",
                "aurc")
_BINNED = {"ece", "sce", "ace", "mce", "ece_equal_mass"}
METRIC_NAMES = {
    "accuracy": "Top-1 accuracy",
    "auroc_misclassification": "Misclassification AUROC (max-prob, correct vs wrong)",
    "auroc_ovo": "Macro one-vs-one AUROC",
    "ece": "Expected calibration error",
    "sce": "Static (classwise) calibration error",
    "ace": "Adaptive calibration error",
    "smece": "Smooth ECE",
    "nll": "Negative log-likelihood",
    "brier": "Brier score",
    "aurc": "Area under the risk-coverage curve",
}
TAGS = ["image-classification", "calibration", "long-tail", "timm", "safetensors", "refcal"]
DATASET_NAMES = {"uoft-cs/cifar10": "CIFAR-10", "uoft-cs/cifar100": "CIFAR-100", "cifar10": "CIFAR-10",
                 "cifar100": "CIFAR-100", "digits": "digits", "sklearn:digits": "digits"}
_HUB_DATASET = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
PAPER = "Hebbalaguppe et al., Enhancing Deep Neural Network Reliability with Refinement and Calibration (2026)"
PAPER_URL = "https://arxiv.org/abs/2605.23249"
#: The published prediction-set summary (computed from a run's validation and test logits at publish time).
PREDICTION_SETS = "prediction_sets.json"
#: Miscoverage levels of the card's prediction-set table.
CONFORMAL_ALPHAS = (0.1, 0.05)


def _n_bins() -> int:
    from ..metrics import evaluate_predictions

    return int(inspect.signature(evaluate_predictions).parameters["n_bins"].default)


@dataclass
class FolderRecord:
    """What a run folder or a published folder says about its model."""

    folder: Path
    config: dict[str, Any]
    record: RunRecord | None
    metrics: dict[str, Any] | None
    train_config: dict[str, Any] | None
    lt: dict[str, Any] | None
    temperature: dict[str, Any] | None
    log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str((self.record.name if self.record else None) or (self.train_config or {}).get("name")
                   or self.folder.name)

    def figure(self, name: str) -> str | None:
        return name if (self.folder / name).is_file() else None


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PublishError(f"'{path}' is not valid JSON ({exc})") from None


def read_folder(folder: str | Path) -> FolderRecord:
    """Read a run folder (``config.yaml``, ``log.jsonl``) or a published folder (``train_config.yaml``, ...)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PublishError(f"'{folder}' is not a folder; give a run folder (runs/<name>) or a published folder")
    config = _json(folder / "config.json")
    if not isinstance(config, dict):
        raise PublishError(f"'{folder}' has no config.json; give a finished run folder (runs/<name>) or a "
                           "published folder")
    train_config = None
    for candidate in ("train_config.yaml", "config.yaml"):
        if (folder / candidate).is_file():
            train_config = yaml.safe_load((folder / candidate).read_text())
            break
    log: list[dict[str, Any]] = []
    for candidate in ("train_log.jsonl", "log.jsonl"):
        if (folder / candidate).is_file():
            log = [json.loads(line) for line in (folder / candidate).read_text().splitlines() if line.strip()]
            break
    lt = _json(folder / "lt_indices.json")
    try:
        record = read_record(config, lt=lt)
    except RecordError as exc:
        raise PublishError(f"'{folder / 'config.json'}': {exc}") from None
    return FolderRecord(folder, config, record, _json(folder / "metrics.json"), train_config, lt,
                        _json(folder / "temperature.json"), log)


# ------------------------------------------------------------------------------------------- prediction sets


def _train_counts(rec: FolderRecord) -> list[int] | None:
    ds = rec.record.dataset if rec.record else None
    return (ds.train_counts if ds else None) or (rec.lt or {}).get("train_counts")


def _read_predictions(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            return np.asarray(f["logits"]), np.asarray(f["labels"])
    except (OSError, KeyError, ValueError) as exc:
        raise PublishError(f"'{path}' is not a predictions file with 'logits' and 'labels' ({exc}); rerun the "
                           "training that wrote it") from None


SEEDS_NOTE = "Test metrics of every seed this build trained"  # opens a note listing the spread over seeds


def _notes(pretrained_cfg: dict[str, Any]) -> list[str]:
    """The folder's notes (timm's ``pretrained_cfg.notes``: e.g. how a zoo entry was built and whether its budget
    is the recipe's), shown at the top of the card's training section."""
    notes = pretrained_cfg.get("notes")
    if isinstance(notes, str):
        notes = [notes]
    return [str(n) for n in notes or () if str(n).strip()]


def _finite_or_none(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def prediction_set_summary(rec: FolderRecord) -> dict[str, Any] | None:
    """Split-conformal coverage of a run folder, or ``None`` without both ``val_predictions.npz`` and
    ``test_predictions.npz``: thresholds fitted on the validation logits / T, measured on the test logits / T
    (:func:`refcal_zoo.calibration.conformal_report`, score ``thr``), marginal and class-conditional, at each of
    :data:`CONFORMAL_ALPHAS`. JSON-ready (non-finite values are ``None``)."""
    from ..calibration import conformal_report

    val, test = rec.folder / "val_predictions.npz", rec.folder / "test_predictions.npz"
    if not (val.is_file() and test.is_file()):
        return None
    val_z, val_y = _read_predictions(val)
    test_z, test_y = _read_predictions(test)
    t = rec.record.temperature if rec.record is not None and rec.record.temperature else 1.0
    val_z, test_z = val_z.astype(np.float64) / t, test_z.astype(np.float64) / t
    counts = _train_counts(rec)
    reports = []
    for alpha in CONFORMAL_ALPHAS:
        for classwise in (False, True):
            r = conformal_report(val_z, val_y, test_z, test_y, alpha, counts, score="thr", classwise=classwise)
            reports.append({"classwise": classwise, **{k: _finite_or_none(v) for k, v in r.items()}})
    return {"score": "thr", "temperature": float(t), "calibrated_on": "validation", "evaluated_on": "test",
            "n_cal": int(len(val_y)), "n": int(len(test_y)), "reports": reports}


def _prediction_sets(rec: FolderRecord) -> dict[str, Any] | None:
    """A folder's prediction-set summary: computed from its logits when it has both files, else the published one."""
    summary = prediction_set_summary(rec)
    if summary is not None:
        return summary
    published = _json(rec.folder / PREDICTION_SETS)
    return published if isinstance(published, dict) and published.get("reports") else None


def frequency_third_metrics(rec: FolderRecord) -> dict[str, float] | None:
    """Metrics of the test split per frequency third (``head/<key>``, ``mid/<key>``, ``tail/<key>`` and their
    ``ts/`` twins after temperature scaling, as :func:`refcal_zoo.metrics.evaluate_with_temperature` lays out shot
    groups), from a run folder's ``test_predictions.npz``; ``None`` without it or without training counts. For the
    card of a dataset whose shot groups are one group (CIFAR-10-LT at rho 10); publishing adds them to the folder's
    ``metrics.json``."""
    from ..metrics import FREQUENCY_THIRDS, SHOT_GROUPS, evaluate_with_temperature, frequency_thirds

    test, counts = rec.folder / "test_predictions.npz", _train_counts(rec)
    if not test.is_file() or not counts:
        return None
    z, y = _read_predictions(test)
    t = rec.record.temperature if rec.record is not None and rec.record.temperature else None
    m = evaluate_with_temperature(z.astype(np.float64), y, t, train_class_counts=counts, n_bins=_n_bins(),
                                  group_thresholds=frequency_thirds(counts))
    third_of = dict(zip(SHOT_GROUPS, FREQUENCY_THIRDS, strict=True))
    out = {}
    for key, value in m.items():
        prefix = "ts/" if key.startswith("ts/") else ""
        group, _, metric = key.removeprefix(prefix).partition("/")
        if metric and group in third_of:
            out[f"{prefix}{third_of[group]}/{metric}"] = value
    return out


# ---------------------------------------------------------------------------------------------------- helpers


def _num(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:.{digits}f}"


def _dataset_base(path: str | None) -> str:
    if not path:
        return "unknown dataset"
    return DATASET_NAMES.get(path, DATASET_NAMES.get(Path(path).name, Path(path).name or path))


def _dataset_title(ds: DatasetRecord | None) -> str:
    if ds is None:
        return "unknown dataset"
    base = _dataset_base(ds.id)
    rho = ds.rho
    if isinstance(rho, (int, float)) and rho > 1:
        return f"{base}-LT (rho={rho:g})"
    return base


def _hub_dataset_id(ds: DatasetRecord | None) -> str | None:
    return ds.id if ds is not None and ds.kind == "hub" and _HUB_DATASET.match(ds.id) else None


def _param_count(folder: Path) -> int | None:
    """Parameters in the folder's weights (one ``model.safetensors`` or the shards its index names), buffers
    excluded; ``None`` without weights."""
    files = [folder / "model.safetensors"]
    if not files[0].is_file():
        if not is_sharded(folder):
            return None
        files = [folder / name for name in shard_files(folder)]
    total = 0
    for weights in files:
        for key, meta in check_safetensors(weights).items():
            if key == "__metadata__" or "running_" in key or key.endswith("num_batches_tracked"):
                continue
            n = 1
            for s in meta["shape"]:
                n *= int(s)
            total += n
    return total


def _images_per_epoch(n: int, batch_size: int | None) -> int:
    if not batch_size or n <= batch_size:
        return n
    return (n // batch_size) * batch_size  # the training loader drops the last incomplete batch


def _eval_results(rec: FolderRecord, n_bins: int) -> list[EvalResult]:
    metrics = rec.metrics or {}
    ds = rec.record.dataset if rec.record else None
    temperature = rec.record.temperature if rec.record else None
    results = []
    for prefix, config in (("", "raw"), ("ts/", "temperature_scaled")):
        for key in CARD_METRICS:
            value = metrics.get(prefix + key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                continue
            args: dict[str, Any] = {}
            if key in _BINNED:
                args["num_bins"] = n_bins
                args["binning"] = "equal-width (lo, hi], confidence 1.0 in the last bin" if key in ("ece", "sce") \
                    else "equal-count"
            name = METRIC_NAMES[key]
            if prefix:
                name += f" after temperature scaling (T={temperature:.4f})" if isinstance(temperature, float) \
                    else " after temperature scaling"
                args["temperature"] = temperature
            results.append(EvalResult(
                task_type="image-classification",
                task_name="Image Classification",
                dataset_type=ds.id if ds is not None else "unknown",  # a Hub id, "digits" or a local name
                dataset_name=_dataset_title(ds),
                dataset_config=ds.config if ds is not None else None,
                dataset_split=(ds.test_split if ds is not None else None) or "test",
                dataset_args=({"rho": ds.rho, "lt_seed": ds.lt_seed, "train_indices_sha256": ds.train_sha256}
                              if ds is not None else None),
                metric_type=key,
                metric_value=float(value),
                metric_name=name,
                metric_config=config,
                metric_args=args or None,
            ))
    return results


def card_metrics(card: ModelCard | str | Path) -> dict[str, float]:
    """The model-index values of a card as ``metrics.json`` keys (``ts/<key>`` for temperature-scaled ones)."""
    if not isinstance(card, ModelCard):
        card = ModelCard.load(card) if Path(card).exists() else ModelCard(str(card))
    out = {}
    for r in card.data.eval_results or []:
        prefix = "ts/" if r.metric_config == "temperature_scaled" else ""
        out[prefix + r.metric_type] = r.metric_value
    return out


# ---------------------------------------------------------------------------------------------------- template

TEMPLATE = """---
{{ card_data }}
---

# {{ name }}

{{ summary }}

{% if headline %}| metric (test split, {{ n_test }} images) | raw | after temperature scaling |
|---|---|---|
{% for row in headline %}| {{ row[0] }} | {{ row[1] }} | {{ row[2] }} |
{% endfor %}{% endif %}
## Intended use

Classifying {{ input_desc }} into the {{ num_classes }} classes of {{ dataset_base }} when the *confidence* matters:
selective prediction (abstain below a confidence threshold), ranking predictions for review, or as a calibrated
baseline for research on calibration and refinement under class imbalance. The probabilities are calibrated on
data drawn like the training data; they are **not** guaranteed under distribution shift, on other label sets, or
for out-of-distribution inputs. Validate on your own data before relying on it for decisions.

## How to load

```python
import refcal_zoo
model = refcal_zoo.load("{{ load_id }}"){{ load_comment }}
```

`model(x)` returns logits / T (calibrated), in eval mode. `model.predict_proba(images)` takes uint8 or [0, 1]
float tensors `[N, 3, H, W]` or PIL images and applies the model's own preprocessing (mean {{ mean }}, std
{{ std }}, input size {{ input_size }}). `refcal_zoo.load(..., calibrated=False)` returns raw logits;
`model.model` is the plain timm classifier.
{% if timm_tag or repo_id %}
With timm (after `import refcal_zoo`, which registers `{{ arch }}`{% if timm_tag %} and its pretrained tags{% endif %}),
raw logits (the temperature is `config.json`'s `run_record.temperature`):

```python
{% if timm_tag %}timm.create_model("{{ timm_tag }}", pretrained=True)
{% endif %}{% if repo_id %}timm.create_model("hf-hub:{{ repo_id }}", pretrained=True)
{% endif %}```
{% endif %}
## Training recipe and budget actually used

{% for note in notes %}{{ note }}

{% endfor %}- Architecture: `{{ arch }}` (timm name){% if params %}, {{ params }} parameters{% endif %}.
- Method: {{ method_desc }}.
{% for line in training_lines %}- {{ line }}
{% endfor %}{% if has_train_config %}- Full resolved configuration: [`train_config.yaml`](train_config.yaml);
  reproduce with `accelerate launch recipes/train.py --config train_config.yaml output_dir=runs/{{ name }}`
  from a refcal_zoo checkout.
{% endif %}
## Data provenance

{% for line in data_lines %}- {{ line }}
{% endfor %}
## Evaluation

Metrics are computed by `refcal_zoo.metrics.evaluate_predictions` on the whole test split ({{ n_test }} images),
as fractions (not %), on the raw logits and after dividing them by the temperature. Binned metrics use
{{ n_bins }} bins; ECE bins are equal-width `(lo, hi]` with confidence 1.0 in the last bin.
"Misclassification AUROC" is refinement: how well the max-softmax confidence ranks correct predictions above wrong
ones (0.5 = no separation). "Macro one-vs-one AUROC" is the multiclass AUROC the RefCal paper reports.

{% if full_table %}| metric | raw | after TS | definition |
|---|---|---|---|
{% for row in full_table %}| `{{ row[0] }}` | {{ row[1] }} | {{ row[2] }} | {{ row[3] }} |
{% endfor %}{% else %}No metrics.json was available when this card was written.
{% endif %}
{% if figures %}## Reliability diagrams

{% for fig in figures %}![{{ fig[1] }}]({{ fig[0] }})
{% endfor %}{% endif %}
{% if groups %}## Head, medium and tail classes

{{ groups_intro }}

| group | classes | test images | accuracy | ECE | ECE after TS | NLL after TS | misclassification AUROC |
|---|---|---|---|---|---|---|---|
{% for g in groups %}| {{ g | join(" | ") }} |
{% endfor %}{% endif %}
{% if sets %}## Prediction sets (split conformal)

`model.predict_set(images, alpha)` returns, for each image, a set of labels that contains the true one with
probability at least 1 - alpha (for images drawn like the validation split); the thresholds were fitted on the
validation split ({{ sets.n_cal }} images, logits / T, score `thr`), the table is measured on the test split
({{ sets.n }} images). Marginal: one threshold for all classes; class-conditional: one per class, so the
guarantee holds for each class (a class with fewer than 1/alpha - 1 validation images is in every set).
The same validation split also chose the checkpoint and fitted the temperature, so its scores are not quite
exchangeable with new images' and the finite-sample guarantee is approximate here: the test-split coverage below
is what was measured.

| alpha | thresholds | coverage | mean set size | worst-class coverage | few-shot coverage |
|---|---|---|---|---|---|
{% for row in set_rows %}| {{ row | join(" | ") }} |
{% endfor %}
{% endif %}## Temperature

{{ temperature_line }}

## Limitations

- Trained on a long-tailed subset: tail classes have few training images, so their accuracy and calibration are
  worse than the head's (see the shot-group table); the test split is balanced.
- Calibration was fitted and measured on data like the training data ({{ input_desc }}); expect it to degrade
  under corruption or domain shift, and re-fit the temperature on your own validation data if you can.
- The weights are one training run (seed {{ seed }}). Runs of a recipe that differ only in the seed can land several
  points of accuracy apart on long-tailed data{% if seeds_noted %} (see the seeds in the notes above){% endif %}:
  compare recipes by their means over seeds, not one card with another.
{% if toy %}- digits-LT is a toy dataset (scikit-learn's 8x8 digits upsampled to 32x32): use this model to try the API,
  not as a benchmark result.
{% endif %}
## Citation

{{ paper }} ({{ paper_url }}). Model card and weights written by refcal_zoo {{ version }}.
"""


def _method_desc(method: MethodRecord | None) -> str:
    if method is None:
        return "unknown"
    name = method.name
    base = method.base_loss
    args = method.loss_args or {}
    arg_text = f" ({', '.join(f'{k}={v}' for k, v in args.items())})" if args else ""
    if name == "plain":
        return f"plain training with the `{base}` loss{arg_text}"
    if name == "mislas":
        return (f"MiSLAS: stage 1 trains the network with mixup, stage 2 re-trains the classifier and a learnable "
                f"per-class logit scale (folded into the published classifier) on the frozen encoder with "
                f"class-balanced batches and the `{base}` loss{arg_text}")
    sup = method.supcon or {}
    if name == "refcal":
        return (f"two-stage RefCal: stage 1 trains the encoder with the supervised contrastive loss (temperature "
                f"{sup.get('temperature')}, base temperature {sup.get('base_temperature')}, `{sup.get('augment')}` "
                f"views), stage 2 a linear classifier on the frozen encoder with the `{base}` loss{arg_text}")
    return (f"`{name}`: `{base}` loss{arg_text} on the classifier + {sup.get('weight')} x supervised contrastive loss "
            f"(temperature {sup.get('temperature')}, {sup.get('views')} views) on an L2-normalised projection head")


def _selection_lines(rec: FolderRecord) -> list[str]:
    """Which epoch's weights were published (the engine may select the best validation epoch)."""
    selection = rec.record.selection if rec.record else None
    scored = [r for r in rec.log if "val_accuracy" in r or "val_nll" in r]
    if not scored:
        if selection is not None and selection.epoch:
            return [f"Published weights: epoch {selection.epoch} (of the last stage), selected by `{selection.rule}` "
                    "on the validation split."]
        return []
    chosen, how = scored[-1], "the last epoch"
    if selection is not None and selection.epoch:
        stage = scored[-1].get("stage")
        match = [r for r in scored if r.get("stage") == stage and r.get("epoch") == selection.epoch]
        if match:
            chosen = match[-1]
            how = f"epoch {selection.epoch}" + (f" of stage `{stage}`" if stage not in (None, "train") else "")
            how += f", selected by `{selection.rule}` on the validation split"
    after_ts = (f", after temperature scaling {_num(chosen['val_ts_nll'])}" if "val_ts_nll" in chosen else "")
    return [f"Published weights: {how} (train accuracy {_num(chosen.get('train_accuracy'))}, validation accuracy "
            f"{_num(chosen.get('val_accuracy'))}, validation NLL {_num(chosen.get('val_nll'))}{after_ts})."
            + (_before_decay(rec, chosen, scored, selection.rule) if selection is not None and selection.epoch else "")]


def selected_stage(train_config: dict[str, Any], method_name: str | None) -> dict[str, Any]:
    """The resolved-config section of the stage whose epochs are selected: ``stage2`` for two-stage methods."""
    two_stage = method_name in TWO_STAGE_METHODS and bool(train_config.get("stage2"))
    return (train_config.get("stage2") if two_stage else train_config.get("train")) or {}


def first_lr_decay(section: dict[str, Any]) -> int | None:
    """The epoch after which a step schedule first lowers the learning rate (its first milestone); None otherwise."""
    milestones = section.get("milestones") or []
    return min(milestones) if section.get("schedule") == "step" and milestones else None


def _before_decay(rec: FolderRecord, chosen: dict[str, Any], scored: list[dict[str, Any]], rule: str) -> str:
    """A warning when the selected epoch precedes the step schedule's first learning-rate decay: the epochs after
    it usually score higher, and a reader comparing entries must know the selection, not the method, chose this."""
    method = rec.record.method if rec.record else None
    decay = first_lr_decay(selected_stage(rec.train_config or {}, method.name if method else None))
    epoch = chosen.get("epoch")
    if decay is None or epoch is None or epoch > decay:
        return ""
    later = [r for r in scored if r.get("stage") == chosen.get("stage") and r.get("epoch", 0) > decay
             and "val_accuracy" in r]
    best = max(later, key=lambda r: r["val_accuracy"], default=None)
    reached = (f"; after it, validation accuracy reached {_num(best['val_accuracy'])} (epoch {best['epoch']})"
               if best else "")
    why = (": the raw validation NLL rewards calibration as well as refinement (`train.select=best_ts_nll` selects "
           "on the NLL after temperature scaling)" if rule == "best_nll" else "")
    return (f" This epoch precedes the schedule's first learning-rate decay (after epoch {decay}){reached}, yet "
            f"`{rule}` ranked it above every later epoch. This entry's scores may therefore understate its recipe"
            f"{why}.")


def _budget_lines(rec: FolderRecord, train_counts: list[int] | None) -> list[str]:
    """Epochs and image passes per training stage, as logged (log.jsonl) or else as configured."""
    budget = rec.record.budget if rec.record else None
    stages: list[tuple[str, int]] = []
    for record in rec.log:
        name = str(record.get("stage", "train"))
        if stages and stages[-1][0] == name:
            stages[-1] = (name, stages[-1][1] + 1)
        else:
            stages.append((name, 1))
    source = "logged"
    if not stages:
        source = "configured"
        stages = [("train", int((budget.epochs if budget else 0) or 0))]
    if not train_counts:
        return [f"Epochs ({source}): " + ", ".join(f"{n} {e}" for n, e in stages) + "."]
    n_train = int(sum(train_counts))
    lines = []
    method = rec.record.method if rec.record else None
    for name, epochs in stages:
        batch = _stage_batch(rec, name)
        per_epoch = _images_per_epoch(n_train, batch)
        label = "Budget" if len(stages) == 1 else f"Budget of stage `{name}`"
        line = f"{label} ({source}): epochs {epochs} x {per_epoch:,} training images per epoch"
        if per_epoch != n_train:
            line += f" (of {n_train:,}; batch {batch}, last incomplete batch dropped)"
        line += f" = {per_epoch * epochs:,} image passes"
        views = ((method.supcon if method else None) or {}).get("views")
        if name == "contrastive" or (method is not None and method.name == "refcal_joint" and views and views > 1):
            line += f" ({2 if name == 'contrastive' else views} augmented views each)"
        lines.append(line + ".")
    return lines


def _stage_batch(rec: FolderRecord, stage: str) -> int | None:
    """The batch size a training stage used (``classifier``: the two-stage recipe's ``stage2``), as configured."""
    tc = rec.train_config or {}
    section = tc.get("stage2") if stage == "classifier" else tc.get("train")
    budget = rec.record.budget if rec.record else None
    return (section or {}).get("batch_size") or (budget.batch_size if budget else None)


def _time_line(rec: FolderRecord, train_counts: list[int] | None) -> str:
    """Wall-clock time and throughput; for a run that moved between devices, each device's own throughput (from the
    epoch log) beside the whole run's, which is an average over very different machines."""
    budget = rec.record.budget
    excluded = "training loop only; evaluation and temperature fitting excluded"
    stretches = budget.device_stretches()
    speeds = _stretch_speeds(rec, train_counts, stretches) if len(stretches) > 1 else None
    if speeds is None:
        on = f" on {budget.device}" if budget.device else ""
        return (f"Wall-clock training time: {budget.train_seconds} s{on} at {budget.train_images_per_second} "
                f"images/s ({excluded}).")
    each = "; ".join(f"{st.device} ({st.span}) at {ips:,.1f} images/s"
                     for st, ips in zip(stretches, speeds, strict=True))
    return (f"Wall-clock training time: {budget.train_seconds} s at {budget.train_images_per_second} images/s over "
            f"the whole run ({excluded}); by device: {each}.")


def _stretch_speeds(rec: FolderRecord, train_counts: list[int] | None,
                    stretches: list[DeviceStretch]) -> list[float] | None:
    """Images per second of each device stretch: the images of its logged epochs over their seconds (each epoch's
    seconds = its images / its logged images per second); ``None`` where the log does not cover every stretch."""
    if not train_counts or not rec.log:
        return None
    n_train = int(sum(train_counts))
    images_of = {stage: _images_per_epoch(n_train, _stage_batch(rec, stage))
                 for stage in {str(entry.get("stage", "train")) for entry in rec.log}}
    by_epoch = {}
    for position, entry in enumerate(rec.log, start=1):  # the log holds one record per epoch, over every stage
        ips = entry.get("images_per_second")
        if isinstance(ips, (int, float)) and ips > 0:
            images = images_of[str(entry.get("stage", "train"))]
            by_epoch[int(entry.get("step") or position)] = (images, images / ips)
    speeds = []
    for st in stretches:
        epochs = [by_epoch.get(e) for e in range(st.first_epoch, st.last_epoch + 1)]
        if not epochs or any(e is None for e in epochs):
            return None
        speeds.append(sum(i for i, _ in epochs) / sum(t for _, t in epochs))
    return speeds


_SHOT_INTRO = ("Shot groups by *training* images per class: many > 100, medium 20-100, few < 20 (computed on the test "
               "images whose true class is in the group).")


def _group_rows(metrics: dict[str, Any], train_counts: list[int] | None) -> tuple[list[tuple[str, ...]], str]:
    """Rows of the card's head / medium / tail table and the sentence that defines them: the shot groups, or, where
    they are one group (every class many-shot, as CIFAR-10-LT at rho 10) and ``metrics`` has them, the frequency
    thirds."""
    from ..metrics import FREQUENCY_THIRDS, SHOT_GROUPS, frequency_thirds, shot_groups

    names, intro, members = [g for g in SHOT_GROUPS if f"{g}/n" in metrics], _SHOT_INTRO, None
    if train_counts:
        members = shot_groups(train_counts)
    if len(names) < 2 and "head/n" in metrics and train_counts:
        only = f'"{names[0]}"; ' if names else ""
        hi, lo = frequency_thirds(train_counts)
        members = dict(zip(FREQUENCY_THIRDS, shot_groups(train_counts, thresholds=(hi, lo)).values(), strict=True))
        names = [g for g in FREQUENCY_THIRDS if f"{g}/n" in metrics]
        sizes = [len(members[g]) for g in FREQUENCY_THIRDS]
        intro = (f"The usual shot groups by *training* images per class (many > 100, medium 20-100, few < 20) put "
                 f"every class in one group here ({only}the rarest class has {min(train_counts):,} training images, "
                 f"the most frequent {max(train_counts):,}), so the table splits the classes by training frequency "
                 f"instead, as MiSLAS does on CIFAR-10-LT: head = the {sizes[0]} most frequent "
                 f"(more than {hi:,.0f} training images), tail = the {sizes[2]} rarest (fewer than {lo:,.0f}), mid = "
                 f"the other {sizes[1]}; computed on the test images whose true class is in the group.")
    rows = [(g, str(len(members[g])) if members is not None else "", _num(metrics.get(f"{g}/n")),
             _num(metrics.get(f"{g}/accuracy")), _num(metrics.get(f"{g}/ece")), _num(metrics.get(f"ts/{g}/ece")),
             _num(metrics.get(f"ts/{g}/nll")), _num(metrics.get(f"{g}/auroc_misclassification"))) for g in names]
    return rows, intro


def build_model_card(folder: str | Path, *, zoo_name: str | None = None, timm_tag: str | None = None,
                     repo_id: str | None = None) -> ModelCard:
    """Render the model card of a run folder or a published folder (numbers only from its files).

    Usage lines are only those that work: ``zoo_name`` (an entry of the zoo index), ``timm_tag`` (its timm
    pretrained tag) and ``repo_id`` (a Hub repo the folder has been pushed to); without them, the folder itself.
    """
    from .. import __version__
    from ..metrics import METRIC_DEFINITIONS

    rec = read_folder(folder)
    record = rec.record
    n_bins = _n_bins()
    metrics = rec.metrics or {}
    ds = record.dataset if record else None
    budget = record.budget if record else None
    method = record.method if record else None
    cfg = rec.config
    pcfg = cfg.get("pretrained_cfg") or {}
    tc = rec.train_config or {}
    temperature = record.temperature if record else None
    arch = cfg.get("architecture", "?")
    num_classes = cfg.get("num_classes")
    if zoo_name:
        load_id, load_comment = zoo_name, ""
    elif repo_id:
        load_id, load_comment = f"hf-hub:{repo_id}", ""
    else:
        load_id, load_comment = f"path/to/{rec.name}", "   # the folder holding this card"
    size = pcfg.get("input_size") or [3, 32, 32]
    input_desc = f"{size[1]}x{size[2]} RGB images"

    card_data = ModelCardData(
        model_name=rec.name,
        library_name="refcal_zoo",
        license="apache-2.0",
        pipeline_tag="image-classification",
        tags=TAGS + ([method.name] if method is not None and method.name not in TAGS else []),
        datasets=[d] if (d := _hub_dataset_id(ds)) else None,
        metrics=["accuracy", "ece", "nll", "brier", "roc_auc"],
        eval_results=_eval_results(rec, n_bins) or None,
    )

    headline = []
    for key in ("accuracy", "ece", "nll", "brier", "auroc_misclassification", "auroc_ovo"):
        if key in metrics:
            headline.append((METRIC_NAMES.get(key, key), _num(metrics.get(key)), _num(metrics.get(f"ts/{key}"))))
    full_table = []
    for key, definition in METRIC_DEFINITIONS.items():
        if key in metrics:
            full_table.append((key, _num(metrics.get(key)), _num(metrics.get(f"ts/{key}")), definition))

    train_counts = _train_counts(rec)
    training_lines = _budget_lines(rec, train_counts)
    if budget is not None and budget.train_seconds is not None:
        training_lines.append(_time_line(rec, train_counts))
    if record is not None and record.precision.mixed_precision not in (None, "no"):
        training_lines.append(f"Mixed precision: {record.precision.mixed_precision}"
                              + (", channels-last" if record.precision.channels_last else "") + ".")
    t = tc.get("train") or {}
    two_stage = method is not None and method.name in TWO_STAGE_METHODS and bool(tc.get("stage2"))
    supcon_cfg = (tc.get("method") or {}).get("supcon") or {}
    stage1_augment = supcon_cfg.get("augment") if two_stage and method.name == "refcal" else t.get("augment")
    if t:
        training_lines.append(
            f"{'Stage 1 optimiser' if two_stage else 'Optimiser'}: {t.get('optimizer')} (lr {t.get('lr')}, "
            f"momentum {t.get('momentum')}, weight decay {t.get('weight_decay')}), batch {t.get('batch_size')}, "
            f"schedule {t.get('schedule')}"
            + (f" (milestones {t.get('milestones')}, decay {t.get('lr_decay')})" if t.get("schedule") == "step" else "")
            + f", {t.get('warmup_epochs')} warm-up epochs"
            + (f", mixed precision {t.get('mixed_precision')}" if t.get("mixed_precision") not in (None, "no") else "")
            + f", augmentation {stage1_augment}, seed {t.get('seed')}.")
        if two_stage:
            s2 = tc["stage2"]
            what = ("classifier and logit scale on the frozen encoder, class-balanced batches"
                    if method.name == "mislas" else "linear classifier on the frozen encoder")
            training_lines.append(
                f"Stage 2 optimiser ({what}): {s2.get('optimizer')} "
                f"(lr {s2.get('lr')}, weight decay {s2.get('weight_decay')}), batch {s2.get('batch_size')}, "
                f"{s2.get('epochs')} epochs, schedule {s2.get('schedule')}, "
                f"augmentation {s2.get('augment')}.")
    elif budget is not None:
        training_lines.append(f"Batch {budget.batch_size}, lr {budget.lr}, schedule {budget.schedule}, "
                              f"seed {budget.seed}.")
    training_lines.extend(_selection_lines(rec))

    data_lines = _data_lines(rec, ds, train_counts, metrics)
    figures = [(f, alt) for f, alt in (("reliability.png", "Reliability diagram (raw logits, test split)"),
                                       ("reliability_ts.png", "Reliability diagram after temperature scaling"))
               if rec.figure(f)]
    groups, groups_intro = _group_rows(metrics, train_counts)
    if isinstance(temperature, (int, float)):
        tj = rec.temperature or {}
        how = {"nll": "minimising validation NLL", "ece_grid": "a grid search on validation ECE"}.get(
            tj.get("method"), f"method {tj.get('method')}")
        temperature_line = (f"T = {temperature:.4f}, fitted by {how} on the validation split ({tj.get('n', 'n/a')} "
                            "images). `refcal_zoo.load` divides the logits by T; the weights are unchanged.")
    else:
        temperature_line = "No temperature was fitted for this run (T = 1)."
    sets = _prediction_sets(rec)
    set_rows = [(f"{r.get('alpha'):g}", "class-conditional" if r.get("classwise") else "marginal",
                 _num(r.get("coverage")), _num(r.get("set_size"), 3), _num(r.get("min_class_coverage")),
                 _num(r.get("few/coverage"))) for r in (sets or {}).get("reports", [])]
    mean = [round(float(v), 4) for v in pcfg.get("mean", [])]
    std = [round(float(v), 4) for v in pcfg.get("std", [])]
    params = _param_count(rec.folder)
    method_desc = _method_desc(method)
    if record is not None:
        summary = (f"A `{arch}` image classifier trained on {_dataset_title(ds)} with {method_desc}"
                   + (", with a temperature fitted on held-out validation data so its confidence can be trusted."
                      if isinstance(temperature, (int, float)) else "."))
    else:
        summary = (f"A `{arch}` image classifier without a refcal_zoo training record: its data, method and metrics "
                   "are unknown, so nothing below is measured.")
    return ModelCard.from_template(
        card_data,
        template_str=TEMPLATE,
        name=rec.name,
        summary=summary,
        headline=headline,
        n_test=_num(metrics.get("n")),
        input_desc=input_desc,
        num_classes=num_classes,
        dataset_base=_dataset_base(ds.id if ds else None),
        load_id=load_id,
        load_comment=load_comment,
        timm_tag=timm_tag,
        repo_id=repo_id,
        arch=arch,
        mean=mean,
        std=std,
        input_size=list(size),
        params=f"{params:,}" if params else None,
        method_desc=method_desc,
        training_lines=training_lines,
        notes=_notes(pcfg),
        has_train_config=(rec.folder / "train_config.yaml").is_file(),
        data_lines=data_lines,
        n_bins=n_bins,
        full_table=full_table,
        figures=figures,
        groups=groups,
        groups_intro=groups_intro,
        temperature_line=temperature_line,
        sets=sets,
        set_rows=set_rows,
        seed=(budget.seed if budget else None) or t.get("seed"),
        seeds_noted=any(SEEDS_NOTE in note for note in _notes(pcfg)),
        toy=_dataset_base(ds.id if ds else None) == "digits",
        paper=PAPER,
        paper_url=PAPER_URL,
        version=__version__,
    )


def _data_lines(rec: FolderRecord, ds: DatasetRecord | None, train_counts: list[int] | None,
                metrics: dict[str, Any]) -> list[str]:
    """Provenance: the dataset by identity (never a machine path), its fingerprints, the split sizes and hashes."""
    if ds is None:
        return ["No training record: the training data is unknown."]
    described = ((rec.lt or {}).get("source") or {}).get("source")
    kind = {"hub": "Hugging Face Hub dataset", "builtin": "embedded dataset",
            "local": "a local dataset folder named"}.get(ds.kind, "dataset")
    line = f"Source: {kind} `{ds.id}`" + (f" (config `{ds.config}`)" if ds.config else "")
    line += f" at revision `{ds.revision}`" if ds.revision else ""
    line += f" ({described})" if described else ""
    if ds.image_column:
        line += f", columns `{ds.image_column}` / `{ds.label_column}`"
    lines = [line + "."]
    if ds.fingerprints:
        lines.append("`datasets` fingerprints: " + ", ".join(f"{k} `{v}`" for k, v in sorted(ds.fingerprints.items()))
                     + ".")
    if ds.rho is not None:
        lines.append(f"Training split: the exponential long-tailed subset of LDAM-DRW (Cao et al. 2019) with "
                     f"imbalance ratio rho={ds.rho:g}, head-class size n_max={ds.n_max}, seed {ds.lt_seed}: "
                     f"{sum(train_counts or []):,} images, per class {train_counts}.")
    if ds.val_counts:
        lines.append(f"Validation split (temperature fitting; never the test split): {sum(ds.val_counts):,} "
                     f"images, per class {ds.val_counts}.")
    lines.append(f"Test split: `{ds.test_split or 'test'}`, untouched ({metrics.get('n', 'n/a')} images).")
    lines.append(f"Indices sha256 (sorted int64): train `{ds.train_sha256}`, validation `{ds.val_sha256}`"
                 + (" (the indices are in [`lt_indices.json`](lt_indices.json))."
                    if (rec.folder / "lt_indices.json").is_file() else "."))
    return lines
