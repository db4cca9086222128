#!/usr/bin/env python
"""Training speed with the defaults against the bare model, measured in one run (issue: speed at the hardware's limit).

    python benchmarks/bench_train.py --json benchmarks/results/bench_train_cpu.json
    python benchmarks/bench_train.py --compile              # also time torch.compile'd bare step, loop and two-view
                                                            # step (compiling takes ~25-50 s each on 2 CPU cores)
    python benchmarks/bench_train.py --processes 4          # 4 concurrent training loops, summed img/s
                                                            # (on CPU each gets cores/4 threads)

Images per second for ResNet-32 on CIFAR-10-LT (the shared JPEG copy if found, else synthetic uint8 data):
  (a) eager_fp32   bare forward + backward + SGD step, fp32, NCHW, random float tensors already on the device;
  (b) best_bare    the same bare step in the mode ``auto`` picks for this device (engine/hardware.py: bf16 where
                   it pays, channels-last where the kernels prefer it, compiled on CUDA);
  other_precision_bare  (b) in the precision ``auto`` did not pick (bf16 <-> fp32): (b) over it should be >= 1;
  (c) loop         the real training loop with the default settings (uint8 batches on the device, batched
                   crop/flip + normalisation, CE, SGD, LR schedule, Accelerate with the resolved precision);
  (d) supcon_2view two-stage RefCal's contrastive step (two SimCLR views, SupCon) in the same loop.
  compiled_bare, compiled_loop, compiled_supcon_2view (``--compile``): (b), (c) and (d) with the model compiled by
                   inductor, as ``train.compile=true`` does; their ratios to the eager ones are what compiling pays.
Ratios (c)/(a) and (c)/(b) are the figures of merit. Measurements are interleaved in rounds and the median kept, so
machine load affects all alike; warm-up (and compile time, reported apart) is excluded.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from refcal_zoo.config import SupConConfig, TrainConfig
from refcal_zoo.data import BatchTransform, TensorImageDataset, make_loader
from refcal_zoo.engine import StepContext, build_optimizer, build_scheduler, train_one_epoch
from refcal_zoo.engine.hardware import (
    SpeedChoice,
    cpu_threads_per_process,
    keep_freed_host_memory,
    native_bf16,
    resolve_speed,
)
from refcal_zoo.losses import build_loss
from refcal_zoo.methods import Criterion, Plain, SupConPretrain
from refcal_zoo.models import CIFAR10_MEAN, CIFAR10_STD, create_model

_spec = importlib.util.spec_from_file_location("bench_pipeline", Path(__file__).with_name("bench_pipeline.py"))
_pipeline = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_pipeline)
load_images = _pipeline.load_images  # CIFAR-10-LT from ../shared if present, else synthetic uint8 data


class BareStep:
    """forward + backward + SGD step of a fresh ResNet on fixed random tensors, in a given precision/layout."""

    def __init__(self, arch: str, batch_size: int, device: torch.device, speed: SpeedChoice) -> None:
        self.device, self.batch_size = device, batch_size
        self.bf16 = speed.mixed_precision == "bf16"
        fmt = torch.channels_last if speed.channels_last else torch.contiguous_format
        self.model = create_model(arch, num_classes=10).to(device, memory_format=fmt).train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=2e-4)
        self.x = torch.randn(batch_size, 3, 32, 32, device=device).contiguous(memory_format=fmt)
        self.y = torch.randint(0, 10, (batch_size,), device=device)
        self.forward_backward = torch.compile(self._forward_backward) if speed.compile else self._forward_backward
        t0 = time.perf_counter()
        self.run(2)  # warm-up (and compilation, when compiled)
        self.warmup_seconds = time.perf_counter() - t0

    def _forward_backward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        loss.backward()
        return loss

    def run(self, steps: int) -> float:
        _sync(self.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            self.opt.zero_grad(set_to_none=True)
            self.forward_backward(self.x, self.y)
            self.opt.step()
        _sync(self.device)
        return steps * self.batch_size / (time.perf_counter() - t0)


class LoopStep:
    """The engine's real epoch loop (``train_one_epoch``) of one method, limited to a number of steps."""

    def __init__(self, method, model, augment: str, loader, accelerator: Accelerator, speed: SpeedChoice) -> None:
        if speed.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.method, self.accelerator = method.to(accelerator.device), accelerator
        module = method.wrap(model)
        opt = build_optimizer(module, TrainConfig())
        self.module, self.opt, self.loader = accelerator.prepare(module, opt, loader)
        self.sched = build_scheduler(self.opt, len(self.loader), TrainConfig(warmup_epochs=0, schedule="constant"))
        self.tf = BatchTransform(CIFAR10_MEAN, CIFAR10_STD, augment=augment, channels_last=speed.channels_last)
        t0 = time.perf_counter()
        self.run(2)
        self.warmup_seconds = time.perf_counter() - t0

    def run(self, steps: int) -> float:
        step = StepContext(self.module, self.method, self.opt, self.sched, self.tf, self.accelerator)
        stats = train_one_epoch(step, self.loader, max_steps=steps, desc="bench")
        return stats.images / stats.seconds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _concurrent(args: argparse.Namespace) -> dict:
    """Run ``--processes`` copies of the loop measurement at once and sum their images/s."""
    cmd = [sys.executable, __file__, "--only-loop", "--steps", str(args.steps), "--repeats", str(args.repeats),
           "--batch-size", str(args.batch_size), "--arch", args.arch]
    cmd += ["--dataset", args.dataset] if args.dataset else []
    env = dict(os.environ)
    if not torch.cuda.is_available():  # CPU: share the cores out, as build_zoo/compare_methods --parallel do
        env.setdefault("OMP_NUM_THREADS", str(cpu_threads_per_process(args.processes)))
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(args.processes)]
    each = []
    for p in procs:
        stdout, stderr = p.communicate()
        lines = stdout.strip().splitlines()
        if p.returncode != 0 or not lines:  # say why, instead of an IndexError / JSONDecodeError
            raise SystemExit(f"error: a concurrent loop failed (exit {p.returncode}): {stderr.strip()[-2000:]}")
        each.append(json.loads(lines[-1])["loop_img_per_s"])
    return {"processes": args.processes, "threads_each": env.get("OMP_NUM_THREADS"), "loop_img_per_s_each": each,
            "loop_img_per_s_sum": round(sum(each), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet32_cifar")
    ap.add_argument("--dataset", default=None, help="path, or 'synthetic' (default: ../shared copy)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20, help="optimiser steps per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", action="store_true",
                    help="also measure the compiled bare step, loop and two-view step (and compile time)")
    ap.add_argument("--processes", type=int, default=0, help="also run N concurrent loops and sum their img/s")
    ap.add_argument("--only-loop", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--default-allocator", action="store_true",
                    help="leave glibc's malloc at its defaults on CPU (the trainer keeps freed memory; see "
                         "bench_host_allocator.py)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    best = resolve_speed("auto", "auto", "auto", device)
    # process-wide, as in the trainer, so (a), (b) and (c) all run with it; bench_host_allocator.py measures its gain
    host_memory_kept = device.type == "cpu" and not args.default_allocator and keep_freed_host_memory()
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision=best.mixed_precision)
    images, labels, what = load_images(args.dataset)
    if device.type == "cuda":  # as the trainer: the uint8 training set lives on the GPU
        images, labels = images.to(device), labels.to(device)
    train_set = TensorImageDataset(images, labels)

    def loop_for(method, augment: str, compiled: bool = False) -> LoopStep:
        loader = make_loader(train_set, args.batch_size, train=True, seed=0)
        model = create_model(args.arch, num_classes=10)
        if compiled:  # what the trainer's Accelerator does with train.compile=true (dynamo_backend="inductor")
            model = torch.compile(model, backend="inductor")
        return LoopStep(method, model, augment, loader, accelerator, best)

    def ce() -> Plain:
        return Plain(Criterion(build_loss("ce")))

    def supcon() -> SupConPretrain:
        return SupConPretrain(SupConConfig(base_temperature=0.07))

    ce_loop = loop_for(ce(), "crop_flip")
    if args.only_loop:
        faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        img_per_s = statistics.median(ce_loop.run(args.steps) for _ in range(args.repeats))
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
        print(json.dumps({"loop_img_per_s": round(img_per_s, 1), "freed_host_memory_kept": host_memory_kept,
                          "page_faults_per_step": round(faults / (args.steps * args.repeats))}))
        return
    benches = {"eager_fp32": BareStep(args.arch, args.batch_size, device, SpeedChoice("no", False, False)),
               "best_bare": BareStep(args.arch, args.batch_size, device, best), "loop": ce_loop,
               "supcon_2view": loop_for(supcon(), "simclr")}
    # the precision `auto` did not pick, same layout: the evidence for the choice (engine/hardware.py)
    other = SpeedChoice("no" if best.mixed_precision == "bf16" else "bf16", best.channels_last, best.compile)
    benches["other_precision_bare"] = BareStep(args.arch, args.batch_size, device, other)
    if args.compile and not best.compile:
        benches["compiled_bare"] = BareStep(args.arch, args.batch_size, device,
                                            SpeedChoice(best.mixed_precision, best.channels_last, True))
        benches["compiled_loop"] = loop_for(ce(), "crop_flip", compiled=True)
        benches["compiled_supcon_2view"] = loop_for(supcon(), "simclr", compiled=True)
    speeds: dict[str, list[float]] = {k: [] for k in benches}
    for _ in range(args.repeats):
        for name, bench in benches.items():
            speeds[name].append(bench.run(args.steps))
    med = {k: statistics.median(v) for k, v in speeds.items()}
    result = {
        "arch": args.arch, "data": what, "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"CPU ({torch.get_num_threads()} threads)", "torch": torch.__version__,
        "native_bf16": native_bf16(device), "auto": vars_of(best), "other_precision": other.mixed_precision,
        "freed_host_memory_kept": host_memory_kept, "batch_size": args.batch_size,
        "steps": args.steps, "repeats": args.repeats,
        **{f"{k}_img_per_s": round(v, 1) for k, v in med.items()},
        "loop_over_eager_fp32": round(med["loop"] / med["eager_fp32"], 3),
        "loop_over_best_bare": round(med["loop"] / med["best_bare"], 3),
        "best_bare_over_other_precision": round(med["best_bare"] / med["other_precision_bare"], 3),
        "warmup_seconds": {k: round(b.warmup_seconds, 1) for k, b in benches.items()},
    }
    if "compiled_bare" in med:
        result["compiled_over_best_bare"] = round(med["compiled_bare"] / med["best_bare"], 3)
        result["compiled_loop_over_loop"] = round(med["compiled_loop"] / med["loop"], 3)
        result["compiled_supcon_2view_over_supcon_2view"] = round(
            med["compiled_supcon_2view"] / med["supcon_2view"], 3)
    if args.processes:
        result["concurrent"] = _concurrent(args)
    print(f"{args.arch}, batch {args.batch_size}, {what}, {result['device']}, auto = {result['auto']}, "
          f"median of {args.repeats} rounds x {args.steps} steps")
    for k, v in med.items():
        print(f"  {k:<22}{v:10.1f} img/s   (warm-up {benches[k].warmup_seconds:.1f} s)")
    print(f"  (b) in {best.mixed_precision} over (b) in {other.mixed_precision} = "
          f"{result['best_bare_over_other_precision']:.3f}")
    print(f"  (c)/(a) loop / eager fp32 = {result['loop_over_eager_fp32']:.3f}   "
          f"(c)/(b) loop / best bare = {result['loop_over_best_bare']:.3f}")
    if "compiled_bare" in result:
        print(f"  compiled / eager: bare {result['compiled_over_best_bare']:.3f}, loop "
              f"{result['compiled_loop_over_loop']:.3f}, two-view "
              f"{result['compiled_supcon_2view_over_supcon_2view']:.3f}")
    if "concurrent" in result:
        print(f"  {args.processes} concurrent loops: {result['concurrent']['loop_img_per_s_sum']:.0f} img/s in all")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


def vars_of(speed: SpeedChoice) -> dict:
    return {"mixed_precision": speed.mixed_precision, "channels_last": speed.channels_last, "compile": speed.compile}


if __name__ == "__main__":
    main()
