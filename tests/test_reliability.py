"""Reliability: bad input fails before any training with one line and writes nothing; a run folder has one owner;
a run whose training finished can always be completed (post-training keys and newer config keys may differ).

The bad-input table has one row per case: the input, the error type and a fragment of its message. Every row is
run twice, through the library (``load_config`` + ``train``: the exception type) and through the recipe or the
CLI (exit status 2, one line on stderr), and both times nothing on disk may change.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from refcal_zoo.config import Config, config_to_dict, load_config
from refcal_zoo.engine import train
from refcal_zoo.engine.run_folder import RunLock, finalize_run_dir, lock_path
from refcal_zoo.engine.trainer import config_differences
from refcal_zoo.engine.validate import registry_problems
from refcal_zoo.errors import ConfigError, DataError, RunFolderError

from .conftest import REPO, reset_accelerate_state

TRAIN_PY = REPO / "recipes" / "train.py"
DEFAULT = REPO / "recipes" / "configs" / "default.yaml"
_spec = importlib.util.spec_from_file_location("recipe_train_reliability", TRAIN_PY)
recipe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(recipe)


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` (files and folders) with a digest of its content."""
    out = {}
    for p in sorted(folder.rglob("*")):
        out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


# (id, recipe argv (OUT = the output folder), error type, message fragment)
BAD_RUNS = [
    ("calibration_typo", ["calibration.temperature_scaling=nl"], ConfigError,
     "'calibration.temperature_scaling' must be one of nll, ece_grid, none, got 'nl'; did you mean 'nll'?"),
    ("unknown_augmentation", ["train.augment=crop_flpi"], ConfigError, "did you mean 'crop_flip'"),
    ("unknown_stage1_augmentation", ["method.supcon.augment=simclrr"], ConfigError, "'method.supcon.augment'"),
    ("negative_lr", ["train.lr=-0.1"], ConfigError, "train.lr must be > 0, got -0.1"),
    ("stage2_optimizer", ["method.name=refcal", "stage2.optimizer=adam"], ConfigError,
     "'stage2.optimizer' must be one of sgd, adamw"),
    ("stage2_lr", ["method.name=refcal", "stage2.lr=-1"], ConfigError, "stage2.lr must be > 0"),
    ("stage2_schedule", ["method.name=refcal", "stage2.schedule=cosin"], ConfigError, "did you mean 'cosine'"),
    ("unknown_loss", ["method.base_loss=focall"], ConfigError, "unknown loss 'focall'"),
    ("unknown_loss_arg", ["method.base_loss=focal", "method.loss_args={gama: 2}"], ConfigError, "gama"),
    ("unknown_tracker", ["train.log_with=[tensorbord]"], ConfigError, "unknown tracker 'tensorbord'"),
    ("selection_rule", ["train.select=best_ece"], ConfigError, "'train.select' must be one of"),
    ("method_typo", ["method.name=refcal_jiont"], ConfigError, "did you mean 'refcal_joint'"),
    ("unknown_arch", ["model.arch=resnet9_cifar"], ConfigError, "unknown model architecture 'resnet9_cifar'"),
    ("zero_epochs", ["train.epochs=0"], ConfigError, "train.epochs must be >= 1"),
    ("negative_batch", ["train.batch_size=-1"], ConfigError, "train.batch_size must be >= 1"),
    ("zero_eval_batch", ["train.eval_batch_size=0"], ConfigError, "train.eval_batch_size must be >= 1"),
    ("three_views", ["method.supcon.views=3"], ConfigError, "method.supcon.views must be 1 or 2"),
    ("zero_supcon_temperature", ["method.supcon.temperature=0"], ConfigError, "method.supcon.temperature must be > 0"),
    ("milestones_order", ["train.milestones=[180, 160]"], ConfigError, "train.milestones must be positive"),
    ("momentum", ["train.momentum=1.5"], ConfigError, "train.momentum must be in [0, 1)"),
    ("nan_lr", ["train.lr=.nan"], ConfigError, "'train.lr' must be a finite number"),
    ("all_problems_at_once", ["train.lr=-1", "method.base_loss=focall", "train.augment=x"], ConfigError,
     "3 problems in the configuration"),
    ("tail_class_empty_by_config", ["dataset.n_max=5", "dataset.rho=100"], ConfigError,
     "leaves the tail class with 0 training images"),
    ("tail_class_empty_by_data", ["dataset.rho=1000"], DataError, "gets 0 training images"),
    ("val_takes_every_image", ["dataset.val_split=null", "dataset.rho=1", "dataset.val_per_class=1000"],
     DataError, "val_per_class=1000 exceeds"),
    ("output_is_a_file", ["output_dir=FILE"], RunFolderError, "exists and is not a folder"),
    ("output_unwritable", ["output_dir=FILE/run"], RunFolderError, "cannot write the output folder"),
    ("resume_without_run", ["--resume"], RunFolderError, "nothing to resume"),
]


def _argv(row_argv: list[str], tmp_path: Path) -> tuple[list[str], list[str], dict]:
    """Recipe argv, the overrides alone and the train() flags, with FILE / OUT filled in."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    argv = [a.replace("FILE", str(blocker)) for a in row_argv]
    if not any(a.startswith("output_dir=") for a in argv):
        argv.append(f"output_dir={tmp_path / 'out'}")
    flags = {"resume": "--resume" in argv, "overwrite": "--overwrite" in argv}
    return argv, [a for a in argv if not a.startswith("--")], flags


@pytest.mark.parametrize(("argv", "error", "fragment"), [r[1:] for r in BAD_RUNS], ids=[r[0] for r in BAD_RUNS])
def test_bad_run_input_fails_before_training_and_writes_nothing(tmp_path, capsys, argv, error, fragment):
    argv, overrides, flags = _argv(argv, tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(error) as info:
        train(load_config(DEFAULT, overrides, extra_checks=[registry_problems]), **flags)  # as the recipe does
    reset_accelerate_state()
    assert fragment in str(info.value)
    assert snapshot(tmp_path) == before
    capsys.readouterr()
    assert recipe.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and fragment in err and len(err.splitlines()) == 1, err
    assert snapshot(tmp_path) == before


BAD_CLI = [
    ("eval_batch_size_zero", ["eval", "RUN", "--dataset", "digits", "--batch-size", "0"],
     "--batch-size: must be a positive integer, got 0"),
    ("eval_batch_size_text", ["eval", "RUN", "--dataset", "digits", "--batch-size", "x"],
     "must be a positive integer, got 'x'"),
    ("eval_severity", ["eval", "RUN", "--dataset", "digits", "--corrupt", "--severities", "7"],
     "severities must be within 1..5"),
    ("eval_unknown_corruption", ["eval", "RUN", "--dataset", "digits", "--corrupt", "fogg"],
     "unknown corruption 'fogg'"),
]


@pytest.mark.parametrize(("argv", "fragment"), [r[1:] for r in BAD_CLI], ids=[r[0] for r in BAD_CLI])
def test_bad_cli_input_is_one_line_exit_2(trained_run, tmp_path, capsys, argv, fragment):
    from refcal_zoo.cli import main

    before, run_before = snapshot(tmp_path), snapshot(trained_run)
    argv = [str(trained_run) if a == "RUN" else a for a in argv]
    assert main([*argv, "--json", str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and fragment in err and len(err.splitlines()) == 1, err
    assert snapshot(tmp_path) == before and snapshot(trained_run) == run_before


# ---------------------------------------------------------------- resume: what may change


def test_post_training_keys_may_change_on_resume():
    saved = config_to_dict(load_config(DEFAULT))
    assert config_differences(saved, load_config(DEFAULT, ["calibration.temperature_scaling=ece_grid",
                                                           "train.epochs=5"])) == []
    assert config_differences(saved, load_config(DEFAULT, ["train.lr=0.2"])) == ["train.lr"]


def test_a_key_added_to_the_schema_later_does_not_block_resume():
    saved = config_to_dict(load_config(DEFAULT))
    del saved["train"]["grad_clip_norm"]  # a checkpoint written before the key existed
    del saved["dataset"]["image_size"]
    assert config_differences(saved, load_config(DEFAULT)) == []  # absent then, default now: same run
    assert config_differences(saved, load_config(DEFAULT, ["train.grad_clip_norm=1.0"])) == ["train.grad_clip_norm"]
    defaults = config_to_dict(Config())
    assert defaults["train"]["grad_clip_norm"] is None and defaults["dataset"]["image_size"] is None


@pytest.mark.slow
def test_resume_with_a_corrected_calibration_key_completes(tmp_path):
    """The issue's lost-training case: stop after training, then resume with another calibration setting."""
    out = tmp_path / "run"
    env = dict(os.environ, REFCAL_ZOO_KILL_AT_BATCH="27")  # digits-LT, batch 32: 2 epochs = 26 batches
    proc = subprocess.run([sys.executable, str(TRAIN_PY), "method.name=plain", "train.epochs=3",
                           f"output_dir={out}"], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert lock_path(out).exists()  # left behind by the killed process: stale, taken over below
    result = train(load_config(DEFAULT, ["method.name=plain", "train.epochs=3", f"output_dir={out}",
                                         "calibration.temperature_scaling=ece_grid"]), resume=True)
    assert (out / "metrics.json").is_file() and not lock_path(out).exists()
    assert yaml.safe_load((out / "config.yaml").read_text())["calibration"]["temperature_scaling"] == "ece_grid"
    assert result.metrics["n"] == 500


# ---------------------------------------------------------------- the run-folder lock


def test_lock_is_exclusive_and_released(tmp_path):
    run = tmp_path / "run"
    with RunLock(run):
        record = yaml.safe_load(lock_path(run).read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        with pytest.raises(RunFolderError, match=f"in use by process {os.getpid()} on {socket.gethostname()}"):
            RunLock(run).acquire()
    assert not lock_path(run).exists() and not run.exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    run = tmp_path / "run"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path(run).write_text(f'{{"pid": {dead.pid}, "host": "{socket.gethostname()}"}}\n')
    with RunLock(run):
        assert yaml.safe_load(lock_path(run).read_text())["pid"] == os.getpid()
    # our own pid but another start time: the pid was reused by a later process, so the lock is stale
    lock_path(run).write_text(f'{{"pid": {os.getpid()}, "host": "{socket.gethostname()}", "start_time": "1"}}\n')
    with RunLock(run):
        pass
    assert not lock_path(run).exists()


def test_lock_of_another_host_is_respected(tmp_path):
    run = tmp_path / "run"
    lock_path(run).write_text('{"pid": 1, "host": "elsewhere.example", "started": "2025-01-01T00:00:00"}\n')
    before = snapshot(tmp_path)
    with pytest.raises(RunFolderError, match="in use by process 1 on elsewhere.example"):
        RunLock(run).acquire()
    assert snapshot(tmp_path) == before


def test_finalize_never_replaces_a_run_that_appeared_meanwhile(tmp_path):
    stage, run = tmp_path / "run.incomplete", tmp_path / "run"
    stage.mkdir()
    (stage / "metrics.json").write_text("{}")
    run.mkdir()
    (run / "metrics.json").write_text('{"other": 1}')
    before = snapshot(tmp_path)
    with pytest.raises(RunFolderError, match="nothing was replaced"):
        finalize_run_dir(stage, run, overwrite=False)
    assert snapshot(tmp_path) == before
    finalize_run_dir(stage, run, overwrite=True)
    assert (run / "metrics.json").read_text() == "{}"


@pytest.mark.slow
def test_two_processes_on_one_output_dir(tmp_path):
    """A second launch while the first trains is refused (exit 2, naming the owner); the first run is intact."""
    out = tmp_path / "run"
    cmd = [sys.executable, str(TRAIN_PY), "method.name=plain", "train.epochs=2", f"output_dir={out}"]
    first = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not lock_path(out).exists():
            assert first.poll() is None, first.communicate()[1][-2000:]
            assert time.time() < deadline, "the first run never took the lock"
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)  # hold the first run mid-way, whatever the machine's speed
        try:
            second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
        finally:
            first.send_signal(signal.SIGCONT)
        stdout, stderr = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert second.returncode == 2, second.stderr[-2000:]
    err = second.stderr.strip().splitlines()
    assert len(err) == 1 and f"is in use by process {first.pid}" in err[0], second.stderr
    assert first.returncode == 0, stderr[-2000:]
    names = {p.name for p in out.iterdir()}
    assert {"config.yaml", "lt_indices.json", "log.jsonl", "metrics.json", "model.safetensors"} <= names
    log = [yaml.safe_load(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no lock, staging or .old folder left
    before = snapshot(out)
    third = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)  # after it finished
    assert third.returncode == 2 and "already holds a finished run" in third.stderr
    assert snapshot(out) == before


# ---------------------------------------------------------------- data and registry guards


def test_a_class_without_training_images_is_named_with_the_fix():
    import numpy as np

    from refcal_zoo.data import make_longtail_split

    labels = np.repeat(np.arange(3), 10)
    with pytest.raises(DataError, match=r"class 2 \('cat'\) gets 0 training images .* raise dataset.n_max to at "
                                        r"least 100 or lower dataset.rho"):
        make_longtail_split(labels, 3, rho=100, n_max=10, class_names=["ant", "bee", "cat"])
    labels = np.repeat(np.arange(3), [10, 10, 5])
    with pytest.raises(DataError, match=r"class 2 has 5 images: after taking 5 for validation none is left"):
        make_longtail_split(labels, 3, rho=1, val_per_class=5)


def test_config_choices_match_the_registries():
    import typing

    from refcal_zoo.config import AUGMENT_CHOICES, MethodConfig
    from refcal_zoo.data.augment import AUGMENTATIONS
    from refcal_zoo.methods import build_stages

    assert set(AUGMENT_CHOICES) == set(AUGMENTATIONS)
    for name in typing.get_args(typing.get_type_hints(MethodConfig)["name"]):
        assert build_stages(load_config(None, [f"method.name={name}"]), num_train=10)  # every choice builds
