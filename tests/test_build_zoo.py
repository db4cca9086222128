"""benchmarks/build_zoo.py end to end on generated data in the CIFAR-100 Hub schema: train, record, publish,
skip what is finished, resume what was interrupted (bit-identical), list the queue."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from .conftest import REPO, write_cifar_like

_spec = importlib.util.spec_from_file_location("build_zoo", REPO / "benchmarks" / "build_zoo.py")
build_zoo = importlib.util.module_from_spec(_spec)
sys.modules["build_zoo"] = build_zoo  # dataclasses look their module up
_spec.loader.exec_module(build_zoo)

NAME = "resnet32-cifar100lt-ce"
# a smoke budget: ResNet-8, one epoch, no warm-up; 100 classes at n_max 10 (the least rho 10 allows): 383 images;
# checkpoints every 5 steps so that an interrupted run has something to resume from
SMOKE = ["model.arch=resnet8_cifar", "train.epochs=1", "train.warmup_epochs=0", "train.milestones=[]",
         "dataset.val_per_class=1", "train.batch_size=32", "train.checkpoint_every_steps=5"]


@pytest.fixture(scope="module")
def cifar100_tiny(tmp_path_factory) -> Path:
    return write_cifar_like(tmp_path_factory.mktemp("cifar100_tiny"), schema="cifar100", num_classes=100,
                            train_per_class=11, test_per_class=1)


def zoo_copy(folder: Path, *, arch: str | None = "resnet8_cifar") -> Path:
    """A copy of the package's index; the entry's arch set to what the smoke build trains (the index rightly
    refuses a ResNet-8 published under a ResNet-32 entry, see test_arch_override_is_refused_before_training)."""
    from refcal_zoo.zoo import INDEX_PATH, load_index
    from refcal_zoo.zoo.update_index import write_index

    index = folder / "zoo" / "index.yaml"
    index.parent.mkdir(parents=True)
    shutil.copyfile(INDEX_PATH, index)
    if arch is not None:
        entries = load_index(index)
        entries[NAME].arch = arch
        write_index(index, entries)
    return index


def build_args(data: Path, folder: Path, index: Path, *extra: str) -> list[str]:
    return ["--suite", "cifar100lt-full", "--data", str(data), "--entries", NAME, "--seeds", "0", "--override", *SMOKE,
            "--root", str(folder / "root"), "--index", str(index), "--cards", str(folder / "cards"),
            "--publish-dir", str(folder / "pub"), *extra]


def set_selected_validation(run: Path, accuracy: float) -> None:
    """Give ``run``'s selected epoch validation accuracy ``accuracy`` in its log (what the publisher ranks)."""
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    for line in lines:
        if line.get("selected"):
            line["val_accuracy"] = accuracy
    (run / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


@pytest.fixture(scope="module")
def built(cifar100_tiny, tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("build")
    index = zoo_copy(folder)
    from refcal_zoo.zoo import load_index

    assert load_index(index)[NAME].status == "recipe-only"  # not published before the build
    assert build_zoo.main(build_args(cifar100_tiny, folder, index)) == 0
    return folder, index


def test_build_trains_records_and_publishes(built):
    import refcal_zoo
    from refcal_zoo.fileio import sha256_file
    from refcal_zoo.zoo import load_index

    folder, index = built
    run = folder / "root" / "runs" / f"{NAME}-s0"
    assert (run / "metrics.json").is_file() and not run.with_name(run.name + ".incomplete").exists()
    rows = build_zoo.compare.read_results(folder / "root")
    assert [(r["method"], r["seed"], r["arch"], r["epochs"]) for r in rows] == [(NAME, "0", "resnet8_cifar", "1")]
    entry = load_index(index)[NAME]
    assert entry.status == "published" and entry.recipe == f"recipes/configs/{NAME}.yaml"
    assert "train.seed=0" in entry.overrides and "model.arch=resnet8_cifar" in entry.overrides
    assert "train.select=best_ts_nll" in entry.overrides  # the GPU suites' rule: the cell trained with it
    assert entry.dataset["id"] == "uoft-cs/cifar100" and entry.sha256 == sha256_file(run / "model.safetensors")
    assert "Published seed: 0" in entry.notes and "changed by the build's overrides" in entry.notes
    assert (folder / "cards" / NAME / "README.md").is_file()
    embedded = index.parent / "weights" / NAME
    for card in (folder / "cards" / NAME / "README.md", embedded / "README.md"):  # the card says the budget too
        assert entry.notes.split(" Weights not shipped")[0] in card.read_text()
    model = refcal_zoo.ZooModel.from_pretrained(embedded)
    assert model.num_classes == 100 and model.zoo_info["sha256"] == entry.sha256
    from refcal_zoo.config import load_config

    retrain = load_config(REPO / entry.recipe, entry.overrides)  # the entry's recipe retrains what it names
    assert retrain.name == NAME and retrain.model.arch == "resnet8_cifar" and retrain.train.seed == 0
    assert retrain.train.select == load_config(run / "config.yaml").train.select == "best_ts_nll"
    import json

    study = json.loads((folder / "root" / "corruptions" / f"{NAME}-s0.json").read_text())  # of the first seed
    assert len(study["corruptions"]["cells"]) == 50 and "/" not in study["folder"]  # 10 x 5; no machine path
    assert "Corruptions (seed 0" in (folder / "root" / "results.md").read_text()


def test_second_invocation_is_a_no_op(built, cifar100_tiny, monkeypatch, capsys):
    folder, index = built
    weights = folder / "root" / "runs" / f"{NAME}-s0" / "model.safetensors"
    before = (weights.stat().st_mtime_ns, index.read_bytes(), (index.parent / "weights" / NAME /
                                                                 "model.safetensors").stat().st_mtime_ns)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(subprocess, "run", no_training)
    assert build_zoo.main(build_args(cifar100_tiny, folder, index)) == 0
    assert "already published" in capsys.readouterr().out
    after = (weights.stat().st_mtime_ns, index.read_bytes(), (index.parent / "weights" / NAME /
                                                                "model.safetensors").stat().st_mtime_ns)
    assert after == before  # nothing retrained, nothing re-published


def test_republish_brings_a_published_card_up_to_date(built, cifar100_tiny, monkeypatch, capsys):
    """``--publish-only --republish`` publishes an entry whose weights the index already holds again, so a corrected
    run record (here: the devices it trained on) reaches its card and index; nothing is trained."""
    folder, index = built
    record_file = folder / "root" / "runs" / f"{NAME}-s0" / "config.json"
    original = record_file.read_text()
    card = folder / "cards" / NAME / "README.md"

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(subprocess, "run", no_training)
    try:
        config = json.loads(original)
        config["run_record"]["budget"]["device"] = "CPU, 1 thread (epoch 1) and Lent GPU (epochs 2-9)"
        record_file.write_text(json.dumps(config))
        assert build_zoo.main(build_args(cifar100_tiny, folder, index, "--publish-only")) == 0
        assert "already published" in capsys.readouterr().out and "Lent GPU" not in card.read_text()
        assert build_zoo.main(build_args(cifar100_tiny, folder, index, "--publish-only", "--republish")) == 0
        assert "published " + NAME in capsys.readouterr().out
        assert "on CPU, 1 thread (epoch 1) and Lent GPU (epochs 2-9)" in card.read_text()
    finally:  # the module's other tests see the build as it was
        record_file.write_text(original)
        build_zoo.main(build_args(cifar100_tiny, folder, index, "--publish-only", "--republish"))
    with pytest.raises(SystemExit, match="--republish and --no-publish"):
        build_zoo.main(build_args(cifar100_tiny, folder, index, "--republish", "--no-publish"))


def test_a_new_seed_replaces_the_published_one_only_when_better_on_validation(built, cifar100_tiny, tmp_path,
                                                                                 monkeypatch, capsys):
    """The published seed's run folder is gone (trained on a machine that is gone): its validation score comes from
    the shipped train log, and a new seed is published only if it beats it."""
    folder, index = built
    zoo = tmp_path / "zoo"
    shutil.copytree(index.parent, zoo)  # the module's index stays as it is
    shipped_log = zoo / "weights" / NAME / "train_log.jsonl"
    published = build_zoo.publish_best.selected_validation(shipped_log.parent, shipped_log.name)
    new_run = tmp_path / "runs" / f"{NAME}-s1"  # seed 0's run folder is not among the runs here
    shutil.copytree(folder / "root" / "runs" / f"{NAME}-s0", new_run)
    from safetensors.torch import load_file, save_file

    weights = load_file(new_run / "model.safetensors")  # other weights than the published ones
    save_file({k: v + 1e-3 if v.is_floating_point() else v for k, v in weights.items()},
              new_run / "model.safetensors")

    calls = []
    monkeypatch.setattr(build_zoo.publish_best, "publish_entry", lambda run, name, **kw: calls.append((run, kw)))
    build = build_zoo.get_build_suite("cifar100lt-full", str(cifar100_tiny))
    entry = next(e for e in build.entries if e.name == NAME)
    paths = {"index": str(zoo / "index.yaml"), "publish_dir": str(tmp_path / "pub")}
    set_selected_validation(new_run, published[0] - 0.01)
    build_zoo.publish(build, entry, tmp_path / "runs", **paths)
    assert not calls and f"keeping the published {NAME}-s0 (validation accuracy {published[0]:.4f}" in \
        capsys.readouterr().out
    set_selected_validation(new_run, published[0] + 0.01)
    build_zoo.publish(build, entry, tmp_path / "runs", **paths)
    (run, kw), = calls
    assert run == new_run and "train.seed=1" in kw["overrides"]
    assert f"among the finished runs ({NAME}-s0 (published before; run folder elsewhere), {NAME}-s1)" in kw["notes"]
    shipped_log.unlink()  # no published train log: the choice cannot be made, and it says so before publishing
    with pytest.raises(SystemExit, match=f"published from {NAME}-s0, whose run folder is not in .*--republish"):
        build_zoo.publish(build, entry, tmp_path / "runs", **paths)
    build_zoo.publish(build, entry, tmp_path / "runs", force=True, **paths)
    assert len(calls) == 2
    shutil.copytree(folder / "root" / "runs" / f"{NAME}-s0", tmp_path / "runs" / f"{NAME}-s0")
    assert build_zoo.published_seed(entry, tmp_path / "runs", **paths) is None  # its run is a candidate again


def test_a_kept_published_seed_gets_the_runs_and_seeds_seen_now_in_its_notes(built, cifar100_tiny, tmp_path,
                                                                              capsys):
    """Where a new seed loses to the published one, the published entry's notes (index, shipped folder, card) name
    the runs it now won among and every seed's test spread; the weights and their pins stay, and a second call with
    nothing new writes nothing."""
    from refcal_zoo.fileio import sha256_file
    from refcal_zoo.zoo import load_index

    folder, index = built
    zoo = tmp_path / "zoo"
    shutil.copytree(index.parent, zoo)
    new_run = tmp_path / "runs" / f"{NAME}-s1"  # seed 0's run folder is elsewhere; seed 1 is worse on validation
    shutil.copytree(folder / "root" / "runs" / f"{NAME}-s0", new_run)
    published = build_zoo.publish_best.selected_validation(zoo / "weights" / NAME, "train_log.jsonl")
    set_selected_validation(new_run, published[0] - 0.01)
    (seed0,) = build_zoo.compare.read_results(folder / "root")
    rows = [seed0, {**seed0, "seed": "1", "accuracy": "0.25", "ts/ece": "0.125"}]
    build = build_zoo.get_build_suite("cifar100lt-full", str(cifar100_tiny))
    entry = next(e for e in build.entries if e.name == NAME)
    paths = {"index": str(zoo / "index.yaml"), "cards": str(tmp_path / "cards"), "publish_dir": str(tmp_path / "pub")}
    before = load_index(zoo / "index.yaml")[NAME]
    assert f"among the finished runs ({NAME}-s0)." in before.notes and "seed 1" not in before.notes
    weights = zoo / "weights" / NAME / "model.safetensors"
    build_zoo.publish(build, entry, tmp_path / "runs", results_rows=rows, **paths)
    out = capsys.readouterr().out
    assert f"keeping the published {NAME}-s0" in out and "notes brought up to date" in out
    after = load_index(zoo / "index.yaml")[NAME]
    assert after.sha256 == before.sha256 == sha256_file(weights) and after.overrides == before.overrides
    assert (f"Published seed: 0, chosen by validation accuracy among the finished runs ({NAME}-s0 (published before; "
            f"run folder elsewhere), {NAME}-s1).") in after.notes
    assert after.notes.count("Published seed") == 1 and after.notes.endswith(
        build_zoo.seed_spread_note(NAME, rows, 0))
    assert after.notes.partition(" Published seed")[0] == before.notes.partition(" Published seed")[0]  # as built
    card = (tmp_path / "cards" / NAME / "README.md").read_text()
    assert card == (zoo / "weights" / NAME / "README.md").read_text() and "seed 1 0.2500 / 0.1250" in card
    state = ((zoo / "index.yaml").read_bytes(), weights.stat().st_mtime_ns)
    build_zoo.publish(build, entry, tmp_path / "runs", results_rows=rows, **paths)
    assert "notes brought up to date" not in capsys.readouterr().out
    assert ((zoo / "index.yaml").read_bytes(), weights.stat().st_mtime_ns) == state  # nothing new: nothing written
    build_zoo.publish(build, entry, tmp_path / "runs", results_rows=rows[:1], **paths)  # another results.csv
    assert "they list seeds 1 that the results.csv read here lacks" in capsys.readouterr().out
    assert (zoo / "index.yaml").read_bytes() == state[0]  # a seed the card lists is never dropped
    set_selected_validation(new_run, published[0] + 0.01)  # seed 1 now wins, but the rows lack seed 0: refused
    from safetensors.torch import load_file, save_file

    other = load_file(new_run / "model.safetensors")  # other weights than the published ones
    save_file({k: v + 1e-3 if v.is_floating_point() else v for k, v in other.items()}, new_run / "model.safetensors")
    with pytest.raises(SystemExit, match=f"publishing {NAME}-s1 would drop seeds 0 from the notes"):
        build_zoo.publish(build, entry, tmp_path / "runs", results_rows=rows[1:], **paths)
    assert (zoo / "index.yaml").read_bytes() == state[0]
    set_selected_validation(new_run, published[0] - 0.01)
    rows.append({**seed0, "seed": "2"})
    shutil.move(zoo / "weights" / NAME, tmp_path / "elsewhere")  # its folder not here: says so, writes nothing
    (tmp_path / "nowhere" / NAME).mkdir(parents=True)  # only its train log (the incumbent's validation score)
    shutil.copy(tmp_path / "elsewhere" / "train_log.jsonl", tmp_path / "nowhere" / NAME)
    build_zoo.publish(build, entry, tmp_path / "runs", results_rows=rows,
                      **{**paths, "publish_dir": str(tmp_path / "nowhere")})
    assert "its notes are out of date" in capsys.readouterr().out
    assert (zoo / "index.yaml").read_bytes() == state[0]


def test_another_builds_run_of_the_published_seed_does_not_stand_in_for_it(built, cifar100_tiny, tmp_path,
                                                                           monkeypatch, capsys):
    """A run here with the published seed's number but other weights (e.g. the GPU suite's seed 0 where the CPU
    suite's seed 0 is published) competes with the published run on validation instead of replacing it unseen; the
    notes another build wrote are left to it."""
    from safetensors.torch import load_file, save_file

    from refcal_zoo.zoo import load_index
    from refcal_zoo.zoo.update_index import write_index

    folder, index = built
    zoo = tmp_path / "zoo"
    shutil.copytree(index.parent, zoo)
    run = tmp_path / "runs" / f"{NAME}-s0"
    shutil.copytree(folder / "root" / "runs" / f"{NAME}-s0", run)
    build = build_zoo.get_build_suite("cifar100lt-full", str(cifar100_tiny))
    entry = next(e for e in build.entries if e.name == NAME)
    paths = {"index": str(zoo / "index.yaml"), "cards": str(tmp_path / "cards"), "publish_dir": str(tmp_path / "pub")}
    where = {"index": paths["index"], "publish_dir": paths["publish_dir"]}
    assert build_zoo.published_seed(entry, tmp_path / "runs", **where) is None  # the published run itself
    weights = load_file(run / "model.safetensors")
    save_file({k: v + 1e-3 if v.is_floating_point() else v for k, v in weights.items()}, run / "model.safetensors")
    published = build_zoo.published_seed(entry, tmp_path / "runs", **where)
    assert published is not None and published[0] == f"{NAME}-s0"

    entries = load_index(zoo / "index.yaml")  # published by another build
    entries[NAME].notes = entries[NAME].notes.replace("--suite cifar100lt-full", "--suite cifar100lt-cpu")
    write_index(zoo / "index.yaml", entries)
    before = (zoo / "index.yaml").read_bytes()
    (seed0,) = build_zoo.compare.read_results(folder / "root")
    set_selected_validation(run, published[1][0] - 0.01)
    build_zoo.publish(build, entry, tmp_path / "runs", results_rows=[seed0], **paths)
    out = capsys.readouterr().out
    assert f"keeping the published {NAME}-s0" in out and "its notes stay as cifar100lt-cpu wrote them" in out
    assert (zoo / "index.yaml").read_bytes() == before
    calls = []
    monkeypatch.setattr(build_zoo.publish_best, "publish_entry", lambda run, name, **kw: calls.append(kw))
    set_selected_validation(run, published[1][0] + 0.01)
    build_zoo.publish(build, entry, tmp_path / "runs", results_rows=[seed0], **paths)
    (kw,) = calls
    assert (f"among the finished runs ({NAME}-s0, {NAME}-s0 (published before by --suite cifar100lt-cpu; run folder "
            "elsewhere))") in kw["notes"]


def test_seed_spread_note_sits_before_the_not_shipped_note_and_is_replaced_not_repeated():
    rows = [{"method": "m", "seed": "1", "accuracy": "0.75", "ts/ece": "0.02"},
            {"method": "m", "seed": "0", "accuracy": "0.8125", "ts/ece": "0.0075"},
            {"method": "other", "seed": "0", "accuracy": "0.1", "ts/ece": "0.9"}]
    assert build_zoo.seed_spread_note("m", rows[:1], 1) is None  # one seed: the card's limitation line says it
    note = build_zoo.seed_spread_note("m", rows, 0)
    assert note.endswith("seed 0 (published) 0.8125 / 0.0075, seed 1 0.7500 / 0.0200; mean accuracy 0.7812, "
                         "range 0.7500-0.8125.")  # (0.8125 + 0.75) / 2 = 0.78125
    shipped = "Built by X. Weights not shipped in the package (9.9 MB; ...)."
    once = build_zoo.with_seed_spread(shipped, "m", rows, 0)
    assert once == f"Built by X. {note} Weights not shipped in the package (9.9 MB; ...)."
    rows.append({"method": "m", "seed": "2", "accuracy": "0.5", "ts/ece": "0.1"})
    again = build_zoo.with_seed_spread(once, "m", rows, 0)
    assert again.count("Test metrics of every seed") == 1 and "seed 2 0.5000 / 0.1000" in again
    assert build_zoo.with_seed_spread(again, "m", rows, 0) == again
    assert build_zoo.listed_seeds(again) == {0, 1, 2} and build_zoo.listed_seeds(shipped) == set()
    assert build_zoo.missing_seeds(again, "m", [r for r in rows if r["seed"] == "0"]) == [1, 2]
    assert build_zoo.missing_seeds(again, "m", rows) == []


def test_refresh_notes_puts_every_seeds_test_spread_on_the_card_without_run_folders(built, tmp_path, capsys):
    """``--refresh-notes`` rewrites the published entry's notes (index, shipped config.json, card) with the test
    metrics of every seed in results.csv, re-renders the card, and leaves the weights and their pins alone."""
    from refcal_zoo.fileio import sha256_file
    from refcal_zoo.hub import build_model_card
    from refcal_zoo.zoo import load_index

    folder, index = built
    zoo = tmp_path / "zoo"
    shutil.copytree(index.parent, zoo)
    results = tmp_path / "results"
    results.mkdir()
    (seed0,) = build_zoo.compare.read_results(folder / "root")
    seed1 = {**seed0, "seed": "1", "accuracy": "0.25", "ts/ece": "0.125"}  # finished on another machine
    suite = build_zoo.as_compare_suite(build_zoo.get_build_suite("cifar100lt-full", None))
    build_zoo.compare.write_results(results, suite, [seed0, seed1])
    weights = zoo / "weights" / NAME / "model.safetensors"
    sha = sha256_file(weights)
    args = ["--suite", "cifar100lt-full", "--entries", NAME, "--results", str(results), "--index",
            str(zoo / "index.yaml"), "--cards", str(tmp_path / "cards"), "--refresh-notes"]
    assert build_zoo.main(args) == 0
    assert f"{NAME} (seed 0 published): card re-rendered, seed spread in the notes updated" in capsys.readouterr().out
    entry = load_index(zoo / "index.yaml")[NAME]
    acc0, ece0 = float(seed0["accuracy"]), float(seed0["ts/ece"])
    expected = (f"seed 0 (published) {acc0:.4f} / {ece0:.4f}, seed 1 0.2500 / 0.1250; mean accuracy "
                f"{(acc0 + 0.25) / 2:.4f}, range {min(acc0, 0.25):.4f}-{max(acc0, 0.25):.4f}.")
    assert entry.notes.endswith(expected) and "Published seed: 0" in entry.notes
    card = (tmp_path / "cards" / NAME / "README.md").read_text()
    assert card == (zoo / "weights" / NAME / "README.md").read_text()
    assert expected in card and "(see the seeds in the notes above)" in card
    assert build_model_card(zoo / "weights" / NAME, zoo_name=NAME, timm_tag=entry.timm_tag).text in card
    assert sha256_file(weights) == sha == entry.sha256  # the weights and their pin untouched
    assert build_zoo.main(args) == 0 and "notes unchanged" in capsys.readouterr().out
    assert load_index(zoo / "index.yaml")[NAME].notes == entry.notes  # a second refresh adds nothing
    build_zoo.compare.write_results(results, suite, [seed0])  # a results.csv without seed 1: refused, nothing lost
    with pytest.raises(SystemExit, match=f"notes of {NAME} list seeds 1 that the results.csv read here lacks"):
        build_zoo.main(args)
    assert load_index(zoo / "index.yaml")[NAME].notes == entry.notes
    build_zoo.compare.write_results(results, suite, [seed0, seed1])
    ce = "resnet32-cifar10lt-ce"  # published by --suite cifar10lt-full; the GPU suite builds the same entry name
    before_ce = load_index(zoo / "index.yaml")[ce].notes
    assert build_zoo.main(["--suite", "cifar10lt-full-gpu", "--entries", ce, *args[4:]]) == 0
    assert f"{ce}: notes left as cifar10lt-full wrote them" in capsys.readouterr().out
    assert load_index(zoo / "index.yaml")[ce].notes == before_ce
    with pytest.raises(SystemExit, match="--refresh-notes only rewrites notes"):
        build_zoo.main([*args, "--publish-only"])
    shutil.rmtree(zoo / "weights" / NAME)  # not shipped: refused before anything is rewritten
    before = (zoo / "index.yaml").read_bytes()
    with pytest.raises(SystemExit, match=f"{NAME} is not shipped in the package"):
        build_zoo.main(args)
    assert (zoo / "index.yaml").read_bytes() == before


def test_corruption_seeds_study_finished_seeds_without_training(built, cifar100_tiny, tmp_path, monkeypatch):
    """``--publish-only --corruption-seeds`` runs the corruption study of finished seeds other than the first (the
    default studies the first only), trains nothing, and refuses seeds outside the build before any work."""
    folder, index = built
    root = tmp_path / "root"
    shutil.copytree(folder / "root", root)
    shutil.copytree(root / "runs" / f"{NAME}-s0", root / "runs" / f"{NAME}-s1")  # a second finished seed
    studied = []
    monkeypatch.setattr(build_zoo.compare, "corruption_study",
                        lambda suite, cell, seed, out, *a, **kw: studied.append((cell.method, seed, out)) and False)
    monkeypatch.setattr(build_zoo, "publish", lambda *a, **kw: None)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(subprocess, "run", no_training)
    base = build_args(cifar100_tiny, folder, index, "--publish-only", "--root", str(root), "--seeds", "0", "1")
    assert build_zoo.main([*base, "--corruption-seeds", "1"]) == 0
    assert studied == [(NAME, 1, root)]
    studied.clear()
    assert build_zoo.main(base) == 0
    assert studied == [(NAME, 0, root)]  # the default: the suite's first seed
    studied.clear()
    with pytest.raises(SystemExit, match="--corruption-seeds 2 not among the seeds of this build .*add them to"):
        build_zoo.main([*base, "--corruption-seeds", "1", "2"])
    with pytest.raises(SystemExit, match="--corruption-seeds and --no-corruption-study exclude each other"):
        build_zoo.main([*base, "--corruption-seeds", "1", "--no-corruption-study"])
    assert studied == []


def test_corruption_headings_name_the_seeds_studied(tmp_path):
    compare = build_zoo.compare
    folder = tmp_path / "corruptions"
    folder.mkdir()
    assert compare.studied_seeds_words(tmp_path) == "no report yet"
    (folder / "resnet32-cifar10lt-ce-s0.json").write_text("{}")
    (folder / "resnet32-cifar10lt-crl-s0.json").write_text("{}")
    assert compare.studied_seeds_words(tmp_path) == "seed 0"
    (folder / "resnet32-cifar10lt-ce-s2.json").write_text("{}")
    (folder / "resnet32-cifar10lt-ce-s1.json").write_text("{}")
    assert compare.studied_seeds(tmp_path) == [0, 1, 2]
    assert compare.studied_seeds_words(tmp_path) == "seeds 0, 1 and 2, each row naming its run"


def test_weights_over_the_package_limit_are_published_but_not_shipped(built, tmp_path, monkeypatch, hf_env,
                                                                       no_network):
    """A model whose weights exceed the package's per-model limit (a WRN-28-10 here) gets its
    Hub folder, index entry and card, but no copy inside the package; ``register --embed`` refuses it before the
    index is touched."""
    import refcal_zoo
    from refcal_zoo.errors import RefCalZooError
    from refcal_zoo.hub import PublishError
    from refcal_zoo.zoo import load_index, update_index

    run = built[0] / "root" / "runs" / f"{NAME}-s0"
    size = (run / "model.safetensors").stat().st_size
    monkeypatch.setattr(update_index, "MAX_EMBED_MODEL_BYTES", size - 1)  # one byte too big
    index = zoo_copy(tmp_path)
    monkeypatch.setenv("REFCAL_ZOO_INDEX", str(index))
    before = index.read_bytes()
    with pytest.raises(PublishError, match=r"model\.safetensors' is .* MB; the package ships models .* up to"):
        update_index.register(built[0] / "pub" / NAME, index=index, embed=True)
    assert index.read_bytes() == before and not (index.parent / "weights" / NAME).exists()

    folder, cards, _ = build_zoo.publish_best.publish_entry(
        run, NAME, recipe=f"recipes/configs/{NAME}.yaml", overrides=["train.seed=0"],
        dataset=("uoft-cs/cifar100", "CIFAR-100-LT"), notes="Built by a test.", index=index,
        cards=tmp_path / "cards", publish_dir=tmp_path / "pub")
    entry = load_index(index)[NAME]
    assert entry.published and entry.sha256 == update_index.sha256_file(folder / "model.safetensors")
    assert not (index.parent / "weights" / NAME).exists()
    assert "Weights not shipped in the package" in entry.notes and f"--repo {entry.repo_id}" in entry.notes
    assert str(tmp_path) not in entry.notes and str(built[0]) not in entry.notes  # no machine path in the index
    card = (cards / "README.md").read_text()
    assert card == (folder / "README.md").read_text()  # the Hub folder's card, naming the zoo entry and tag
    assert f"refcal_zoo.load(\"{NAME}\")" in card or f"refcal_zoo.load('{NAME}')" in card
    assert entry.timm_tag in card
    with pytest.raises(RefCalZooError, match=f"'{entry.repo_id}'.* not in the Hugging Face cache"):
        refcal_zoo.load(NAME)  # offline: from the HF cache once pushed and downloaded, never from the package
    assert refcal_zoo.ZooModel.from_pretrained(folder).zoo_info["sha256"] == entry.sha256


def test_weights_over_the_file_limit_are_published_as_shipped_shards(built, tmp_path, monkeypatch, hf_env,
                                                                      no_network):
    """What the build does with a WRN-28-2 or EfficientViT-B0 (weights over the 5 MB file limit, under the 10 MB
    model limit): the package ships them as pinned shards and the entry loads offline by name, as verify_zoo does."""
    import refcal_zoo
    from refcal_zoo.zoo import load_index, update_index

    run = built[0] / "root" / "runs" / f"{NAME}-s0"
    monkeypatch.setattr(update_index, "MAX_EMBED_FILE_BYTES", int((run / "model.safetensors").stat().st_size * 0.6))
    index = zoo_copy(tmp_path)
    monkeypatch.setenv("REFCAL_ZOO_INDEX", str(index))
    folder, _, _ = build_zoo.publish_best.publish_entry(
        run, NAME, recipe=f"recipes/configs/{NAME}.yaml", overrides=["train.seed=0"],
        dataset=("uoft-cs/cifar100", "CIFAR-100-LT"), notes="Built by a test.", index=index,
        cards=tmp_path / "cards", publish_dir=tmp_path / "pub")
    entry = load_index(index)[NAME]
    shipped = index.parent / "weights" / NAME
    assert len(entry.shards) >= 2 and sorted(p.name for p in shipped.glob("*.safetensors")) == sorted(entry.shards)
    assert "not shipped" not in entry.notes and (folder / "model.safetensors").is_file()  # the Hub copy: one file
    verify = build_zoo._load("verify_zoo")  # benchmarks/verify_zoo.py
    model, source = verify.load_entry(entry, tmp_path / "pub")
    assert source == "embedded" and model.zoo_info["sha256"] == entry.sha256
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), refcal_zoo.ZooModel.from_pretrained(folder)(x))


def test_interrupted_cell_is_resumed_bit_identically(built, cifar100_tiny, tmp_path, monkeypatch, capsys):
    folder = tmp_path
    index = zoo_copy(folder)
    monkeypatch.setenv("REFCAL_ZOO_KILL_AT_BATCH", "8")  # 12 batches per epoch; newest checkpoint: step_5
    assert build_zoo.main(build_args(cifar100_tiny, folder, index, "--no-publish")) == 1  # the cell was killed
    run = folder / "root" / "runs" / f"{NAME}-s0"
    stage = run.with_name(run.name + ".incomplete")
    assert not run.exists() and (stage / "checkpoints" / "step_5").is_dir()
    assert build_zoo.main(["--list", *build_args(cifar100_tiny, folder, index)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split() == ["partial", NAME, "seed", "0:", "epoch", "0/1"]
    monkeypatch.delenv("REFCAL_ZOO_KILL_AT_BATCH")
    # --respeed on the machine that started the cell chooses the same precision: still bit-identical
    assert build_zoo.main([*build_args(cifar100_tiny, folder, index), "--respeed"]) == 0
    assert f"{NAME}.yaml --resume --respeed" in capsys.readouterr().out
    assert not stage.exists()
    reference = built[0] / "root" / "runs" / f"{NAME}-s0"
    assert (run / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()
    assert (run / "metrics.json").read_text() == (reference / "metrics.json").read_text()


def test_list_shows_the_queue_and_what_is_finished(built, cifar100_tiny, capsys):
    folder, index = built
    assert build_zoo.main(["--list", *build_args(cifar100_tiny, folder, index)]) == 0
    assert capsys.readouterr().out.split("\n")[0].split() == ["done", NAME, "seed", "0"]
    assert build_zoo.main(["--suite", "cifar100lt-full", "--list", "--root", str(folder / "other")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 13 * 3 and all(line.split()[0] == "queued" for line in lines)  # 13 entries x seeds 0-2
    assert lines[0].split()[1:] == [NAME, "seed", "0"]  # seed-major: every entry's first seed first


def test_arch_override_is_refused_before_training(cifar100_tiny, tmp_path, monkeypatch):
    index = zoo_copy(tmp_path, arch=None)  # the real entry: resnet32_cifar

    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking the entry")

    monkeypatch.setattr(subprocess, "run", no_training)
    with pytest.raises(SystemExit, match=r"would train resnet8_cifar but its index entry is resnet32_cifar"):
        build_zoo.main(build_args(cifar100_tiny, tmp_path, index))
    assert not (tmp_path / "root").exists()


def test_unknown_entry_and_suite_are_refused():
    with pytest.raises(SystemExit, match="not in suite cifar100lt-full"):
        build_zoo.main(["--suite", "cifar100lt-full", "--entries", "resnet32-cifar100lt-nope", "--list"])
    with pytest.raises(SystemExit, match="unknown build suite"):
        build_zoo.main(["--suite", "nope", "--list"])


def test_index_build_fields_match_the_build_suites():
    """The index says which suite builds an entry (the load error names it): it must be one that does."""
    from refcal_zoo.zoo import INDEX_PATH, load_index

    index = load_index(INDEX_PATH)
    for name, entry in index.items():
        if entry.build is not None:
            suite = build_zoo.get_build_suite(entry.build, "DATA")
            assert name in [e.name for e in suite.entries], (name, entry.build)
    for e in build_zoo.get_build_suite("cifar100lt-full", "DATA").entries:
        assert index[e.name].build == "cifar100lt-full" and (REPO / "recipes" / "configs" / e.config).is_file()
    for suite in ("cifar10lt-full", "cifar10lt-full-gpu"):  # every entry a build makes is listed, with its recipe
        for e in build_zoo.get_build_suite(suite, "DATA").entries:
            assert index[e.name].published or index[e.name].build in ("cifar10lt-full", "cifar10lt-full-gpu"), e.name
            assert index[e.name].recipe == f"recipes/configs/{e.config}", e.name
            assert (REPO / index[e.name].recipe).is_file(), e.name
    for e in build_zoo.get_build_suite("cifar10lt-full", "DATA").entries:
        assert build_zoo.GPU_SELECT not in e.overrides, e.name  # the CPU suite keeps the recipes' rule
        if e.overrides and not index[e.name].published:  # reduced budgets: the index retrains what the build does
            assert index[e.name].overrides == [f"name={e.name}", *e.overrides], e.name
    for suite in ("cifar10lt-full-gpu", "cifar100lt-full"):  # their cells select by the NLL after TS; an entry not
        for e in build_zoo.get_build_suite(suite, "DATA").entries:  # yet built says so in its retraining command
            assert e.overrides[0] == build_zoo.GPU_SELECT == "train.select=best_ts_nll", e.name
            if not index[e.name].published:
                assert index[e.name].overrides == e.overrides, e.name
                assert index[e.name].train_command.endswith(f"{e.config} {build_zoo.GPU_SELECT}"), e.name


def test_unpublished_backbone_entry_names_the_command_that_builds_it():
    import refcal_zoo
    from refcal_zoo.hub.errors import ResolveError

    with pytest.raises(ResolveError, match=r"build_zoo\.py --suite cifar100lt-full --entries wrn28_10-cifar100lt-ce"):
        refcal_zoo.load("wrn28_10-cifar100lt-ce")


def test_progress_of_an_interrupted_run_is_computed_from_its_log(tmp_path):
    """The time left is (epochs left) x (training images) / (median images/s of the last 5 epochs), by hand."""
    stage = tmp_path / "runs" / "x-s0.incomplete"
    stage.mkdir(parents=True)
    import yaml

    from refcal_zoo.config import config_to_dict, load_config

    cfg = load_config(REPO / "recipes" / "configs" / "resnet32-cifar10lt-refcal.yaml",
                      ["train.epochs=200", "stage2.epochs=100"])  # as the run writes it: the whole config
    (stage / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg)))
    (stage / "lt_indices.json").write_text(json.dumps({"train_counts": [3000, 600]}))
    rates = [50, 10, 90, 60, 70, 80]  # the last five: median 70
    (stage / "log.jsonl").write_text("".join(json.dumps({"step": e, "stage": "contrastive", "stage_index": 0,
                                                         "epoch": e, "images_per_second": r}) + "\n"
                                             for e, r in enumerate(rates, 1)) + '{"step": 7, "sta')  # cut short
    hours = (200 - 6) * 3600 / 70 / 3600
    assert build_zoo.compare.progress(tmp_path / "runs" / "x-s0") == (
        f"contrastive epoch 6/200; ~{hours:.1f} h of training left at 70 img/s, then classifier (100 epochs)")
    assert build_zoo.compare.progress(tmp_path / "runs" / "y-s0") == ""  # no interrupted run


def test_the_gpu_build_script_stops_in_one_line_when_datasets_cannot_be_installed(tmp_path):
    """On a machine whose Python lacks ``datasets``, wheels that do not install end the script at once (exit 2,
    one error line, nothing trained or packed), instead of an ImportError later in every cell."""
    import os

    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "zoo_build_gpu.sh", tmp_path / "scripts")
    (tmp_path / "device_data" / "cifar10-lt").mkdir(parents=True)
    (tmp_path / "device_data" / "cifar10-lt" / "lt_indices.json").write_text("{}")
    (tmp_path / "device_data" / "wheels").mkdir()
    (tmp_path / "device_data" / "wheels" / "datasets-0-py3-none-any.whl").write_text("not a wheel")
    python = tmp_path / "python"  # this Python without site-packages: no datasets, and no pip to install it
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    python.chmod(0o755)
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(tmp_path / "scripts" / "zoo_build_gpu.sh")], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHON=str(python), OUT_DIR=str(out)))
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "device_data/wheels did not install" in errors[0]
    assert not out.exists() and not (tmp_path / "device_runs").exists()


def _device_runs():
    spec = importlib.util.spec_from_file_location("device_runs", REPO / "scripts" / "device_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_runs_travel_to_a_gpu_machine_and_back_and_are_published(built, cifar100_tiny, tmp_path, monkeypatch,
                                                                capsys):
    """A cell interrupted on one machine, packed, unpacked here, staged, resumed in another folder on an export of
    the data, packed again and published here with --publish-only: the weights equal the uninterrupted build's."""
    from refcal_zoo.hub import export_longtail_dataset
    from refcal_zoo.zoo import load_index

    device_runs = _device_runs()
    export = tmp_path / "cifar100-lt"
    export_longtail_dataset(str(cifar100_tiny), export, rho=10, seed=0, val_per_class=1)
    index = zoo_copy(tmp_path)
    home = tmp_path / "home"

    def args(data: Path, root: Path, *extra: str) -> list[str]:
        return ["--suite", "cifar100lt-full", "--data", str(data), "--entries", NAME, "--seeds", "0", "--override",
                *SMOKE, "--root", str(root), "--index", str(index), "--cards", str(tmp_path / "cards"),
                "--publish-dir", str(tmp_path / "pub"), *extra]

    # call 1 (on the source data): killed mid-epoch; its newest checkpoint comes home
    monkeypatch.setenv("REFCAL_ZOO_KILL_AT_BATCH", "8")
    assert build_zoo.main(args(cifar100_tiny, tmp_path / "dev1", "--no-publish")) == 1
    monkeypatch.delenv("REFCAL_ZOO_KILL_AT_BATCH")
    manifest = device_runs.pack(tmp_path / "dev1", tmp_path / "out1")
    assert list(manifest["interrupted"]) == [f"{NAME}-s0.incomplete"] and not manifest["finished"]
    device_runs.unpack(tmp_path / "out1", home)
    assert (home / "runs" / f"{NAME}-s0.incomplete" / "checkpoints" / "step_5").is_dir()

    # call 2 (in another folder, on the export): resumes, finishes, comes home
    assert device_runs.stage(home, tmp_path / "dev2") == [f"{NAME}-s0.incomplete"]
    assert (tmp_path / "dev2" / "finished.txt").read_text() == ""
    assert build_zoo.main(args(export, tmp_path / "dev2", "--no-publish")) == 0
    assert "--resume" in capsys.readouterr().out
    manifest = device_runs.pack(tmp_path / "dev2", tmp_path / "out2")
    assert list(manifest["finished"]) == [f"{NAME}-s0"] and manifest["finished"][f"{NAME}-s0"]["accuracy"] >= 0
    with tarfile.open(tmp_path / "out2" / "runs-0.tar") as tar:
        names = tar.getnames()
    assert f"runs/{NAME}-s0/model.safetensors" in names and not any("/last/" in n or "/best/" in n for n in names)
    assert "unpacked" in device_runs.unpack(tmp_path / "out2", home)[0]
    run = home / "runs" / f"{NAME}-s0"
    assert not run.with_name(run.name + ".incomplete").exists()  # the interrupted copy it finished is gone
    reference = built[0] / "root" / "runs" / f"{NAME}-s0"
    assert (run / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()
    assert device_runs.unpack(tmp_path / "out2", home) == [f"kept {NAME}-s0: finished here already"]

    # here: published without training
    def no_training(*a, **k):
        raise AssertionError("--publish-only trained a cell")

    monkeypatch.setattr(subprocess, "run", no_training)
    assert build_zoo.main(args(export, home, "--publish-only", "--no-corruption-study")) == 0
    assert load_index(index)[NAME].status == "published"
    # the next call skips what is finished here
    device_runs.stage(home, tmp_path / "dev3")
    assert (tmp_path / "dev3" / "finished.txt").read_text() == f"{NAME}-s0\n"
    assert build_zoo.main(args(export, tmp_path / "dev3", "--no-publish", "--skip", f"{NAME}-s0")) == 0
    with pytest.raises(SystemExit, match="no finished cell"):
        build_zoo.main(args(export, tmp_path / "dev3", "--publish-only"))


def test_pack_keeps_within_the_device_tools_limits_and_unpack_refuses_foreign_tars(built, tmp_path):
    device_runs = _device_runs()
    root = built[0] / "root"
    manifest = device_runs.pack(root, tmp_path / "small", max_file=64 * 1024)  # the run is larger
    assert manifest["files"] == [] and "a file may have" in manifest["left_out"][f"{NAME}-s0"]
    assert manifest["finished"][f"{NAME}-s0"]["accuracy"] >= 0  # its numbers come back all the same
    evil = tmp_path / "evil"
    evil.mkdir()
    payload = tmp_path / "payload"
    payload.write_text("x")
    with tarfile.open(evil / "runs-0.tar", "w") as tar:
        tar.add(payload, arcname="runs/../../outside")
    with pytest.raises(SystemExit, match="not a file of runs/<run>/"):
        device_runs.unpack(evil, tmp_path / "home")
    assert not (tmp_path / "outside").exists()


def test_a_build_survives_the_loss_of_its_root_through_its_snapshot(built, cifar100_tiny, tmp_path, monkeypatch,
                                                                    capsys):
    """A cell killed on machine 1 is kept in the --snapshot folder (newest checkpoint, no machine paths); machine 1's
    root is lost; the same command on machine 2 restores it, resumes and finishes with the uninterrupted build's
    weights, and drops it from the snapshot. A third machine with the results table trains nothing."""
    index = zoo_copy(tmp_path)
    kept = tmp_path / "repo" / "in_progress"

    def args(root: str, *extra: str) -> list[str]:
        return ["--suite", "cifar100lt-full", "--data", str(cifar100_tiny), "--entries", NAME, "--seeds", "0",
                "--override", *SMOKE, "--root", str(tmp_path / root), "--index", str(index), "--cards",
                str(tmp_path / "cards"), "--publish-dir", str(tmp_path / "pub"), "--no-corruption-study",
                "--snapshot", str(kept), *extra]

    monkeypatch.setenv("REFCAL_ZOO_KILL_AT_BATCH", "8")
    assert build_zoo.main(args("m1", "--no-publish")) == 1
    monkeypatch.delenv("REFCAL_ZOO_KILL_AT_BATCH")
    run = kept / "runs" / f"{NAME}-s0.incomplete"
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_5"] and (run / "config.yaml").is_file()
    texts = [p.read_text(errors="replace") for p in run.rglob("*") if p.suffix in (".yaml", ".json", ".jsonl")]
    assert texts and not any(str(tmp_path) in t for t in texts)  # committed: no machine paths
    shutil.rmtree(tmp_path / "m1")  # the machine is gone
    capsys.readouterr()

    assert build_zoo.main(args("m2", "--no-publish")) == 0
    out = capsys.readouterr().out
    assert f"restored {NAME}-s0.incomplete" in out and "--resume" in out
    weights = (tmp_path / "m2" / "runs" / f"{NAME}-s0" / "model.safetensors").read_bytes()
    assert weights == (built[0] / "root" / "runs" / f"{NAME}-s0" / "model.safetensors").read_bytes()
    assert not run.exists()  # finished: out of the snapshot

    def no_training(cmd, *a, **k):  # git may run (the snapshot folder's check), recipes/train.py may not
        if any(str(part).endswith("train.py") for part in cmd):
            raise AssertionError("a cell recorded in results.csv was trained again")
        return real_run(cmd, *a, **k)

    real_run = subprocess.run
    monkeypatch.setattr(subprocess, "run", no_training)
    assert build_zoo.main(args("m3", "--no-publish", "--results", str(tmp_path / "m2"))) == 0
    assert build_zoo.main(args("m3", "--list", "--results", str(tmp_path / "m2"))) == 0
    assert f"done     {NAME} seed 0: in results.csv" in capsys.readouterr().out


def _fake_run(folder: Path, step: int) -> Path:
    """An interrupted run as the engine leaves it: a log and one complete checkpoint ``step_<step>``."""
    (folder / "checkpoints" / f"step_{step}").mkdir(parents=True)
    (folder / "checkpoints" / f"step_{step}" / "trainer_state.json").write_text("{}")
    (folder / "log.jsonl").write_text('{"epoch": 1}\n' * step)
    return folder


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git on PATH")
def test_a_snapshot_folder_that_git_ignores_is_refused_before_any_work(cifar100_tiny, tmp_path, monkeypatch):
    """Snapshots exist to be committed: one kept where the work tree's ``.gitignore`` drops ``*.incomplete/`` would
    be lost with the machine, so the build refuses that folder in one line before restoring or training; a '!' rule
    for it, or a folder outside any work tree, is let through."""
    device_runs = _device_runs()
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("*.incomplete/\n")
    index = zoo_copy(tmp_path)
    monkeypatch.setattr(build_zoo.device_runs, "restore", lambda *a: pytest.fail("restored before the check"))
    with pytest.raises(SystemExit, match=r"git ignores the runs of the snapshot folder .*in_progress_crl "
                                         r"\(rule \.gitignore:1:\*\.incomplete/\).*in_progress\*"):
        build_zoo.main(build_args(cifar100_tiny, tmp_path, index, "--snapshot", str(repo / "r" / "in_progress_crl")))
    assert not (tmp_path / "root").exists()
    (repo / ".gitignore").write_text("*.incomplete/\n!/r/in_progress*/runs/*.incomplete/\n")
    device_runs.check_committable(repo / "r" / "in_progress_crl")
    (repo / ".gitignore").write_text("*.jsonl\n!log.jsonl\n")  # a '!' rule matching the file itself: git names it
    device_runs.check_committable(repo / "r" / "in_progress_crl")
    device_runs.check_committable(tmp_path / "elsewhere" / "in_progress")  # no work tree: nothing to check


@pytest.mark.skipif(not (REPO / ".git").exists() or shutil.which("git") is None, reason="needs a git checkout")
def test_the_repository_lets_every_in_progress_snapshot_folder_be_committed():
    device_runs = _device_runs()
    for folder in ("in_progress", "in_progress_crl", "in_progress_wrn"):
        device_runs.check_committable(REPO / "benchmarks" / "results" / "cifar10lt-full" / folder)


def test_a_snapshot_cut_off_mid_swap_is_mended_not_lost(tmp_path):
    """A kill between ``_swap_in``'s two renames leaves the previous copy as ``.old-<run>`` only, and a kill while
    copying leaves ``.new-<run>`` / ``.restore-<run>``: restore still finds the old copy, snapshot replaces it, and
    no dot-named leftover survives or is taken for a run."""
    device_runs = _device_runs()
    run = f"{NAME}-s0.incomplete"
    kept = tmp_path / "in_progress" / "runs"
    _fake_run(kept / f".old-{run}", 3)  # committed mid-swap: only the old copy
    _fake_run(kept / f".new-{run}", 4)  # and a copy whose writing was cut off
    root = tmp_path / "root"
    _fake_run(root / "runs" / f".restore-{run}", 2)  # a restore cut off on this machine
    assert device_runs.restore(tmp_path / "in_progress", root) == [f"restored {run} (3 epochs logged)"]
    assert sorted(p.name for p in (root / "runs").iterdir()) == [run]
    assert device_runs._newest_step(root / "runs" / run) == 3
    assert sorted(p.name for p in kept.iterdir()) == [run]

    shutil.rmtree(root / "runs" / run / "checkpoints" / "step_3")
    _fake_run(root / "runs" / run, 5)  # the resumed run got further
    _fake_run(root / "runs" / f".restore-{NAME}-s1.incomplete", 9)  # a leftover is not a run to keep
    kept.joinpath(run).rename(kept / f".old-{run}")  # the snapshot was cut off mid-swap again
    assert device_runs.snapshot(root, tmp_path / "in_progress") == [f"kept {run} (checkpoint step 5, 5 epochs logged)"]
    assert sorted(p.name for p in kept.iterdir()) == [run]
    assert [p.name for p in (kept / run / "checkpoints").iterdir()] == ["step_5"]


def test_a_snapshot_keeps_files_over_the_repository_limit_in_pieces_and_restore_joins_them(tmp_path):
    """A WRN-28-2's checkpoint files (5.9 MB) are over the 5 MB limit for tracked files: the snapshot holds them as
    pieces of at most the limit plus a record of size and sha256; restore rejoins them byte for byte, and refuses
    (leaving the root as it was) when a piece was damaged."""
    device_runs = _device_runs()
    run = f"{NAME}-s0.incomplete"
    root, kept = tmp_path / "root", tmp_path / "in_progress"
    step = _fake_run(root / "runs" / run, 4) / "checkpoints" / "step_4"
    rng = np.random.default_rng(0)
    big = {"model.safetensors": rng.bytes(2500), "optimizer.bin": rng.bytes(1000)}  # limit 1000: 3 pieces, 1 piece
    for name, data in big.items():
        (step / name).write_bytes(data)
    small = (step / "trainer_state.json").read_bytes()
    assert device_runs.snapshot(root, kept, max_file=1000) == [
        f"kept {run} (checkpoint step 4, 4 epochs logged; 1 file over 1000 bytes kept in pieces)"]
    held = kept / "runs" / run / "checkpoints" / "step_4"
    assert sorted(p.name for p in held.iterdir()) == [
        "model.safetensors.part-000", "model.safetensors.part-001", "model.safetensors.part-002",
        "model.safetensors.parts.json", "optimizer.bin", "trainer_state.json"]
    assert max(p.stat().st_size for p in held.iterdir()) <= 1000
    record = json.loads((held / "model.safetensors.parts.json").read_text())
    assert record["bytes"] == 2500 and record["sha256"] == hashlib.sha256(big["model.safetensors"]).hexdigest()

    assert device_runs.snapshot(root, kept, max_file=1000) == []  # up to date
    assert device_runs.snapshot(root, kept, max_file=900) == [  # a copy with a file over the limit is taken again
        f"kept {run} (checkpoint step 4, 4 epochs logged; 2 files over 900 bytes kept in pieces)"]
    assert device_runs.snapshot(root, kept, max_file=1000) == []
    assert not (held / "optimizer.bin").exists() and (held / "optimizer.bin.part-001").stat().st_size == 100

    shutil.rmtree(root)  # the machine is gone
    assert device_runs.restore(kept, root) == [f"restored {run} (4 epochs logged)"]
    back = root / "runs" / run / "checkpoints" / "step_4"
    assert sorted(p.name for p in back.iterdir()) == ["model.safetensors", "optimizer.bin", "trainer_state.json"]
    assert all((back / name).read_bytes() == data for name, data in big.items())
    assert (back / "trainer_state.json").read_bytes() == small
    assert device_runs._newest_step(kept / "runs" / run) == 4  # the pieces do not hide the checkpoint

    shutil.rmtree(root)
    piece = held / "model.safetensors.part-001"
    piece.write_bytes(b"\0" + piece.read_bytes()[1:])
    with pytest.raises(SystemExit, match="do not join into the file that was cut"):
        device_runs.restore(kept, root)
    assert device_runs._runs(root / "runs") == []  # nothing half-restored is taken for a run
    (held / "model.safetensors.part-002").unlink()
    with pytest.raises(SystemExit, match="cannot be joined"):
        device_runs.restore(kept, root)


def _tar_of(runs: list[Path], tar_path: Path) -> Path:
    """A tar of ``runs`` laid out as ``pack`` writes it (``runs/<run>/...``)."""
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path, "w") as tar:
        for run in runs:
            for f in sorted(p for p in run.rglob("*") if p.is_file()):
                tar.add(f, arcname=f"runs/{run.name}/{f.relative_to(run).as_posix()}", recursive=False)
    return tar_path


def test_unpack_mends_a_cut_off_swap_and_takes_only_a_newer_checkpoint(tmp_path):
    """``unpack`` swaps through ``_swap_in``: a kill between its renames (``.old-<run>`` alone) or while extracting
    (``.unpack-<run>``) is mended on the next call, and the leftovers are never packed. A run comes in only with a
    newer checkpoint than the copy here: more epochs logged over an older checkpoint is not further."""
    device_runs = _device_runs()
    run, other = f"{NAME}-s0.incomplete", f"{NAME}-s1.incomplete"
    runs = tmp_path / "root" / "runs"
    _fake_run(runs / f".old-{run}", 3)  # unpack cut off between its renames: only the old copy
    _fake_run(runs / f".unpack-{other}", 9)  # and an extraction cut off
    device = tmp_path / "device" / "runs"
    _tar_of([_fake_run(device / run, 5)], tmp_path / "files" / "runs-0.tar")
    assert device_runs.unpack(tmp_path / "files", tmp_path / "root") == [f"unpacked {run} (5 epochs logged)"]
    assert sorted(p.name for p in runs.iterdir()) == [run]
    assert device_runs._newest_step(runs / run) == 5

    _fake_run(device / other, 4)
    (device / other / "log.jsonl").write_text('{"epoch": 1}\n' * 20)  # logged further, checkpoint older
    _fake_run(runs / other, 6)
    _tar_of([device / other], tmp_path / "files2" / "runs-0.tar")
    assert device_runs.unpack(tmp_path / "files2", tmp_path / "root") == [
        f"kept {other}: the copy here got as far (checkpoint step 6)"]
    assert device_runs._newest_step(runs / other) == 6 and sorted(p.name for p in runs.iterdir()) == [run, other]

    _fake_run(runs / f".old-{NAME}-s2.incomplete", 7)  # a leftover beside runs that exist is not packed
    (runs / run).rename(runs / f".old-{run}")  # nor is an old copy whose run is missing, before a mend
    manifest = device_runs.pack(tmp_path / "root", tmp_path / "out")
    assert sorted(manifest["interrupted"]) == [other]
