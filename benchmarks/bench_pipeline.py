#!/usr/bin/env python
"""Throughput of the training pipeline relative to the bare model, measured in one run.

    python benchmarks/bench_pipeline.py                                # resnet32, CIFAR-10-LT if found, else synthetic
    python benchmarks/bench_pipeline.py --dataset ../shared/datasets/cifar10 --steps 40

Reports, in images per second on this machine:
  model     bare forward + backward + SGD step on random float tensors already in memory (the ceiling);
  loop      the real training loop (uint8 tensor loader, batched crop/flip + normalisation, CE, SGD step,
            LR schedule, Accelerate) via ``refcal_zoo.engine.train_one_epoch``;
  pipeline  the data pipeline alone (loader + augmentation + normalisation, no model).
and the ratios loop/model (goal >= 0.9) and pipeline/model (goal >= 5). Each measurement is repeated and the
median is kept; model and loop are interleaved so that machine load affects both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from refcal_zoo.config import DatasetConfig, TrainConfig
from refcal_zoo.data import BatchTransform, TensorImageDataset, make_loader, prepare_data
from refcal_zoo.engine import StepContext, build_optimizer, build_scheduler, train_one_epoch
from refcal_zoo.losses import build_loss
from refcal_zoo.methods import Criterion, Plain
from refcal_zoo.models import CIFAR10_MEAN, CIFAR10_STD, create_model

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10"


def load_images(dataset: str | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    path = dataset or (str(DEFAULT_DATA) if DEFAULT_DATA.is_dir() else "synthetic")
    if path == "synthetic":
        g = torch.Generator().manual_seed(0)
        return (torch.randint(0, 256, (20_431, 3, 32, 32), dtype=torch.uint8, generator=g),
                torch.randint(0, 10, (20_431,), generator=g), "synthetic uint8 (20,431 x 3x32x32)")
    data = prepare_data(DatasetConfig(path=path, rho=10, val_per_class=50))
    what = f"CIFAR-10-LT rho 10 from the local folder {Path(path).name} ({len(data.train_labels)} images)"
    return data.train_images, data.train_labels, what  # the folder's name, never a machine path


def bench_model(model, opt, accelerator, batch_size, steps) -> float:
    dev = accelerator.device
    x = torch.randn(batch_size, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (batch_size,), device=dev)
    crit = torch.nn.CrossEntropyLoss()
    model.train()
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        accelerator.backward(crit(model(x), y))
        opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - t0)


def bench_loop(model, opt, sched, loader, tf, accelerator, steps) -> float:
    method = Plain(Criterion(build_loss("ce")))
    stats = train_one_epoch(StepContext(model, method, opt, sched, tf, accelerator), loader, max_steps=steps,
                            desc="loop")
    return stats.images / stats.seconds


def bench_pipeline(loader, tf, accelerator, steps) -> float:
    t0 = time.perf_counter()
    n = 0
    while n < steps:
        for batch in loader:
            out = tf(batch["image"])
            n += 1
            if n >= steps:
                break
    if accelerator.device.type == "cuda":
        torch.cuda.synchronize()
    return n * out.shape[0] / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet32_cifar")
    ap.add_argument("--dataset", default=None, help="dataset path (default: ../shared/datasets/cifar10 or synthetic)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30, help="optimiser steps per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    images, labels, what = load_images(args.dataset)
    model = create_model(args.arch, num_classes=10)
    opt = build_optimizer(model, TrainConfig())
    loader = make_loader(TensorImageDataset(images, labels), args.batch_size, train=True, seed=0)
    model, opt, loader = accelerator.prepare(model, opt, loader)
    sched = build_scheduler(opt, len(loader), TrainConfig(warmup_epochs=0, schedule="constant"))
    tf = BatchTransform(CIFAR10_MEAN, CIFAR10_STD, augment="crop_flip")

    bench_model(model, opt, accelerator, args.batch_size, 3)  # warm-up (allocator, kernels)
    bench_loop(model, opt, sched, loader, tf, accelerator, 3)
    model_ips, loop_ips, pipe_ips = [], [], []
    for _ in range(args.repeats):
        model_ips.append(bench_model(model, opt, accelerator, args.batch_size, args.steps))
        loop_ips.append(bench_loop(model, opt, sched, loader, tf, accelerator, args.steps))
        pipe_ips.append(bench_pipeline(loader, tf, accelerator, 4 * args.steps))
    m, lp, pp = (statistics.median(v) for v in (model_ips, loop_ips, pipe_ips))
    result = {
        "arch": args.arch, "data": what, "device": str(accelerator.device), "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size, "steps": args.steps, "repeats": args.repeats,
        "model_img_per_s": round(m, 1), "loop_img_per_s": round(lp, 1), "pipeline_img_per_s": round(pp, 1),
        "loop_over_model": round(lp / m, 3), "pipeline_over_model": round(pp / m, 2),
    }
    print(f"{args.arch}, batch {args.batch_size}, {what}, device {accelerator.device}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats} x {args.steps} steps")
    print(f"  model (fwd+bwd+step, random tensors) {m:10.1f} img/s")
    print(f"  training loop                        {lp:10.1f} img/s   loop / model     = {lp / m:.3f}  (goal >= 0.9)")
    print(f"  data pipeline only                   {pp:10.1f} img/s   pipeline / model = {pp / m:.2f}  (goal >= 5)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
