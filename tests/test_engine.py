"""Engine at full fidelity: SIGKILL + resume is bit-identical, corrupt checkpoints are skipped, resumption refuses
a changed configuration, 2-process runs count every test sample once, gradient accumulation, bf16 on CPU,
trackers, model selection."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from torch import nn

from refcal_zoo.config import TrainConfig, load_config
from refcal_zoo.data import BatchTransform, TensorImageDataset, make_loader
from refcal_zoo.engine import StepContext, build_optimizer, train, train_one_epoch
from refcal_zoo.engine.trainer import improves, selection_score
from refcal_zoo.errors import ConfigError, RunFolderError
from refcal_zoo.losses import build_loss
from refcal_zoo.methods import Criterion, Plain

from .conftest import REPO, reset_accelerate_state

TRAIN_PY = REPO / "recipes" / "train.py"
DEFAULT = REPO / "recipes" / "configs" / "default.yaml"
# digits-LT: 421 training images, batch 32 -> 13 batches per epoch; checkpoints every 5 batches and every epoch
RUN = ["train.epochs=2", "train.checkpoint_every_steps=5"]



def run_in_process(out, *extra, overwrite=False, resume=False, respeed=False):
    cfg = load_config(DEFAULT, [*RUN, *extra, f"output_dir={out}"])
    return train(cfg, overwrite=overwrite, resume=resume, respeed=respeed)


def run_killed_at(out, batch: int, *extra) -> None:
    """Start the recipe in a subprocess that SIGKILLs itself after ``batch`` training batches."""
    env = dict(os.environ, REFCAL_ZOO_KILL_AT_BATCH=str(batch))
    proc = subprocess.run([sys.executable, str(TRAIN_PY), *RUN, *extra, f"output_dir={out}"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not (out / "metrics.json").exists()


def log_records(run_dir):
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    for r in records:
        r.pop("images_per_second")
    return records


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("engine") / "reference"
    run_in_process(out)
    reset_accelerate_state()
    return out


def assert_same_run(a, b):
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert json.loads((a / "metrics.json").read_text()) == json.loads((b / "metrics.json").read_text())
    assert (a / "temperature.json").read_text() == (b / "temperature.json").read_text()
    assert log_records(a) == log_records(b)


def test_sigkill_mid_epoch_then_resume_is_bit_identical(reference_run, tmp_path):
    out = tmp_path / "killed"
    run_killed_at(out, 17)  # batch 4 of epoch 2; newest checkpoint: step_15 (mid-epoch)
    stage = out.with_name("killed.incomplete")
    assert sorted(p.name for p in (stage / "checkpoints").iterdir()) == ["step_13", "step_15"]
    with pytest.raises(RunFolderError, match="pass --resume"):
        run_in_process(out)  # an unfinished run is never silently discarded
    run_in_process(out, resume=True)
    assert_same_run(reference_run, out)
    assert not stage.exists() and not (out / "checkpoints").exists()


def test_every_epoch_logs_the_validation_nll_after_temperature_scaling(reference_run):
    log = log_records(reference_run)
    assert len(log) == 2 and all("val_ts_nll" in r for r in log)
    for r in log:  # T = 1 is among the temperatures searched, so scaling never makes the NLL worse
        assert 0.0 < r["val_ts_nll"] <= r["val_nll"] + 1e-5


def test_each_selection_rule_minimises_its_own_validation_score():
    early = {"val_accuracy": 0.76, "val_nll": 0.78, "val_ts_nll": 0.70}  # better calibrated, less refined
    late = {"val_accuracy": 0.80, "val_nll": 0.80, "val_ts_nll": 0.62}
    assert selection_score("best_nll", early) < selection_score("best_nll", late)
    assert selection_score("best_ts_nll", late) < selection_score("best_ts_nll", early)
    assert selection_score("best_accuracy", late) < selection_score("best_accuracy", early)
    with pytest.raises(ValueError, match="last"):
        selection_score("last", late)


def test_a_diverged_epoch_is_never_selected_nor_blocks_later_ones():
    assert improves(0.7, None) and improves(0.6, 0.7) and not improves(0.7, 0.6) and not improves(0.7, 0.7)
    assert not improves(float("nan"), None) and not improves(float("inf"), None)  # first epoch diverged
    assert not improves(float("nan"), 0.7) and not improves(None, 0.7)  # "last": nothing is selected


@pytest.mark.slow
def test_best_ts_nll_selects_the_epoch_with_the_lowest_temperature_scaled_validation_nll(tmp_path):
    out = tmp_path / "ts"
    run_in_process(out, "train.epochs=4", "train.select=best_ts_nll")
    log = log_records(out)
    best_epoch = min(log, key=lambda r: (r["val_ts_nll"], r["epoch"]))["epoch"]
    assert [r["epoch"] for r in log if r.get("selected")][-1] == best_epoch
    record = json.loads((out / "config.json").read_text())["run_record"]
    assert record["selection"] == {"rule": "best_ts_nll", "epoch": best_epoch}


def test_corrupt_checkpoint_is_skipped(reference_run, tmp_path):
    out = tmp_path / "corrupt"
    run_killed_at(out, 17)
    ckpts = out.with_name("corrupt.incomplete") / "checkpoints"
    newest = ckpts / "step_15" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated weights
    (ckpts / ".tmp-step_16").mkdir()  # a checkpoint whose save was interrupted
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint .*step_15"):
        run_in_process(out, resume=True)  # falls back to step_13 (end of epoch 1)
    assert_same_run(reference_run, out)


@pytest.mark.slow
def test_two_stage_run_killed_in_its_first_stage_resumes_bit_identical(tmp_path):
    """The checkpoint of stage 1 restores stage 1 only; stage 2 then starts fresh (it used to re-load it)."""
    two_stage = ["method.name=refcal", "train.epochs=1", "stage2.epochs=1", "stage2.batch_size=128", "stage2.lr=0.5"]
    reference = tmp_path / "reference"
    run_in_process(reference, *two_stage)
    reset_accelerate_state()
    out = tmp_path / "killed"
    run_killed_at(out, 7, *two_stage)  # batch 7 of the contrastive stage; newest checkpoint: step_5
    run_in_process(out, *two_stage, resume=True)
    assert_same_run(reference, out)


@pytest.mark.slow
def test_resume_refuses_a_changed_configuration(tmp_path):
    out = tmp_path / "changed"
    run_killed_at(out, 6)
    with pytest.raises(ConfigError, match=r"method\.supcon\.weight: 0\.5 -> 0\.3, train\.lr: 0\.05 -> 0\.2"):
        run_in_process(out, "train.lr=0.2", "method.supcon.weight=0.3", resume=True)
    with pytest.raises(RunFolderError, match="nothing to resume"):
        run_in_process(tmp_path / "never_started", resume=True)


@pytest.mark.slow
@pytest.mark.parametrize("recorded", [True, False])
def test_a_resumed_run_keeps_the_precision_it_started_with(tmp_path, monkeypatch, recorded):
    """``auto`` is resolved once per run: resuming where ``auto`` would now pick another precision (a changed
    policy, another machine) keeps the checkpoint's. A checkpoint from before the choice was recorded resumes with
    ``auto`` as it resolved then (bf16 wherever native)."""
    from refcal_zoo.engine import hardware

    out = tmp_path / "pinned"
    run_killed_at(out, 6, "train.channels_last=false")
    state_file = next((out.with_name("pinned.incomplete") / "checkpoints").glob("step_*")) / "trainer_state.json"
    state = json.loads(state_file.read_text())
    started = hardware.resolve_speed("auto", False, "auto", "cpu")
    assert state["speed"] == {"mixed_precision": started.mixed_precision, "channels_last": False, "compile": False}
    flipped = "no" if started.mixed_precision == "bf16" else "bf16"
    monkeypatch.setattr(hardware, "bf16_autocast_pays", lambda device: flipped == "bf16")
    monkeypatch.setattr(hardware, "native_bf16", lambda device: flipped == "bf16")
    assert hardware.resolve_speed("auto", False, "auto", "cpu").mixed_precision == flipped
    if not recorded:
        del state["speed"]
        state_file.write_text(json.dumps(state))
    run_in_process(out, "train.channels_last=false", resume=True)
    record = json.loads((out / "config.json").read_text())["run_record"]
    assert record["precision"]["mixed_precision"] == (started.mixed_precision if recorded else flipped)


@pytest.mark.slow
@pytest.mark.parametrize("recorded", [True, False])
def test_a_run_resumed_on_another_device_credits_each_device_with_its_epochs(tmp_path, monkeypatch, recorded):
    """A run started on one machine and finished on another (a GPU lent for minutes) names both in its record,
    each with the epochs it trained; a checkpoint from before devices were recorded says so instead of guessing."""
    from refcal_zoo.engine import trainer

    out = tmp_path / "moved"
    run_killed_at(out, 18)  # epoch 2, batch 5 of 13: the newest checkpoint is mid-epoch 2
    first = trainer._device_name(Accelerator(cpu=True))
    for state_file in (out.with_name("moved.incomplete") / "checkpoints").glob("step_*/trainer_state.json"):
        state = json.loads(state_file.read_text())
        assert state["devices"] == [[1, first, "no"]]
        if not recorded:  # as a checkpoint written before devices were recorded
            del state["devices"]
            state_file.write_text(json.dumps(state))
    reset_accelerate_state()
    monkeypatch.setattr(trainer, "_device_name", lambda accelerator: "Lent GPU")
    run_in_process(out, resume=True)
    device = json.loads((out / "config.json").read_text())["run_record"]["budget"]["device"]
    earlier = first if recorded else "a device not recorded"
    assert device == f"{earlier} (epoch 1) and Lent GPU (epoch 2)"
    assert trainer.describe_devices([[1, "A"]], 200) == "A"
    assert trainer.describe_devices([[1, "A"], [169, "B"], [180, "A"]], 200) == \
        "A (epochs 1-168), B (epochs 169-179) and A (epochs 180-200)"


def test_the_run_records_device_description_reads_back_as_its_stretches():
    """``BudgetRecord.device_stretches`` reads what ``describe_devices`` writes (an identity over the writer's forms:
    one device, moves, single-epoch stretches, names with commas, precisions, an unrecorded device); a description in
    no known form stays one stretch, and no description none."""
    from refcal_zoo.engine.trainer import _stretches, describe_devices
    from refcal_zoo.record import BudgetRecord, DeviceStretch

    for devices, total in (([[1, "CPU, 1 thread", "no"], [169, "NVIDIA H200", "no"]], 200),
                           ([[1, "A"], [2, "B, 2 threads"], [3, "A"]], 3),
                           ([[1, "NVIDIA H200", "bf16"], [151, "CPU, 2 threads", "no"]], 200),
                           ([[1, None], [5, "CPU"]], 10)):
        description = describe_devices(devices, total)
        got = BudgetRecord(device=description).device_stretches()
        assert [(s.first_epoch, s.last_epoch) for s in got] == [(f, la) for f, la, *_ in _stretches(devices, total)]
        parts = [f"{s.device} ({s.span})" for s in got]
        assert ", ".join(parts[:-1]) + " and " + parts[-1] == description  # the pieces make the description again
    assert BudgetRecord(device="NVIDIA H200, bf16 (epochs 1-150) and CPU, 2 threads, fp32 (epochs 151-200)"
                        ).device_stretches() == [DeviceStretch("NVIDIA H200, bf16", 1, 150),
                                                 DeviceStretch("CPU, 2 threads, fp32", 151, 200)]
    assert BudgetRecord(device="CPU, 2 threads").device_stretches() == [DeviceStretch("CPU, 2 threads")]
    assert BudgetRecord(device="A (epochs 1-4) then B").device_stretches() == [DeviceStretch("A (epochs 1-4) then B")]
    assert BudgetRecord(device=None).device_stretches() == []


@pytest.mark.slow
@pytest.mark.parametrize("method", [["method.name=refcal_joint"], ["method.name=plain", "method.base_loss=crl"]],
                         ids=["supcon_gathered", "crl_history_synced"])
def test_two_processes_count_every_test_sample_once(tmp_path, method):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
         str(TRAIN_PY), "train.epochs=2", "train.checkpoint_every_steps=2", *method, f"output_dir={out}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "x2" in proc.stdout  # the recipe saw two processes
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 500  # digits test split: every sample exactly once, no padding duplicates
    assert json.loads((out / "temperature.json").read_text())["n"] == 200  # validation likewise


class TinyNet(nn.Module):
    """No BatchNorm, so a 128-batch and two accumulated 64-batches compute the same gradient."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=4)
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def one_update(accum: int, batch: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (128, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 5, (128,), generator=g)
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=accum)
    model = TinyNet()
    opt = build_optimizer(model, TrainConfig(lr=0.1, momentum=0.9, weight_decay=5e-4))
    loader = make_loader(TensorImageDataset(images, labels), batch, train=True, seed=0)
    model, opt, loader = accelerator.prepare(model, opt, loader)
    step = StepContext(model, Plain(Criterion(build_loss("ce"))), opt, None, BatchTransform([0.5] * 3, [0.25] * 3),
                       accelerator)
    train_one_epoch(step, loader)
    state = {k: v.detach().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()}
    reset_accelerate_state()
    return state


def test_gradient_accumulation_matches_the_large_batch():
    big = one_update(accum=1, batch=128)
    accumulated = one_update(accum=2, batch=64)
    start = TinyNet()
    torch.manual_seed(0)
    start = TinyNet().state_dict()
    for k in big:
        assert not torch.equal(big[k], start[k])  # an update happened
        torch.testing.assert_close(accumulated[k], big[k], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_bf16_on_cpu_and_tensorboard_and_selection(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard not installed")
    out = tmp_path / "bf16"
    cfg = load_config(DEFAULT, ["train.epochs=2", "train.mixed_precision=bf16", "train.log_with=[tensorboard]",
                                "train.select=best_accuracy", "train.channels_last=true", f"output_dir={out}"])
    result = train(cfg)
    assert all(v == v for k, v in result.metrics.items() if k in ("accuracy", "nll"))  # finite, not nan
    assert list((out / "tracking").rglob("events.out.tfevents*"))
    assert (out / "best" / "model.safetensors").is_file() and (out / "last" / "model.safetensors").is_file()
    block = json.loads((out / "config.json").read_text())["run_record"]
    log = log_records(out)
    best_epoch = max(log, key=lambda r: (r["val_accuracy"], -r["epoch"]))["epoch"]
    assert block["selection"] == {"rule": "best_accuracy", "epoch": best_epoch}
    n = torch.get_num_threads()
    assert block["budget"]["device"] == f"CPU, {n} thread{'s' * (n != 1)}"  # what the timings ran on
    selected = [r["epoch"] for r in log if r.get("selected")]
    assert selected[-1] == best_epoch
    shutil.rmtree(out)


def test_method_state_round_trips_for_checkpoints():
    crl = build_loss("crl", num_samples=6)
    method = Plain(Criterion(crl))
    crl.update_history(torch.eye(6, 3)[:, :3] * 5, torch.tensor([0, 1, 2, 0, 1, 2]), torch.arange(6))
    crl.next_epoch()
    state = method.state_dict()
    assert state and all(k.startswith("criterion.") for k in state)
    fresh = Plain(Criterion(build_loss("crl", num_samples=6)))
    fresh.load_state_dict(state)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, state[k])
    ada = Plain(Criterion(build_loss("adafocal")))
    ada.criterion.loss.gammas.fill_(3.0)
    other = Plain(Criterion(build_loss("adafocal")))
    other.load_state_dict(ada.state_dict())
    assert torch.equal(other.criterion.loss.gammas, ada.criterion.loss.gammas)


def test_weight_decay_can_skip_norms_and_biases():
    model = TinyNet()
    groups = build_optimizer(model, TrainConfig(weight_decay=1e-3, wd_exclude_norm_bias=True)).param_groups
    decayed = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 1e-3 and groups[1]["weight_decay"] == 0.0
    assert decayed == {id(model.conv.weight), id(model.fc.weight)}
    assert {id(p) for p in groups[1]["params"]} == {id(model.conv.bias), id(model.fc.bias)}


def test_a_failing_checkpoint_save_surfaces_and_keeps_the_previous_one(tmp_path, monkeypatch):
    import errno

    from refcal_zoo.engine import checkpoint as ckpt_mod

    calls = {"n": 0}
    real = Accelerator.save_state

    def save_state(self, output_dir=None, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint hits a full disk half-way
            os.makedirs(output_dir, exist_ok=True)
            (Path(output_dir) / "model.safetensors").write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, output_dir, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", save_state)
    out = tmp_path / "diskfull"
    with pytest.raises(OSError, match="No space left"):
        run_in_process(out)
    stage = out.with_name("diskfull.incomplete")
    found = ckpt_mod.latest_checkpoint(stage)
    assert found is not None and found[1].name == "step_5"  # the first checkpoint survives, complete
    assert not (stage / "checkpoints" / "step_10").exists()


def test_resume_drops_a_log_line_cut_short_and_refuses_a_damaged_log(tmp_path):
    """A process killed while appending leaves a partial last line: the resume's truncation drops it (its epoch
    came after the newest checkpoint); a damaged line before the end is an error naming the file and line."""
    from refcal_zoo.engine.tracking import truncate_log

    log = tmp_path / "log.jsonl"
    records = [{"stage_index": 0, "epoch": e, "val_accuracy": e / 10} for e in (1, 2, 3)]
    log.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"stage_index": 0, "epo')
    truncate_log(log, lambda r: r["epoch"] <= 2)
    assert [json.loads(line) for line in log.read_text().splitlines()] == records[:2]
    log.write_text(json.dumps(records[0]) + "\n" + '{"stage_in\n' + json.dumps(records[1]) + "\n")
    with pytest.raises(RunFolderError, match="log.jsonl line 2 is not a JSON record"):
        truncate_log(log, lambda r: True)
    assert log.read_text().count("\n") == 3  # left as it was


def test_evaluation_runs_without_tf32_and_restores_the_settings():
    """cuDNN's default TF32 convolutions moved a GPU-evaluated entry's accuracy by 2 test images against its CPU
    re-evaluation: predict_logits switches TF32 off while it runs and puts the caller's settings back."""
    from refcal_zoo.engine import predict_logits

    seen = []

    class Probe(nn.Linear):
        def forward(self, x):
            seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
            return super().forward(x.flatten(1))

    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        images = torch.randint(0, 256, (6, 3, 2, 2), dtype=torch.uint8)
        loader = make_loader(TensorImageDataset(images, torch.arange(6) % 2), 4, train=False)
        logits, labels = predict_logits(Probe(12, 2), loader, BatchTransform([0.5] * 3, [0.25] * 3),
                                        Accelerator(cpu=True))
        assert logits.shape == (6, 2) and labels.tolist() == [0, 1, 0, 1, 0, 1]
        assert seen and all(flags == (False, False) for flags in seen)
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (True, True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
        reset_accelerate_state()


def test_a_stretch_of_training_shorter_than_an_epoch_gives_way_to_the_next_device():
    """A restart in the epoch its stretch began on (killed before finishing one epoch there) replaces that stretch,
    so no device is credited with an empty range of epochs."""
    from refcal_zoo.engine.checkpoint import TrainerState
    from refcal_zoo.engine.trainer import _note_device, describe_devices

    back = TrainerState(epoch=4, devices=[[1, "A"], [5, "B"]])  # B started epoch 5 and was stopped inside it
    _note_device(back, "A", [10], resumed=True)
    assert back.devices == [[1, "A", None]] and describe_devices(back.devices, 10) == "A"
    moved = TrainerState(epoch=4, devices=[[1, "A"], [5, "B"]])
    _note_device(moved, "C", [10], resumed=True)
    assert describe_devices(moved.devices, 10) == "A (epochs 1-4) and C (epochs 5-10)"
    second_stage = TrainerState(stage=1, epoch=2, devices=[[1, "A"]])  # epoch 3 of stage 2 after 5 of stage 1
    _note_device(second_stage, "B", [5, 10], resumed=True)
    assert describe_devices(second_stage.devices, 15) == "A (epochs 1-7) and B (epochs 8-15)"


def test_respeed_records_each_stretch_precision(tmp_path, monkeypatch):
    """A run started in bf16 on a lent GPU and finished on a CPU with ``--respeed`` trains on in the precision this
    machine resolves (fp32), and its record names each stretch's precision instead of crediting one with all."""
    from refcal_zoo.engine import trainer
    from refcal_zoo.engine.checkpoint import TrainerState
    from refcal_zoo.engine.trainer import _note_device, describe_devices, describe_precisions

    out = tmp_path / "respeed"
    run_killed_at(out, 18)  # the newest checkpoint is mid-epoch 2
    for state_file in (out.with_name("respeed.incomplete") / "checkpoints").glob("step_*/trainer_state.json"):
        state = json.loads(state_file.read_text())  # as if epoch 1 ran in bf16 on a GPU (before precisions were
        state["speed"]["mixed_precision"] = "bf16"  # recorded per stretch: no third item)
        state["devices"] = [[1, "Lent GPU"]]
        state_file.write_text(json.dumps(state))
    reset_accelerate_state()
    with pytest.raises(ConfigError, match="--resume"):
        train(load_config(DEFAULT, [*RUN, f"output_dir={out}"]), resume=False, respeed=True)
    seen, make_accelerator = [], trainer._make_accelerator
    monkeypatch.setattr(trainer, "_make_accelerator", lambda cfg, stage_dir, speed: seen.append(speed) or
                        make_accelerator(cfg, stage_dir, speed))
    run_in_process(out, resume=True, respeed=True)
    assert seen[0].mixed_precision == "no"  # resolved for this CPU, not the checkpoint's bf16
    record = json.loads((out / "config.json").read_text())["run_record"]
    cpu = trainer._device_name(Accelerator(cpu=True))
    assert record["budget"]["device"] == f"Lent GPU, bf16 (epoch 1) and {cpu}, fp32 (epoch 2)"
    assert record["precision"]["mixed_precision"] == "bf16 (epoch 1) and fp32 (epoch 2)"
    # without --respeed the same resume keeps bf16 and one precision; neighbouring stretches in one precision join
    kept = TrainerState(epoch=1, devices=[[1, "Lent GPU"]])
    _note_device(kept, "CPU", [2], resumed=True, precision="bf16", earlier_precision="bf16")
    assert describe_devices(kept.devices, 2) == "Lent GPU (epoch 1) and CPU (epoch 2)"
    assert describe_precisions(kept.devices, 2, "bf16") == "bf16"
    three = [[1, "A", "bf16"], [100, "B", "bf16"], [151, "C", "no"]]
    assert describe_precisions(three, 200, "no") == "bf16 (epochs 1-150) and fp32 (epochs 151-200)"
