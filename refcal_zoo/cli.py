"""``refcal-zoo``: list, inspect, evaluate, publish and push zoo models; export long-tailed datasets.

    refcal-zoo list ["*cifar100lt*"]
    refcal-zoo info resnet32-cifar10lt-refcal
    refcal-zoo eval runs/<name> --dataset digits [--split test] [--json out.json]   # or a zoo name / hf-hub:
    refcal-zoo eval runs/<name> --dataset digits --conformal 0.1 [--conformal-score aps]   # prediction sets
    refcal-zoo card runs/<name>                          # (re-)render runs/<name>/README.md
    refcal-zoo publish runs/<name> --to publish/<name>   # Hub-repo folder: weights, config, card, evidence
    refcal-zoo push publish/<name> --repo org/<name>     # needs HF_TOKEN or `hf auth login`
    refcal-zoo dataset export --dataset uoft-cs/cifar10 --rho 10 --seed 0 --to cifar10-lt
    refcal-zoo zoo register publish/<name> --revision <commit>
    refcal-zoo zoo add-recipes recipes/configs          # index entries for new configs (recipe-only)

Errors print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage + message otherwise)
        print(f"error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def _cmd_list(args: argparse.Namespace) -> None:
    from .zoo import format_table, list_models

    names = list_models(args.pattern, status=args.status)
    if not names:
        print(f"no zoo models match '{args.pattern}'")
        return
    print(format_table(names))


def _cmd_info(args: argparse.Namespace) -> None:
    import yaml

    from .zoo import get_entry

    e = get_entry(args.name)
    info = {"name": e.name, "status": e.status, "repo": e.repo_id, "revision": e.revision or "main",
            **{k: v for k, v in e.to_dict().items() if k not in ("repo", "revision", "status")},
            "train_command": e.train_command,
            **({"build_command": e.build_command} if e.build_command and not e.published else {}),
            "load": (f"refcal_zoo.load('{e.name}')" if e.published
                     else f"refcal_zoo.load('runs/{e.name}') after training")}
    print(yaml.safe_dump(info, sort_keys=False, width=10**6).rstrip())


def _table(metrics: dict[str, Any], has_ts: bool) -> str:
    from .metrics import METRIC_KEYS

    keys = [k for k in METRIC_KEYS if k in metrics]
    width = max(len(k) for k in keys)
    fmt = lambda v: "     n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:>8.4f}"  # noqa: E731
    lines = [f"{'metric':<{width}}  {'raw':>8}" + (f"  {'after TS':>8}" if has_ts else "")]
    for k in keys:
        lines.append(f"{k:<{width}}  {fmt(metrics[k])}" + (f"  {fmt(metrics.get('ts/' + k))}" if has_ts else ""))
    return "\n".join(lines)


def _cmd_eval(args: argparse.Namespace) -> None:
    from .data import load_image_splits
    from .fileio import write_json
    from .hub import ResolveError
    from .hub.loading import predict_logits
    from .metrics import evaluate_with_temperature
    from .zoo import load

    if args.conformal is not None and not 0.0 < args.conformal < 1.0:
        from .errors import RefCalZooError

        raise RefCalZooError(f"--conformal takes a miscoverage level alpha in (0, 1), e.g. 0.1; got {args.conformal}")
    model = load(args.model, revision=args.revision, calibrated=False)
    data = load_image_splits(args.dataset, [args.split], config=args.config, image_column=args.image_column,
                             label_column=args.label_column)
    images, labels = data.images[args.split], data.labels[args.split]
    if data.num_classes != model.num_classes:
        raise ResolveError(f"dataset '{args.dataset}' has {data.num_classes} classes but the model predicts "
                           f"{model.num_classes}; evaluate on a dataset with the model's label set")
    if model.label_names and list(model.label_names) != list(data.class_names):
        print(f"note: class names differ between the model ({model.label_names[:3]}...) and the dataset "
              f"({data.class_names[:3]}...); labels are matched by index", file=sys.stderr)
    logits = predict_logits(model, images, batch_size=args.batch_size).double().numpy()
    y = labels.numpy()
    counts = ((model.zoo_info.get("dataset") or {}).get("train_counts"))
    counts = counts if counts and len(counts) == model.num_classes else None
    temperature = model.zoo_info.get("temperature")
    has_ts = isinstance(temperature, (int, float))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = evaluate_with_temperature(logits, y, temperature if has_ts else None, train_class_counts=counts)
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
    print(f"{model.zoo_info.get('name') or args.model} on {args.dataset} [{args.split}], {len(y)} images"
          + (f", T={temperature:.4f}" if has_ts else ""))
    print(_table(metrics, has_ts))
    conformal = None
    if args.conformal is not None:
        conformal = _conformal_report(model, logits, y, args, temperature if has_ts else None, counts)
    robustness = None
    if args.corrupt is not None:
        robustness = _corruption_report(model, images, labels, args, temperature if has_ts else None, counts)
    if args.json:
        out = {"model": args.model, "source": model.zoo_info.get("source"), "folder": model.zoo_info.get("folder"),
               "sha256": model.zoo_info.get("sha256"), "dataset": args.dataset, "config": args.config,
               "split": args.split, "n": int(len(y)), "temperature": temperature, "metrics": clean}
        if robustness is not None:
            out["corruptions"] = _json_clean(robustness)
        if conformal is not None:
            out["conformal"] = _json_clean(conformal)
        write_json(Path(args.json), out)
        print(f"wrote {args.json}")


def _conformal_calibration(model, logits, y, seed: int = 0):
    """Calibration logits/labels: the model folder's ``val_predictions.npz`` (the run's validation split), else a
    seeded half of the evaluated split (the other half is evaluated). Returns (cal_z, cal_y, test_z, test_y, how)."""
    import numpy as np

    folder = model.zoo_info.get("folder")
    npz = Path(folder) / "val_predictions.npz" if folder else None
    if npz is not None and npz.is_file():
        with np.load(npz) as f:
            cal_z, cal_y = f["logits"].astype(np.float64), f["labels"].astype(np.int64)
        if cal_z.ndim == 2 and cal_z.shape[1] == logits.shape[1]:
            return cal_z, cal_y, logits, y, f"the model's validation split ({len(cal_y)} images)"
    perm = np.random.default_rng(seed).permutation(len(y))
    cal, test = perm[: len(y) // 2], perm[len(y) // 2:]
    return logits[cal], y[cal], logits[test], y[test], (f"a seeded half of the evaluated split ({len(cal)} images; "
                                                        f"the other {len(test)} evaluated)")


def _conformal_report(model, logits, y, args, temperature, counts) -> dict:
    from .calibration import conformal_report

    alpha = args.conformal
    cal_z, cal_y, test_z, test_y, how = _conformal_calibration(model, logits, y)
    if temperature is not None:  # the calibrated probabilities (coverage holds either way)
        cal_z, test_z = cal_z / temperature, test_z / temperature
    groups = [g for g in ("many", "medium", "few") if counts is not None]
    print(f"\nconformal prediction sets, alpha={alpha:g} (target coverage {1 - alpha:.0%}), score "
          f"{args.conformal_score}, calibrated on {how}")
    print(f"{'thresholds':<11} {'coverage':>8} {'set size':>8} {'worst class':>16}"
          + "".join(f" {g + ' cov/size':>16}" for g in groups))
    report = {"alpha": alpha, "score": args.conformal_score, "calibration": how}
    for classwise in (False, True):
        r = conformal_report(cal_z, cal_y, test_z, test_y, alpha, counts, score=args.conformal_score,
                             classwise=classwise)
        report["classwise" if classwise else "marginal"] = r
        worst = f"{r['min_class_coverage']:.4f} (#{r['min_class']})"
        print(f"{'per class' if classwise else 'marginal':<11} {r['coverage']:>8.4f} {r['set_size']:>8.3f} "
              f"{worst:>16}" + "".join(f" {r[g + '/coverage']:>8.4f}/{r[g + '/set_size']:<7.3f}" for g in groups))
        if classwise and r["classes_always_included"]:
            print(f"note: {r['classes_always_included']} classes have too few calibration points for alpha={alpha:g}"
                  " and are in every set")
    return report


def _corruption_report(model, images, labels, args, temperature, counts) -> dict:
    from .data.corruptions import CORRUPTIONS
    from .errors import RefCalZooError
    from .hub.loading import predict_logits
    from .metrics import evaluate_corruptions

    unknown = [c for c in args.corrupt if c not in CORRUPTIONS]
    if unknown:
        raise RefCalZooError(f"unknown corruption '{unknown[0]}'; choose from {', '.join(CORRUPTIONS)}")
    if any(not 1 <= s <= 5 for s in args.severities):
        raise RefCalZooError(f"severities must be within 1..5, got {args.severities}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = evaluate_corruptions(lambda x: predict_logits(model, x, batch_size=args.batch_size), images, labels,
                                      temperature=temperature, corruptions=args.corrupt or None,
                                      severities=args.severities, train_class_counts=counts)
    ts = "ts/ece" in report["clean"]
    print("\ncorruption          sev  accuracy     ECE" + ("  ECE (TS)" if ts else "") + "  misclass. AUROC")
    for c in report["cells"]:
        print(f"{c['corruption']:<19} {c['severity']:>3}  {c['accuracy']:8.4f}  {c['ece']:6.4f}"
              + (f"  {c['ts/ece']:8.4f}" if ts else "") + f"  {c['auroc_misclassification']:15.4f}")
    print(f"mean corruption error (mCE, unnormalised): {report['summary']['mean_corruption_error']:.4f}  "
          f"(clean error {1 - report['clean']['accuracy']:.4f})")
    return report


def _json_clean(obj):
    if isinstance(obj, dict):
        return {k: _json_clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_clean(v) for v in obj]
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


def _cmd_card(args: argparse.Namespace) -> None:
    from .fileio import write_text
    from .hub import build_model_card
    from .hub.checks import check_user_path

    folder = check_user_path(args.run_dir)
    card = build_model_card(folder, repo_id=args.repo_id, **_zoo_links(folder))
    out = Path(args.out) if args.out else folder / "README.md"
    write_text(out, str(card))
    print(f"wrote {out}")


def _zoo_links(folder: Path) -> dict[str, str]:
    """The card's zoo name and timm tag, when the folder holds the weights the zoo index pins for its name."""
    from .fileio import sha256_file
    from .hub import read_folder
    from .zoo import load_index

    try:
        rec = read_folder(folder)
    except Exception:  # noqa: BLE001 - not a model folder: no links; the command itself reports the problem
        return {}
    entry = load_index().get(rec.name)
    weights = folder / "model.safetensors"
    if entry is None or not entry.sha256 or not weights.is_file() or sha256_file(weights) != entry.sha256:
        return {}
    return {"zoo_name": entry.name, "timm_tag": entry.timm_tag}


def _cmd_publish(args: argparse.Namespace) -> None:
    from .hub import publish_run, read_folder

    folder = publish_run(args.run_dir, args.to, name=args.name, repo_id=args.repo_id)
    record = read_folder(folder).record
    files = ", ".join(sorted(p.name for p in folder.iterdir()))
    print(f"published {args.run_dir} -> {folder} ({files}); weights sha256 {record.provenance.weights_sha256}")
    print(f"next: refcal-zoo push {folder} --repo <org>/{record.name or folder.name}")


def _cmd_push(args: argparse.Namespace) -> None:
    from .hub import push_folder

    links = _zoo_links(Path(args.folder)) if args.repo_type == "model" else {}
    info = push_folder(args.folder, args.repo, revision=args.revision, private=args.private, repo_type=args.repo_type,
                       **links)
    oid = getattr(info, "oid", None)
    print(f"pushed {args.folder} to {args.repo} ({args.repo_type}, revision {args.revision or 'main'}): commit {oid} "
          f"{getattr(info, 'commit_url', '')}".rstrip())
    if args.repo_type == "model" and oid:
        print(f"pin it in the zoo: refcal-zoo zoo register {args.folder} --revision {oid}")


def _cmd_dataset_export(args: argparse.Namespace) -> None:
    from .hub import export_longtail_dataset

    folder = export_longtail_dataset(
        args.dataset, args.to, rho=args.rho, seed=args.seed, val_per_class=args.val_per_class,
        val_split=args.val_split, config=args.config, n_max=args.n_max, train_split=args.train_split,
        test_split=args.test_split, image_column=args.image_column, label_column=args.label_column,
        overwrite=args.overwrite)
    rec = json.loads((folder / "lt_indices.json").read_text())
    sizes = rec["export"]["sizes"]
    print(f"exported {args.dataset} (rho={args.rho:g}, seed {args.seed}) -> {folder}: train {sizes['train']}, "
          f"validation {sizes['validation']}, test {sizes['test']} images; train indices sha256 {rec['train_sha256']}")
    print(f"train on it as on the source: a recipe with these dataset settings and dataset.path={folder} (same "
          f"tensors, the source's identity recorded); or as it is: accelerate launch recipes/train.py "
          f"dataset.path={folder} dataset.rho=1 dataset.val_split=validation")


def _cmd_zoo_register(args: argparse.Namespace) -> None:
    from .zoo import update_index

    update_index.run(args)


def _cmd_zoo_add_recipes(args: argparse.Namespace) -> None:
    from .zoo.update_index import add_recipe_entries

    added = add_recipe_entries(args.recipes_dir, index=args.index)
    print(f"added {len(added)} recipe-only entries" + (f": {', '.join(added)}" if added else ""))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="refcal-zoo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="list zoo models")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern (default: *)")
    p.add_argument("--status", choices=["published", "recipe-only"])
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="show one zoo entry")
    p.add_argument("name")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("eval", help="evaluate a model on a dataset split with the full metric suite")
    p.add_argument("model", metavar="NAME_OR_PATH")
    p.add_argument("--dataset", required=True, help="Hub dataset id, local dataset folder, or 'digits'")
    p.add_argument("--split", default="test")
    p.add_argument("--config", help="dataset configuration name")
    p.add_argument("--image-column")
    p.add_argument("--label-column")
    p.add_argument("--revision", help="Hub revision of the model")
    p.add_argument("--batch-size", type=_positive_int, default=256)
    p.add_argument("--json", metavar="OUT", help="also write the metrics as JSON")
    p.add_argument("--corrupt", nargs="*", metavar="NAME", default=None,
                   help="also evaluate on CIFAR-10-C-style corruptions (all ten without names): every metric per "
                        "corruption x severity and the mean corruption error")
    p.add_argument("--severities", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--conformal", type=float, metavar="ALPHA", default=None,
                   help="also report split-conformal prediction sets at miscoverage ALPHA (e.g. 0.1): coverage and "
                        "mean set size overall, per shot group and for the worst class, with one threshold for all "
                        "classes and one per class; calibrated on the model's val_predictions.npz if present, else "
                        "on a seeded half of the evaluated split")
    p.add_argument("--conformal-score", choices=["thr", "aps", "raps"], default="thr")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("card", help="(re-)render the model card of a run or published folder")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", help="where to write it (default: RUN_DIR/README.md)")
    p.add_argument("--repo-id", help="Hub repo id for the card's loading snippet")
    p.set_defaults(func=_cmd_card)

    p = sub.add_parser("publish", help="write a Hub-repo folder from a finished run")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--to", required=True, metavar="FOLDER")
    p.add_argument("--repo-id", help="Hub repo id for the card's loading snippet")
    p.add_argument("--name", help="zoo name to publish under, <arch>-<dataset>-<method> (default: the run's name)")
    p.set_defaults(func=_cmd_publish)

    p = sub.add_parser("push", help="upload a published folder to the Hub (token: HF_TOKEN or `hf auth login`)")
    p.add_argument("folder", metavar="FOLDER")
    p.add_argument("--repo", required=True, metavar="ID", help="org/name")
    p.add_argument("--repo-type", default="model", choices=["model", "dataset"])
    p.add_argument("--revision", help="branch to push to (created if missing)")
    p.add_argument("--private", action="store_true")
    p.set_defaults(func=_cmd_push)

    p = sub.add_parser("dataset", help="dataset tools")
    dsub = p.add_subparsers(dest="dataset_command", required=True, parser_class=_Parser)
    e = dsub.add_parser("export", help="write the LT train / validation / test splits as a parquet dataset folder")
    e.add_argument("--dataset", required=True, help="Hub dataset id, local dataset folder, or 'digits'")
    e.add_argument("--config", help="dataset configuration name")
    e.add_argument("--rho", type=float, required=True, help="imbalance ratio n_max / n_min")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--val-per-class", type=int, default=50)
    e.add_argument("--val-split", help="use this split of the source as validation instead of carving one")
    e.add_argument("--n-max", type=int)
    e.add_argument("--train-split", default="train")
    e.add_argument("--test-split", default="test")
    e.add_argument("--image-column")
    e.add_argument("--label-column")
    e.add_argument("--to", required=True, metavar="FOLDER")
    e.add_argument("--overwrite", action="store_true", help="replace an earlier export in FOLDER")
    e.set_defaults(func=_cmd_dataset_export)

    p = sub.add_parser("zoo", help="zoo index maintenance")
    zsub = p.add_subparsers(dest="zoo_command", required=True, parser_class=_Parser)
    r = zsub.add_parser("register", help="fill an index entry from a published folder")
    from .zoo.update_index import add_arguments

    add_arguments(r)
    r.set_defaults(func=_cmd_zoo_register)
    a = zsub.add_parser("add-recipes", help="add recipe-only entries for configs not yet in the index")
    a.add_argument("recipes_dir", nargs="?", default="recipes/configs", metavar="RECIPES_DIR")
    a.add_argument("--index", help="index file to edit (default: $REFCAL_ZOO_INDEX or the package's)")
    a.set_defaults(func=_cmd_zoo_add_recipes)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    from .errors import RefCalZooError

    try:
        args.func(args)
    except RefCalZooError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. unreadable or unwritable files
        print(f"error: {type(exc).__name__}: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
