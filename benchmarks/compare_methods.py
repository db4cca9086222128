#!/usr/bin/env python
"""Train methods side by side (same backbone, budget, data and split; seeds 0/1/2) and tabulate every metric.

    python benchmarks/compare_methods.py --suite digits                 # every method on digits-LT (minutes)
    python benchmarks/compare_methods.py --suite digits --smoke         # 2 methods, 1 seed, 1 epoch (CI)
    python benchmarks/compare_methods.py --suite digits --parallel 4    # 4 (method, seed) cells at once
    python benchmarks/compare_methods.py --suite cifar10lt              # reduced CPU budget, 5-15 min a cell on 2 cores
    python benchmarks/compare_methods.py --suite cifar10lt --methods ce --retrain  # retrain recorded CE cells
    python benchmarks/compare_methods.py --suite cifar100lt-gpu         # the paper's full budget, one GPU
    python benchmarks/compare_methods.py --suite cifar10lt-budget       # CE / joint / two-stage at 3 wall-time budgets

Every (method, seed) cell is a normal recipe run (``recipes/train.py`` in a subprocess) written to
``benchmarks/results/<suite>/runs/<method>-s<seed>/`` (git-ignored). Finished cells are skipped, interrupted ones
resumed from their checkpoints, so the command can be re-run until the suite is complete. After every cell the
suite's ``results.csv`` (one row per cell: budget, train time, every raw and temperature-scaled metric) and
``results.md`` (mean ± 95% t-interval over seeds) are rewritten; ``--plots`` draws reliability diagrams side by
side, the accuracy / ECE / failure-AUROC scatter and the risk-coverage curves from the runs' saved test logits.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from refcal_zoo.config import load_config, read_config_yaml
from refcal_zoo.engine.checkpoint import complete_checkpoints
from refcal_zoo.engine.hardware import cpu_threads_per_process
from refcal_zoo.methods import stage_plan
from refcal_zoo.methods.base import TWO_STAGE_METHODS
from refcal_zoo.record import join_and, read_record

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "recipes" / "configs"
SHARED_CIFAR10 = REPO.parent / "shared" / "datasets" / "cifar10"
HEADLINE = ("accuracy", "ece", "ts/ece", "auroc_misclassification", "auroc_ovo", "nll", "ts/nll", "sce", "ace",
            "smece", "brier", "aurc")


@dataclass
class Cell:
    """One method of a suite: a recipe and the overrides that set this suite's budget and data."""

    method: str
    config: str
    overrides: list[str] = field(default_factory=list)


@dataclass
class Suite:
    name: str
    cells: list[Cell]
    seeds: tuple[int, ...] = (0, 1, 2)
    description: str = ""
    smoke_overrides: list[str] = field(default_factory=list)
    data: str | None = None  # the evaluation dataset of the corruption study (None: no corruption study)
    command: str | None = None  # how to run it, where that is not ``compare_methods.py --suite <name>``


# digits-LT: every method at the default's full budget (60 epochs). Each method's loss comes from its preset
# (recipes/configs/methods/<method>.yaml, the one the CIFAR configs use); the suite keeps the default's SupCon
# settings (sized for digits) and rescales DRW to its budget (LDAM-DRW: epoch 160 of 200 -> 48 of 60).
_DIGITS_METHODS = ("ce", "ls005", "ls01", "focal", "flsd53", "brier", "mmce", "dca", "mdca", "fl_mdca", "mbls",
                   "logitnorm", "crl", "adafocal", "refcal_joint", "ldam_drw", "logit_adjusted", "balanced_softmax",
                   "refcal_joint_la", "mislas")
_DIGITS_BUDGET = {"ldam_drw": ["train.drw_epoch=48"]}


def preset_overrides(method: str, budget_keys: tuple[str, ...] = ("epochs", "drw_epoch")) -> list[str]:
    """``section.key=value`` overrides that apply a method preset (``recipes/configs/methods/<method>.yaml``) to
    another recipe: its ``method.*`` keys but SupCon's, its ``model.kwargs`` (LDAM-DRW's cosine classifier), its
    ``train.*`` keys but the budget ones, and a classifier-stage preset's ``stage2.*`` keys (mislas; two-stage refcal
    has recipes of its own)."""
    preset = read_config_yaml(CONFIGS / "methods" / f"{method}.yaml")
    out = [f"method.{k}={_yaml_value(v)}" for k, v in preset.get("method", {}).items() if k != "supcon"]
    out += [f"model.kwargs={_yaml_value(preset['model']['kwargs'])}"] if "kwargs" in preset.get("model", {}) else []
    out += [f"train.{k}={_yaml_value(v)}" for k, v in preset.get("train", {}).items() if k not in budget_keys]
    if preset.get("method", {}).get("name") == "mislas":
        out += [f"stage2.{k}={_yaml_value(v)}" for k, v in preset.get("stage2", {}).items()]
    return out


def _yaml_value(value: object) -> str:
    """``value`` as the right-hand side of an override (read back with ``yaml.safe_load``)."""
    import yaml

    if isinstance(value, str) and yaml.safe_load(value) == value:
        return value
    return json.dumps(value)  # JSON is YAML: dicts, lists, numbers and quoted strings read back as they were


def _digits() -> Suite:
    cells = [Cell(m, "default.yaml", preset_overrides(m) + _DIGITS_BUDGET.get(m, [])) for m in _DIGITS_METHODS]
    cells.append(Cell("refcal", "resnet8-digitslt-refcal.yaml"))
    return Suite("digits", cells, description="ResNet-8 on digits-LT (rho 10), every method, the default budget "
                 "(60 epochs at batch 32; two-stage: 60 contrastive + 40 linear epochs)",
                 smoke_overrides=["train.epochs=1", "stage2.epochs=1"])


def _cifar10lt(data: str) -> Suite:
    # Reduced CPU budget, sized for ~2 hours of 2-core CPU for 3 seeds (see the report): ResNet-20 (ResNet-32's
    # family, ~1.6x faster), 5 epochs, cosine with one warm-up epoch; two-stage RefCal gets 5 contrastive epochs at
    # batch 256 (lr 0.2) and 5 linear epochs.
    common = [f"dataset.path={data}", "model.arch=resnet20_cifar", "train.epochs=5", "train.schedule=cosine",
              "train.warmup_epochs=1", "train.checkpoint_every_epochs=1"]
    two_stage = ["train.batch_size=256", "train.lr=0.2", "train.min_lr=0.0", "stage2.epochs=5",
                 "stage2.batch_size=256", "stage2.lr=1.0", "stage2.milestones=[3,4]"]
    methods = {"ce": [], "ls005": [], "focal": [], "mmce": [], "mdca": [], "crl": [], "refcal": two_stage,
               "refcal_joint": [], "ldam_drw": ["train.drw_epoch=4"], "logit_adjusted": [], "balanced_softmax": [],
               "refcal_joint_la": [], "mislas": ["stage2.epochs=1"]}
    # DRW at 80% of the 5 epochs, as 160 of 200; MiSLAS's classifier stage 1 epoch (forward-only through the frozen
    # encoder) where the recipe has 10 after 200
    cells = [Cell(m, f"resnet32-cifar10lt-{m}.yaml", common + extra) for m, extra in methods.items()]
    return Suite("cifar10lt", cells, description="ResNet-20 on CIFAR-10-LT (rho 10, ../shared JPEG copy), 5 epochs "
                 "(two-stage RefCal: 5 + 5; MiSLAS: 5 + 1), cosine schedule, 3 seeds; corruption study of every "
                 "method's seed-0 model",
                 smoke_overrides=["train.epochs=1", "stage2.epochs=1"], data=data)


def _cifar100lt_gpu(data: str) -> Suite:
    methods = ["ce", "ls005", "focal", "mmce", "mdca", "crl", "refcal", "refcal_joint"]
    cells = [Cell(m, f"resnet32-cifar100lt-{m}.yaml", [f"dataset.path={data}"] if data else []) for m in methods]
    return Suite("cifar100lt-gpu", cells, description="ResNet-32 on CIFAR-100-LT (rho 10), the literature's full "
                 "budgets (LDAM-DRW 200 epochs; two-stage RefCal 1000 + 100 epochs), meant for one GPU")


def _cifar10lt_budget(data: str, gpu: bool = False) -> Suite:
    # Equal wall time per method, in units of one CE epoch: a two-view epoch (RefCal-joint, SupCon stage 1) costs
    # ~2 units and a linear-probe epoch ~0.25 (benchmarks/bench_step.py), so at U units CE trains U epochs,
    # RefCal-joint U/2 and two-stage RefCal 0.4U contrastive + 0.8U linear epochs. ResNet-20 as in the cifar10lt
    # suite (its 5-epoch cells are the smallest budget's neighbours); 10 / 30 / 60 units are ~7 / 22 / 43 minutes
    # per method on 2 CPU cores, ~3.6 hours for the sweep (resumable).
    common = [f"dataset.path={data}", "model.arch=resnet20_cifar", "train.schedule=cosine", "train.warmup_epochs=1",
              "train.checkpoint_every_epochs=1"]
    cells = []
    for units in (10, 30, 60):
        cells.append(Cell(f"ce@{units}", "resnet32-cifar10lt-ce.yaml", common + [f"train.epochs={units}"]))
        cells.append(Cell(f"refcal_joint@{units}", "resnet32-cifar10lt-refcal_joint.yaml",
                          common + [f"train.epochs={max(1, units // 2)}"]))
        stage1 = max(1, int(units * 0.4))
        cells.append(Cell(f"refcal@{units}", "resnet32-cifar10lt-refcal.yaml",
                          common + [f"train.epochs={stage1}", "train.batch_size=256", "train.lr=0.2",
                                    f"stage2.epochs={max(1, int(units * 0.8))}", "stage2.batch_size=256",
                                    "stage2.lr=1.0", "stage2.schedule=cosine"]))
    if gpu:  # the same cells (same epochs, fp32) on one GPU: scripts/budget_sweep_gpu.sh runs the methods side by side
        return Suite("cifar10lt-budget-gpu", cells, seeds=(0, 1), description="The `cifar10lt-budget` cells (same "
                     "epochs, fp32) trained on one GPU, the three methods as concurrent processes "
                     "(`scripts/budget_sweep_gpu.sh`), seeds 0 and 1; budgets stay in 2-core-CPU CE-epoch units, "
                     "GPU times are shared-GPU wall times", command="scripts/budget_sweep_gpu.sh")
    return Suite("cifar10lt-budget", cells, seeds=(0,), description="ResNet-20 on CIFAR-10-LT: CE, RefCal-joint "
                 "and two-stage RefCal at budgets of ~10, 30 and 60 CE-epochs of wall time, one seed")


def get_suite(name: str, data: str | None) -> Suite:
    cifar = data or str(SHARED_CIFAR10)
    factories = {"digits": _digits, "cifar10lt": lambda: _cifar10lt(cifar),
                 "cifar100lt-gpu": lambda: _cifar100lt_gpu(data or ""),
                 "cifar10lt-budget": lambda: _cifar10lt_budget(cifar),
                 "cifar10lt-budget-gpu": lambda: _cifar10lt_budget(cifar, gpu=True)}
    if name not in factories:
        raise SystemExit(f"error: unknown suite '{name}' (choose {', '.join(factories)})")
    return factories[name]()


# ---------------------------------------------------------------------------------------------------- running
def pending_cells(cells: list[Cell], seeds: list[int], rows: dict, out: Path, retrain: bool = False
                  ) -> list[tuple[Cell, int]]:
    """The (cell, seed) pairs to run, seed-major (every method gets seed 0 first).

    A cell recorded in ``results.csv`` is run only while its run folder exists (to resume it or re-read its row);
    one recorded by an earlier session whose folder is gone is kept as it is, unless ``retrain``: then it trains
    again, and its stale corruption report is removed so the study describes the new model."""
    queue = []
    for seed in seeds:
        for cell in cells:
            run_dir = cell_run_dir(out, cell, seed)
            lost = (cell.method, seed) in rows and not run_dir.is_dir() and not incomplete_dir(run_dir).is_dir()
            if lost and not retrain:
                continue
            if lost:
                (out / "corruptions" / f"{cell.method}-s{seed}.json").unlink(missing_ok=True)
            queue.append((cell, seed))
    return queue


def cell_run_dir(out: Path, cell: Cell, seed: int) -> Path:
    """The run folder of one (method, seed) cell under a suite's results folder."""
    return out / "runs" / f"{cell.method}-s{seed}"


def incomplete_dir(run_dir: Path) -> Path:
    """Where the recipe keeps ``run_dir`` until the run finishes."""
    return run_dir.with_name(run_dir.name + ".incomplete")


def resumable(run_dir: Path) -> bool:
    """Whether an interrupted run of ``run_dir`` left a complete checkpoint to resume from (a run stopped while
    setting up or writing its first checkpoint has none, and starts over)."""
    return bool(complete_checkpoints(incomplete_dir(run_dir)))


def progress(run_dir: Path, recent: int = 5) -> str:
    """How far the interrupted run of ``run_dir`` got, and the training time its current stage still needs at the
    median images/s of its last ``recent`` epochs (validation and later stages not included), e.g.
    ``epoch 59/200; ~5.6 h of training left at 140 img/s``. Empty when there is no interrupted run."""
    stage_dir = incomplete_dir(run_dir)
    if not (stage_dir / "config.yaml").is_file():
        return ""
    plan = stage_plan(load_config(stage_dir / "config.yaml", validate=False))
    log = stage_dir / "log.jsonl"
    records = []
    for line in log.read_text().splitlines() if log.is_file() else []:
        with contextlib.suppress(json.JSONDecodeError):  # a line cut short by a kill: the resume drops it
            records.append(json.loads(line))
    index = records[-1]["stage_index"] if records else 0
    name, epochs = plan[index]
    done = records[-1]["epoch"] if records else 0
    text = f"{name + ' ' if len(plan) > 1 else ''}epoch {done}/{epochs}"
    rates = sorted(r["images_per_second"] for r in records[-recent:] if r["stage_index"] == index)
    lt = stage_dir / "lt_indices.json"
    if rates and lt.is_file():
        rate = rates[len(rates) // 2]
        hours = (epochs - done) * sum(json.loads(lt.read_text())["train_counts"]) / rate / 3600
        text += f"; ~{hours:.1f} h of training left at {rate:.0f} img/s"
    later = ", ".join(f"{n} ({e} epochs)" for n, e in plan[index + 1:])
    return text + (f", then {later}" if later else "")


class CellInterrupted(Exception):
    """A cell's training process was stopped by a signal (Ctrl-C, ``kill``): the queue stops; rerun to resume."""


_INTERRUPTS = {-getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)}


def threads_per_cell(parallel: int) -> int | None:
    """CPU threads for each of ``parallel`` concurrent cells (None for one cell: torch's default, every core).

    On 2 cores two 1-thread ResNet-32 training loops sum 1.08-1.22x the images/s of one 2-thread loop.
    """
    return cpu_threads_per_process(parallel) if parallel > 1 else None


def _env_with_threads(threads: int | None) -> dict[str, str]:
    """This process's environment for a child run, with ``OMP_NUM_THREADS=threads`` unless the user set it."""
    env = dict(os.environ)
    if threads is not None:
        env.setdefault("OMP_NUM_THREADS", str(threads))
    return env


def run_cell(suite: Suite, cell: Cell, seed: int, out: Path, smoke: bool, launcher: list[str],
             threads: int | None = None, respeed: bool = False) -> dict | None:
    """Train one cell (skipped if finished, resumed if interrupted); return its CSV row, or None if it failed.

    ``threads`` sets the run's ``OMP_NUM_THREADS`` unless the environment already does. ``respeed`` resumes an
    interrupted cell with ``--respeed`` (precision chosen again for this machine).

    Raises ``CellInterrupted`` when the training process was stopped by a signal: that is the user stopping the
    queue, not a failure of this cell, so the next cell must not start.
    """
    run_dir = cell_run_dir(out, cell, seed)
    if not (run_dir / "metrics.json").is_file():
        overrides = [*cell.overrides, *(suite.smoke_overrides if smoke else []), f"train.seed={seed}",
                     f"name={cell.method}", f"output_dir={run_dir}"]
        resume = (["--resume", "--respeed"] if respeed else ["--resume"]) if resumable(run_dir) else []
        cmd = [*launcher, str(REPO / "recipes" / "train.py"), "--config", str(CONFIGS / cell.config), *resume,
               *overrides]
        print(f"[{suite.name}] {cell.method} seed {seed}: {' '.join(cmd[len(launcher):])}", flush=True)
        t0 = time.time()
        env = _env_with_threads(threads)
        log = out / "logs" / f"{cell.method}-s{seed}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as fh:  # streamed, one section per attempt: a killed build keeps what its runs printed
            fh.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(cmd[len(launcher):])}\n")
            fh.flush()
            proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, text=True)
        if proc.returncode in _INTERRUPTS:
            raise CellInterrupted(f"[{suite.name}] {cell.method} seed {seed} was stopped by "
                                  f"{signal.Signals(-proc.returncode).name}; its checkpoints are kept: run the "
                                  "same command again to resume")
        if proc.returncode != 0:
            last = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:]
            print(f"[{suite.name}] {cell.method} seed {seed} FAILED (exit {proc.returncode}): "
                  f"{last[0] if last else '(no output)'} (whole log: {log})", flush=True)
            return None
        print(f"[{suite.name}] {cell.method} seed {seed}: done in {time.time() - t0:.0f} s", flush=True)
    return read_row(suite, cell, seed, run_dir)


def run_queue(queue: list[tuple[Cell, int]], work, parallel: int) -> None:
    """Call ``work(cell, seed)`` for every queued cell, ``parallel`` at a time (threads: each cell is a subprocess).

    A ``CellInterrupted`` (or Ctrl-C in this process) cancels the cells not yet started, waits for the running
    ones, and is raised again.
    """
    stop = threading.Event()  # set before a worker thread can take the next cell off the pool's queue

    def guarded(cell: Cell, seed: int) -> None:
        if stop.is_set():
            return
        try:
            work(cell, seed)
        except CellInterrupted:
            stop.set()
            raise

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        futures = [pool.submit(guarded, cell, seed) for cell, seed in queue]
        try:
            for future in futures:
                future.result()
        except BaseException:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def read_row(suite: Suite, cell: Cell, seed: int, run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    record = read_record(json.loads((run_dir / "config.json").read_text()))  # version 2, or a version-1 run folder
    cfg = _yaml(run_dir / "config.yaml")
    row = {
        "suite": suite.name, "method": cell.method, "seed": seed, "config": cell.config,
        "method_name": cfg["method"]["name"], "base_loss": cfg["method"]["base_loss"], "arch": cfg["model"]["arch"],
        "epochs": cfg["train"]["epochs"],
        "stage2_epochs": cfg["stage2"]["epochs"] if cfg["method"]["name"] in TWO_STAGE_METHODS else "",
        "train_images": len(json.loads((run_dir / "lt_indices.json").read_text())["train_indices"]),
        "train_seconds": record.budget.train_seconds, "device": record.budget.device or "",
        "temperature": record.temperature,
        "selected_epoch": record.selection.epoch, "run_dir": _display(run_dir),
    }
    row.update({k: v for k, v in metrics.items() if k != "n"})
    row["n_test"] = metrics.get("n")
    row.update(longtail_columns(run_dir, record.dataset.train_counts))
    row.update(rule_picks(run_dir / "log.jsonl"))
    return row


SELECTION_RULES = ("best_nll", "best_ts_nll", "best_accuracy")


def rule_picks(log: Path) -> dict:
    """The epoch each selection rule picks from a run's validation log (its last stage), and that epoch's validation
    accuracy: ``pick/<rule>/epoch``, ``pick/<rule>/val_accuracy``. Validation only, so comparing the rules this way
    never looks at the test split. A rule whose score some epoch did not log gets no columns (``val_ts_nll`` is
    missing from runs older than the rule, and from the epochs a resumed run trained before it existed)."""
    from refcal_zoo.engine.trainer import selection_score

    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
    scored = [r for r in records if "val_accuracy" in r]
    stage = [r for r in scored if r.get("stage") == scored[-1].get("stage")] if scored else []
    out = {}
    for rule in SELECTION_RULES:
        try:
            scores = [(selection_score(rule, r), r["epoch"], r) for r in stage]
        except KeyError:  # this rule's score is missing from some epoch
            continue
        # a non-finite score is logged as null: like the engine, never select that epoch
        pick = min(((s, e, r) for s, e, r in scores if s is not None and math.isfinite(s)),
                   key=lambda c: c[:2], default=(None, None, None))[2]
        if pick is not None:
            out[f"pick/{rule}/epoch"], out[f"pick/{rule}/val_accuracy"] = pick["epoch"], pick["val_accuracy"]
    return out


CONFORMAL_ALPHA = 0.1


def longtail_columns(run_dir: Path, train_counts: list[int] | None) -> dict:
    """Accuracy per frequency third, and split conformal prediction (thr score, alpha 0.1, fitted on the run's
    validation logits, evaluated on its test logits; marginal ``cp/`` and class-conditional ``cpcw/``): coverage and
    mean set size overall and per third, and the worst class's coverage. Empty for runs without saved logits."""
    import numpy as np

    from refcal_zoo.calibration import conformal_report
    from refcal_zoo.metrics import FREQUENCY_THIRDS as THIRDS
    from refcal_zoo.metrics import frequency_thirds, group_masks

    val, test = run_dir / "val_predictions.npz", run_dir / "test_predictions.npz"
    if not train_counts or not (val.is_file() and test.is_file()):
        return {}
    v, t = np.load(val), np.load(test)
    thresholds = frequency_thirds(train_counts)
    out: dict = {}
    correct = t["logits"].argmax(1) == t["labels"]
    masks = group_masks(t["labels"], train_counts, thresholds=thresholds, num_classes=t["logits"].shape[1])
    for third, mask in zip(THIRDS, masks.values(), strict=True):
        out[f"{third}/accuracy"] = float(correct[mask].mean()) if mask.any() else math.nan
    for prefix, classwise in (("cp", False), ("cpcw", True)):
        rep = conformal_report(v["logits"], v["labels"], t["logits"], t["labels"], CONFORMAL_ALPHA, train_counts,
                               classwise=classwise, group_thresholds=thresholds)
        out[f"{prefix}/coverage"], out[f"{prefix}/set_size"] = rep["coverage"], rep["set_size"]
        out[f"{prefix}/worst_class_coverage"] = rep["min_class_coverage"]
        for third, group in zip(THIRDS, ("many", "medium", "few"), strict=True):
            out[f"{prefix}/{third}/coverage"] = rep[f"{group}/coverage"]
            out[f"{prefix}/{third}/set_size"] = rep[f"{group}/set_size"]
    return out


def _display(path: Path) -> str:
    """Paths inside the repository are stored relative to it (portable CSVs); others as given."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


# --------------------------------------------------------------------------------------------------- tables
def t_quantile_975(dof: float) -> float:
    """Two-sided 95% Student-t quantile (scipy), for the interval half-width over seeds."""
    from scipy import stats

    return float(stats.t.ppf(0.975, dof))


def train_seconds_by_device(group: list[dict]) -> dict[str, float]:
    """Mean training seconds per recorded device: seeds trained on different hardware are not averaged together."""
    by_device: dict[str, list[float]] = {}
    for r in group:
        by_device.setdefault(r.get("device") or "", []).append(float(r["train_seconds"]))
    return {device: sum(v) / len(v) for device, v in by_device.items()}


def train_seconds_cell(entry: dict) -> str:
    """The table's "train s" cell: one mean, or one mean per device where the seeds ran on different hardware."""
    by_device = entry.get("train_seconds_by_device") or {}
    if len(by_device) <= 1:
        return f"{entry['train_seconds']:.0f}"
    ordered = sorted(by_device.items(), key=lambda item: item[1])
    return "; ".join(f"{s:.0f} on {d or 'an unrecorded device'}" for d, s in ordered)


def summarize(rows: list[dict], keys=HEADLINE) -> list[dict]:
    """Per method: mean and 95% t-interval half-width over seeds of every key (n=1: no interval)."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        group = [r for r in rows if r["method"] == method]
        entry = {"method": method, "seeds": len(group),
                 "train_seconds": sum(float(r["train_seconds"]) for r in group) / len(group),
                 "train_seconds_by_device": train_seconds_by_device(group)}
        for k in keys:
            vals = [float(r[k]) for r in group if r.get(k) not in (None, "")]
            vals = [v for v in vals if math.isfinite(v)]
            if not vals:
                entry[k] = (math.nan, math.nan)
                continue
            mean = sum(vals) / len(vals)
            if len(vals) > 1:
                sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
                entry[k] = (mean, t_quantile_975(len(vals) - 1) * sd / math.sqrt(len(vals)))
            else:
                entry[k] = (mean, math.nan)
        out.append(entry)
    return out


def markdown_table(summary: list[dict], keys=HEADLINE) -> str:
    head = "| method | seeds | train s | " + " | ".join(keys) + " |"
    lines = [head, "|" + "---|" * (3 + len(keys))]
    for e in summary:
        cells = []
        for k in keys:
            mean, half = e[k]
            cells.append("n/a" if not math.isfinite(mean) else
                         f"{mean:.4f}" if not math.isfinite(half) else f"{mean:.4f} ± {half:.4f}")
        lines.append(f"| {e['method']} | {e['seeds']} | {train_seconds_cell(e)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(out: Path, suite: Suite, rows: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    tmp = out / ".results.csv.tmp"
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out / "results.csv")
    text = (f"# {suite.name}\n\n{suite.description}.\n\nMean ± 95% t-interval over seeds (test split; `ts/` = after "
            f"temperature scaling fitted on validation). Generated by `benchmarks/compare_methods.py --suite "
            f"{suite.name}` from `results.csv`.\n\n{markdown_table(summarize(rows))}\n")
    if (out / "corruptions").is_dir():
        text += (f"\n## Corruptions ({studied_seeds_words(out)}, CIFAR-10-C-style, 10 corruptions x 5 severities)\n\n"
                 + corruption_table(out) + "\n")
    (out / "results.md").write_text(text)


@contextmanager
def results_lock(out: Path):
    """Serialize read-merge-write of ``results.csv``: several processes may fill one suite folder (the methods of
    ``scripts/budget_sweep_gpu.sh`` train side by side)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".results.lock", "w") as fh:
        try:
            import fcntl
        except ImportError:  # not POSIX: one process per suite folder
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def record_results(out: Path, suite: Suite, rows: dict[tuple[str, int], dict]) -> None:
    """Add the rows other processes wrote since we started to ``rows``, then rewrite the suite's tables."""
    order = [c.method for c in suite.cells]
    with results_lock(out):
        for r in read_results(out):
            rows.setdefault((r["method"], int(r["seed"])), r)
        write_results(out, suite, sorted(rows.values(), key=lambda r: (order.index(r["method"]) if r["method"]
                                                                      in order else 99, int(r["seed"]))))


def read_results(out: Path) -> list[dict]:
    path = out / "results.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def corruption_study(suite: Suite, cell: Cell, seed: int, out: Path, launcher_python: str,
                     reports: Path | None = None, threads: int | None = None) -> bool:
    """Every metric per corruption x severity of the cell's selected model (``refcal-zoo eval --corrupt``), written
    to ``<reports or out>/corruptions/<cell>-s<seed>.json`` once (skipped when present); True if it wrote one."""
    target = (reports or out) / "corruptions" / f"{cell.method}-s{seed}.json"
    run_dir = cell_run_dir(out, cell, seed)
    if target.is_file() or not (run_dir / "metrics.json").is_file():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    cmd = [launcher_python, "-m", "refcal_zoo.cli", "eval", str(run_dir), "--dataset", suite.data, "--corrupt",
           "--json", str(target)]
    print(f"[{suite.name}] corruption study of {cell.method} seed {seed}", flush=True)
    proc = subprocess.run(cmd, cwd=REPO, env=_env_with_threads(threads), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / "logs" / f"{cell.method}-s{seed}-corrupt.log").write_text(proc.stdout)
    if proc.returncode != 0:
        print(f"[{suite.name}] corruption study of {cell.method} seed {seed} FAILED (exit {proc.returncode}); "
              f"see {out / 'logs' / f'{cell.method}-s{seed}-corrupt.log'}", flush=True)
    if not target.is_file():
        return False
    portable_report(target)
    return True


#: the fields of a ``refcal-zoo eval --json`` report that name places on the machine that ran it
_REPORT_PATHS = ("model", "folder", "dataset")


def portable_report(path: Path) -> None:
    """Rewrite an eval report's paths for the repository: inside it, relative (as the CSVs); a dataset folder
    outside it, by its name only (``local folder cifar10``), so committed results carry no machine paths."""
    report = json.loads(path.read_text())
    for key in _REPORT_PATHS:
        value = report.get(key)
        if not isinstance(value, str) or not os.path.isabs(value):
            continue
        where = Path(value)
        report[key] = _display(where) if where.resolve().is_relative_to(REPO) else f"local folder {where.name}"
    path.write_text(json.dumps(report, indent=2) + "\n")


def studied_seeds(out: Path) -> list[int]:
    """The seeds that ``out/corruptions`` holds a corruption report of (for any cell), sorted."""
    seeds = (p.stem.rsplit("-s", 1)[1] for p in (out / "corruptions").glob("*-s*.json"))
    return sorted({int(s) for s in seeds if s.isdigit()})


def studied_seeds_words(out: Path) -> str:
    """``seed 0``, or ``seeds 0 and 2, each row naming its run`` where more than one seed was studied."""
    seeds = studied_seeds(out)
    if len(seeds) <= 1:
        return f"seed {seeds[0]}" if seeds else "no report yet"
    return f"seeds {join_and(seeds)}, each row naming its run"


def corruption_table(out: Path) -> str:
    """Markdown: per method, clean and mean-over-corruptions accuracy / ECE / misclassification AUROC, mCE."""
    rows = ["| method | clean acc | mCE | corrupted acc | corrupted ECE | corrupted ECE (TS) | corrupted AUROC |",
            "|---|---|---|---|---|---|---|"]
    for path in sorted((out / "corruptions").glob("*.json")):
        rep = json.loads(path.read_text())
        s, clean = rep["corruptions"]["summary"], rep["corruptions"]["clean"]
        mce = s.get("mean_corruption_error", s.get("mce"))  # reports written before the rename say "mce"
        rows.append(f"| {path.stem} | {clean['accuracy']:.4f} | {mce:.4f} | {s['mean/accuracy']:.4f} | "
                    f"{s['mean/ece']:.4f} | {s.get('mean/ts/ece', float('nan')):.4f} | "
                    f"{s['mean/auroc_misclassification']:.4f} |")
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------------------- plots
def make_plots(out: Path, rows: list[dict]) -> None:
    """Reliability diagrams side by side, accuracy/ECE/failure-AUROC scatter, risk-coverage curves (seed-0 runs
    for the per-method curves)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from refcal_zoo.metrics import bin_top_label, prepare, risk_coverage_curve

    first = {}
    for r in rows:
        if (REPO / r["run_dir"] / "test_predictions.npz").is_file():
            first.setdefault(r["method"], r)
    if not first:
        return
    methods = list(first)
    n = len(methods)
    cols = min(4, n)
    fig = Figure(figsize=(3.2 * cols, 3.2 * math.ceil(n / cols)))
    for i, m in enumerate(methods):
        pred = np.load(REPO / first[m]["run_dir"] / "test_predictions.npz")
        ax = fig.add_subplot(math.ceil(n / cols), cols, i + 1)
        p = prepare(pred["logits"], pred["labels"], "logits")
        _, counts, _, correct_sums = bin_top_label(p.conf, p.correct, 15)
        accuracy = np.where(counts > 0, correct_sums / np.maximum(counts, 1), 0.0)
        centers = (np.arange(15) + 0.5) / 15
        ax.bar(centers, accuracy, width=1 / 15, edgecolor="k", alpha=0.7)
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.set_title(f"{m}\nECE {float(first[m]['ece']):.3f}", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(str(out / "reliability_grid.png"))

    summary = summarize(rows, ("accuracy", "ece", "auroc_misclassification"))
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    for e in summary:
        x, y, c = e["ece"][0], e["accuracy"][0], e["auroc_misclassification"][0]
        sc = ax.scatter([x], [y], c=[c], cmap="viridis", vmin=0.5, vmax=1.0, s=60)
        ax.annotate(e["method"], (x, y), fontsize=8, xytext=(3, 3), textcoords="offset points")
    fig.colorbar(sc, ax=ax, label="misclassification AUROC")
    ax.set_xlabel("ECE (raw)")
    ax.set_ylabel("accuracy")
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(str(out / "accuracy_ece_auroc.png"))

    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    for m in methods:
        pred = np.load(REPO / first[m]["run_dir"] / "test_predictions.npz")
        coverage, risk = risk_coverage_curve(pred["logits"], pred["labels"], inputs="logits")
        ax.plot(coverage, risk, label=m, lw=1.2)
    ax.set_xlabel("coverage")
    ax.set_ylabel("risk (error rate among accepted)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(str(out / "risk_coverage.png"))
    if any("@" in r["method"] for r in rows):
        budget_plot(out, rows)


BUDGET_KEYS = ("accuracy", "auroc_misclassification", "ece", "ts/ece")


def budget_curves(rows: list[dict]) -> dict[str, list[tuple[int, float, dict]]]:
    """Budget-suite rows (methods named ``<method>@<units>``) as ``{method: [(units, train_seconds, point)]}``.

    Seeds are averaged: ``point`` holds the seed mean of every ``BUDGET_KEYS`` metric and ``per_seed``, the
    ``{seed: value}`` maps that paired comparisons between methods need.
    """
    cells: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        if "@" not in r["method"]:
            continue
        method, units = r["method"].split("@")
        cells.setdefault((method, int(units)), []).append(r)
    curves: dict[str, list[tuple[int, float, dict]]] = {}
    for (method, units), group in cells.items():
        point: dict = {"seeds": len(group), "per_seed": {}}
        for key in BUDGET_KEYS:
            values = {int(r["seed"]): float(r[key]) for r in group}
            point[key] = sum(values.values()) / len(values)
            point["per_seed"][key] = values
        seconds = sum(float(r["train_seconds"]) for r in group) / len(group)
        curves.setdefault(method, []).append((units, seconds, point))
    return {m: sorted(c, key=lambda t: t[0]) for m, c in curves.items()}


def budget_plot(out: Path, rows: list[dict]) -> None:
    """Every headline metric against measured training time, one curve per method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    devices = ", ".join(sorted({r["device"] for r in rows if "@" in r["method"] and r.get("device")})) or "device?"
    fig = Figure(figsize=(10, 7))
    for i, key in enumerate(BUDGET_KEYS):
        ax = fig.add_subplot(2, 2, i + 1)
        for method, points in budget_curves(rows).items():
            ax.plot([t / 60 for _, t, _ in points], [float(r[key]) for *_, r in points], "o-", label=method)
            for units, t, r in points:
                ax.annotate(str(units), (t / 60, float(r[key])), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(f"training time (min, {devices})")
        ax.set_ylabel(key)
        ax.legend(fontsize=7)
    fig.suptitle("Budget sweep (labels: budget in CE-epoch units)")
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(str(out / "budget.png"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", required=True)
    ap.add_argument("--seeds", type=int, nargs="*", default=None)
    ap.add_argument("--methods", nargs="*", default=None, help="only these methods of the suite")
    ap.add_argument("--data", default=None, help="dataset path for the CIFAR suites (default ../shared copy)")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results/<suite>)")
    ap.add_argument("--smoke", action="store_true", help="2 methods, 1 seed, 1 epoch: checks the machinery")
    ap.add_argument("--parallel", type=int, default=1,
                    help="(method, seed) cells trained at once (default 1); each gets cores/N CPU threads")
    ap.add_argument("--plots", action="store_true", help="also draw the plots")
    ap.add_argument("--retrain", action="store_true",
                    help="also train the cells that results.csv records from a run folder that is gone (their "
                         "new row replaces the old one when the run finishes; e.g. to save the logits that the "
                         "long-tail and conformal columns read)")
    ap.add_argument("--launcher", default=None,
                    help="command prefix for each run (default: this python; e.g. 'accelerate launch')")
    args = ap.parse_args(argv)
    if args.parallel < 1:
        raise SystemExit(f"error: --parallel must be >= 1, got {args.parallel}")

    suite = get_suite(args.suite, args.data)
    seeds = args.seeds if args.seeds is not None else ([suite.seeds[0]] if args.smoke else list(suite.seeds))
    cells = [c for c in suite.cells if args.methods is None or c.method in args.methods]
    if args.smoke:
        cells = cells[:2]
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / (suite.name + ("-smoke" if args.smoke
                                                                                        else ""))
    launcher = args.launcher.split() if args.launcher else [sys.executable]
    rows = {(r["method"], int(r["seed"])): r for r in read_results(out)}  # resumable across sessions too
    queue = pending_cells(cells, seeds, rows, out, retrain=args.retrain)
    failed = []
    lock = threading.Lock()

    def work(cell: Cell, seed: int) -> None:
        row = run_cell(suite, cell, seed, out, args.smoke, launcher,  # a subprocess: threads suffice
                       threads=threads_per_cell(args.parallel))
        with lock:  # one writer of ``rows`` and results.csv at a time (record_results also locks the file)
            if row is None:
                failed.append((cell.method, seed))
                return
            rows[(cell.method, seed)] = row
            record_results(out, suite, rows)

    try:
        run_queue(queue, work, args.parallel)
    except CellInterrupted as exc:
        print(exc, flush=True)
        return 130
    if suite.data and not args.smoke:  # after every training cell: the 3-seed tables come first
        for cell in cells:
            corruption_study(suite, cell, seeds[0], out, sys.executable)
            record_results(out, suite, rows)
    if args.plots and rows:
        make_plots(out, list(rows.values()))
    print((out / "results.md").read_text() if (out / "results.md").is_file() else "no results", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
