#!/usr/bin/env python
"""Add the test metrics per frequency third to shipped zoo entries whose run folder is gone, and re-render their cards.

    python scripts/add_frequency_thirds.py resnet32-cifar10lt-ce resnet20-cifar10lt-ce_e5 \
        --data ../shared/datasets/cifar10

Publishing adds ``head/`` / ``mid/`` / ``tail/`` metrics (the most frequent 30% of classes, the rarest 30%, the rest) to
``metrics.json`` from the run's test logits, and the card shows them where the usual shot groups are one group (every
CIFAR-10-LT class at rho 10 has > 100 training images). Entries published before that, from run folders on earlier
machines, have no test logits: this recomputes them from the shipped weights (sha256-checked by ``refcal_zoo.load``),
checks that they reproduce the shipped ``metrics.json`` (accuracy exactly, NLL and ECE to 1e-5), adds the thirds,
re-renders the card with :func:`refcal_zoo.hub.migrate_folder` (weights, notes and prediction sets untouched) and
copies it to ``model_cards/<name>/``. Entries with a run folder are re-published by ``benchmarks/build_zoo.py`` instead.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def add_thirds(name: str, data: str, cards: Path) -> str:
    """Backfill one shipped entry (see the module docstring); returns a line saying what it did."""
    import refcal_zoo
    from refcal_zoo.data import load_image_splits
    from refcal_zoo.fileio import write_json
    from refcal_zoo.hub.card import frequency_third_metrics, read_folder
    from refcal_zoo.hub.loading import predict_logits
    from refcal_zoo.hub.publish import migrate_folder
    from refcal_zoo.metrics import evaluate_with_temperature
    from refcal_zoo.zoo import get_entry
    from refcal_zoo.zoo.index import INDEX_PATH

    entry = get_entry(name)
    folder = INDEX_PATH.parent / "weights" / name
    if not (folder / "metrics.json").is_file():
        raise SystemExit(f"error: '{name}' has no shipped folder with metrics.json ({folder}); give a shipped entry")
    shipped = json.loads((folder / "metrics.json").read_text())
    if "head/n" in shipped:
        return f"{name}: has its frequency thirds already"
    model = refcal_zoo.load(name, calibrated=False)
    split = load_image_splits(data, ["test"])
    logits = predict_logits(model, split.images["test"], batch_size=500).double().numpy()
    labels = split.labels["test"].numpy()
    rec = read_folder(folder)
    t = rec.record.temperature if rec.record is not None else None
    again = evaluate_with_temperature(logits, labels, t, train_class_counts=rec.record.dataset.train_counts)
    off = [k for k in ("accuracy", "ts/accuracy") if again[k] != shipped[k]]
    off += [k for k in ("nll", "ece", "ts/nll", "ts/ece") if abs(again[k] - shipped[k]) > 1e-5]
    if off:
        raise SystemExit(f"error: the shipped weights of '{name}' do not reproduce its metrics.json on '{data}' "
                         f"({', '.join(f'{k}: {again[k]:.6f} vs {shipped[k]:.6f}' for k in off)}); check the dataset")
    with tempfile.TemporaryDirectory() as tmp:
        view = Path(tmp) / name  # the shipped files + the recomputed test logits, as a run folder would have them
        shutil.copytree(folder, view)
        np.savez(view / "test_predictions.npz", logits=logits.astype(np.float32), labels=labels)
        thirds = frequency_third_metrics(read_folder(view))
    if not thirds:
        raise SystemExit(f"error: '{name}' has no training counts to split its classes by")
    write_json(folder / "metrics.json", {**shipped, **thirds})
    migrate_folder(folder, zoo_name=name, timm_tag=entry.timm_tag)
    (cards / name).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folder / "README.md", cards / name / "README.md")
    return (f"{name}: test accuracy {again['accuracy']:.4f} reproduced; head / mid / tail accuracy "
            f"{thirds['head/accuracy']:.3f} / {thirds['mid/accuracy']:.3f} / {thirds['tail/accuracy']:.3f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="+", metavar="NAME", help="shipped zoo entries")
    ap.add_argument("--data", required=True, help="the dataset the entries were trained on (its test split)")
    ap.add_argument("--cards", type=Path, default=REPO / "model_cards", help="where the model cards are copied")
    args = ap.parse_args(argv)
    for name in args.names:
        print(add_thirds(name, args.data, args.cards), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
