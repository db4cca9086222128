#!/usr/bin/env python
"""Is a run's selected checkpoint really better than its final one? A paired comparison on validation only.

    python benchmarks/compare_checkpoints.py ~/zoo_build/cifar10lt-full/runs/resnet32-cifar10lt-ce-s1
    python benchmarks/compare_checkpoints.py RUN --json out.json

A finished run folder keeps two full models: ``best/`` (the epoch its selection rule chose) and ``last/`` (the
final epoch). Both are evaluated on the run's own validation split (rebuilt from its ``config.yaml``; ``best/``
must reproduce the run's ``val_predictions.npz``, which proves the split and preprocessing are the ones the run
used), and compared image by image: the mean per-image NLL difference, raw and after each checkpoint's own
temperature, with its paired standard error and a bootstrap 95% interval. A selection margin inside that interval
is noise of the validation split, not evidence for the chosen epoch. The test split is never read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.special import log_softmax

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from refcal_zoo.calibration import fit_temperature  # noqa: E402
from refcal_zoo.config import load_config  # noqa: E402
from refcal_zoo.data import prepare_data  # noqa: E402
from refcal_zoo.errors import RefCalZooError  # noqa: E402
from refcal_zoo.hub.loading import load_folder, predict_logits  # noqa: E402

IDENTITY_TOLERANCE = 1e-3  # logits: float32 recomputation on another thread count differs by ~1e-5


def per_image_nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``-log softmax(logits / T)[y]`` for every row, in float64."""
    logp = log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)
    return -logp[np.arange(len(labels)), labels]


def paired_difference(a: np.ndarray, b: np.ndarray, *, n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean of ``a - b`` (paired per image), its standard error and a percentile bootstrap 95% interval."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    return {"mean": float(d.mean()), "se": float(d.std(ddof=1) / np.sqrt(len(d))),
            "low": float(np.quantile(boots, 0.025)), "high": float(np.quantile(boots, 0.975))}


def compare(val_logits: dict[str, np.ndarray], labels: np.ndarray, *, n_boot: int = 2000) -> dict[str, object]:
    """Accuracy, NLL and NLL after temperature scaling of two checkpoints' validation logits, and their paired
    differences (first minus second: negative means the first is better)."""
    name_a, name_b = val_logits
    out: dict[str, object] = {"images": len(labels)}
    losses = {}  # per-image losses of each checkpoint: their means are reported, their differences paired
    for name, z in val_logits.items():
        temperature = fit_temperature(z, labels)
        losses[name] = {"nll": per_image_nll(z, labels), "ts_nll": per_image_nll(z, labels, temperature)}
        out[name] = {"accuracy": float((z.argmax(axis=1) == labels).mean()),
                     "nll": float(losses[name]["nll"].mean()), "temperature": temperature,
                     "ts_nll": float(losses[name]["ts_nll"].mean())}
    out[f"{name_a}-{name_b}"] = {key: paired_difference(losses[name_a][key], losses[name_b][key], n_boot=n_boot)
                                 for key in ("nll", "ts_nll")}
    return out


def validation_logits(run: Path, folders: tuple[str, str], data_path: str | None = None
                      ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Both checkpoints' logits on ``run``'s validation split (its dataset read from ``data_path`` where given),
    after checking that split against the run's own."""
    problems = [f"'{run / p}' is missing" for p in ("config.yaml", "val_predictions.npz", *folders)
                if not (run / p).exists()]
    if problems:
        raise SystemExit(f"error: {'; '.join(problems)}: pass a finished run folder (it holds best/ and last/)")
    data = prepare_data(load_config(run / "config.yaml", [f"dataset.path={data_path}"] if data_path else []).dataset)
    saved = np.load(run / "val_predictions.npz")
    labels = data.val_labels.numpy()
    if labels.shape != saved["labels"].shape or not (labels == saved["labels"]).all():
        raise SystemExit(f"error: the validation split rebuilt from '{run / 'config.yaml'}' is not the run's "
                         "(labels differ from val_predictions.npz); is the dataset the one it trained on (--data)?")
    logits = {f: predict_logits(load_folder(run / f).model, data.val_images).numpy() for f in folders}
    if "best" in logits:  # best/ must reproduce the run's saved validation logits
        gap = float(np.abs(logits["best"] - saved["logits"]).max())
        if gap > IDENTITY_TOLERANCE:
            raise SystemExit(f"error: best/ gives logits up to {gap:.2g} away from the run's val_predictions.npz: "
                             "the weights or the preprocessing are not the run's; refusing to compare")
    return logits, labels


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a finished run folder")
    p.add_argument("--checkpoints", nargs=2, default=["best", "last"], metavar=("A", "B"))
    p.add_argument("--data", help="the dataset (Hub id or local copy) where the run's own path is not valid here")
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--json", type=Path, help="also write the comparison as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    try:
        logits, labels = validation_logits(args.run, tuple(args.checkpoints), args.data)
    except RefCalZooError as exc:  # a bad dataset path, config or weight file: one line, no traceback
        raise SystemExit(f"error: {exc}") from None
    result = compare(logits, labels, n_boot=args.bootstrap)
    a, b = args.checkpoints
    print(f"{args.run.name}: {result['images']} validation images")
    for name in (a, b):
        r = result[name]
        print(f"  {name:5} accuracy {r['accuracy']:.4f}  NLL {r['nll']:.4f}  NLL after TS {r['ts_nll']:.4f} "
              f"(T {r['temperature']:.3f})")
    for key, label in (("nll", "NLL"), ("ts_nll", "NLL after TS")):
        d = result[f"{a}-{b}"][key]
        print(f"  {label} {a} - {b}: {d['mean']:+.4f} (paired SE {d['se']:.4f}, bootstrap 95% "
              f"[{d['low']:+.4f}, {d['high']:+.4f}])")
    if args.json:
        args.json.write_text(json.dumps({"run": args.run.name, **result}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
