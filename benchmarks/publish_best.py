#!/usr/bin/env python
"""Publish the best checkpoint of a suite's methods as a zoo entry, chosen on the validation split only.

    python benchmarks/publish_best.py --suite cifar10lt --methods ce                   # -> resnet20-cifar10lt-ce_e5
    python benchmarks/publish_best.py --suite cifar10lt --methods refcal refcal_joint  # the best RefCal variant

Among the finished (method, seed) runs of ``benchmarks/results/<suite>/runs/``, the winner has the highest
validation accuracy of its selected checkpoint (ties: lower validation NLL), read from the run's ``log.jsonl``;
test metrics play no part. The winner is published under ``<arch>-<suite>-<method>`` (``refcal-zoo publish``:
``publish/<name>/``, git-ignored), its card and reliability diagrams are copied to ``model_cards/<name>/``, and it
is registered in the zoo index with its weights embedded (small models), the suite's recipe and overrides as the
way to retrain it, and a note on the budget. Nothing is pushed: run ``refcal-zoo push`` with a token for that.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("compare_methods", REPO / "benchmarks" / "compare_methods.py")
compare = importlib.util.module_from_spec(_spec)
sys.modules["compare_methods"] = compare
_spec.loader.exec_module(compare)

DATASET_IDS = {"cifar10lt": ("uoft-cs/cifar10", "CIFAR-10-LT"), "digits": ("digits", "digits-LT")}
# suites whose budget is below the recipe's: their entries are named as reduced-budget ones ("_e5": 5 epochs)
NAME_SUFFIX = {"cifar10lt": "_e5"}


def selected_validation(run_dir: Path, log: str = "log.jsonl") -> tuple[float, float]:
    """(validation accuracy, validation NLL) of the checkpoint the run selected: its last ``selected`` log entry
    (``log``: a run folder's ``log.jsonl``, or a published folder's ``train_log.jsonl``)."""
    entries = [json.loads(line) for line in (run_dir / log).read_text().splitlines() if line.strip()]
    chosen = [e for e in entries if e.get("selected") and "val_accuracy" in e]
    if not chosen:
        raise SystemExit(f"error: {run_dir}/{log} has no selected epoch with validation metrics")
    last = chosen[-1]
    return float(last["val_accuracy"]), float(last.get("val_nll", float("nan")))


def rank(score: tuple[float, float]) -> tuple[float, float]:
    """Sort key of a (validation accuracy, validation NLL) score: higher accuracy first, then lower NLL."""
    return score[0], -score[1]


def pick_best(runs: Path, methods: list[str]) -> tuple[Path, dict]:
    """The finished run of ``methods`` with the best validation accuracy (then NLL); with every candidate's score."""
    scores = {}
    for method in methods:
        for run_dir in sorted(runs.glob(f"{method}-s*")):
            if run_dir.is_dir() and (run_dir / "metrics.json").is_file():
                scores[run_dir] = selected_validation(run_dir)
    if not scores:
        raise SystemExit(f"error: no finished runs of {methods} in {runs}; run the suite first")
    best = max(scores, key=lambda d: rank(scores[d]))
    return best, {d.name: {"val_accuracy": a, "val_nll": n} for d, (a, n) in scores.items()}


NOT_SHIPPED_NOTE = "Weights not shipped in the package"


def copy_card(folder: Path, card_dir: Path) -> Path:
    """Copy a published folder's card and its reliability diagrams to ``card_dir`` (``model_cards/<name>/``)."""
    card_dir.mkdir(parents=True, exist_ok=True)
    for f in ("README.md", "reliability.png", "reliability_ts.png"):
        if (folder / f).is_file():
            shutil.copyfile(folder / f, card_dir / f)
    return card_dir


def publish_entry(run_dir: Path, name: str, *, recipe: str, overrides: list[str], dataset: tuple[str, str],
                  notes: str, index: str | Path | None = None, cards: str | Path = REPO / "model_cards",
                  publish_dir: str | Path = REPO / "publish") -> tuple[Path, Path, Path]:
    """Publish a finished run as zoo entry ``name``: Hub-repo folder, index entry (with the recipe, the overrides
    that retrain it and a note on the budget), the card in ``model_cards/<name>/``, and the weights inside the
    package where the model fits its limit (sharded over 5 MB; larger models load from the Hub once the folder is
    pushed)."""
    from refcal_zoo.hub import publish_run
    from refcal_zoo.hub.publish import migrate_folder
    from refcal_zoo.zoo import index_path, load_index
    from refcal_zoo.zoo.update_index import MAX_EMBED_MODEL_BYTES, embed_problem, register, write_index

    # nothing pushed: no hf-hub line; the note (budget, how it was built) goes into config.json and the card
    folder = publish_run(run_dir, Path(publish_dir) / name, name=name, notes=[notes])
    index = Path(index) if index else index_path()
    too_big = embed_problem(folder)
    entry = register(folder, name=name, index=index, embed=too_big is None)
    if too_big is None:
        card_source = index.parent / "weights" / name  # the embedded copy's card names the zoo entry and tag
    else:  # the Hub folder's card names them instead: it is the copy users get
        card_source = migrate_folder(folder, zoo_name=name, timm_tag=entry.timm_tag)
        shown = folder.resolve().relative_to(REPO) if folder.resolve().is_relative_to(REPO) else f"<published>/{name}"
        size = (folder / "model.safetensors").stat().st_size
        notes += (f" {NOT_SHIPPED_NOTE} ({size / 1e6:.1f} MB; it ships models up to "
                  f"{MAX_EMBED_MODEL_BYTES / 1e6:.0f} MB): push the published folder with `refcal-zoo push {shown} "
                  f"--repo {entry.repo_id}` and it loads by name from the Hub.")
    card_dir = copy_card(card_source, Path(cards) / name)
    entries = load_index(index)
    entry = entries[name]
    entry.recipe = recipe
    entry.overrides = [f"name={name}", *overrides]
    entry.dataset.update({"id": dataset[0], "name": dataset[1]})
    entry.notes = notes
    write_index(index, entries)
    return folder, card_dir, index


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", required=True, choices=sorted(DATASET_IDS))
    ap.add_argument("--methods", nargs="+", required=True, help="candidate methods (the best run of any wins)")
    ap.add_argument("--results", default=None, help="suite results folder (default benchmarks/results/<suite>)")
    ap.add_argument("--index", default=None, help="zoo index to edit (default: the package's)")
    ap.add_argument("--cards", default=str(REPO / "model_cards"), help="where model cards go")
    ap.add_argument("--publish-dir", default=str(REPO / "publish"), help="where the Hub-repo folder goes")
    args = ap.parse_args(argv)

    from refcal_zoo.record import read_record

    results = Path(args.results) if args.results else REPO / "benchmarks" / "results" / args.suite
    best, scores = pick_best(results / "runs", args.methods)
    method, seed = best.name.rsplit("-s", 1)
    cfg = json.loads((best / "config.json").read_text())
    arch = cfg["architecture"].removesuffix("_cifar")
    name = f"{arch}-{args.suite}-{method}{NAME_SUFFIX.get(args.suite, '')}"
    print(f"candidates (validation): {json.dumps(scores, indent=1)}\nbest: {best.name} -> {name}")

    suite = compare.get_suite(args.suite, "DATA")
    cell = next(c for c in suite.cells if c.method == method)
    budget = read_record(cfg).budget
    dataset_id, dataset_name = DATASET_IDS[args.suite]
    notes = (f"Best {'/'.join(args.methods)} run of the `{args.suite}` benchmark suite by validation accuracy "
             f"({best.name}; {suite.description}). Trained {budget.epochs} epochs in "
             f"{budget.train_seconds:.0f} s on 2 CPU cores, on the JPEG copy of {dataset_id} in "
             "../shared; a reduced budget, not the recipe's full one (see the card and docs/results.md).")
    folder, card_dir, index = publish_entry(
        best, name, recipe=f"recipes/configs/{cell.config}",
        overrides=[*(o for o in cell.overrides if not o.startswith("dataset.path=")), f"train.seed={seed}"],
        dataset=(dataset_id, dataset_name), notes=notes, index=args.index, cards=args.cards,
        publish_dir=args.publish_dir)
    print(f"published {folder}, card {card_dir}, registered '{name}' in {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
