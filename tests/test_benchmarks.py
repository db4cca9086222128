"""The method-comparison harness: the CI smoke version of the digits suite, resumption, the interval arithmetic."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import re
import subprocess
import sys

import pytest

from .conftest import REPO

_spec = importlib.util.spec_from_file_location("compare_methods", REPO / "benchmarks" / "compare_methods.py")
compare = importlib.util.module_from_spec(_spec)
sys.modules["compare_methods"] = compare  # dataclasses look their module up
_spec.loader.exec_module(compare)
_pspec = importlib.util.spec_from_file_location("publish_best", REPO / "benchmarks" / "publish_best.py")
publish = importlib.util.module_from_spec(_pspec)
_pspec.loader.exec_module(publish)


def test_interval_over_seeds_is_the_student_t_one():
    rows = [{"method": "m", "seed": s, "train_seconds": 1.0, "accuracy": a} for s, a in enumerate((0.5, 0.6, 0.7))]
    (entry,) = compare.summarize(rows, keys=("accuracy",))
    mean, half = entry["accuracy"]
    assert mean == pytest.approx(0.6)
    assert half == pytest.approx(4.302652729911275 * 0.1 / math.sqrt(3))  # t(0.975, 2 dof) * sd / sqrt(n)
    (single,) = compare.summarize(rows[:1], keys=("accuracy",))
    assert single["accuracy"][0] == 0.5 and math.isnan(single["accuracy"][1])
    assert "0.6000 ± 0.2484" in compare.markdown_table([entry], keys=("accuracy",))


def test_train_seconds_are_not_averaged_across_devices():
    rows = [{"method": "m", "seed": 0, "train_seconds": "300", "device": "NVIDIA H200", "accuracy": "0.8"},
            {"method": "m", "seed": 1, "train_seconds": "39000", "device": "CPU, 2 threads", "accuracy": "0.8"},
            {"method": "m", "seed": 2, "train_seconds": "41000", "device": "CPU, 2 threads", "accuracy": "0.8"},
            {"method": "n", "seed": 0, "train_seconds": "10", "device": "CPU, 2 threads", "accuracy": "0.8"},
            {"method": "n", "seed": 1, "train_seconds": "20", "device": "CPU, 2 threads", "accuracy": "0.8"}]
    mixed, single = compare.summarize(rows, keys=("accuracy",))
    assert mixed["train_seconds_by_device"] == {"NVIDIA H200": 300.0, "CPU, 2 threads": 40000.0}
    table = compare.markdown_table([mixed, single], keys=("accuracy",))
    assert "| m | 3 | 300 on NVIDIA H200; 40000 on CPU, 2 threads |" in table
    assert "| n | 2 | 15 |" in table  # one device: the plain mean, as before


@pytest.mark.slow
def test_digits_smoke_suite_runs_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / "smoke"
    assert compare.main(["--suite", "digits", "--smoke", "--plots", "--out", str(out)]) == 0
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["method"], r["seed"], r["epochs"]) for r in rows] == [("ce", "0", "1"), ("ls005", "0", "1")]
    assert all(0 <= float(r["accuracy"]) <= 1 and r["ts/ece"] for r in rows)
    assert all(r["device"].startswith("CPU, ") for r in rows)  # what the train times were measured on
    assert all(r["pick/best_nll/epoch"] == r["selected_epoch"] and r["pick/best_ts_nll/epoch"] for r in rows)
    assert "| ce | 1 |" in (out / "results.md").read_text()
    assert {"reliability_grid.png", "accuracy_ece_auroc.png", "risk_coverage.png"} <= {p.name for p in out.iterdir()}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(subprocess, "run", no_training)
    assert compare.main(["--suite", "digits", "--smoke", "--out", str(out)]) == 0  # finished cells are skipped

    # publish the better of the two by validation accuracy (never test metrics) as a zoo entry
    import shutil

    import refcal_zoo
    from refcal_zoo.zoo import INDEX_PATH, load_index

    scores = {m: publish.selected_validation(out / "runs" / f"{m}-s0") for m in ("ce", "ls005")}
    winner = max(scores, key=lambda m: (scores[m][0], -scores[m][1]))
    index = tmp_path / "index.yaml"
    shutil.copyfile(INDEX_PATH, index)
    assert publish.main(["--suite", "digits", "--methods", "ce", "ls005", "--results", str(out), "--index",
                         str(index), "--cards", str(tmp_path / "cards"), "--publish-dir", str(tmp_path / "pub")]) == 0
    name = f"resnet8-digits-{winner}"
    entry = load_index(index)[name]
    assert entry.published and entry.recipe == "recipes/configs/default.yaml"
    assert "train.seed=0" in entry.overrides and entry.dataset["id"] == "digits"
    from refcal_zoo.config import load_config

    retrain = load_config(REPO / entry.recipe, entry.overrides)  # the entry's recipe trains what it names
    assert retrain.name == name and retrain.model.arch == entry.arch and retrain.train.seed == 0
    assert entry.metrics["accuracy"] == pytest.approx(float(next(r for r in rows if r["method"] == winner)["accuracy"]))
    assert (tmp_path / "cards" / name / "README.md").is_file() and (index.parent / "weights" / name).is_dir()
    assert refcal_zoo.load(tmp_path / "pub" / name).zoo_info["name"] == name


def test_every_suite_names_existing_configs():
    for name in ("digits", "cifar10lt", "cifar100lt-gpu", "cifar10lt-budget", "cifar10lt-budget-gpu"):
        suite = compare.get_suite(name, "/data")
        assert suite.cells
        for cell in suite.cells:
            assert (compare.CONFIGS / cell.config).is_file(), (name, cell.config)


_rspec = importlib.util.spec_from_file_location("make_report", REPO / "benchmarks" / "make_report.py")
report = importlib.util.module_from_spec(_rspec)
_rspec.loader.exec_module(report)


def test_welch_interval_matches_scipy():
    from scipy import stats

    a, b = [0.61, 0.64, 0.60], [0.55, 0.59, 0.50, 0.58]
    diff, lo, hi = report.welch_difference(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert diff == pytest.approx(sum(a) / 3 - sum(b) / 4)
    assert (lo, hi) == (pytest.approx(ref.low, rel=1e-10), pytest.approx(ref.high, rel=1e-10))
    d1, lo1, hi1 = report.welch_difference([0.7], b)
    assert math.isnan(lo1) and math.isnan(hi1) and d1 == pytest.approx(0.7 - sum(b) / 4)


def _rows(method: str, **metrics: list[float]) -> list[dict]:
    n = len(next(iter(metrics.values())))
    return [{"method": method, "seed": str(s), **{k: str(v[s]) for k, v in metrics.items()}} for s in range(n)]


def test_findings_answer_the_issue_question():
    ce = _rows("ce", accuracy=[0.60, 0.61, 0.62], auroc_misclassification=[0.70, 0.71, 0.72],
               auroc_ovo=[0.90, 0.91, 0.92], ece=[0.10, 0.11, 0.12], **{"ts/ece": [0.02, 0.03, 0.04]},
               nll=[1.0, 1.1, 1.2])
    better = _rows("refcal_joint", accuracy=[0.60, 0.62, 0.63], auroc_misclassification=[0.80, 0.81, 0.82],
                   auroc_ovo=[0.90, 0.91, 0.92], ece=[0.03, 0.04, 0.05], **{"ts/ece": [0.02, 0.03, 0.04]},
                   nll=[0.9, 1.0, 1.1])
    worse_acc = _rows("refcal", accuracy=[0.40, 0.41, 0.42], auroc_misclassification=[0.80, 0.81, 0.82],
                      auroc_ovo=[0.80, 0.81, 0.82], ece=[0.03, 0.04, 0.05], **{"ts/ece": [0.02, 0.03, 0.04]},
                      nll=[1.5, 1.6, 1.7])
    found = {e["variant"]: e for e in report.comparisons(ce + better + worse_acc)}
    assert set(found) == {"refcal_joint", "refcal"} and all(e["baseline"] == "ce" for e in found.values())
    joint = found["refcal_joint"]
    assert joint["accuracy"][3] == "no clear difference" and joint["ece"][3] == "better"
    assert joint["auroc_misclassification"][3] == "better" and joint["ts/ece"][3] == "no clear difference"
    assert "**yes**" in report.answer(joint)
    assert found["refcal"]["accuracy"][3] == "worse" and found["refcal"]["nll"][3] == "worse"
    assert "**no**" in report.answer(found["refcal"])  # better ECE and AUROC, but at lower accuracy


def _budget_row(method: str, units: int, seed: int, acc: float, seconds: float, ece: float = 0.05) -> dict:
    return {"method": f"{method}@{units}", "seed": str(seed), "train_seconds": str(seconds), "accuracy": str(acc),
            "auroc_misclassification": "0.8", "ece": str(ece), "ts/ece": "0.02", "device": "CPU, 2 threads"}


def test_budget_section_finds_where_curves_cross(tmp_path, monkeypatch):
    out = tmp_path / "cifar10lt-budget"
    rows = []
    for units, ce_acc, joint_acc in ((10, 0.70, 0.60), (30, 0.75, 0.74), (60, 0.78, 0.80)):
        rows += [_budget_row("ce", units, 0, ce_acc, 40 * units), _budget_row("refcal_joint", units, 0, joint_acc,
                                                                             42 * units, ece=0.03)]
    suite = compare.get_suite("cifar10lt-budget", "/data")
    compare.write_results(out, suite, rows)
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    text = report.budget_section()
    assert "`refcal_joint` minus CE accuracy: -0.1000 at 10, -0.0100 at 30, +0.0200 at 60" in text
    assert "reaches CE's accuracy at 60 units" in text
    assert "At 60 units, against CE (seed means): failure AUROC +0.0000, ECE -0.0200" in text
    assert "Trained on: CPU, 2 threads" in text
    compare.budget_plot(out, rows)
    assert (out / "budget.png").stat().st_size > 0


def test_budget_curves_average_seeds_and_cross_only_when_every_seed_does(tmp_path, monkeypatch):
    rows = [_budget_row("ce", 10, 0, 0.70, 60), _budget_row("ce", 10, 1, 0.72, 80),
            _budget_row("refcal_joint", 10, 0, 0.71, 70), _budget_row("refcal_joint", 10, 1, 0.70, 90),  # split
            _budget_row("ce", 30, 0, 0.75, 200), _budget_row("ce", 30, 1, 0.75, 200),
            _budget_row("refcal_joint", 30, 0, 0.76, 210), _budget_row("refcal_joint", 30, 1, 0.77, 230)]
    curves = compare.budget_curves(rows)
    (u10, t10, p10), _ = curves["ce"]
    assert (u10, t10, p10["seeds"]) == (10, 70.0, 2) and p10["accuracy"] == pytest.approx(0.71)
    assert p10["per_seed"]["accuracy"] == {0: 0.70, 1: 0.72}
    (line, _) = report.crossing_lines(curves)
    assert "-0.0050 at 10 (seeds +0.0100/-0.0200), +0.0150 at 30 (seeds +0.0100/+0.0200)" in line
    assert line.endswith("it reaches CE's accuracy at 30 units with every seed. Its training time against CE's: "
                         "1.14x at 10, 1.10x at 30.")  # 80 / 70 s and 220 / 200 s


def test_concurrent_processes_share_one_results_file(tmp_path):
    """Each process merges what the others wrote (the methods of the GPU sweep run side by side)."""
    suite = compare.get_suite("cifar10lt-budget-gpu", "/data")
    mine = {("ce@10", 0): _budget_row("ce", 10, 0, 0.70, 60)}
    theirs = {("refcal@10", 0): _budget_row("refcal", 10, 0, 0.40, 60)}
    compare.record_results(tmp_path, suite, theirs)  # the other process finished first
    compare.record_results(tmp_path, suite, mine)  # ours started before that and knew nothing of it
    assert [r["method"] for r in compare.read_results(tmp_path)] == ["ce@10", "refcal@10"]  # suite order, both kept
    assert suite.command == "scripts/budget_sweep_gpu.sh" and (REPO / suite.command).is_file()


def test_recorded_cells_whose_folder_is_gone_train_again_only_with_retrain(tmp_path):
    """A cell in results.csv whose run folder an earlier session lost is kept as recorded, unless --retrain; an
    interrupted retrain resumes from its .incomplete folder on the next plain call."""
    suite = compare.get_suite("digits", None)
    ce, ls = (next(c for c in suite.cells if c.method == m) for m in ("ce", "ls005"))
    rows = {("ce", 0): {}, ("ce", 1): {}, ("ls005", 0): {}}  # recorded; only ls005-s0 still has its folder
    (tmp_path / "runs" / "ls005-s0").mkdir(parents=True)
    (tmp_path / "corruptions").mkdir()
    (tmp_path / "corruptions" / "ce-s0.json").write_text("{}")  # the lost CE model's corruption study

    def names(queue):
        return [(c.method, s) for c, s in queue]

    assert names(compare.pending_cells([ce, ls], [0, 1], rows, tmp_path)) == [("ls005", 0), ("ls005", 1)]
    assert (tmp_path / "corruptions" / "ce-s0.json").is_file()
    assert names(compare.pending_cells([ce, ls], [0, 1], rows, tmp_path, retrain=True)) == \
        [("ce", 0), ("ls005", 0), ("ce", 1), ("ls005", 1)]  # seed-major
    assert not (tmp_path / "corruptions" / "ce-s0.json").exists()  # redone for the new seed-0 model
    (tmp_path / "runs" / "ce-s1.incomplete").mkdir()  # that retrain was interrupted
    assert names(compare.pending_cells([ce], [0, 1], rows, tmp_path)) == [("ce", 1)]


def test_eval_reports_are_committed_without_machine_paths(tmp_path, monkeypatch):
    """``portable_report`` turns a corruption report's run folder into a repository path and its dataset folder into
    a name; other fields are untouched."""
    monkeypatch.setattr(compare, "REPO", tmp_path / "repo")
    run = tmp_path / "repo" / "benchmarks" / "results" / "s" / "runs" / "ce-s0"
    run.mkdir(parents=True)
    report = tmp_path / "ce-s0.json"
    report.write_text(json.dumps({"model": str(run), "folder": str(run), "dataset": "/data/sets/cifar10",
                                  "config": None, "n": 10, "sha256": "ab"}))
    compare.portable_report(report)
    assert json.loads(report.read_text()) == {
        "model": "benchmarks/results/s/runs/ce-s0", "folder": "benchmarks/results/s/runs/ce-s0",
        "dataset": "local folder cifar10", "config": None, "n": 10, "sha256": "ab"}


_MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|root|home|tmp|Users|mnt|scratch)/[\w.-]+")


def test_committed_results_cards_and_docs_carry_no_machine_paths():
    """What we publish (results, cards, docs, the zoo index) never names a folder of the machine it was made on."""
    try:
        tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    roots = ("benchmarks/results/", "model_cards/", "docs/", "README.md", "refcal_zoo/zoo/")
    offenders = []
    for name in tracked.splitlines():
        path = REPO / name
        if not name.startswith(roots) or path.suffix in (".py", ".png", ".safetensors", ".npz") or not path.is_file():
            continue
        for match in _MACHINE_PATH.finditer(path.read_text(errors="replace")):
            offenders.append(f"{name}: {match.group(0)}")
    assert not offenders, offenders[:10]


def test_device_agreement_pairs_the_same_cell_and_seed():
    gpu = [_budget_row("ce", 10, 0, 0.69, 24), _budget_row("ce", 10, 1, 0.70, 24), _budget_row("ce", 30, 0, 0.78, 72)]
    cpu = [_budget_row("ce", 10, 0, 0.70, 456)]
    lines = report.device_agreement_lines(gpu, cpu)
    assert lines[-1] == "| ce@10 | 0 | 0.7000 | 0.6900 | 7.6 | 0.4 |"
    assert sum(ln.startswith("| ce@") for ln in lines) == 1
    assert report.device_agreement_lines(gpu, []) == []


_TIMING = {"train_seconds", "run_dir"}  # what differs between two runs of the same cell


def test_parallel_cells_give_the_same_rows_as_serial_ones(tmp_path, monkeypatch):
    """--parallel 2 trains the two smoke cells at once; training is deterministic on CPU for a given thread count
    (fixed here: --parallel would otherwise share the cores out), so every metric of every row equals the serial
    run's."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    tables = {}
    for n in (1, 2):
        out = tmp_path / f"p{n}"
        assert compare.main(["--suite", "digits", "--smoke", "--parallel", str(n), "--out", str(out)]) == 0
        tables[n] = compare.read_results(out)
    assert [(r["method"], r["seed"]) for r in tables[2]] == [("ce", "0"), ("ls005", "0")]
    for serial, parallel in zip(tables[1], tables[2], strict=True):
        assert {k: v for k, v in serial.items() if k not in _TIMING} == \
            {k: v for k, v in parallel.items() if k not in _TIMING}


def test_parallel_runs_cells_concurrently_and_records_every_row(tmp_path, monkeypatch):
    import threading
    import time

    active, peak, lock = [0], [0], threading.Lock()

    def fake_cell(suite, cell, seed, out, smoke, launcher, threads=None):
        assert threads == compare.threads_per_cell(3)
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.2)
        with lock:
            active[0] -= 1
        return None if cell.method == "focal" else {"method": cell.method, "seed": seed, "train_seconds": 1.0,
                                                    "accuracy": 0.5}

    monkeypatch.setattr(compare, "run_cell", fake_cell)
    args = ["--suite", "digits", "--methods", "ce", "ls005", "ls01", "focal", "--seeds", "0", "1", "--out",
            str(tmp_path)]
    assert compare.main([*args, "--parallel", "3"]) == 1  # focal failed (twice), the others recorded
    assert peak[0] == 3
    rows = compare.read_results(tmp_path)
    assert [(r["method"], r["seed"]) for r in rows] == [(m, s) for m in ("ce", "ls005", "ls01") for s in ("0", "1")]
    with pytest.raises(SystemExit, match="--parallel must be >= 1"):
        compare.main([*args, "--parallel", "0"])


def test_gpu_bench_script_parses_and_refuses_a_machine_without_gpu(tmp_path):
    import os
    import shutil

    import torch

    script = REPO / "scripts" / "gpu_bench.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    if torch.cuda.is_available() and shutil.which("nvidia-smi"):
        pytest.skip("this machine has a GPU: the script would run the benchmark")
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OUT_DIR=str(tmp_path / "out")))
    assert proc.returncode == 2 and proc.stderr.startswith("error: no GPU")
    assert not (tmp_path / "out").exists()  # nothing written before the check


def test_longtail_columns_against_a_hand_written_split_conformal(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    k, counts = 5, [400, 200, 100, 50, 20]
    for split, n in (("val", 300), ("test", 500)):
        labels = rng.integers(0, k, n)
        logits = rng.normal(size=(n, k)) + 2.0 * np.eye(k)[labels] * rng.uniform(0, 2, (n, 1))
        np.savez(tmp_path / f"{split}_predictions.npz", logits=logits.astype(np.float32), labels=labels)
    cols = compare.longtail_columns(tmp_path, counts)
    v, t = np.load(tmp_path / "val_predictions.npz"), np.load(tmp_path / "test_predictions.npz")

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    scores = 1 - softmax(v["logits"].astype(np.float64))[np.arange(300), v["labels"]]
    qhat = np.sort(scores)[math.ceil(301 * 0.9) - 1]  # the ceil((n+1)(1-alpha))-th smallest score
    sets = 1 - softmax(t["logits"].astype(np.float64)) <= qhat
    covered = sets[np.arange(500), t["labels"]]
    assert cols["cp/coverage"] == pytest.approx(covered.mean())
    assert cols["cp/set_size"] == pytest.approx(sets.sum(1).mean())
    tail = np.isin(t["labels"], [3, 4])  # 30% of 5 classes rounds to 2: the two rarest
    assert cols["cp/tail/coverage"] == pytest.approx(covered[tail].mean())
    correct = t["logits"].argmax(1) == t["labels"]
    assert cols["head/accuracy"] == pytest.approx(correct[np.isin(t["labels"], [0, 1])].mean())
    assert cols["mid/accuracy"] == pytest.approx(correct[t["labels"] == 2].mean())
    per_class = [covered[t["labels"] == c].mean() for c in range(k)]
    assert cols["cp/worst_class_coverage"] == pytest.approx(min(per_class))
    assert cols["cpcw/coverage"] > 0 and compare.longtail_columns(tmp_path / "missing", counts) == {}


def test_fullbudget_section_shows_thirds_and_prediction_sets_not_degenerate_shot_groups(tmp_path, monkeypatch):
    rows = []
    for entry, acc, tail, cov in (("resnet32-cifar10lt-ce", 0.86, 0.70, 0.89), ("resnet32-cifar10lt-logit_adjusted",
                                                                               0.88, 0.82, 0.91)):
        row = {"method": entry, "seed": "0", "train_seconds": "100", "accuracy": str(acc), "ece": "0.05",
               "ts/ece": "0.02", "auroc_misclassification": "0.8", "many/accuracy": str(acc), "many/n": "10000",
               "tail/accuracy": str(tail), "cp/coverage": str(cov), "cp/set_size": "1.2"}
        rows.append(row)
    suite = compare.get_suite("cifar10lt", "/data")
    compare.write_results(tmp_path / "cifar10lt-full", suite, rows)
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    text = report.fullbudget_section("cifar10lt-full")
    assert "Per shot group" not in text  # every CIFAR-10-LT class is "many": no table of empty groups
    assert ("2 of 8 (entry, seed) cells finished; still to train: resnet32-cifar10lt-refcal_joint seed 0, "
            "efficientvit_b0-cifar10lt-ce_e30 seed 0, wrn28_2-cifar10lt-ce_e30 seed 0, resnet32-cifar10lt-crl seed 0, "
            "resnet32-cifar10lt-refcal_joint_la seed 0, ") in text
    assert "Per frequency third" in text and "| logit_adjusted | 1 | 100 | 0.8800 | n/a | n/a | 0.8200 | 0.9100" in text
    assert "MiSLAS (ResNet-32, 200 + 10 epochs) (published) | 0.9000 | 0.0120" in text
    assert "| ours: logit_adjusted (1 seed) | 0.8800 | 0.0500 | 0.0200 |" in text
    assert "Corruption study" not in text
    study = tmp_path / "cifar10lt-full" / "corruptions" / "resnet32-cifar10lt-ce-s0.json"
    study.parent.mkdir()
    study.write_text((REPO / "benchmarks" / "results" / "cifar10lt" / "corruptions" / "ce-s0.json").read_text())
    mce = json.loads(study.read_text())["corruptions"]["summary"]["mean_corruption_error"]
    text = report.fullbudget_section("cifar10lt-full")
    assert "Corruption study (seed 0 of each entry" in text
    assert re.search(rf"\| resnet32-cifar10lt-ce-s0 \| [0-9.]+ \| {mce:.4f} \|", text)  # clean acc, then mCE
    assert "under corruption" not in text  # one entry: nothing to compare
    other = json.loads(study.read_text())  # a RefCal-joint study: mCE 0.05 lower, corrupted ECE 0.01 higher
    other["corruptions"]["summary"]["mean_corruption_error"] = mce - 0.05
    ece = other["corruptions"]["summary"]["mean/ece"]
    other["corruptions"]["summary"]["mean/ece"] = ece + 0.01
    (study.parent / "resnet32-cifar10lt-refcal_joint-s0.json").write_text(json.dumps(other))
    text = report.fullbudget_section("cifar10lt-full")
    assert (f"- `refcal_joint` vs `ce` under corruption: mCE {mce - 0.05:.4f} vs {mce:.4f} (-0.0500 better (1 seed)); "
            f"corrupted ECE {ece + 0.01:.4f} vs {ece:.4f} (+0.0100 worse (1 seed)); corrupted ECE after TS ") in text
    assert "One seed studied per entry: each of these is a single-run observation." in text
    for entry, shift in (("ce", 0.02), ("refcal_joint", -0.03)):  # seed 2 of both studied too
        second = json.loads(study.read_text())
        second["corruptions"]["summary"]["mean_corruption_error"] = mce + shift
        (study.parent / f"resnet32-cifar10lt-{entry}-s2.json").write_text(json.dumps(second))
    text = report.fullbudget_section("cifar10lt-full")
    assert "Corruption study (seed 0 of each entry, seed 2 too where a row names it; 10 corruptions" in text
    assert re.search(rf"\| resnet32-cifar10lt-ce-s2 \| [0-9.]+ \| {mce + 0.02:.4f} \|", text)
    # the means over seeds 0 and 2: RefCal-joint (mce - 0.05 + mce - 0.03) / 2, CE (mce + mce + 0.02) / 2; an interval
    assert re.search(rf"- `refcal_joint` vs `ce` under corruption: mCE {mce - 0.04:.4f} vs {mce + 0.01:.4f} "
                     r"\(-0\.0500 \[[-+0-9.]+, [-+0-9.]+\] ", text)
    assert "One seed studied per entry" not in text
    (study.parent / "resnet32-cifar10lt-refcal_joint-s1.json").write_text(study.read_text())
    assert "Corruption study (seed 0 of each entry, seeds 1 and 2 too where a row names it;" in \
        report.fullbudget_section("cifar10lt-full")



def test_fullbudget_section_counts_further_seeds_and_tags_differences_without_an_interval(tmp_path, monkeypatch):
    def row(entry, seed, acc, ece):
        return {"method": entry, "seed": str(seed), "train_seconds": "100", "accuracy": str(acc), "ece": str(ece),
                "ts/ece": "0.02", "auroc_misclassification": "0.8", "auroc_ovo": "0.98"}

    ce, joint, crl = "resnet32-cifar10lt-ce", "resnet32-cifar10lt-refcal_joint", "resnet32-cifar10lt-crl"
    # the suite plans seed 0 only; seed 1 of CE and of CRL were run with --seeds 1
    rows = [row(ce, 0, 0.80, 0.09), row(ce, 1, 0.82, 0.07), row(joint, 0, 0.83, 0.10), row(crl, 0, 0.77, 0.06),
            row(crl, 1, 0.79, 0.05)]
    compare.write_results(tmp_path / "cifar10lt-full", compare.get_suite("cifar10lt", "/data"), rows)
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    text = report.fullbudget_section("cifar10lt-full")
    assert text.count("3 of 8 (entry, seed) cells finished; still to train: ") == 1
    assert f"; further seeds finished: {ce} seed 1, {crl} seed 1." in text
    assert "| ours: ce (2 seeds) | 0.8100 |" in text and "| ours: refcal_joint (1 seed) | 0.8300 |" in text
    assert "Only one seed per entry" not in text
    assert "Several seeds have finished only for `ce` (2 seeds), `crl` (2 seeds):" in text
    # refcal_joint 0.83 against CE's 0.80 / 0.82: a direction on 1 vs 2 seeds, never an interval
    assert "- `refcal_joint` vs `ce`: **no** - accuracy better (1 vs 2 seeds, no interval), " in text
    assert "ECE worse (1 vs 2 seeds, no interval)" in text
    found = {(e["variant"], e["baseline"]): e for e in report.comparisons(
        [{**r, "method": r["method"].rsplit("-", 1)[1]} for r in rows])}
    diff, lo, hi, word = found[("refcal_joint", "crl")]["accuracy"]
    assert diff == pytest.approx(0.83 - 0.78) and math.isnan(lo) and math.isnan(hi)
    assert word == "better (1 vs 2 seeds, no interval)"
    paper = "\n".join(report._fullbudget_paper_lines())
    assert "seeds: ce 2, refcal_joint 1; a difference with a one-seed side is a single-run observation" in paper
    assert "(difference +0.0200, better (1 vs 2 seeds, no interval))" in paper


def test_fullbudget_section_names_the_cells_selected_before_the_learning_rate_decay(tmp_path, monkeypatch):
    def row(entry, seed, epoch):
        return {"method": entry, "seed": str(seed), "train_seconds": "1", "accuracy": "0.8", "ece": "0.1",
                "ts/ece": "0.02", "selected_epoch": str(epoch)}

    # CE and CRL: step schedule, milestones 160 and 180 of 200 epochs (epoch 160 is the last before the decay);
    # two-stage RefCal selects in its linear stage (step, milestones 60, 75, 90 of 100 epochs)
    ce, crl, two = "resnet32-cifar10lt-ce", "resnet32-cifar10lt-crl", "resnet32-cifar10lt-refcal_supcon200"
    rows = [row(ce, 0, 166), row(ce, 1, 60), row(crl, 0, 160), row(two, 0, 84)]
    compare.write_results(tmp_path / "cifar10lt-full", compare.get_suite("cifar10lt", "/data"), rows)
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    text = report.fullbudget_section("cifar10lt-full")
    assert (f"Selected before the learning-rate decay: {ce} seed 1 (epoch 60 of 200, selected by `best_nll`), "
            f"{crl} seed 0 (epoch 160 of 200, selected by `best_nll`). ") in text
    rows = [row(ce, 0, 166), row(crl, 0, 161), row(two, 0, 84)]
    compare.write_results(tmp_path / "cifar10lt-full", compare.get_suite("cifar10lt", "/data"), rows)
    assert "Selected before the learning-rate decay" not in report.fullbudget_section("cifar10lt-full")
    rows = [row(ce, 0, 166), row(two, 0, 60)]
    compare.write_results(tmp_path / "cifar10lt-full", compare.get_suite("cifar10lt", "/data"), rows)
    assert f"{two} seed 0 (epoch 60 of 100, selected by `best_nll`)" in report.fullbudget_section("cifar10lt-full")


def test_each_selection_rule_is_replayed_on_the_validation_log(tmp_path, monkeypatch):
    def epoch(stage, e, acc, nll, ts):
        return {"stage": stage, "epoch": e, "train_loss": 1.0, "val_accuracy": acc, "val_nll": nll, "val_ts_nll": ts}

    log = tmp_path / "log.jsonl"
    # a two-stage run: the contrastive stage has no validation scores; the classifier stage is the one selected
    records = [{"stage": "contrastive", "epoch": 1, "train_loss": 5.0},
               epoch("classifier", 1, 0.50, 1.00, 0.90), epoch("classifier", 2, 0.76, 0.78, 0.70),  # calibrated
               epoch("classifier", 3, 0.80, 0.80, 0.62), epoch("classifier", 4, 0.80, 0.85, 0.65)]  # refined
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert compare.rule_picks(log) == {"pick/best_nll/epoch": 2, "pick/best_nll/val_accuracy": 0.76,
                                       "pick/best_ts_nll/epoch": 3, "pick/best_ts_nll/val_accuracy": 0.80,
                                       "pick/best_accuracy/epoch": 3, "pick/best_accuracy/val_accuracy": 0.80}
    del records[1]["val_ts_nll"]  # an epoch trained before the rule existed: no replay of that rule
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    picks = compare.rule_picks(log)
    assert "pick/best_ts_nll/epoch" not in picks and picks["pick/best_nll/epoch"] == 2
    assert compare.rule_picks(tmp_path / "absent.jsonl") == {}
    records[1]["val_ts_nll"], records[3]["val_nll"] = None, None  # non-finite scores are logged as null
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    picks = compare.rule_picks(log)
    assert picks["pick/best_nll/epoch"] == 2 and picks["pick/best_ts_nll/epoch"] == 3
    records[2]["val_nll"] = None
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert compare.rule_picks(log)["pick/best_nll/epoch"] == 4

    def row(entry, seed, nll_pick, ts_pick):
        return {"method": entry, "seed": str(seed), "train_seconds": "1", "accuracy": "0.8", "ece": "0.1",
                "ts/ece": "0.02", "pick/best_nll/epoch": str(nll_pick), "pick/best_nll/val_accuracy": "0.758",
                "pick/best_ts_nll/epoch": str(ts_pick), "pick/best_ts_nll/val_accuracy": "0.806",
                "pick/best_accuracy/epoch": "176", "pick/best_accuracy/val_accuracy": "0.806"}

    ce = "resnet32-cifar10lt-ce"
    rows = [row(ce, 1, 60, 176), row(ce, 0, 166, 166), {"method": "resnet32-cifar10lt-crl", "seed": "0",
                                                        "train_seconds": "1", "accuracy": "0.78"}]
    compare.write_results(tmp_path / "cifar10lt-full", compare.get_suite("cifar10lt", "/data"), rows)
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    text = report.fullbudget_section("cifar10lt-full")
    assert f"| {ce} seed 0 | 166 (0.758) | 166 (0.806) | 176 (0.806) |" in text
    assert f"| {ce} seed 1 | 60 (0.758) | 176 (0.806) | 176 (0.806) |" in text
    assert "resnet32-cifar10lt-crl seed 0 |" not in text  # logged no rule's picks
    assert "`best_nll` and `best_ts_nll` pick different epochs in 1 of 2 cells." in text


def test_paper_claims_are_checked_at_full_budget_once_a_refcal_entry_lands(tmp_path, monkeypatch):
    suite = compare.get_suite("cifar10lt", "/data")

    def row(method, seed, acc, ovo, ece):
        return {"method": method, "seed": str(seed), "train_seconds": "1", "accuracy": str(acc), "auroc_ovo": str(ovo),
                "ece": str(ece)}

    compare.write_results(tmp_path / "cifar10lt", suite, [row("ce", 0, 0.60, 0.93, 0.07),
                                                          row("refcal_joint", 0, 0.62, 0.94, 0.08)])
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    full = [row("resnet32-cifar10lt-ce", 0, 0.8177, 0.9832, 0.0907)]
    compare.write_results(tmp_path / "cifar10lt-full", suite, full)
    assert "At the recipes' budget" not in report.paper_section()  # no RefCal entry at full budget yet
    full.append(row("resnet32-cifar10lt-refcal_joint", 0, 0.8300, 0.9800, 0.0500))
    compare.write_results(tmp_path / "cifar10lt-full", suite, full)
    text = report.paper_section()
    first, at_full = text.split("At the recipes' budget")
    assert "| refcal_joint | 0.8970 | 0.6200 |" in first
    assert "1 seed, so each difference is a single-run observation" in at_full
    assert "| refcal_joint | 0.8970 | 0.8300 | 0.9882 | 0.9800 | 0.0860 | 0.0500 |" in at_full
    assert "| ce | 0.8530 | 0.8177 |" in at_full
    # by hand: 0.8300 - 0.8177 = +0.0123 (better), 0.9800 - 0.9832 = -0.0032 (worse), 0.0500 - 0.0907 = -0.0407
    # one run each: a direction, never called a reproduction
    assert ("higher accuracy than CE. `refcal_joint` here: in the paper's direction, not established (difference "
            "+0.0123, better (1 seed))") in at_full
    assert "higher OvO AUROC than CE. `refcal_joint` here: not in the paper's direction (difference -0.0032" in at_full
    assert ("lower ECE than CE. `refcal_joint` here: in the paper's direction, not established (difference -0.0407, "
            "better (1 seed))") in at_full
    assert "reproduced" not in at_full
    for seed, (acc, ece) in enumerate([(0.8200, 0.0900), (0.8190, 0.0910)], start=1):  # two seeds each: a test
        full += [row("resnet32-cifar10lt-ce", seed, acc, 0.9830, ece),
                 row("resnet32-cifar10lt-refcal_joint", seed, acc + 0.0120, 0.9800, ece - 0.0400)]
    compare.write_results(tmp_path / "cifar10lt-full", suite, full)
    at_full = report.paper_section().split("At the recipes' budget")[1]
    assert "higher accuracy than CE. `refcal_joint` here: reproduced (difference" in at_full
    assert "higher OvO AUROC than CE. `refcal_joint` here: not reproduced (difference" in at_full

_LAUNCHER = """
import os, signal, sys
with open(sys.argv[1], "a") as fh:
    fh.write(" ".join(sys.argv[2:]) + f" OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}\\n")
if sys.argv[2] == "stop":
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # even where this test runs with SIGINT ignored (nohup ... &)
    os.kill(os.getpid(), signal.SIGINT)
print("error: the launcher says no", flush=True)
sys.exit(1)
"""


def _recording_launcher(tmp_path, mode: str) -> tuple[str, object]:
    """A launcher that records each cell's command line, then stops itself with SIGINT or fails (exit 1)."""
    script, calls = tmp_path / "launcher.py", tmp_path / "calls.txt"
    script.write_text(_LAUNCHER)
    return f"{sys.executable} {script} {calls} {mode}", calls


def test_a_cell_stopped_by_a_signal_stops_the_queue(tmp_path, capsys):
    """Ctrl-C / kill of a training process is the user stopping the build: no further cell starts (a failed cell
    only is skipped), and the exit status says so."""
    launcher, calls = _recording_launcher(tmp_path, "stop")
    args = ["--suite", "digits", "--methods", "ce", "ls005", "ls01", "--seeds", "0", "--out", str(tmp_path / "o")]
    assert compare.main([*args, "--launcher", launcher]) == 130
    assert len(calls.read_text().splitlines()) == 1
    assert "ce seed 0 was stopped by SIGINT" in capsys.readouterr().out
    calls.unlink()
    launcher, calls = _recording_launcher(tmp_path, "fail")
    assert compare.main([*args, "--launcher", launcher]) == 1  # failures: every cell is tried
    assert len(calls.read_text().splitlines()) == 3
    assert "ce seed 0 FAILED (exit 1): error: the launcher says no (whole log: " in capsys.readouterr().out
    log = (tmp_path / "o" / "logs" / "ce-s0.log").read_text().splitlines()  # both attempts, each with a header
    assert [line[:4] for line in log] == ["=== ", "=== ", "erro"]


def test_only_a_complete_checkpoint_is_resumed(tmp_path):
    """A run killed before its first checkpoint finished writing starts over instead of failing on --resume."""
    launcher, calls = _recording_launcher(tmp_path, "fail")
    out = tmp_path / "o"
    suite = compare.get_suite("digits", None)
    cell = next(c for c in suite.cells if c.method == "ce")
    ckpt = compare.incomplete_dir(compare.cell_run_dir(out, cell, 0)) / "checkpoints" / "step_5"
    ckpt.mkdir(parents=True)  # being written: no trainer_state.json yet
    for complete in (False, True):
        if complete:
            (ckpt / "trainer_state.json").write_text("{}")
        assert compare.run_cell(suite, cell, 0, out, False, launcher.split()) is None
        assert ("--resume" in calls.read_text().splitlines()[-1].split()) is complete


def test_concurrent_cells_share_the_cores_out(tmp_path, monkeypatch):
    """N cells at once get cores // N threads each (N processes with every core each oversubscribe the CPU);
    an OMP_NUM_THREADS the user set wins."""
    from refcal_zoo.engine import hardware

    monkeypatch.setattr(hardware.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert [compare.threads_per_cell(n) for n in (1, 2, 6, 32)] == [None, 8, 2, 1]
    launcher, calls = _recording_launcher(tmp_path, "fail")
    suite = compare.get_suite("digits", None)
    cell = next(c for c in suite.cells if c.method == "ce")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for threads, expected in ((3, "3"), (None, "None")):
        compare.run_cell(suite, cell, 0, tmp_path / "o", False, launcher.split(), threads=threads)
        assert calls.read_text().splitlines()[-1].endswith(f"OMP_NUM_THREADS={expected}")
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    compare.run_cell(suite, cell, 0, tmp_path / "o", False, launcher.split(), threads=3)
    assert calls.read_text().splitlines()[-1].endswith("OMP_NUM_THREADS=5")
