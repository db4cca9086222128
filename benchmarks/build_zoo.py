#!/usr/bin/env python
"""Build the zoo: train every entry of a build suite at its recipe's budget, resumably, and publish each one.

    python benchmarks/build_zoo.py --suite cifar10lt-full                 # this CPU: 6 ResNet-32 + 2 short entries
    python benchmarks/build_zoo.py --suite cifar10lt-full-gpu --parallel 6   # one GPU: full recipes, seeds 0-2
    python benchmarks/build_zoo.py --suite cifar100lt-full --parallel 4    # Hub + a GPU: every CIFAR-100-LT entry
    python benchmarks/build_zoo.py --suite cifar10lt-full --list          # the queue, what is finished, time left

Each (entry, seed) cell is an ordinary recipe run (``recipes/train.py`` in a subprocess, the same machinery as
``compare_methods.py``) written to ``<root>/runs/<cell>-s<seed>/``; ``--root`` defaults to
``benchmarks/results/<suite>`` (git-ignored runs). A finished cell is skipped, an interrupted one resumes from its
newest checkpoint (``--resume``, bit-identical), so the command can be stopped and started again any number of
times. ``--parallel N`` trains N cells at once (one GPU holds many small CIFAR models). After each cell the suite's
``results.csv`` is rewritten and, unless ``--no-publish``, the entry is published from its finished seed with the best
*validation* accuracy: Hub-repo folder, weights embedded in the package, card in ``model_cards/<name>/`` and an
index entry with the exact recipe, overrides and budget. The seed published before competes too, even when its run
folder is gone (its score is read from the published train log). Test metrics play no part in any choice.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "recipes" / "configs"


def _load(name: str, folder: Path = REPO / "benchmarks"):
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


compare = _load("compare_methods")
publish_best = _load("publish_best")
device_runs = _load("device_runs", REPO / "scripts")


@dataclass
class Entry:
    """A zoo entry to build: its name, recipe, the overrides that set its budget, and what its card says of it."""

    name: str
    config: str
    overrides: list[str] = field(default_factory=list)
    budget_note: str = "the recipe's full budget"


@dataclass
class BuildSuite:
    name: str
    entries: list[Entry]
    seeds: tuple[int, ...]
    dataset: tuple[str, str]  # (Hub id, display name)
    data_path: str  # what dataset.path is set to (a Hub id or a local copy)
    description: str


_TWO_STAGE_CPU = 200  # SupCon epochs of the CPU two-stage entry (the release trains 1000)
# The GPU suites select each run's checkpoint by the validation NLL after temperature scaling. The raw NLL (the
# recipes' default, kept by the CPU suite whose published entries it chose) picked epochs before the learning-rate
# decay in several full-budget runs by margins inside the validation split's noise, where the NLL after temperature
# scaling preferred the final weights with half the paired standard error. The runs and the measured margins
# (benchmarks/compare_checkpoints.py) are in the README, "Model selection on validation", and the report.
GPU_SELECT = "train.select=best_ts_nll"


def _with_select(entries: list[Entry]) -> list[Entry]:
    """``entries`` with the GPU suites' selection rule before their own overrides: their cells train with it, and
    the index entries they publish record it, so the recipe + overrides retrain what was published."""
    for entry in entries:
        entry.overrides = [GPU_SELECT, *entry.overrides]
    return entries


def _cifar10lt_full(data: str, gpu: bool) -> BuildSuite:
    entries = [Entry("resnet32-cifar10lt-ce", "resnet32-cifar10lt-ce.yaml"),
               # two views: SupCon's positives then include the image's own other view, so every anchor - tail
               # classes with one image in the batch included - has a positive (one view leaves them out)
               Entry("resnet32-cifar10lt-refcal_joint", "resnet32-cifar10lt-refcal_joint.yaml"),
               # the long-tail baseline, then RefCal-joint on it (issue 16)
               Entry("resnet32-cifar10lt-logit_adjusted", "resnet32-cifar10lt-logit_adjusted.yaml")]
    if gpu:
        entries += [Entry("resnet32-cifar10lt-crl", "resnet32-cifar10lt-crl.yaml"),
                    Entry("resnet32-cifar10lt-refcal_joint_la", "resnet32-cifar10lt-refcal_joint_la.yaml"),
                    Entry("resnet32-cifar10lt-refcal", "resnet32-cifar10lt-refcal.yaml")]
        others = ["ls005", "ls01", "focal", "flsd53", "brier", "mmce", "dca", "mdca", "fl_mdca", "ls_mdca", "mbls",
                  "logitnorm", "adafocal", "refcal_ls", "refcal_mmce", "refcal_crl", "ldam_drw", "balanced_softmax",
                  "mislas"]
        entries += [Entry(f"resnet32-cifar10lt-{m}", f"resnet32-cifar10lt-{m}.yaml") for m in others]
        entries += _other_backbones("cifar10lt")
        return BuildSuite("cifar10lt-full-gpu", _with_select(entries), (0, 1, 2), ("uoft-cs/cifar10", "CIFAR-10-LT"),
                          data, "every CIFAR-10-LT entry at its recipe's full budget (LDAM-DRW: 200 epochs; two-stage "
                          "RefCal: 1000 SupCon + 100 linear epochs), seeds 0-2, for one GPU; checkpoints selected by "
                          f"the validation NLL after temperature scaling (`{GPU_SELECT}`)")
    # The rest of the CPU queue runs shortest first, so entries get published between sessions: the two 30-epoch
    # cells, then CRL (one view: ~9 h at logit_adjusted's 110-130 img/s on the 2-core EPYC with --parallel 2, one
    # core a cell), then the two-view cells (~18 h each at RefCal-joint's 55-63 img/s, --parallel 2). A cell alone
    # (--parallel 1, both cores) runs about 3x faster: logit adjustment 310-390 img/s, two-stage SupCon ~105 img/s.
    # The other backbones come at budgets this CPU affords, named as reduced-budget entries: WRN-28-2 (the
    # WRN-28-10 recipe at a quarter of the width) and EfficientViT-B0, 30 epochs each.
    entries.append(Entry("efficientvit_b0-cifar10lt-ce_e30", "efficientvit_b0-cifar10lt-ce.yaml", ["train.epochs=30"],
                         "30 epochs: a reduced budget (the recipe trains 200)"))
    entries.append(Entry("wrn28_2-cifar10lt-ce_e30", "wrn28_10-cifar10lt-ce.yaml",
                         ["model.arch=wrn28_2_cifar", "train.epochs=30", "train.schedule=cosine",
                          "train.milestones=[]"],
                         "WRN-28-2 instead of WRN-28-10, 30 epochs with a cosine schedule: a reduced budget (the "
                         "recipe trains WRN-28-10 for 200 epochs)"))
    entries += [Entry("resnet32-cifar10lt-crl", "resnet32-cifar10lt-crl.yaml"),
                Entry("resnet32-cifar10lt-refcal_joint_la", "resnet32-cifar10lt-refcal_joint_la.yaml")]
    entries.append(Entry(f"resnet32-cifar10lt-refcal_supcon{_TWO_STAGE_CPU}", "resnet32-cifar10lt-refcal.yaml",
                         [f"train.epochs={_TWO_STAGE_CPU}"],
                         f"{_TWO_STAGE_CPU} SupCon epochs + 100 linear epochs: a reduced budget (the release trains "
                         "1000 SupCon epochs; `cifar10lt-full-gpu` builds that)"))
    return BuildSuite("cifar10lt-full", entries, (0,), ("uoft-cs/cifar10", "CIFAR-10-LT"), data,
                      "ResNet-32 on CIFAR-10-LT (rho 10) at the recipes' budgets, sized for a CPU (two-stage RefCal: "
                      f"{_TWO_STAGE_CPU} SupCon epochs), seed 0 of every entry and more with `--seeds`; reduced-budget "
                      "WRN-28-2 and EfficientViT-B0 entries; "
                      "cells train on the CPU or, where one is lent, a GPU (each card names its devices)")


def _other_backbones(dataset: str) -> list[Entry]:
    """The WideResNet-28-10 and EfficientViT-B0 entries of ``dataset`` (cifar10lt / cifar100lt) at full budget."""
    names = [f"wrn28_10-{dataset}-{m}" for m in ("ce", "refcal_joint", "refcal")]
    names += [f"efficientvit_b0-{dataset}-{m}" for m in ("ce", "refcal_joint")]
    return [Entry(name, f"{name}.yaml") for name in names]


def _cifar100lt_full(data: str) -> BuildSuite:
    methods = ["ce", "crl", "refcal_joint", "refcal", "ls005", "focal", "mmce", "mdca"]
    entries = [Entry(f"resnet32-cifar100lt-{m}", f"resnet32-cifar100lt-{m}.yaml") for m in methods]
    entries += _other_backbones("cifar100lt")
    return BuildSuite("cifar100lt-full", _with_select(entries), (0, 1, 2), ("uoft-cs/cifar100", "CIFAR-100-LT"), data,
                      "ResNet-32 (eight methods), WRN-28-10 and EfficientViT-B0 on CIFAR-100-LT (rho 10) at the "
                      "recipes' full budgets, seeds 0-2, for one GPU "
                      "with access to the Hugging Face Hub (or a local copy of uoft-cs/cifar100); checkpoints "
                      f"selected by the validation NLL after temperature scaling (`{GPU_SELECT}`)")


def get_build_suite(name: str, data: str | None) -> BuildSuite:
    cifar10 = data or str(compare.SHARED_CIFAR10 if compare.SHARED_CIFAR10.is_dir() else "uoft-cs/cifar10")
    factories = {"cifar10lt-full": lambda: _cifar10lt_full(cifar10, gpu=False),
                 "cifar10lt-full-gpu": lambda: _cifar10lt_full(cifar10, gpu=True),
                 "cifar100lt-full": lambda: _cifar100lt_full(data or "uoft-cs/cifar100")}
    if name not in factories:
        raise SystemExit(f"error: unknown build suite '{name}' (choose {', '.join(factories)})")
    return factories[name]()


def as_compare_suite(build: BuildSuite) -> compare.Suite:
    """The same cells in ``compare_methods``' terms (its runner, results table and report read them)."""
    cells = [compare.Cell(e.name, e.config, [f"dataset.path={build.data_path}", *e.overrides]) for e in build.entries]
    return compare.Suite(build.name, cells, seeds=build.seeds, description=build.description,
                         data=build.data_path, command=f"benchmarks/build_zoo.py --suite {build.name}")


def check_publishable(build: BuildSuite, entries: list[Entry], index: str | None) -> None:
    """Refuse, before any training, entries whose recipe + overrides train another architecture than the index
    entry they would be published as (the index would refuse them after hours of training)."""
    from refcal_zoo.config import load_config
    from refcal_zoo.zoo import index_path, load_index

    known = load_index(Path(index) if index else index_path())
    for entry in entries:
        if entry.name not in known:
            continue
        cfg = load_config(CONFIGS / entry.config, [f"dataset.path={build.data_path}", *entry.overrides])
        if cfg.model.arch != known[entry.name].arch:
            raise SystemExit(f"error: {entry.name} would train {cfg.model.arch} but its index entry is "
                             f"{known[entry.name].arch}; drop the model.arch override or pass --no-publish")


def already_published(entry: Entry, run_dir: Path, index: str | None) -> bool:
    """Whether the index already holds ``run_dir``'s weights as ``entry`` (re-running the build is a no-op)."""
    from refcal_zoo.fileio import sha256_file
    from refcal_zoo.zoo import index_path, load_index

    known = load_index(Path(index) if index else index_path()).get(entry.name)
    return bool(known and known.published and known.sha256 == sha256_file(run_dir / "model.safetensors"))


def published_by(known) -> str | None:
    """The build suite whose notes a published index entry carries (None where no build wrote them)."""
    found = re.search(r"`benchmarks/build_zoo\.py --suite ([\w.-]+)`", (known and known.notes) or "")
    return found.group(1) if found else None


def published_seed_number(known) -> str | None:
    """The ``train.seed`` a published index entry was trained with (its last seed override), else None."""
    if not (known and known.published):
        return None
    return next((o.split("=", 1)[1] for o in reversed(known.overrides) if o.startswith("train.seed=")), None)


def published_folders(index_file: Path, name: str, publish_dir: str | Path | None) -> list[Path]:
    """Where entry ``name``'s published folder may be: the package's shipped copy, else ``publish_dir/<name>``."""
    return [index_file.parent / "weights" / name, *([Path(publish_dir) / name] if publish_dir else [])]


def published_seed(entry: Entry, runs: Path, *, index: str | None = None, publish_dir: str | Path | None = None
                   ) -> tuple[str, tuple[float, float] | None] | None:
    """The seed ``entry`` is published from, as ``(<entry>-s<seed>, (validation accuracy, NLL))``, where its run
    folder is not in ``runs`` (trained on a machine that is gone): the score is read from the published copy's
    train log (the package's shipped folder, else ``publish_dir/<entry>``), None where neither has one. None when
    the entry is not published or its run folder is here (then it is one of the candidates anyway): a run here is
    the published one only where it holds the published weights (another build's run of the same seed is not)."""
    from refcal_zoo.fileio import sha256_file
    from refcal_zoo.zoo import index_path, load_index

    index_file = Path(index) if index else index_path()
    known = load_index(index_file).get(entry.name)
    seed = published_seed_number(known)
    here = runs / f"{entry.name}-s{seed}"
    if seed is None or ((here / "metrics.json").is_file() and sha256_file(here / "model.safetensors") == known.sha256):
        return None
    logged = next((f for f in published_folders(index_file, entry.name, publish_dir)
                   if (f / "train_log.jsonl").is_file()), None)
    score = publish_best.selected_validation(logged, "train_log.jsonl") if logged else None
    return f"{entry.name}-s{seed}", score


def seed_spread_note(name: str, rows: list[dict], published: int) -> str | None:
    """A sentence with the test accuracy and ECE after TS of every finished seed of ``name`` (from the suite's
    results rows), so a card shows how far one run of the recipe can land from another; None under two seeds.
    Reporting them chooses nothing: the published seed was picked on validation accuracy."""
    from refcal_zoo.hub.card import SEEDS_NOTE

    group = sorted((r for r in rows if r["method"] == name), key=lambda r: int(r["seed"]))
    if len(group) < 2:
        return None
    acc = [float(r["accuracy"]) for r in group]
    ts_ece = [float(r["ts/ece"]) for r in group]
    seeds = ", ".join(f"seed {r['seed']}{' (published)' if int(r['seed']) == published else ''} {a:.4f} / {e:.4f}"
                      for r, a, e in zip(group, acc, ts_ece, strict=True))
    return (f"{SEEDS_NOTE} (accuracy / ECE after temperature scaling; the published seed was chosen on validation "
            f"accuracy, not on these): {seeds}; mean accuracy {sum(acc) / len(acc):.4f}, range "
            f"{min(acc):.4f}-{max(acc):.4f}.")


def listed_seeds(notes: str) -> set[int]:
    """The seeds whose test metrics ``notes``' seed-spread sentence lists (empty where it has none)."""
    from refcal_zoo.hub.card import SEEDS_NOTE

    spread = notes.partition(f" {SEEDS_NOTE}")[2].partition(f" {publish_best.NOT_SHIPPED_NOTE}")[0]
    return {int(seed) for seed in re.findall(r"\bseed (\d+)(?: \(published\))? \d", spread)}


def missing_seeds(notes: str, name: str, rows: list[dict]) -> list[int]:
    """Seeds ``notes`` list that ``rows`` lack: a refresh from those rows would drop them from the card."""
    return sorted(listed_seeds(notes) - {int(r["seed"]) for r in rows if r["method"] == name})


def with_seed_spread(notes: str, name: str, rows: list[dict], published: int) -> str:
    """``notes`` with its seed-spread sentence (see :func:`seed_spread_note`) replaced by the current one; it goes
    after the build's note and before the one on weights too big to ship (:func:`publish_best.publish_entry`)."""
    from refcal_zoo.hub.card import SEEDS_NOTE

    base, found, shipped = notes.partition(f" {publish_best.NOT_SHIPPED_NOTE}")
    base = base.partition(f" {SEEDS_NOTE}")[0]  # the old spread sentence is the last of the build's note
    parts = (base.strip(), seed_spread_note(name, rows, published), f"{publish_best.NOT_SHIPPED_NOTE}{shipped}"
             if found else "")
    return " ".join(part for part in parts if part)


def refresh_notes(build: BuildSuite, entries: list[Entry], rows: list[dict], *, index: str | None = None,
                  cards: str | Path = REPO / "model_cards") -> list[str]:
    """Bring the seed-spread sentence of every published entry's notes (index, shipped config.json, card) up to date
    with ``rows`` and re-render its card, without the run folders (the seeds trained on machines that are gone).
    Weights are untouched; entries another build published are left alone (``rows`` are not their seeds)."""
    from refcal_zoo.zoo import index_path, load_index
    from refcal_zoo.zoo.update_index import write_index

    index_file = Path(index) if index else index_path()
    known = load_index(index_file)
    plan = []  # (entry, published seed, new notes), every folder checked before any is rewritten
    done = []
    for entry in entries:
        found = known.get(entry.name)
        seed = published_seed_number(found)
        if seed is None:
            continue
        suite = published_by(found)
        if suite != build.name:  # this suite's rows are not the published seed's build
            done.append(f"{entry.name}: notes left as {suite or 'its publisher'} wrote them")
            continue
        if not (index_file.parent / "weights" / entry.name / "config.json").is_file():
            raise SystemExit(f"error: {entry.name} is not shipped in the package ({index_file.parent / 'weights'}); "
                             "re-publish it from its run folder with --publish-only --republish instead")
        lost = missing_seeds(found.notes or "", entry.name, rows)
        if lost:
            raise SystemExit(f"error: the notes of {entry.name} list seeds {', '.join(map(str, lost))} that the "
                             "results.csv read here lacks; pass --results with the suite's full results folder")
        plan.append((found, seed, with_seed_spread(found.notes or "", entry.name, rows, int(seed))))
    for found, seed, notes in plan:
        changed = store_notes(found, notes, index_file.parent / "weights" / found.name, cards)
        done.append(f"{found.name} (seed {seed} published): card re-rendered, "
                    f"{'seed spread in the notes updated' if changed else 'notes unchanged'}")
    write_index(index_file, known)
    return done


def store_notes(found, notes: str, folder: Path, cards: str | Path) -> bool:
    """Put ``notes`` into published index entry ``found`` (the caller writes the index) and its published
    ``folder``'s config.json, and re-render the card there and in ``cards``; the weights and their pins are
    untouched. Returns whether the notes changed."""
    from refcal_zoo.hub.publish import migrate_folder

    changed = notes != (found.notes or "")
    migrate_folder(folder, zoo_name=found.name, timm_tag=found.timm_tag, notes=[notes] if changed else None)
    publish_best.copy_card(folder, Path(cards) / found.name)
    found.notes = notes
    return changed


def build_notes(build: BuildSuite, entry: Entry, seed: int, candidates: list[str]) -> str:
    """The notes a published entry starts with: how it was built, its budget, and which seed won among which."""
    return (f"Built by `benchmarks/build_zoo.py --suite {build.name}` ({build.description}). Budget: "
            f"{entry.budget_note}. {chosen_sentence(seed, candidates)}")


def chosen_sentence(seed: int, candidates: list[str]) -> str:
    return (f"Published seed: {seed}, chosen by validation accuracy among the finished runs "
            f"({', '.join(sorted(candidates))}).")


_CHOSEN = re.compile(r"Published seed: \d+, chosen by validation accuracy among the finished runs \(.*?\)\.(?= |$)")


def keep_notes_current(build: BuildSuite, entry: Entry, seed: int, candidates: list[str], rows: list[dict], *,
                       index: str | None = None, cards: str | Path = REPO / "model_cards",
                       publish_dir: str | Path | None = None) -> None:
    """Where the published seed stays, bring its notes up to date with the runs seen now: the candidates it won
    among, and every finished seed's test spread (:func:`with_seed_spread`). The rest of the notes (how it was
    built, the budget) stays as written when it was published; nothing is rewritten where nothing changed."""
    from refcal_zoo.zoo import index_path, load_index
    from refcal_zoo.zoo.update_index import write_index

    index_file = Path(index) if index else index_path()
    known = load_index(index_file)
    found = known[entry.name]
    old = found.notes or ""
    suite = published_by(found)
    if suite != build.name:  # its seeds and candidates are another build's: not ours to list
        print(f"[{build.name}] {entry.name}: its notes stay as {suite or 'its publisher'} wrote them "
              "(this build's seeds are not the published one's)", flush=True)
        return
    lost = missing_seeds(old, entry.name, rows)
    if lost:
        print(f"[{build.name}] {entry.name}: notes left as they are: they list seeds {', '.join(map(str, lost))} that "
              "the results.csv read here lacks (pass --results with the suite's full results folder)", flush=True)
        return
    notes = with_seed_spread(_CHOSEN.sub(chosen_sentence(seed, candidates), old, count=1), entry.name, rows, seed)
    if notes == old:
        return
    folders = published_folders(index_file, entry.name, publish_dir)
    folder = next((f for f in folders if (f / "config.json").is_file()), None)
    if folder is None:
        print(f"[{build.name}] {entry.name}: its notes are out of date (the seeds seen now) but its published folder "
              f"is not here ({folders[0]}); publish it again with --publish-only --republish where it is", flush=True)
        return
    store_notes(found, notes, folder, cards)
    write_index(index_file, known)
    print(f"[{build.name}] {entry.name}: notes brought up to date with the seeds seen now (card re-rendered)",
          flush=True)


def publish(build: BuildSuite, entry: Entry, runs: Path, *, force: bool = False,
            results_rows: list[dict] | None = None, **paths) -> None:
    """Publish ``entry`` from its finished seed with the best validation accuracy (unless already published;
    ``force`` re-publishes it, e.g. to bring its card up to date). The seed published before takes part in the
    choice even where its run folder is gone (its validation score comes from the published train log), so a new
    seed never replaces a better one unseen; where the published seed stays, its notes get the runs seen now
    (:func:`keep_notes_current`, given ``results_rows``)."""
    from refcal_zoo.zoo import index_path, load_index

    best, scores = publish_best.pick_best(runs, [entry.name])
    known = load_index(Path(paths["index"]) if paths.get("index") else index_path()).get(entry.name)
    incumbent = published_seed(entry, runs, index=paths.get("index"), publish_dir=paths.get("publish_dir"))
    if incumbent is not None:
        name, score = incumbent
        if score is None and not force:
            raise SystemExit(f"error: {entry.name} is published from {name}, whose run folder is not in {runs} and "
                             "whose validation score no published train log holds; put the run folder back in "
                             "runs/ to compare it, or pass --republish to publish the best of the runs here")
        if score is not None:
            best_score = (scores[best.name]["val_accuracy"], scores[best.name]["val_nll"])
            suite = published_by(known)
            by = "" if suite == build.name else f" by --suite {suite}" if suite else " outside this build"
            elsewhere = f"{name} (published before{by}; run folder elsewhere)"
            if publish_best.rank(score) >= publish_best.rank(best_score):
                print(f"[{build.name}] {entry.name}: keeping the published {name} (validation accuracy "
                      f"{score[0]:.4f} against {best_score[0]:.4f} of {best.name}, the best run here)", flush=True)
                if results_rows is not None:
                    keep_notes_current(build, entry, int(name.rsplit("-s", 1)[1]), [*scores, elsewhere],
                                       results_rows, **paths)
                return
            scores[elsewhere] = {"val_accuracy": score[0], "val_nll": score[1]}
    seed = int(best.name.rsplit("-s", 1)[1])
    if not force and already_published(entry, best, paths.get("index")):
        print(f"[{build.name}] {entry.name}: already published from {best.name}", flush=True)
        if results_rows is not None:
            keep_notes_current(build, entry, seed, list(scores), results_rows, **paths)
        return
    lost = missing_seeds(known.notes or "", entry.name, results_rows) if (
        results_rows is not None and published_by(known) == build.name) else []
    if lost:
        raise SystemExit(f"error: publishing {best.name} would drop seeds {', '.join(map(str, lost))} from the notes "
                         f"of {entry.name}: the results.csv read here lacks them; pass --results with the suite's "
                         "full results folder")
    notes = with_seed_spread(build_notes(build, entry, seed, list(scores)), entry.name, results_rows or [], seed)
    publish_best.publish_entry(best, entry.name, recipe=f"recipes/configs/{entry.config}",
                               overrides=[*entry.overrides, f"train.seed={seed}"], dataset=build.dataset,
                               notes=notes, **paths)
    print(f"[{build.name}] published {entry.name} (seed {seed})", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", required=True)
    ap.add_argument("--entries", nargs="*", default=None, help="only these entries (zoo names)")
    ap.add_argument("--seeds", type=int, nargs="*", default=None)
    ap.add_argument("--data", default=None, help="dataset path or Hub id (default: ../shared copy / the Hub)")
    ap.add_argument("--root", default=None, help="where the runs go (default: the results folder); keep long "
                    "builds outside the checkout, e.g. --root ~/zoo_build/<suite>")
    ap.add_argument("--results", default=None, help="results.csv/.md folder (default: the --root folder); e.g. "
                    "benchmarks/results/<suite> to keep the table in the repository while the runs live elsewhere")
    ap.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                    help="extra overrides for every cell (e.g. a smoke budget); published entries record them")
    ap.add_argument("--parallel", type=int, default=1,
                    help="cells trained at once (default 1); each gets cores/N CPU threads (on a 2-core CPU, "
                         "--parallel 2 trains 1.08-1.22x more images/s in total than one cell at a time)")
    ap.add_argument("--no-publish", action="store_true", help="train only; publish nothing")
    ap.add_argument("--publish-only", action="store_true",
                    help="train nothing: record and publish the finished cells (e.g. runs a GPU machine trained, "
                         "unpacked with scripts/device_runs.py), with their corruption studies")
    ap.add_argument("--republish", action="store_true",
                    help="publish a finished entry again even where the index already holds its weights (to bring "
                         "its card, notes and index entry up to date, e.g. after a corrected run record)")
    ap.add_argument("--refresh-notes", action="store_true",
                    help="train and publish nothing: rewrite each published entry's note on its seeds' test spread "
                         "(index, shipped folder, card) from results.csv, e.g. after seeds finished on other "
                         "machines; weights untouched")
    ap.add_argument("--skip", nargs="*", default=[], metavar="RUN",
                    help="run folders not to train, as <entry>-s<seed> (e.g. finished on another machine; "
                         "scripts/zoo_build_gpu.sh passes those listed by scripts/device_runs.py stage)")
    ap.add_argument("--respeed", action="store_true",
                    help="resume interrupted cells with train.py --respeed: precision, layout and compilation chosen "
                         "for this machine instead of kept from the checkpoint (e.g. finish a cell a GPU started "
                         "in bf16 on a CPU without native bf16, which emulates it several times slower than fp32); "
                         "the run record names each stretch's precision")
    ap.add_argument("--no-corruption-study", action="store_true",
                    help="skip the corruption study of each entry's first seed (refcal-zoo eval --corrupt; its "
                         "report goes to <results>/corruptions/ and into the report's full-budget verdict)")
    ap.add_argument("--corruption-seeds", type=int, nargs="+", default=None, metavar="SEED",
                    help="the seeds whose finished cells get the corruption study (default: the suite's first); "
                         "with --publish-only, e.g. --seeds 1 2 --corruption-seeds 1 2 studies finished seeds "
                         "without training, so the report's corruption verdict gets seeds' intervals")
    ap.add_argument("--snapshot", default=None, metavar="DIR",
                    help="keep a copy of every interrupted cell (newest checkpoint, without machine paths) in DIR, "
                         "a folder to commit (e.g. benchmarks/results/<suite>/in_progress; one that git ignores is "
                         "refused), and restore from it "
                         "first: the build then survives the loss of --root (a new machine); see "
                         "scripts/device_runs.py")
    ap.add_argument("--snapshot-every", type=float, default=30.0, metavar="MINUTES",
                    help="how often --snapshot refreshes DIR while cells train (default 30); also when a cell "
                         "finishes and when the build stops")
    ap.add_argument("--list", action="store_true", help="show the queue, what is finished and how far interrupted "
                    "cells got (with a rough time left), then exit")
    ap.add_argument("--index", default=None, help="zoo index to edit (default: the package's)")
    ap.add_argument("--cards", default=str(REPO / "model_cards"))
    ap.add_argument("--publish-dir", default=str(REPO / "publish"))
    ap.add_argument("--launcher", default=None, help="command prefix for each run (default: this python)")
    args = ap.parse_args(argv)
    if args.parallel < 1:
        raise SystemExit("error: --parallel must be >= 1")
    if args.snapshot_every <= 0:
        raise SystemExit("error: --snapshot-every must be > 0 minutes")
    if args.publish_only and args.no_publish:
        raise SystemExit("error: --publish-only and --no-publish exclude each other")
    if args.refresh_notes and (args.no_publish or args.publish_only or args.republish):
        raise SystemExit("error: --refresh-notes only rewrites notes; drop --no-publish, --publish-only, --republish")
    if args.republish and args.no_publish:
        raise SystemExit("error: --republish and --no-publish exclude each other")
    if args.corruption_seeds is not None and args.no_corruption_study:
        raise SystemExit("error: --corruption-seeds and --no-corruption-study exclude each other")

    build = get_build_suite(args.suite, args.data)
    for entry in build.entries:
        entry.overrides += args.override
        if args.override:  # the card must not claim the recipe's budget for a smoke build
            entry.budget_note += f", changed by the build's overrides {' '.join(args.override)}"
    entries = [e for e in build.entries if args.entries is None or e.name in args.entries]
    unknown = set(args.entries or []) - {e.name for e in build.entries}
    if unknown:
        raise SystemExit(f"error: {', '.join(sorted(unknown))} not in suite {build.name} "
                         f"(entries: {', '.join(e.name for e in build.entries)})")
    seeds = args.seeds if args.seeds is not None else list(build.seeds)
    outside = sorted(set(args.corruption_seeds or []) - set(seeds))
    if outside:
        raise SystemExit(f"error: --corruption-seeds {' '.join(map(str, outside))} not among the seeds of this build "
                         f"({' '.join(map(str, seeds))}); add them to --seeds")
    studied = set() if args.no_corruption_study else set(args.corruption_seeds or build.seeds[:1])
    suite = as_compare_suite(build)
    out = Path(args.root).expanduser() if args.root else REPO / "benchmarks" / "results" / build.name
    results = Path(args.results) if args.results else out
    queue = [(cell, seed) for seed in seeds for cell in suite.cells if args.entries is None
             or cell.method in args.entries]  # seed-major: every entry gets its first seed first
    queue = [(cell, seed) for cell, seed in queue if f"{cell.method}-s{seed}" not in args.skip]
    snapshot = Path(args.snapshot) if args.snapshot else None
    if snapshot is not None and not args.list:
        device_runs.check_committable(snapshot)
        for line in device_runs.restore(snapshot, out):
            print(f"[{build.name}] {line} from {snapshot}", flush=True)
    rows = {(r["method"], int(r["seed"])): r for r in compare.read_results(results)}
    if args.refresh_notes:
        for line in refresh_notes(build, entries, list(rows.values()), index=args.index, cards=args.cards):
            print(f"[{build.name}] {line}", flush=True)
        return 0
    # a cell in results.csv whose run folder is not here was finished (and published) on another machine: done
    pending = compare.pending_cells(suite.cells, seeds, rows, out)
    elsewhere = {(cell.method, seed) for cell, seed in queue if (cell, seed) not in pending}
    if args.publish_only:
        queue = [(cell, seed) for cell, seed in queue if (compare.cell_run_dir(out, cell, seed) / "metrics.json")
                 .is_file()]
        if not queue:
            raise SystemExit(f"error: no finished cell of suite {build.name} in {out / 'runs'}; nothing to publish "
                             "(unpack a GPU machine's runs there with scripts/device_runs.py unpack)")
    if args.list:
        for cell, seed in queue:
            run_dir = compare.cell_run_dir(out, cell, seed)
            done = (run_dir / "metrics.json").is_file() or (cell.method, seed) in elsewhere
            partial = compare.resumable(run_dir)
            state = "done" if done else "partial" if partial else "queued"
            where = (": in results.csv, its run folder not in this --root" if (cell.method, seed) in elsewhere
                     else f": {compare.progress(run_dir)}" if partial else "")
            print(f"{state:8} {cell.method} seed {seed}{where}", flush=True)
        return 0
    queue = [(cell, seed) for cell, seed in queue if (cell.method, seed) not in elsewhere]

    if not args.no_publish:
        check_publishable(build, entries, args.index)
    lock = threading.Lock()
    launcher = args.launcher.split() if args.launcher else [sys.executable]
    paths = {"index": args.index, "cards": args.cards, "publish_dir": args.publish_dir}
    failed = []
    threads = compare.threads_per_cell(args.parallel)

    def keep_snapshot() -> None:
        if snapshot is None:
            return
        with lock:
            try:
                for line in device_runs.snapshot(out, snapshot):
                    print(f"[{build.name}] snapshot: {line}", flush=True)
            except Exception as exc:  # noqa: BLE001 - a failed copy must not stop the training; the next one retries
                print(f"[{build.name}] snapshot to {snapshot} FAILED: {type(exc).__name__}: {exc}", flush=True)

    stop = threading.Event()

    def snapshots() -> None:
        while not stop.wait(args.snapshot_every * 60):
            keep_snapshot()

    def work(cell: compare.Cell, seed: int) -> None:
        row = compare.run_cell(suite, cell, seed, out, False, launcher, threads=threads, respeed=args.respeed)
        keep_snapshot()  # the finished cell leaves the snapshot
        with lock:  # one writer of results.csv and of the zoo index at a time
            if row is None:
                failed.append(f"{cell.method} seed {seed}")
                return
            row["run_dir"] = f"runs/{cell.method}-s{seed}"  # relative to --root: no machine paths in the CSV
            rows[(cell.method, seed)] = row
            compare.record_results(results, suite, rows)
            if not args.no_publish:
                try:
                    publish(build, next(e for e in entries if e.name == cell.method), out / "runs",
                            force=args.republish, results_rows=list(rows.values()), **paths)
                except (Exception, SystemExit) as exc:  # one entry's failure does not stop the others
                    print(f"[{build.name}] publishing {cell.method} FAILED: {exc}", flush=True)
                    failed.append(f"{cell.method} (publish)")
        if (seed in studied  # outside the lock: it takes a while
                and compare.corruption_study(suite, cell, seed, out, sys.executable, reports=results, threads=threads)):
            with lock:
                compare.record_results(results, suite, rows)  # results.md gets the corruption table

    if snapshot is not None:
        threading.Thread(target=snapshots, daemon=True).start()
    try:
        compare.run_queue(queue, work, args.parallel)
    except compare.CellInterrupted as exc:
        print(exc, flush=True)
        return 130
    except KeyboardInterrupt:  # Ctrl-C, or a deadline's SIGINT (scripts/zoo_build_gpu.sh) to the whole group
        print(f"[{build.name}] stopped by SIGINT; interrupted cells keep their newest checkpoint: run the same "
              "command again to resume", flush=True)
        return 130
    finally:
        stop.set()
        keep_snapshot()
    if failed:
        print(f"[{build.name}] failed: {', '.join(failed)} (logs in {out / 'logs'})", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
