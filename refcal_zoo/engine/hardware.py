"""Precision, memory layout and compilation chosen for the hardware a run trains on.

``train.mixed_precision``, ``train.channels_last`` and ``train.compile`` default to ``auto``; this module turns
``auto`` into a concrete choice once, at the start of a run, and the run record states what was used:

- bf16 autocast where the device computes bf16 natively: CUDA GPUs with bf16 (Ampere and later), CPUs with
  AVX-512 BF16 or AMX. Elsewhere bf16 is emulated and several times *slower* than fp32, so ``auto`` keeps fp32.
- channels-last (NHWC) where the convolution kernels prefer it: CUDA, and x86 CPUs with AVX2 or better (oneDNN's
  blocked NHWC kernels; measured 1.5x on a 2-core AVX2 EPYC for ResNet-32 in fp32).
- ``torch.compile`` of the model on CUDA only: on a 2-core CPU inductor's compile of a ResNet-32 training step
  takes minutes and did not pay back in our measurements (``benchmarks/bench_train.py``).

Losses, SupCon, temperature fitting and every metric stay float32 or better whatever the choice (the methods
cast logits to float32; evaluation and temperature fitting run on float64 copies of the logits).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["SpeedChoice", "native_bf16", "resolve_speed"]


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


@dataclass(frozen=True)
class SpeedChoice:
    """The concrete settings a run uses (``auto`` resolved)."""

    mixed_precision: str | None  # no | fp16 | bf16; None: left to `accelerate launch`
    channels_last: bool
    compile: bool


def resolve_speed(mixed_precision: str | None, channels_last: bool | str, compile: bool | str,
                  device: torch.device | str) -> SpeedChoice:
    """Resolve ``auto`` values of the three speed settings for ``device``; explicit values pass through."""
    device = torch.device(device)
    if mixed_precision == "auto":
        mixed_precision = "bf16" if native_bf16(device) else "no"
    if channels_last == "auto":
        channels_last = _prefers_channels_last(device)
    if compile == "auto":
        compile = device.type == "cuda"
    return SpeedChoice(mixed_precision, bool(channels_last), bool(compile))
