"""Benchmark: refcal_zoo.metrics.evaluate_predictions vs the reference libraries, timed in one run.

Computes the full metric suite on ``N x K`` random float32 logits (default 1,000,000 x 100) with our code,
then the same metrics with torchmetrics, netcal, relplot and scikit-learn, prints a timing table with the
ratio ``sum of reference times / our time``, and checks the values agree where the reference is correct.

    python benchmarks/bench_metrics.py                   # 1e6 x 100 (sklearn's OvO AUROC alone takes minutes)
    python benchmarks/bench_metrics.py --n 200000 --k 100 --json benchmarks/results/bench_metrics_cpu.json

Not a test: needs the dev extras (torchmetrics, netcal, relplot); missing references are skipped.
Our SCE, ACE, AURC and E-AURC have no counterpart in these libraries (they are not timed on the reference
side); netcal's equal-mass ECE uses ``np.quantile`` edges and differs from our ``array_split`` bins unless N
is a multiple of the bin count, so it is shown but not required to match.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from refcal_zoo.metrics import evaluate_predictions


def make_data(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Float32 logits of a mixed over/under-confident classifier (~60% accuracy) and int64 labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.standard_normal((n, k), dtype=np.float32)
    hit = rng.random(n) < 0.6
    logits[np.arange(n), np.where(hit, labels, rng.integers(0, k, n))] += 3.0
    logits *= rng.uniform(0.3, 3.0, (n, 1)).astype(np.float32)  # per-sample temperature
    return logits, labels


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="number of samples (default 1e6)")
    ap.add_argument("--k", type=int, default=100, help="number of classes (default 100)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-ovo-reference", action="store_true", help="skip sklearn's (slow) OvO AUROC")
    ap.add_argument("--json", default=None, help="also write the timings and the agreement to this file")
    args = ap.parse_args()

    logits, labels = make_data(args.n, args.k, args.seed)
    cpu = platform.processor() or "cpu"
    print(f"data: {args.n:,} x {args.k} float32 logits; numpy {np.__version__}, {cpu}")
    evaluate_predictions(logits[:2000], labels[:2000], inputs="logits")  # warm-up (imports, caches)

    ours, t_ours = timed(lambda: evaluate_predictions(logits, labels, inputs="logits"))
    print(f"refcal_zoo evaluate_predictions (all {len(ours) - 1} metrics): {t_ours:.2f} s")

    # (metric, reference library, seconds, value, value must match ours, tolerance)
    rows: list[tuple[str, str, float, float | None, bool | None, float]] = []
    ref_time = 0.0

    def ref(metric: str, lib: str, fn: Callable[[], Any], must_match: bool = True, tol: float = 1e-6) -> Any:
        nonlocal ref_time
        value, t = timed(fn)
        ref_time += t
        scalar = None if isinstance(value, np.ndarray) and value.ndim else float(value)
        rows.append((metric, lib, t, scalar, must_match, tol))
        print(f"  {lib:<45s} {metric:<24s} {t:8.2f} s", flush=True)
        return value

    print("references:")
    from scipy.special import softmax

    probs = ref("(softmax for references)", "scipy.special.softmax float64", lambda: softmax(
        logits.astype(np.float64), axis=1))
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(np.float64)

    import sklearn.metrics as skm

    ref("accuracy", "sklearn accuracy_score", lambda: skm.accuracy_score(labels, probs.argmax(1)))
    ref("nll", "sklearn log_loss", lambda: skm.log_loss(labels, probs, labels=np.arange(args.k)))
    ref("brier", "sklearn brier_score_loss(scale_by_half=False)", lambda: skm.brier_score_loss(
        labels, probs, labels=np.arange(args.k), scale_by_half=False))
    if has("torchmetrics"):
        import torch
        from torchmetrics.functional.classification import multiclass_calibration_error

        tp, tl = torch.from_numpy(probs), torch.from_numpy(labels)
        # torchmetrics bins float32 confidences: samples within ~1e-7 of an edge may change bin (tol 1e-4)
        ref("ece", "torchmetrics multiclass_calibration_error", lambda: multiclass_calibration_error(
            tp, tl, args.k, n_bins=15, norm="l1").item(), tol=1e-4)
        ref("mce", "torchmetrics multiclass_calibration_error max", lambda: multiclass_calibration_error(
            tp, tl, args.k, n_bins=15, norm="max").item(), tol=1e-4)
    if has("netcal"):
        from netcal.metrics import ECE, MCE

        ref("ece", "netcal ECE(bins=15)", lambda: ECE(bins=15).measure(probs, labels))
        ref("mce", "netcal MCE(bins=15)", lambda: MCE(bins=15).measure(probs, labels))
        ref("ece_equal_mass", "netcal ECE(bins=15, equal_intervals=False)", lambda: ECE(
            bins=15, equal_intervals=False).measure(probs, labels), must_match=args.n % 15 == 0)
    if has("relplot"):
        import relplot

        def relplot_smece() -> float:
            f, y = relplot.multiclass_logits_to_confidences(logits, labels)
            return relplot.smECE(f, y)

        ref("smece", "relplot smECE (incl. its softmax)", relplot_smece)
    ref("auroc_misclassification", "sklearn roc_auc_score", lambda: skm.roc_auc_score(correct, conf))
    ref("aupr_error", "sklearn average_precision_score",
        lambda: skm.average_precision_score(1 - correct, -conf))

    def fpr95() -> float:
        fpr, tpr, _ = skm.roc_curve(correct, conf, drop_intermediate=False)
        return fpr[np.argmax(tpr >= 0.95)]

    ref("fpr_at_95tpr", "sklearn roc_curve", fpr95)
    if not args.skip_ovo_reference:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref("auroc_ovo", "sklearn roc_auc_score(multi_class='ovo')", lambda: skm.roc_auc_score(
                labels, probs, multi_class="ovo"))

    print()
    header = f"{'metric':<26s}{'reference':<48s}{'ref time s':>11s}{'ours':>22s}{'reference value':>22s}"
    print(f"{header}{'|diff|':>10s}  ok")
    all_ok = True
    for metric, lib, t, value, must, tol in rows:
        if value is None:
            print(f"{metric:<26s}{lib:<48s}{t:11.2f}")
            continue
        mine = ours[metric]
        diff = abs(mine - value)
        ok = diff <= tol * max(1.0, abs(value))
        flag = "yes" if ok else ("NO" if must else "n/a (differs by design)")
        all_ok &= ok or not must
        print(f"{metric:<26s}{lib:<48s}{t:11.2f}{mine:22.12f}{value:22.12f}{diff:10.1e}  {flag}")
    print(f"{'(no reference) sce, ace, aurc, eaurc':<74s}{'':>0s}"
          f"  sce={ours['sce']:.6f} ace={ours['ace']:.6f} aurc={ours['aurc']:.6f} eaurc={ours['eaurc']:.6f}")
    print()
    print(f"sum of reference times: {ref_time:.2f} s   refcal_zoo (full suite): {t_ours:.2f} s   "
          f"ratio: {ref_time / t_ours:.1f}x   values agree: {all_ok}")
    no_softmax = ref_time - sum(row[2] for row in rows if row[3] is None)
    no_ovo = ref_time - sum(row[2] for row in rows if row[0] == "auroc_ovo")
    print(f"  without the references' softmax: {no_softmax:.2f} s ({no_softmax / t_ours:.1f}x);  "
          f"without sklearn's OvO AUROC: {no_ovo:.2f} s ({no_ovo / t_ours:.1f}x, ours still includes it)")
    if args.json:
        from pathlib import Path

        Path(args.json).write_text(json.dumps({
            "n": args.n, "k": args.k, "numpy": np.__version__, "cpu": cpu, "ours_seconds": round(t_ours, 3),
            "references_seconds": round(ref_time, 3), "ratio": round(ref_time / t_ours, 2),
            "ratio_without_ovo_reference": round(no_ovo / t_ours, 2), "values_agree": bool(all_ok),
            "references": [{"metric": m, "library": lib, "seconds": round(t, 3)} for m, lib, t, *_ in rows],
        }, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
