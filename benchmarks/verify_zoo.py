#!/usr/bin/env python
"""Re-evaluate the shipped weights of the zoo's CIFAR-10 entries, independently of the training pipeline.

    python benchmarks/verify_zoo.py --json benchmarks/results/verify_zoo_cifar10.json
    python benchmarks/verify_zoo.py --entries resnet32-cifar10lt-ce --dataset ../shared/datasets/cifar10

Each published entry is loaded offline by name (``refcal_zoo.load``: the weights shipped in the package, checked
against the index's sha256); an entry too large to ship is read from its published folder (``--publish-dir``,
where the build wrote it) or the HF cache, its sha256 checked against the index, and is reported as skipped when
neither holds it. The test split is read straight from the ``uoft-cs/cifar10`` parquet file with
pyarrow and decoded with PIL, and normalised with the mean/std of the entry's ``pretrained_cfg`` - none of the
library's data code (loader, uint8 tensors, batch transform) is used. The top-1 accuracy must match both the
index entry and the model card's ``model-index`` within ``--tolerance`` (0.003); the exit status is 1 otherwise.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from huggingface_hub import ModelCard
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_CIFAR10 = REPO.parent / "shared" / "datasets" / "cifar10"
CIFAR10_ID = "uoft-cs/cifar10"


def read_test_split(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The CIFAR-10 test split as float32 [N, 32, 32, 3] in [0, 1] and int64 labels, decoded with PIL."""
    files = sorted(folder.glob("plain_text/test-*.parquet"))
    if not files:
        raise SystemExit(f"error: no plain_text/test-*.parquet under '{folder}'; pass --dataset with a local copy "
                         f"of {CIFAR10_ID} (the Hub layout)")
    table = pq.read_table(files)
    images = np.stack([np.asarray(Image.open(io.BytesIO(cell["bytes"])).convert("RGB"), dtype=np.float32) / 255.0
                       for cell in table.column("img").to_pylist()])
    return images, np.asarray(table.column("label").to_pylist(), dtype=np.int64)


def card_accuracy(name: str) -> float | None:
    """The raw top-1 accuracy that ``model_cards/<name>/README.md`` states in its model-index."""
    path = REPO / "model_cards" / name / "README.md"
    if not path.is_file():
        return None
    for result in ModelCard.load(path).data.eval_results or []:
        if result.metric_type == "accuracy" and result.metric_config in (None, "raw"):
            return float(result.metric_value)
    return None


def evaluate(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` (NCHW float input normalised with its pretrained_cfg)."""
    cfg = model.pretrained_cfg
    mean = np.asarray(cfg["mean"], dtype=np.float32)
    std = np.asarray(cfg["std"], dtype=np.float32)
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(((images[i:i + batch_size] - mean) / std).transpose(0, 3, 1, 2).copy())
            correct += int((model(x).argmax(1).numpy() == labels[i:i + batch_size]).sum())
    return correct / len(images)


def load_entry(entry, publish_dir: Path):
    """The index ``entry``'s model, offline, with where it came from; ``None`` where no copy of its weights is here."""
    import refcal_zoo
    from refcal_zoo.fileio import sha256_file
    from refcal_zoo.hub import NotAvailableError
    from refcal_zoo.zoo.index import shipped_folder

    name = entry.name
    folder = publish_dir / name
    if shipped_folder(entry) is None and (folder / "model.safetensors").is_file():
        if sha256_file(folder / "model.safetensors") != entry.sha256:
            raise SystemExit(f"error: '{folder}' does not hold the weights the index pins for '{name}'; re-publish "
                             "it (benchmarks/build_zoo.py --publish-only) or pass --publish-dir")
        return refcal_zoo.ZooModel.from_pretrained(folder), "published folder"
    try:
        model = refcal_zoo.load(name)
    except NotAvailableError:
        return None, "not shipped in the package, not in the published folder nor in the HF cache"
    return model, model.zoo_info.get("source", "?")


def main(argv: list[str] | None = None) -> int:
    from huggingface_hub import constants as hf_constants

    from refcal_zoo.zoo import index_path, load_index

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", nargs="*", default=None, help="zoo names (default: every published CIFAR-10 entry)")
    ap.add_argument("--dataset", default=str(SHARED_CIFAR10), help=f"local copy of {CIFAR10_ID} (Hub layout)")
    ap.add_argument("--publish-dir", default=str(REPO / "publish"),
                    help="where the build published the entries too large to ship in the package")
    ap.add_argument("--tolerance", type=float, default=0.003)
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)

    index = load_index(index_path())
    names = args.entries or [n for n, e in index.items() if e.published and e.dataset.get("id") == CIFAR10_ID]
    for name in names:  # every name checked before the (slow) decoding
        if name not in index:
            raise SystemExit(f"error: '{name}' is not in the zoo index; `refcal-zoo list` shows the entries")
        if not index[name].published or index[name].dataset.get("id") != CIFAR10_ID:
            raise SystemExit(f"error: '{name}' is not a published {CIFAR10_ID} entry; nothing to re-evaluate")
    images, labels = read_test_split(Path(args.dataset).expanduser())
    offline, hf_constants.HF_HUB_OFFLINE = hf_constants.HF_HUB_OFFLINE, True  # what is here: never a download
    try:
        results, ok = [], True
        for name in names:
            model, source = load_entry(index[name], Path(args.publish_dir).expanduser())
            if model is None:
                ok &= args.entries is None  # asked for by name: a failure; in the default sweep: reported
                results.append({"entry": name, "sha256": index[name].sha256, "skipped": source})
                print(f"skip {name}: {source}", flush=True)
                continue
            measured = evaluate(model.eval(), images, labels)
            stated = {"index": index[name].metrics.get("accuracy"), "card": card_accuracy(name)}
            agree = all(v is not None and abs(measured - v) <= args.tolerance for v in stated.values())
            ok &= agree
            results.append({"entry": name, "sha256": index[name].sha256, "n": len(labels), "accuracy": measured,
                            "index_accuracy": stated["index"], "card_accuracy": stated["card"], "agrees": agree,
                            "weights_from": source})
            print(f"{'ok  ' if agree else 'FAIL'} {name}: {measured:.4f} re-evaluated, index {stated['index']}, card "
                  f"{stated['card']} (tolerance {args.tolerance})", flush=True)
    finally:
        hf_constants.HF_HUB_OFFLINE = offline
    if args.json:
        Path(args.json).write_text(json.dumps({"dataset": f"{CIFAR10_ID} test split (local parquet, PIL decode)",
                                               "tolerance": args.tolerance, "entries": results}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
