#!/usr/bin/env python
"""Training-step throughput of every method relative to plain cross-entropy, measured in one run.

    python benchmarks/bench_step.py                       # resnet32_cifar, batch 128, CPU or GPU
    python benchmarks/bench_step.py --steps 10 --repeats 3 --json out.json

Each method runs the real engine step (``refcal_zoo.engine.train_one_epoch``: batched crop/flip, the method's loss,
backward, SGD step, and the method's per-step bookkeeping such as CRL's history update) on the same random uint8
batches. Methods are measured in interleaved rounds (CE, then every other method, repeated), and the median
images/second of each is divided by CE's. Goals: refcal_joint with one view >= 0.90x CE; no baseline below 0.85x
CE except CRL / AdaFocal (stateful bookkeeping). Two views double the images through the network, so
refcal_joint with two views and two-stage RefCal's contrastive stage are expected near 0.5x.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from accelerate import Accelerator

from refcal_zoo.config import SupConConfig, TrainConfig
from refcal_zoo.data import BatchTransform, TensorImageDataset, make_loader
from refcal_zoo.engine import StepContext, build_optimizer, train_one_epoch
from refcal_zoo.methods import Criterion, LinearProbe, Plain, RefCalJoint, SupConPretrain, build_base_loss
from refcal_zoo.models import CIFAR10_MEAN, CIFAR10_STD, create_model

BASELINES = {
    "ls": {"alpha": 0.1}, "focal": {"gamma": 3.0}, "flsd53": {}, "brier": {}, "mmce": {"lam": 2.0},
    "dca": {"beta": 1.0}, "mdca": {"beta": 1.0}, "mbls": {}, "logitnorm": {}, "crl": {}, "adafocal": {},
}


def make_methods(num_samples: int) -> dict[str, tuple[object, str]]:
    """name -> (method, augmentation)."""
    def crit(name, args=None):
        return Criterion(build_base_loss(name, args or {}, num_samples))

    methods = {"ce": (Plain(crit("ce")), "crop_flip")}
    methods["refcal_joint (1 view)"] = (RefCalJoint(crit("ce"), SupConConfig(views=1)), "crop_flip")
    methods["refcal_joint (2 views)"] = (RefCalJoint(crit("ce"), SupConConfig(views=2)), "crop_flip")
    methods["refcal stage 1 (SupCon, 2 views)"] = (SupConPretrain(SupConConfig()), "simclr")
    methods["refcal stage 2 (linear, frozen)"] = (LinearProbe(crit("ce")), "rrc_flip")
    for name, args in BASELINES.items():
        methods[name] = (Plain(crit(name, args)), "crop_flip")
    return methods


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet32_cifar")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=6, help="optimiser steps per measurement")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    n = args.batch_size * (args.steps + 2)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    loader = accelerator.prepare(make_loader(TensorImageDataset(images, labels), args.batch_size, train=True, seed=0))
    cfg = TrainConfig(lr=0.01, warmup_epochs=0, schedule="constant")
    runs = {}
    for name, (method, augment) in make_methods(n).items():
        method.to(accelerator.device)
        model = create_model(args.arch, num_classes=10)
        module = method.wrap(model)
        opt = build_optimizer(module, cfg)
        module, opt = accelerator.prepare(module, opt)
        tf = BatchTransform(CIFAR10_MEAN, CIFAR10_STD, augment=augment)
        step = StepContext(module, method, opt, None, tf, accelerator)
        train_one_epoch(step, loader, max_steps=1, desc=name)  # warm-up
        runs[name] = step

    speeds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, step in runs.items():
            stats = train_one_epoch(step, loader, max_steps=args.steps, desc=name)
            speeds[name].append(stats.images / stats.seconds)
    ce = statistics.median(speeds["ce"])
    rows = [(name, statistics.median(v), statistics.median(v) / ce) for name, v in speeds.items()]
    print(f"{args.arch}, batch {args.batch_size}, device {accelerator.device}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} rounds x {args.steps} steps (images/s count input images, not views)")
    print(f"{'method':<34}{'img/s':>10}{'x CE':>8}")
    for name, ips, ratio in rows:
        print(f"{name:<34}{ips:>10.1f}{ratio:>8.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"arch": args.arch, "batch_size": args.batch_size,
                                               "device": str(accelerator.device),
                                               "results": {n: {"img_per_s": round(i, 1), "ratio_to_ce": round(r, 3)}
                                                           for n, i, r in rows}}, indent=2) + "\n")


if __name__ == "__main__":
    main()
