"""The refcal-zoo console script: every subcommand, its one-line errors, and the dataset export round trip."""


from __future__ import annotations

import json
import shutil
import subprocess
import sys

import datasets
import pytest
import torch
from huggingface_hub import DatasetCard, ModelCard

from refcal_zoo.cli import main
from refcal_zoo.config import DatasetConfig
from refcal_zoo.data import indices_sha256, load_image_splits, prepare_data
from refcal_zoo.hub import card_metrics

from .conftest import ZOO_NAME, tree_digest, write_index


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_list_and_info(capsys):
    code, out, _ = run_cli(capsys, "list", "*cifar100lt-refcal*")
    assert code == 0 and "resnet32-cifar100lt-refcal " in out and "resnet32-cifar10lt" not in out
    code, out, _ = run_cli(capsys, "info", "resnet32-cifar100lt-ce")
    assert code == 0 and "status: recipe-only" in out
    assert ("train_command: accelerate launch recipes/train.py --config recipes/configs/resnet32-cifar100lt-ce.yaml "
            "train.select=best_ts_nll") in out
    assert "build_command: python benchmarks/build_zoo.py --suite cifar100lt-full --entries resnet32-cifar100lt-ce" \
        in out
    code, _, err = run_cli(capsys, "info", "resnet32-cifar100-ce")
    assert_one_line_error(code, err, "unknown zoo model", "resnet32-cifar100lt-ce")
    code, out, _ = run_cli(capsys, "list", "zzz*")
    assert code == 0 and "no zoo models match" in out


def test_argument_errors_are_one_line(capsys):
    code, _, err = run_cli(capsys, "push", "somewhere")
    assert_one_line_error(code, err, "--repo")
    code, _, err = run_cli(capsys, "frobnicate")
    assert_one_line_error(code, err, "invalid choice")


def test_eval_reproduces_the_run_metrics_and_writes_json(trained_run, tmp_path, capsys):
    out_json = tmp_path / "eval.json"
    code, out, err = run_cli(capsys, "eval", trained_run, "--dataset", "digits", "--json", out_json)
    assert code == 0, err
    assert "accuracy" in out and "after TS" in out
    result = json.loads(out_json.read_text())
    expected = json.loads((trained_run / "metrics.json").read_text())
    assert result["n"] == expected["n"] and result["split"] == "test"
    for key in ("accuracy", "nll", "ece", "brier", "auroc_ovo", "ts/nll", "ts/ece", "many/accuracy", "few/nll"):
        assert result["metrics"][key] == pytest.approx(expected[key], rel=1e-6, abs=1e-9), key
    code, _, err = run_cli(capsys, "eval", trained_run, "--dataset", "digits", "--split", "nope")
    assert_one_line_error(code, err, "no split 'nope'")


def test_eval_refuses_a_dataset_with_another_class_count(trained_run, cifar100_like, capsys):
    code, _, err = run_cli(capsys, "eval", trained_run, "--dataset", cifar100_like)
    assert_one_line_error(code, err, "has 20 classes but the model predicts 10")


def test_card_publish_and_republish(trained_run, tmp_path, capsys):
    card_out = tmp_path / "card.md"
    code, out, err = run_cli(capsys, "card", trained_run, "--out", card_out)
    assert code == 0, err
    metrics = json.loads((trained_run / "metrics.json").read_text())
    parsed = card_metrics(ModelCard.load(card_out))
    assert parsed["accuracy"] == metrics["accuracy"] and parsed["ts/nll"] == metrics["ts/nll"]
    target = tmp_path / "pub"
    code, out, err = run_cli(capsys, "publish", trained_run, "--to", target, "--repo-id", "refcal-zoo/x")
    assert code == 0 and "published" in out and "refcal-zoo push" in out, err
    assert (target / "README.md").is_file() and "hf-hub:refcal-zoo/x" in (target / "README.md").read_text()
    code, out, err = run_cli(capsys, "publish", trained_run, "--to", target)  # replaces its own earlier output
    assert code == 0, err
    clutter = tmp_path / "clutter"
    clutter.mkdir()
    (clutter / "x.txt").write_text("x")
    code, _, err = run_cli(capsys, "publish", trained_run, "--to", clutter)
    assert_one_line_error(code, err, "not empty and is not a published folder")
    code, _, err = run_cli(capsys, "card", tmp_path / "nowhere")
    assert_one_line_error(code, err, "is not a folder")


def test_push_without_token_and_bad_repo_id(published, hf_env, monkeypatch, capsys):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    calls = []
    monkeypatch.setattr("refcal_zoo.hub.publish.HfApi", lambda **kw: calls.append(kw))
    before = tree_digest(published)
    code, _, err = run_cli(capsys, "push", published, "--repo", "my-org/my-model")
    assert_one_line_error(code, err, "no Hugging Face token", "HF_TOKEN")
    code, _, err = run_cli(capsys, "push", published, "--repo", "my-model")
    assert_one_line_error(code, err, "not a Hub repo id")
    assert calls == [] and tree_digest(published) == before


def test_push_mocked_hfapi_checks_dataset_repo_type_arguments_only(tmp_path, hf_env, monkeypatch, capsys):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    calls = []

    class Api:
        def __init__(self, **kw):
            calls.append(("init", kw))

        def create_repo(self, repo_id, **kw):
            calls.append(("create_repo", repo_id, kw))

        def upload_folder(self, **kw):
            calls.append(("upload_folder", kw))
            return type("Info", (), {"oid": "a" * 40, "commit_url": "u"})()

    monkeypatch.setattr("refcal_zoo.hub.publish.HfApi", Api)
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "README.md").write_text("---\npretty_name: x\n---\n")
    code, out, err = run_cli(capsys, "push", folder, "--repo", "my-org/my-data", "--repo-type", "dataset")
    assert code == 0, err
    assert calls[0][1]["token"] == "hf_test"
    assert calls[1] == ("create_repo", "my-org/my-data", {"private": False, "exist_ok": True, "repo_type": "dataset"})
    assert calls[2][1]["repo_type"] == "dataset" and calls[2][1]["folder_path"] == str(folder)
    assert "a" * 40 in out


def test_zoo_register_cli(published, tmp_path, monkeypatch, capsys):
    index = write_index(tmp_path / "zoo", {})
    code, out, err = run_cli(capsys, "zoo", "register", published, "--revision", "v1", "--index", index)
    assert code == 0 and f"registered {ZOO_NAME}" in out, err
    code, _, err = run_cli(capsys, "zoo", "register", published, "--name", "resnet32-cifar10lt-ce", "--index", index)
    assert_one_line_error(code, err, "does not match the index entry")


def test_dataset_export_round_trip(cifar10_like, tmp_path, capsys):
    out = tmp_path / "c10lt"
    code, text, err = run_cli(capsys, "dataset", "export", "--dataset", cifar10_like, "--rho", "10", "--seed", "0",
                              "--val-per-class", "5", "--to", out)
    assert code == 0, err
    assert "dataset.rho=1 dataset.val_split=validation" in text
    source_cfg = DatasetConfig(path=str(cifar10_like), rho=10, lt_seed=0, val_per_class=5)
    source = prepare_data(source_cfg)

    # a plain parquet HF dataset: original bytes and features kept
    dsd = datasets.load_dataset(str(out))
    assert set(dsd) == {"train", "validation", "test"}
    src = datasets.load_dataset(str(cifar10_like))
    assert dsd["train"].features == src["train"].features  # Image + ClassLabel(names=...)
    assert len(dsd["train"]) == len(source.train_labels) and len(dsd["test"]) == len(src["test"])
    raw_src = src["train"].cast_column("img", datasets.Image(decode=False))
    raw_out = dsd["train"].cast_column("img", datasets.Image(decode=False))
    picked = source.split.train_indices[[0, 7, -1]].tolist()
    for pos, idx in zip([0, 7, len(raw_out) - 1], picked, strict=True):
        assert raw_out[pos]["img"]["bytes"] == raw_src[idx]["img"]["bytes"]

    # the card records source, profile, seed and indices hash; lt_indices.json holds the indices
    card = DatasetCard.load(out / "README.md")
    assert card.data.source_datasets == [str(cifar10_like)]
    assert source.split.record()["train_sha256"] in card.text and "rho: 10" in card.text
    record = json.loads((out / "lt_indices.json").read_text())
    assert record["train_sha256"] == indices_sha256(record["train_indices"]) == indices_sha256(
        source.split.train_indices)

    # decoded: exactly the tensors the source run trains, validates and tests on (same order)
    exported = load_image_splits(str(out), ["train", "validation", "test"])
    assert torch.equal(exported.images["train"], source.train_images)
    assert torch.equal(exported.labels["train"], source.train_labels)
    assert torch.equal(exported.images["validation"], source.val_images)
    assert torch.equal(exported.images["test"], source.test_images)

    # training from the folder with rho=1 / val_split=validation sees the same training images
    again = prepare_data(DatasetConfig(path=str(out), rho=1, val_split="validation"))
    assert torch.equal(again.train_images, source.train_images)
    assert torch.equal(again.train_labels, source.train_labels)
    assert torch.equal(again.val_images, source.val_images)

    capsys.readouterr()  # drop the progress output of loading the folder above
    code, _, err = run_cli(capsys, "dataset", "export", "--dataset", cifar10_like, "--rho", "10", "--to", out)
    assert_one_line_error(code, err, "not empty", "--overwrite")


def test_dataset_export_of_the_embedded_digits(tmp_path, capsys):
    out = tmp_path / "digits-lt"
    code, _, err = run_cli(capsys, "dataset", "export", "--dataset", "digits", "--rho", "10",
                           "--val-split", "validation", "--to", out)
    assert code == 0, err
    source = prepare_data(DatasetConfig(path="digits", rho=10, val_split="validation"))
    exported = load_image_splits(str(out), ["train", "validation", "test"])
    assert torch.equal(exported.images["train"], source.train_images)
    assert torch.equal(exported.labels["train"], source.train_labels)
    assert torch.equal(exported.images["test"], source.test_images)
    assert exported.class_names == source.class_names


def test_dataset_export_bad_input(tmp_path, capsys):
    code, _, err = run_cli(capsys, "dataset", "export", "--dataset", "./no/such", "--rho", "10", "--to", tmp_path / "o")
    assert_one_line_error(code, err, "does not exist")
    code, _, err = run_cli(capsys, "dataset", "export", "--dataset", "digits", "--rho", "0.5", "--to", tmp_path / "o")
    assert_one_line_error(code, err, "rho must be >= 1")
    assert not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_console_script_is_installed():
    from pathlib import Path

    exe = shutil.which("refcal-zoo") or str(Path(sys.executable).parent / "refcal-zoo")
    assert Path(exe).is_file(), "the refcal-zoo console script is missing: pip install -e . again"
    proc = subprocess.run([exe, "list", "resnet8-*"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "resnet8-digitslt-refcal_joint" in proc.stdout
