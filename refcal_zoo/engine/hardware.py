"""Precision, memory layout and compilation chosen for the hardware a run trains on.

``train.mixed_precision``, ``train.channels_last`` and ``train.compile`` default to ``auto``; this module turns
``auto`` into a concrete choice once, at the start of a run, and the run record states what was used:

- bf16 autocast where it pays: CUDA GPUs with native bf16 (Ampere and later) and CPUs with AMX tiles. A CPU
  with AVX-512 BF16 but no AMX computes bf16 natively yet trains *slower* under autocast than in fp32: on a 2-core
  Xeon under KVM (AVX-512 BF16, no AMX), the fp32 channels-last step is 1.36x the bf16 one for ResNet-32, 1.40x
  for WRN-28-2 and 1.64x for EfficientViT-B0 at batch 128 (``benchmarks/bench_train.py``, ``best_bare`` over
  ``other_precision_bare``): the casts around every batch norm and activation cost more than the faster
  convolutions save. Without native bf16 it is emulated and several times slower. In both cases ``auto`` keeps
  fp32.
- channels-last (NHWC) where the convolution kernels prefer it: CUDA, and x86 CPUs with AVX2 or better (oneDNN's
  blocked NHWC kernels; measured 1.5x on a 2-core AVX2 EPYC for ResNet-32 in fp32).
- ``torch.compile`` of the model on CUDA only. On CPUs it pays for one-view training on some machines and not on
  others (``benchmarks/bench_train.py --compile``): 0.98x for the ResNet-32 bare step on a 2-core AVX2 EPYC; on the
  2-core Xeon 1.18x for the real CE loop but 0.98x for the two-view SupCon step, after ~45 s of compilation, and
  inductor needs a C++ compiler. ``train.compile=true`` takes it where it pays.
- On CPU, glibc's allocator keeps freed memory (``keep_freed_host_memory``). By default it hands the activations'
  large blocks back to the kernel and faults them in again on the next step: 6,000-30,000 page faults per
  ResNet-32 step at batch 128 on a 2-core EPYC, where keeping them leaves ~300. Measured gain: +3% images/s for
  the real training loop (``benchmarks/bench_host_allocator.py``), +11-15% for the bare step. PyTorch's CPU
  tuning guide gets the same effect with jemalloc or tcmalloc through ``LD_PRELOAD``; this needs neither.

Losses, SupCon, temperature fitting and every metric stay float32 or better whatever the choice (the methods
cast logits to float32; evaluation and temperature fitting run on float64 copies of the logits).
"""

from __future__ import annotations

import ctypes
import os
import platform
from dataclasses import dataclass

import torch

__all__ = ["SpeedChoice", "bf16_autocast_pays", "cpu_threads_per_process", "keep_freed_host_memory", "native_bf16",
           "resolve_speed"]

# mallopt(3) parameters, from glibc's <malloc.h>
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's ceiling on 64-bit: blocks above it are still mmap'ed and released


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bf16 matrix products natively (not by emulation)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def _prefers_channels_last(device: torch.device) -> bool:
    if device.type == "cuda":
        return True
    return device.type == "cpu" and bool(torch.cpu._is_avx2_supported())


def bf16_autocast_pays(device: torch.device | str) -> bool:
    """Whether bf16 autocast trains faster than fp32 on ``device``: native bf16 on CUDA, AMX on CPU."""
    device = torch.device(device)
    if device.type == "cpu":
        return bool(torch.cpu._is_amx_tile_supported())
    return native_bf16(device)


@dataclass(frozen=True)
class SpeedChoice:
    """The concrete settings a run uses (``auto`` resolved)."""

    mixed_precision: str | None  # no | fp16 | bf16; None: left to `accelerate launch`
    channels_last: bool
    compile: bool


def resolve_speed(mixed_precision: str | None, channels_last: bool | str, compile: bool | str,
                  device: torch.device | str, *, legacy_cpu_bf16: bool = False) -> SpeedChoice:
    """Resolve ``auto`` values of the three speed settings for ``device``; explicit values pass through.

    ``legacy_cpu_bf16``: resolve ``auto`` precision as before 2026-12-03 (bf16 wherever it is native, AVX-512 BF16
    CPUs included), for resuming a run whose checkpoint predates the recorded choice (``TrainerState.speed``)."""
    device = torch.device(device)
    if mixed_precision == "auto":
        pays = native_bf16(device) if legacy_cpu_bf16 else bf16_autocast_pays(device)
        mixed_precision = "bf16" if pays else "no"
    if channels_last == "auto":
        channels_last = _prefers_channels_last(device)
    if compile == "auto":
        compile = device.type == "cuda"
    return SpeedChoice(mixed_precision, bool(channels_last), bool(compile))


def keep_freed_host_memory() -> bool:
    """Make glibc's malloc keep freed memory in the process instead of returning it to the kernel every step.

    Sets, process-wide: the mmap threshold to its 32 MiB ceiling (blocks below it come from the heap), and
    trimming of the heap's top off (the heap then stays at the run's peak, about 1.3 GB for ResNet-32 at batch
    128). Returns False, changing nothing, where the C library is not glibc (macOS, Windows, musl).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = [mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX),  # fixing it also stops glibc's dynamic adjustment
            mallopt(_M_TRIM_THRESHOLD, 2**31 - 1), mallopt(_M_TOP_PAD, 64 * 1024 * 1024)]
    return all(r == 1 for r in done)


def cpu_threads_per_process(processes: int) -> int:
    """CPU threads for each of ``processes`` concurrent runs on this machine: its usable cores shared out.

    With the default (every core each) N processes oversubscribe the CPU and OpenMP collapses; shared out, N runs
    are also faster in total than one run with all the threads (``benchmarks/bench_train.py --processes``).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, processes))
