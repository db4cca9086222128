"""What keeping freed host memory buys a CPU training run (``engine/hardware.py: keep_freed_host_memory``).

    python benchmarks/bench_host_allocator.py --json benchmarks/results/bench_host_allocator_cpu.json

glibc's malloc returns the large blocks of a step's activations to the kernel when they are freed and faults
them in again on the next step. The trainer turns that off on CPU (process-wide, so it cannot be switched per
measurement inside one process): this script runs ``bench_train.py``'s real training loop (c) in fresh processes,
alternately with glibc's defaults and with the trainer's setting, and reports the median images/s and minor page
faults per step of each. Rounds alternate so that machine load affects both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch

BENCH_TRAIN = Path(__file__).with_name("bench_train.py")


def _loop(args: argparse.Namespace, default_allocator: bool) -> dict:
    cmd = [sys.executable, str(BENCH_TRAIN), "--only-loop", "--steps", str(args.steps), "--repeats", "1",
           "--batch-size", str(args.batch_size), "--arch", args.arch]
    cmd += ["--dataset", args.dataset] if args.dataset else []
    cmd += ["--default-allocator"] if default_allocator else []
    done = subprocess.run(cmd, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SystemExit(f"error: a training-loop process failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet32_cifar")
    ap.add_argument("--dataset", default=None, help="path, or 'synthetic' (default: ../shared copy)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20, help="optimiser steps measured in each process")
    ap.add_argument("--rounds", type=int, default=3, help="pairs of processes (default allocator, kept memory)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()
    if torch.cuda.is_available():
        raise SystemExit("error: this measures the CPU host allocator; run it on a machine without a GPU "
                         "(or with CUDA_VISIBLE_DEVICES='')")

    runs: dict[str, list[dict]] = {"default": [], "kept": []}
    for _ in range(args.rounds):
        runs["default"].append(_loop(args, default_allocator=True))
        runs["kept"].append(_loop(args, default_allocator=False))
    if not all(r["freed_host_memory_kept"] for r in runs["kept"]):
        raise SystemExit("error: this C library is not glibc, so the trainer leaves the allocator alone here")
    med = {k: {"loop_img_per_s": round(statistics.median(r["loop_img_per_s"] for r in v), 1),
               "page_faults_per_step": round(statistics.median(r["page_faults_per_step"] for r in v))}
           for k, v in runs.items()}
    result = {"arch": args.arch, "batch_size": args.batch_size, "device": f"CPU ({torch.get_num_threads()} threads)",
              "torch": torch.__version__, "steps": args.steps, "rounds": args.rounds,
              "glibc_default": med["default"], "freed_memory_kept": med["kept"],
              "speedup": round(med["kept"]["loop_img_per_s"] / med["default"]["loop_img_per_s"], 3),
              "each": {k: [r["loop_img_per_s"] for r in v] for k, v in runs.items()}}
    print(f"{args.arch}, batch {args.batch_size}, {result['device']}, median of {args.rounds} processes each")
    for name, key in (("glibc defaults", "default"), ("freed memory kept", "kept")):
        print(f"  {name:<18}{med[key]['loop_img_per_s']:8.1f} img/s  {med[key]['page_faults_per_step']:8d} "
              f"page faults/step")
    print(f"  speed-up {result['speedup']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
