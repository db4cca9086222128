#!/usr/bin/env python
"""Generate docs/results.md from the suites' CSVs (never typed numbers).

    python benchmarks/make_report.py   # reads benchmarks/results/<suite>/results.csv; writes docs/results.md and
                                       # the README's results section (between the results markers)

Each suite that has results gets its table (mean ± 95% t-interval over seeds), its corruption table when present,
the command that produced it and how complete it is; suites without results are listed as not run. The throughput
figures come from the benchmark JSONs in benchmarks/results/.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

from refcal_zoo.record import join_and

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

_spec = importlib.util.spec_from_file_location("compare_methods", REPO / "benchmarks" / "compare_methods.py")
compare = importlib.util.module_from_spec(_spec)
sys.modules["compare_methods"] = compare
_spec.loader.exec_module(compare)

SUITES = ("digits", "cifar10lt", "cifar10lt-budget", "cifar10lt-budget-gpu", "cifar100lt-gpu")


def suite_section(name: str) -> str:
    out = RESULTS / name
    rows = compare.read_results(out)
    suite = compare.get_suite(name, None)
    expected = len(suite.cells) * len(suite.seeds)
    command = suite.command or f"python benchmarks/compare_methods.py --suite {name}"
    head = f"## `{name}`\n\n{suite.description}.\n\nCommand: `{command}`.\n\n"
    if not rows:
        return head + "Not run yet.\n"
    done = f"{len(rows)} of {expected} (method, seed) cells finished"
    body = f"{done}.\n\n{compare.markdown_table(compare.summarize(rows))}\n"
    extra = [findings_section(name), longtail_section(name),
             budget_section(name) if name.startswith("cifar10lt-budget") else ""]
    body += "".join("\n" + part for part in extra if part)
    if (out / "corruptions").is_dir():
        body += (f"\nCorruption study ({compare.studied_seeds_words(out)}):\n\n" + compare.corruption_table(out)
                 + "\n")
    for plot in ("budget.png", "reliability_grid.png", "accuracy_ece_auroc.png", "risk_coverage.png"):
        if (out / plot).is_file():
            body += f"\n![{plot}](../benchmarks/results/{name}/{plot})\n"
    return head + body


LONGTAIL_KEYS = ("accuracy", "head/accuracy", "mid/accuracy", "tail/accuracy", "cp/coverage", "cp/set_size",
                 "cp/tail/coverage", "cp/worst_class_coverage", "cpcw/coverage", "cpcw/set_size",
                 "cpcw/tail/coverage", "cpcw/worst_class_coverage")


README_LONGTAIL_KEYS = ("tail/accuracy", "cp/coverage", "cp/set_size", "cp/tail/coverage", "cpcw/tail/coverage",
                        "cpcw/worst_class_coverage")


def longtail_section(name: str) -> str:
    """Accuracy per frequency third and split-conformal prediction sets per third, for the runs that saved their
    validation and test logits (``compare_methods.longtail_columns``)."""
    rows = [r for r in compare.read_results(RESULTS / name) if r.get("cp/coverage") not in (None, "")]
    if not rows:
        return ""
    a = compare.CONFORMAL_ALPHA
    text = (f"### Long tail and prediction sets on `{name}`\n\n"
            "Accuracy on the test images of the most frequent 30% of classes (`head`), the rarest 30% (`tail`) and "
            f"the rest (`mid`); split conformal prediction at alpha {a:g} (thr score on the raw logits, thresholds "
            "fitted on the validation split, evaluated on test): `cp/` one threshold for all classes (coverage "
            f"guaranteed >= {1 - a:g} over all test images), `cpcw/` one per class (guaranteed for every class). "
            "`coverage` is the fraction of test labels inside their set, `set_size` the mean number of labels, "
            "`worst_class_coverage` the lowest per-class coverage. Only the runs that saved their logits "
            f"({len(rows)} cells) are included.\n\n")
    return text + compare.markdown_table(compare.summarize(rows, keys=LONGTAIL_KEYS), keys=LONGTAIL_KEYS) + "\n"


# ---------------------------------------------------------------------------------------------- comparisons
REFCAL_VARIANTS = ("refcal_joint", "refcal", "refcal_supcon200", "refcal_joint_la")
BASELINES = ("ce", "crl", "ldam_drw", "logit_adjusted", "balanced_softmax", "mislas")  # calibration + long-tail
# (key, +1 if higher is better else -1, label)
COMPARED = (("accuracy", 1, "accuracy"), ("auroc_misclassification", 1, "failure AUROC"),
            ("auroc_ovo", 1, "OvO AUROC"), ("ece", -1, "ECE"), ("ts/ece", -1, "ECE after TS"), ("nll", -1, "NLL"))


def _values(rows: list[dict], method: str, key: str) -> list[float]:
    vals = [float(r[key]) for r in rows if r["method"] == method and r.get(key) not in (None, "")]
    return [v for v in vals if math.isfinite(v)]


def welch_difference(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """mean(a) - mean(b) and its 95% Welch-Satterthwaite interval (nan bounds with fewer than 2 values a side)."""
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    diff = ma - mb
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, math.nan
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1) / len(a)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = compare.t_quantile_975(dof) * se  # fractional Welch dof, as scipy's ttest_ind
    return diff, diff - half, diff + half


def verdict(diff: float, lo: float, hi: float, sign: int, seeds: tuple[int, int] = (1, 1)) -> str:
    """'better' / 'worse' when the 95% interval excludes 0, else 'no clear difference'; without an interval (a side
    with one seed, ``seeds`` = (variant's, baseline's)) the direction, tagged with what it rests on."""
    if not math.isfinite(lo):
        tag = "1 seed" if seeds == (1, 1) else f"{seeds[0]} vs {seeds[1]} seeds, no interval"
        return f"better ({tag})" if diff * sign > 0 else f"worse ({tag})"
    if lo > 0 or hi < 0:
        return "better" if diff * sign > 0 else "worse"
    return "no clear difference"


def comparisons(rows: list[dict], compared: tuple[tuple[str, int, str], ...] = COMPARED) -> list[dict]:
    """Every RefCal variant against every baseline present, on every compared metric."""
    methods = {r["method"] for r in rows}
    out = []
    for variant in (v for v in REFCAL_VARIANTS if v in methods):
        for base in (b for b in BASELINES if b in methods):
            entry = {"variant": variant, "baseline": base}
            for key, sign, _ in compared:
                a, b = _values(rows, variant, key), _values(rows, base, key)
                if a and b:
                    diff, lo, hi = welch_difference(a, b)
                    entry[key] = (diff, lo, hi, verdict(diff, lo, hi, sign, (len(a), len(b))))
            out.append(entry)
    return out


def _fmt_diff(cell) -> str:
    diff, lo, hi, word = cell
    interval = f" [{lo:+.4f}, {hi:+.4f}]" if math.isfinite(lo) else ""
    return f"{diff:+.4f}{interval} {word}"


def answer(entry: dict) -> str:
    """One generated sentence: did the variant improve failure AUROC and ECE at equal-or-better accuracy?"""
    acc = entry.get("accuracy", (0, 0, 0, "n/a"))[3]
    auroc = entry.get("auroc_misclassification", (0, 0, 0, "n/a"))[3]
    ece = entry.get("ece", (0, 0, 0, "n/a"))[3]
    ts_ece = entry.get("ts/ece", (0, 0, 0, "n/a"))[3]
    equal_or_better = not acc.startswith("worse")
    improved = auroc.startswith("better") and ece.startswith("better")
    claim = "yes" if improved and equal_or_better else "no"
    return (f"`{entry['variant']}` vs `{entry['baseline']}`: **{claim}** - accuracy {acc}, failure AUROC {auroc}, "
            f"ECE {ece} (after temperature scaling: {ts_ece}).")


def findings_section(name: str) -> str:
    rows = compare.read_results(RESULTS / name)
    found = comparisons(rows)
    if not found:
        return ""
    keys = [k for k, _, _ in COMPARED]
    lines = [f"### Does RefCal beat CE, CRL and the long-tail baselines on `{name}`?", "",
             "Differences RefCal variant minus baseline, mean over seeds with a 95% Welch interval; \"better\" or "
             "\"worse\" only when the interval excludes zero (for ECE and NLL lower is better). Generated from "
             "`results.csv`.", "",
             "| variant | vs | " + " | ".join(label for _, _, label in COMPARED) + " |",
             "|---|---|" + "---|" * len(COMPARED)]
    for e in found:
        lines.append(f"| {e['variant']} | {e['baseline']} | "
                     + " | ".join(_fmt_diff(e[k]) if k in e else "n/a" for k in keys) + " |")
    lines += ["", "Improved failure AUROC **and** ECE at equal-or-better accuracy?", ""]
    lines += [f"- {answer(e)}" for e in found]
    return "\n".join(lines) + "\n"


# The paper's CIFAR-10-LT appendix numbers as reported in a reviewer summary (not checked against the paper; see
# ../shared/reference/refcal_method.md, section 4.2), fractions. Shown for orientation only.
PAPER_CIFAR10LT = {"ce": {"accuracy": 0.8530, "auroc_ovo": 0.9840, "ece": 0.0935},
                   "refcal": {"accuracy": 0.8970, "auroc_ovo": 0.9882, "ece": 0.0860}}


def _paper_comparison(rows: list[dict], variants: tuple[str, ...]) -> list[str]:
    """The paper's numbers beside ours (seed means of ``rows``, keyed by short method name), and each of the paper's
    three claims (RefCal beats CE on accuracy, OvO AUROC and ECE) checked for every RefCal variant present."""
    summary = {e["method"]: e for e in compare.summarize(rows, ("accuracy", "auroc_ovo", "ece"))}
    lines = ["| method | paper accuracy | ours | paper OvO AUROC | ours | paper ECE | ours |",
             "|---|---|---|---|---|---|---|"]
    for paper_name, ours_names in (("ce", ("ce",)), ("refcal", variants)):
        for ours in ours_names:
            if ours not in summary:
                continue
            p, o = PAPER_CIFAR10LT[paper_name], summary[ours]
            lines.append(f"| {ours} | {p['accuracy']:.4f} | {o['accuracy'][0]:.4f} | {p['auroc_ovo']:.4f} | "
                         f"{o['auroc_ovo'][0]:.4f} | {p['ece']:.4f} | {o['ece'][0]:.4f} |")
    claims = []
    for variant in variants:
        if variant in summary and "ce" in summary:
            for key, sign, label in (("accuracy", 1, "higher accuracy"), ("auroc_ovo", 1, "higher OvO AUROC"),
                                     ("ece", -1, "lower ECE")):
                ours, ce = _values(rows, variant, key), _values(rows, "ce", key)
                if not ours or not ce:  # a metric one side's results do not carry
                    continue
                diff, lo, hi = welch_difference(ours, ce)
                word = verdict(diff, lo, hi, sign, (len(ours), len(ce)))
                if min(len(ours), len(ce)) < 2:  # one run each: a direction, never a reproduction
                    holds = ("in the paper's direction, not established" if diff * sign > 0
                             else "not in the paper's direction")
                else:
                    holds = "reproduced" if word.startswith("better") else "not reproduced"
                claims.append(f"- Paper: RefCal has {label} than CE. `{variant}` here: {holds} "
                              f"(difference {diff:+.4f}, {word}).")
    return [*lines, "", *claims, ""]


def _fullbudget_paper_lines() -> list[str]:
    """The paper's claims at the recipes' budget (``cifar10lt-full``), once a RefCal entry has finished there."""
    rows = [{**r, "method": _short_method(r["method"])} for r in compare.read_results(RESULTS / "cifar10lt-full")]
    variants = tuple(v for v in REFCAL_VARIANTS if any(r["method"] == v for r in rows))
    if not variants or not any(r["method"] == "ce" for r in rows):
        return []
    return ["At the recipes' budget (`cifar10lt-full`: ResNet-32, 200 epochs; two-stage RefCal with the SupCon budget "
            f"its name states; {_seeds_phrase(rows, ('ce', *variants))}):", "",
            *_paper_comparison(rows, variants)]


def _seed_counts(rows: list[dict]) -> dict[str, int]:
    """How many seeds each method of ``rows`` has finished."""
    return {m: len({r["seed"] for r in rows if r["method"] == m}) for m in {r["method"] for r in rows}}


def _seeds_phrase(rows: list[dict], methods: tuple[str, ...]) -> str:
    """How many seeds stand behind a comparison of ``methods``, and what that allows."""
    counts = _seed_counts(rows)
    n = [counts.get(m, 0) for m in methods]
    if max(n) < 2:
        return "1 seed, so each difference is a single-run observation"
    if min(n) == max(n):
        return f"{n[0]} seeds"
    return ("seeds: " + ", ".join(f"{m} {c}" for m, c in zip(methods, n, strict=True))
            + "; a difference with a one-seed side is a single-run observation")


def paper_section() -> str:
    rows = compare.read_results(RESULTS / "cifar10lt")
    if not rows:
        return ""
    lines = ["## Against the paper's claims", "",
             "The paper reports (CIFAR-10-LT appendix table, as quoted by a reviewer summary we could not check "
             "against the paper, fractions; backbone and budget unknown, the release trains 1000 + 100 epochs) "
             "against our `cifar10lt` suite (ResNet-20, 5 epochs, mean over seeds):", "",
             *_paper_comparison(rows, ("refcal", "refcal_joint")), *_fullbudget_paper_lines()]
    lines += [
        "Why the two differ, as far as we can tell:",
        "",
        "- **Budget.** Our CPU suite trains 5 epochs (two-stage: 5 contrastive + 5 linear) where the literature "
        "trains 200 (CE) and the release's SupCon stage 1000 epochs. Supervised contrastive pre-training is known "
        "to need long schedules; at 5 epochs its features are far from converged, so the two-stage recipe is "
        "handicapped most. The budget sweeps (`cifar10lt-budget` on CPU, `cifar10lt-budget-gpu` on one GPU, "
        "above) measure how the gap moves with budget up to 12x this one; the zoo build (`cifar10lt-full`, above) "
        "trains ResNet-32 at the recipes' budgets, and the `cifar100lt-gpu` suite runs the full budgets on a GPU.",
        "- **Backbone.** ResNet-20 instead of ResNet-32 (time); the paper's backbone for this table is unknown.",
        "- **Data.** `../shared/datasets/cifar10` is CIFAR-10 re-encoded as small JPEGs; compression artefacts may "
        "cost every method some accuracy against the PNG originals (not measured here).",
        "- **Seeds.** The paper's table has one number per method; ours are means over 3 seeds, and at this budget "
        "the seed-to-seed spread is often larger than the differences between methods.",
        "- **Metric definitions.** The paper's \"refinement\" is the macro one-vs-one AUROC (`auroc_ovo`), "
        "which is near 1 for any decent classifier; refinement proper (does confidence separate right from wrong "
        "answers) is `auroc_misclassification`, reported beside it.",
        "- **Selection.** We select checkpoints and fit temperatures on a validation split carved from training "
        "images; the release selects on the test set (a known defect we do not copy).",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- full-budget zoo build
BUILD_SUITES = ("cifar10lt-full", "cifar10lt-full-gpu", "cifar100lt-full")
SHOT_KEYS = ("accuracy", "auroc_misclassification", "ece", "ts/ece")
# Published reference points (fractions): MiSLAS (Zhong et al., CVPR 2021, Table 3/4: ResNet-32, CIFAR-10-LT rho 10,
# PNG originals) and plain CE at LDAM-DRW's budget (Cao et al., NeurIPS 2019, Table 2); see
# ../shared/reference/longtail_conformal_speed.md.
LITERATURE_CIFAR10LT = (("MiSLAS (ResNet-32, 200 + 10 epochs)", 0.900, 0.0120),
                        ("CE, LDAM-DRW schedule (ResNet-32, 200 epochs)", 0.864, None))


def _build_module():
    spec = importlib.util.spec_from_file_location("build_zoo", REPO / "benchmarks" / "build_zoo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_zoo"] = module
    spec.loader.exec_module(module)
    return module


def _short_method(entry: str) -> str:
    """``resnet32-cifar10lt-refcal_joint`` -> ``refcal_joint``: the ResNet-32 entries are compared by method; the
    other backbones keep their full names (they are listed, not compared)."""
    return entry.rsplit("-", 1)[-1] if entry.startswith("resnet32-") else entry


def early_selection_lines(build, rows: list[dict]) -> list[str]:
    """Cells whose validation-selected epoch precedes their step schedule's first learning-rate decay: their
    scores say as much about the selection rule as about the method, and a reader comparing methods must know."""
    from refcal_zoo.config import config_to_dict, load_config
    from refcal_zoo.hub.card import first_lr_decay, selected_stage

    early = []
    for entry in build.entries:
        cfg = load_config(REPO / "recipes" / "configs" / entry.config, list(entry.overrides), validate=False)
        stage = selected_stage(config_to_dict(cfg), cfg.method.name)
        decay = first_lr_decay(stage)
        if decay is None:
            continue
        for r in rows:
            epoch = r.get("selected_epoch")
            if r["entry"] == entry.name and epoch not in (None, "") and int(epoch) <= decay:
                early.append((entry.name, int(r["seed"]), int(epoch), cfg.train.select, stage["epochs"]))
    if not early:
        return []
    cells = ", ".join(f"{name} seed {seed} (epoch {epoch} of {epochs}, selected by `{rule}`)"
                      for name, seed, epoch, rule, epochs in sorted(early, key=lambda c: (c[0], c[1])))
    why = ("The raw validation NLL, which rewards calibration as well as refinement, ranked these checkpoints above "
           "every decayed epoch, so these cells' scores reflect the selection rule as much as the method. "
           "The GPU build suites select by `best_ts_nll` (the NLL after temperature scaling) instead; "
           "`benchmarks/compare_checkpoints.py` measures, on validation, how far such a pick's margin over the "
           "final epoch stands out from the split's noise." if any(c[3] == "best_nll" for c in early) else
           "Their selection rule ranked these checkpoints above every decayed epoch, so these cells' scores reflect "
           "the selection as much as the method.")
    return [f"Selected before the learning-rate decay: {cells}. {why}", ""]


def rule_pick_lines(rows: list[dict]) -> list[str]:
    """Where the selection rules disagree, on the validation log of each cell that logged every rule's score."""
    rules = compare.SELECTION_RULES
    complete = [r for r in rows if all(r.get(f"pick/{rule}/epoch") not in (None, "") for rule in rules)]
    if not complete:
        return []
    header = "| cell | " + " | ".join(f"`{rule}`: epoch (val acc)" for rule in rules) + " |"
    lines = ["Selection rules on each cell's validation log (the epoch each would pick and its validation accuracy; "
             "validation only, for cells that logged every rule's score):", "", header,
             "|---" * (len(rules) + 1) + "|"]
    for r in sorted(complete, key=lambda r: (r["entry"], int(r["seed"]))):
        picks = [f"{int(float(r[f'pick/{rule}/epoch']))} ({float(r[f'pick/{rule}/val_accuracy']):.3f})"
                 for rule in rules]
        lines.append(f"| {r['entry']} seed {r['seed']} | " + " | ".join(picks) + " |")
    differ = sum(len({r[f"pick/{rule}/epoch"] for rule in ("best_nll", "best_ts_nll")}) > 1 for r in complete)
    lines += ["", f"`best_nll` and `best_ts_nll` pick different epochs in {differ} of {len(complete)} cells.", ""]
    return lines


def fullbudget_section(name: str) -> str:
    """The verdict at the recipes' budgets: RefCal (both variants) vs CE vs CRL, overall and per shot group."""
    build = _build_module().get_build_suite(name, "DATA")
    rows = compare.read_results(RESULTS / name)
    head = (f"## `{name}` (zoo build at full budget)\n\n{build.description}.\n\n"
            f"Command: `python benchmarks/build_zoo.py --suite {name}`.\n\n")
    if not rows:
        return head + "No cell has finished yet.\n"
    rows = [{**r, "entry": r["method"], "method": _short_method(r["method"])} for r in rows]
    seeds = _seed_counts(rows)
    finished = {(r["entry"], int(r["seed"])) for r in rows}
    planned = {(e.name, s) for s in build.seeds for e in build.entries}
    pending = [f"{e.name} seed {s}" for s in build.seeds for e in build.entries if (e.name, s) not in finished]
    extra = sorted(finished - planned, key=lambda cell: (cell[1], cell[0]))  # further seeds run with --seeds
    lines = [f"{len(planned & finished)} of {len(planned)} (entry, seed) cells finished"
             + (f"; still to train: {', '.join(pending)}" if pending else "")
             + (f"; further seeds finished: {', '.join(f'{e} seed {s}' for e, s in extra)}" if extra else "") + ".",
             "", compare.markdown_table(compare.summarize(rows)), ""]
    groups = [f"{g}/{k}" for g in ("many", "medium", "few") for k in SHOT_KEYS]
    shot = {g: {r.get(f"{g}/n") for r in rows} - {None, "", "0"} for g in ("medium", "few")}
    if any(groups[0] in r for r in rows) and any(shot.values()):  # on CIFAR-10-LT every class is "many"
        lines += ["Per shot group (many > 100, medium 20-100, few < 20 training images per class):", "",
                  compare.markdown_table(compare.summarize(rows, groups), groups), ""]
    with_sets = [r for r in rows if r.get("cp/coverage") not in (None, "")]
    if with_sets:
        lines += ["Per frequency third (head / tail: the 30% most / least frequent classes) and split-conformal "
                  f"prediction sets at alpha {compare.CONFORMAL_ALPHA:g} (`cp/` one threshold, `cpcw/` one per "
                  "class; thr score on the raw logits, fitted on validation, measured on test; the cards and "
                  "`ZooModel.predict_set` use the logits / T, so their coverage and set sizes differ slightly):", "",
                  compare.markdown_table(compare.summarize(with_sets, LONGTAIL_KEYS), LONGTAIL_KEYS), ""]
    if max(seeds.values()) < 2:
        lines += ["Only one seed per entry has finished: every difference below is a single-run observation, not "
                  "an established effect (no interval can be formed).", ""]
    elif min(seeds.values()) < 2:
        several = ", ".join(f"`{m}` ({n} seeds)" for m, n in sorted(seeds.items()) if n > 1)
        lines += [f"Several seeds have finished only for {several}: a difference between two of these carries a "
                  "95% Welch interval and says \"better\" or \"worse\" only when it excludes zero; a difference "
                  "with a one-seed side is a single-run observation (\"no interval\").", ""]
    lines += early_selection_lines(build, rows) + rule_pick_lines(rows)
    found = comparisons(rows)
    if found:
        lines += [f"- {answer(e)}" for e in found] + [""]
    if name.startswith("cifar10lt"):
        summary = {e["method"]: e for e in compare.summarize(rows, ("accuracy", "ece", "ts/ece"))}
        lines += ["Where we stand (test accuracy / ECE; literature numbers on the PNG originals, ours on the JPEG "
                  "copy):", "", "| model | accuracy | ECE | ECE after TS |", "|---|---|---|---|"]
        lines += [f"| {label} (published) | {acc:.4f} | {ece:.4f} | |" if ece is not None else
                  f"| {label} (published) | {acc:.4f} | | |" for label, acc, ece in LITERATURE_CIFAR10LT]
        for paper_name in ("ce", "refcal"):
            p = PAPER_CIFAR10LT[paper_name]
            lines.append(f"| RefCal paper: {paper_name} (backbone, budget unknown) | {p['accuracy']:.4f} | "
                         f"{p['ece']:.4f} | |")
        for method, e in sorted(summary.items()):
            lines.append(f"| ours: {method} ({seeds[method]} seed{'s' if seeds[method] > 1 else ''}) | "
                         f"{e['accuracy'][0]:.4f} | {e['ece'][0]:.4f} | {e['ts/ece'][0]:.4f} |")
        lines.append("")
    if (RESULTS / name / "corruptions").is_dir():
        more = [s for s in compare.studied_seeds(RESULTS / name) if s != build.seeds[0]]
        which = f"seed {build.seeds[0]} of each entry"
        if more:
            which += f", seed{'s' if len(more) > 1 else ''} {join_and(more)} too where a row names it"
        lines += [f"Corruption study ({which}; 10 corruptions x 5 severities of the test split):", "",
                  compare.corruption_table(RESULTS / name), "",
                  *corruption_lines(RESULTS / name / "corruptions")]
    return head + "\n".join(lines)


# (summary key of a corruption report, +1 if higher is better else -1, label)
CORRUPTION_COMPARED = (("mean_corruption_error", -1, "mCE"), ("mean/ece", -1, "corrupted ECE"),
                       ("mean/ts/ece", -1, "corrupted ECE after TS"),
                       ("mean/auroc_misclassification", 1, "corrupted failure AUROC"))


def corruption_lines(folder: Path) -> list[str]:
    """Every RefCal variant against every baseline under corruption (the reports' summaries, per seed studied):
    generated sentences with the seeds' interval, or the single-run caveat."""
    rows = []
    for path in sorted(folder.glob("*-s*.json")):
        entry, seed = path.stem.rsplit("-s", 1)
        summary = json.loads(path.read_text())["corruptions"]["summary"]
        rows.append({"method": _short_method(entry), "seed": seed,
                     **{k: summary[k] for k, _, _ in CORRUPTION_COMPARED if k in summary}})
    def mean(method: str, key: str) -> float:
        values = _values(rows, method, key)
        return sum(values) / len(values)

    out = []
    for e in comparisons(rows, CORRUPTION_COMPARED):
        v, b = e["variant"], e["baseline"]
        parts = [f"{label} {mean(v, key):.4f} vs {mean(b, key):.4f} ({_fmt_diff(e[key])})"
                 for key, _, label in CORRUPTION_COMPARED if key in e]
        if parts:
            out.append(f"- `{v}` vs `{b}` under corruption: " + "; ".join(parts) + ".")
    if not out:
        return []
    single = max(len({r["seed"] for r in rows if r["method"] == m}) for m in {r["method"] for r in rows}) < 2
    return [*out, *(["", "One seed studied per entry: each of these is a single-run observation."] if single else []),
            ""]


def budget_section(name: str = "cifar10lt-budget") -> str:
    """The budget sweep: every method per budget (seed means), and where each RefCal curve meets CE's."""
    rows = compare.read_results(RESULTS / name)
    curves = compare.budget_curves(rows)
    if not curves:
        return ""
    units = sorted({u for points in curves.values() for u, _, _ in points})
    devices = ", ".join(sorted({r["device"] for r in rows if r.get("device")})) or "not recorded"
    unrecorded = sum(not r.get("device") for r in rows)
    if unrecorded and devices != "not recorded":
        devices += f" ({unrecorded} cell(s) ran before the device was recorded)"
    lines = ["### How the gap moves with budget", "",
             f"Seed means; per-seed values in the CSV. Trained on: {devices}.", "",
             "| budget (CE-epoch units) | method | seeds | train min | accuracy | failure AUROC | ECE | ECE after TS |",
             "|---|---|---|---|---|---|---|---|"]
    for u in units:
        for method, points in curves.items():
            for uu, t, p in points:
                if uu == u:
                    lines.append(f"| {u} | {method} | {p['seeds']} | {t / 60:.1f} | {p['accuracy']:.4f} | "
                                 f"{p['auroc_misclassification']:.4f} | {p['ece']:.4f} | {p['ts/ece']:.4f} |")
    lines += ["", *crossing_lines(curves)]
    if name != "cifar10lt-budget":
        lines += device_agreement_lines(rows, compare.read_results(RESULTS / "cifar10lt-budget"))
    return "\n".join(lines) + "\n"


def device_agreement_lines(gpu_rows: list[dict], cpu_rows: list[dict]) -> list[str]:
    """The cells both sweeps trained (same config and seed): how far the two devices' results lie apart."""
    cpu = {(r["method"], r["seed"]): r for r in cpu_rows}
    pairs = [(g, cpu[(g["method"], g["seed"])]) for g in gpu_rows if (g["method"], g["seed"]) in cpu]
    if not pairs:
        return []
    lines = ["", "The same cells on the 2-core CPU (`cifar10lt-budget`), same configs and seeds. Other floating-point "
             "kernels (GPU, another torch build) send training down another path, so one cell can move between devices "
             "as much as between seeds (compare the two GPU seeds above).", "",
             "| cell | seed | CPU accuracy | GPU accuracy | CPU train min | GPU train min |",
             "|---|---|---|---|---|---|"]
    for g, c in pairs:
        lines.append(f"| {g['method']} | {g['seed']} | {float(c['accuracy']):.4f} | {float(g['accuracy']):.4f} | "
                     f"{float(c['train_seconds']) / 60:.1f} | {float(g['train_seconds']) / 60:.1f} |")
    return lines


def crossing_lines(curves: dict[str, list[tuple[int, float, dict]]]) -> list[str]:
    """Per method: its gap to CE at every budget (mean over the seeds both have, and per seed), and where it
    first reaches CE's accuracy with every seed agreeing."""
    if "ce" not in curves:
        return []
    ce = {u: p for u, _, p in curves["ce"]}
    ce_seconds = {u: t for u, t, _ in curves["ce"]}
    lines = []
    for method, points in curves.items():
        if method == "ce":
            continue
        parts, times, crossed = [], [], None
        for u, t, p in points:
            if u not in ce:
                continue
            acc, ce_acc = p["per_seed"]["accuracy"], ce[u]["per_seed"]["accuracy"]
            paired = [acc[s] - ce_acc[s] for s in sorted(set(acc) & set(ce_acc))]
            if not paired:
                continue
            mean = sum(paired) / len(paired)
            each = "/".join(f"{g:+.4f}" for g in paired)
            parts.append(f"{mean:+.4f} at {u}" + (f" (seeds {each})" if len(paired) > 1 else ""))
            times.append(f"{t / ce_seconds[u]:.2f}x at {u}")
            if crossed is None and all(g >= 0 for g in paired):
                crossed = u
        if not parts:
            continue
        where = (f"it reaches CE's accuracy at {crossed} units" + (" with every seed" if ce[crossed]["seeds"] > 1
                                                                  else "")
                 if crossed is not None else "it stays below CE at every measured budget")
        lines.append(f"- `{method}` minus CE accuracy: {', '.join(parts)}; {where}. Its training time against "
                     f"CE's: {', '.join(times)}.")
        top = max(u for u, _, _ in points if u in ce)
        p = next(p for u, _, p in points if u == top)
        d = {k: p[k] - ce[top][k] for k in ("auroc_misclassification", "ece", "ts/ece")}
        lines.append(f"  At {top} units, against CE (seed means): failure AUROC {d['auroc_misclassification']:+.4f}, "
                     f"ECE {d['ece']:+.4f}, ECE after TS {d['ts/ece']:+.4f}.")
    return lines


def throughput_section() -> str:
    lines = ["## Throughput (from the benchmark scripts)", ""]
    pipe = RESULTS / "bench_pipeline_cpu.json"
    if pipe.is_file():
        p = json.loads(pipe.read_text())
        lines.append(f"- `benchmarks/bench_pipeline.py` ({p['arch']}, {p['data']}, {p['device']}): training loop / "
                     f"bare model = {p['loop_over_model']}, data pipeline / model = {p['pipeline_over_model']}.")
    step = RESULTS / "bench_step_cpu.json"
    if step.is_file():
        s = json.loads(step.read_text())["results"]
        ratios = ", ".join(f"{k} {v['ratio_to_ce']}" for k, v in s.items())
        lines.append(f"- `benchmarks/bench_step.py` (training step vs CE): {ratios}.")
    metrics = RESULTS / "bench_metrics_cpu.json"
    if metrics.is_file():
        m = json.loads(metrics.read_text())
        lines.append(f"- `benchmarks/bench_metrics.py --n {m['n']} --k {m['k']}`: the full metric suite takes "
                     f"{m['ours_seconds']} s, the reference libraries {m['references_seconds']} s for the metrics "
                     f"they have: {m['ratio']}x ({m['ratio_without_ovo_reference']}x without sklearn's OvO AUROC); "
                     f"values agree: {m['values_agree']}.")
    return "\n".join(lines) + "\n"


README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def readme_section() -> str:
    """The headline table(s) for the README: the finished suites' accuracy / ECE / failure AUROC."""
    keys = ("accuracy", "ece", "ts/ece", "auroc_misclassification", "auroc_ovo")
    parts = []
    for name in SUITES:
        rows = compare.read_results(RESULTS / name)
        if not rows:
            continue
        suite = compare.get_suite(name, None)
        done = f"{len(rows)} of {len(suite.cells) * len(suite.seeds)} cells"
        curves = compare.budget_curves(rows)
        if curves:  # budget sweeps: the crossing analysis, the table is in docs/results.md
            parts.append(f"**`{name}`** ({suite.description}; {len(rows)} cells):\n\n"
                         + "\n".join(crossing_lines(curves)))
            continue
        part = (f"**`{name}`** ({suite.description}; {done}):\n\n"
                + compare.markdown_table(compare.summarize(rows, keys), keys))
        found = comparisons(rows)
        if found:
            part += ("\n\nRefCal improved failure AUROC **and** ECE at equal-or-better accuracy (95% Welch intervals "
                     "over seeds)?\n\n" + "\n".join(f"- {answer(e)}" for e in found))
        with_sets = [r for r in rows if r.get("cp/coverage") not in (None, "")]
        if with_sets:
            part += (f"\n\nLong tail and prediction sets (runs that saved their logits; `head`/`tail`: the 30% most /"
                     f" least frequent classes; split conformal at alpha {compare.CONFORMAL_ALPHA:g}, `cp/` one "
                     "threshold, `cpcw/` one per class; see docs/results.md):\n\n"
                     + compare.markdown_table(compare.summarize(with_sets, README_LONGTAIL_KEYS),
                                              README_LONGTAIL_KEYS))
        parts.append(part)
    return "\n\n".join(parts) if parts else "No suite has results yet."


def update_readme() -> None:
    path = REPO / "README.md"
    text = path.read_text()
    if README_START in text and README_END in text:
        head, rest = text.split(README_START, 1)
        _, tail = rest.split(README_END, 1)
        path.write_text(f"{head}{README_START}\n{readme_section()}\n{README_END}{tail}")


def main() -> None:
    parts = ["# Results: does RefCal deliver on long-tailed data?", "",
             "Generated by `python benchmarks/make_report.py` from the CSVs in `benchmarks/results/`. Models are "
             "selected and temperatures fitted on the validation split; every number is on the untouched test split. "
             "Budgets are stated per suite.", ""]
    parts += [suite_section(name) for name in SUITES]
    parts += [fullbudget_section(name) for name in BUILD_SUITES]
    parts.append(paper_section())
    parts.append(throughput_section())
    target = REPO / "docs" / "results.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(parts))
    update_readme()
    print(f"wrote {target} and the README's results section")


if __name__ == "__main__":
    main()
