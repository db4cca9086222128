"""Speed defaults: ``auto`` precision / layout / compile resolved for the hardware, recorded, and float32 evaluation."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from refcal_zoo.config import load_config
from refcal_zoo.data import BatchTransform, prepare_data
from refcal_zoo.engine import hardware, train
from refcal_zoo.engine.hardware import SpeedChoice, resolve_speed
from refcal_zoo.errors import ConfigError
from refcal_zoo.models import create_model

from .conftest import REPO

DEFAULT = REPO / "recipes" / "configs" / "default.yaml"


def test_defaults_are_auto_and_bare_no_means_the_string_no(tmp_path):
    t = load_config(DEFAULT).train
    assert (t.mixed_precision, t.channels_last, t.compile) == ("auto", "auto", "auto")
    assert load_config(DEFAULT, ["train.mixed_precision=no"]).train.mixed_precision == "no"
    yml = tmp_path / "c.yaml"
    yml.write_text(f"base: {DEFAULT}\ntrain:\n  mixed_precision: no\n  channels_last: yes\n  compile: off\n")
    t = load_config(yml).train
    assert (t.mixed_precision, t.channels_last, t.compile) == ("no", True, False)
    assert load_config(DEFAULT, ["train.mixed_precision=null"]).train.mixed_precision is None  # the launcher's


@pytest.mark.parametrize("avx512_bf16, amx, expected, legacy",
                         [(True, False, "no", "bf16"), (True, True, "bf16", "bf16"), (False, False, "no", "no")])
def test_auto_precision_is_bf16_on_cpu_only_with_amx(monkeypatch, avx512_bf16, amx, expected, legacy):
    """AVX-512 BF16 alone trains slower under autocast than fp32 (measured, see engine/hardware.py); the legacy
    rule (bf16 wherever native) is kept for resuming checkpoints that predate the recorded choice."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx2_supported", lambda: True)
    assert resolve_speed("auto", "auto", "auto", "cpu") == SpeedChoice(expected, True, False)
    assert resolve_speed("auto", "auto", "auto", "cpu", legacy_cpu_bf16=True) == SpeedChoice(legacy, True, False)
    assert resolve_speed("bf16", "auto", "auto", "cpu") == SpeedChoice("bf16", True, False)  # explicit wins
    monkeypatch.setattr(torch.cpu, "_is_avx2_supported", lambda: False)
    assert resolve_speed("auto", "auto", "auto", "cpu").channels_last is False


def test_auto_on_cuda_and_explicit_values_pass_through(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_speed("auto", "auto", "auto", "cuda") == SpeedChoice("bf16", True, True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert hardware.native_bf16("cuda") is False  # emulated bf16 (pre-Ampere) is not native
    assert resolve_speed("fp16", False, True, "cpu") == SpeedChoice("fp16", False, True)
    assert resolve_speed(None, True, False, "cpu") == SpeedChoice(None, True, False)


@pytest.mark.parametrize("override, fragment", [("train.mixed_precision=fp8", "train.mixed_precision must be"),
                                                ("train.channels_last=sometimes", "train.channels_last must be"),
                                                ("train.compile=maybe", "train.compile must be")])
def test_bad_speed_values_fail_before_anything_is_written(tmp_path, override, fragment):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=fragment):
        train(load_config(DEFAULT, [override, "train.epochs=1", f"output_dir={out}"]))
    assert not out.exists() and not out.with_name("run.incomplete").exists()


@pytest.mark.slow
def test_bf16_run_records_its_speed_settings_and_evaluates_in_float32(tmp_path):
    """A bf16 training (emulated here if the CPU lacks bf16) must still produce float32 test logits: recomputing
    them from the saved weights in float32 matches ``test_predictions.npz`` far below bf16's resolution."""
    out = tmp_path / "bf16"
    cfg = load_config(DEFAULT, ["train.epochs=1", "method.name=plain", "train.mixed_precision=bf16",
                                "train.channels_last=auto",
                                f"output_dir={out}"])
    train(cfg)
    record = json.loads((out / "config.json").read_text())["run_record"]
    expected = resolve_speed("bf16", "auto", "auto", "cpu")
    assert record["precision"] == {"mixed_precision": "bf16", "channels_last": expected.channels_last}

    data = prepare_data(cfg.dataset)
    model = create_model(cfg.model.arch, num_classes=data.num_classes).eval()
    model.load_state_dict(load_file(str(out / "model.safetensors")))
    pcfg = json.loads((out / "config.json").read_text())["pretrained_cfg"]
    tf = BatchTransform(tuple(pcfg["mean"]), tuple(pcfg["std"]), augment="none")
    with torch.no_grad():
        logits = model(tf(data.test_images)).numpy()
    saved = np.load(out / "test_predictions.npz")["logits"]
    relative = np.abs(saved - logits).max() / np.abs(logits).max()
    assert relative < 1e-4  # float32 kernels differ by ~1e-6 of the scale; a bf16 evaluation by ~1e-2


def test_bench_train_reports_every_figure_and_consistent_ratios(tmp_path):
    """The speed benchmark runs end to end (tiny model, synthetic data) and its ratios follow from its figures."""
    import subprocess
    import sys

    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_train.py"), "--arch", "resnet8_cifar",
                    "--dataset", "synthetic", "--steps", "1", "--repeats", "1", "--batch-size", "16",
                    "--json", str(out)], check=True, capture_output=True, text=True)
    r = json.loads(out.read_text())
    for key in ("eager_fp32", "best_bare", "other_precision_bare", "loop", "supcon_2view"):
        assert r[f"{key}_img_per_s"] > 0
    assert r["loop_over_eager_fp32"] == pytest.approx(r["loop_img_per_s"] / r["eager_fp32_img_per_s"], rel=0.01)
    assert r["loop_over_best_bare"] == pytest.approx(r["loop_img_per_s"] / r["best_bare_img_per_s"], rel=0.01)
    assert r["best_bare_over_other_precision"] == pytest.approx(
        r["best_bare_img_per_s"] / r["other_precision_bare_img_per_s"], rel=0.01)
    assert {r["auto"]["mixed_precision"], r["other_precision"]} == {"no", "bf16"}
    assert r["auto"] == {"mixed_precision": resolve_speed("auto", "auto", "auto", "cpu").mixed_precision,
                         "channels_last": resolve_speed("auto", "auto", "auto", "cpu").channels_last,
                         "compile": False}


@pytest.mark.slow
def test_bench_train_compile_times_the_compiled_bare_step_loop_and_two_view_step(tmp_path):
    """``--compile`` adds the compiled bare step, real loop and two-view step, each with its ratio to eager."""
    import subprocess
    import sys

    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_train.py"), "--arch", "resnet8_cifar",
                    "--dataset", "synthetic", "--steps", "1", "--repeats", "1", "--batch-size", "16", "--compile",
                    "--json", str(out)], check=True, capture_output=True, text=True)
    r = json.loads(out.read_text())
    for compiled, eager, ratio in (("compiled_bare", "best_bare", "compiled_over_best_bare"),
                                   ("compiled_loop", "loop", "compiled_loop_over_loop"),
                                   ("compiled_supcon_2view", "supcon_2view",
                                    "compiled_supcon_2view_over_supcon_2view")):
        assert r[f"{compiled}_img_per_s"] > 0 and r["warmup_seconds"][compiled] > 0
        assert r[ratio] == pytest.approx(r[f"{compiled}_img_per_s"] / r[f"{eager}_img_per_s"], rel=0.01)


@pytest.mark.slow
def test_a_compiled_run_exports_plain_timm_weights(tmp_path):
    """``train.compile`` (the CUDA default) must export the model's own parameter names, not torch.compile's
    ``_orig_mod.`` wrapper names, for both the selected and the final weights (it used to crash at the end)."""
    from safetensors import safe_open

    out = tmp_path / "compiled"
    train(load_config(DEFAULT, ["train.epochs=1", "method.name=plain", "model.arch=resnet8_cifar",
                                "train.compile=true", f"output_dir={out}"]))
    reference = set(create_model("resnet8_cifar", num_classes=10).state_dict())
    for weights in (out / "model.safetensors", out / "best" / "model.safetensors", out / "last" / "model.safetensors"):
        with safe_open(str(weights), "pt") as f:
            assert set(f.keys()) == reference, weights


_FAULTS = """
import ctypes, resource, sys, torch
from refcal_zoo.engine.hardware import keep_freed_host_memory
if sys.argv[1] == "kept":
    assert keep_freed_host_memory()
else:  # glibc's default mmap threshold (128 KiB), held fixed: left to adapt, glibc moves the blocks to the heap,
    # whose top is then trimmed or not depending on what else the process allocated above them (a flaky baseline)
    assert ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024) == 1  # M_MMAP_THRESHOLD
def rounds(n):  # three 8 MiB blocks at once, written, then freed: glibc trims the heap's top after each round
    for _ in range(n):
        blocks = [torch.ones(2 * 1024 * 1024) for _ in range(3)]
        del blocks
rounds(2)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(5)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator setting applies to glibc only")
def test_kept_host_memory_is_not_faulted_in_again(tmp_path):
    """Page faults of repeated alloc/free rounds, in fresh processes: glibc's default threshold against the
    trainer's setting."""
    script = tmp_path / "faults.py"
    script.write_text(_FAULTS)
    faults = {mode: int(subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True,
                                       check=True).stdout.split()[-1]) for mode in ("default", "kept")}
    assert faults["default"] > 5 * 2048  # 5 rounds re-fault at least one 8 MiB block (2048 pages) each
    assert faults["kept"] < faults["default"] / 4


def test_host_memory_setting_is_skipped_off_glibc(monkeypatch):
    monkeypatch.setattr(hardware.platform, "libc_ver", lambda: ("musl", "1.2"))
    assert hardware.keep_freed_host_memory() is False
