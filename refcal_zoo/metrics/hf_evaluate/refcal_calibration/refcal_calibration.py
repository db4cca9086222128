# Hugging Face `evaluate` metric module for refcal_zoo's calibration and refinement suite.
# Load it offline from this folder:
#     evaluate.load("<path to>/refcal_zoo/metrics/hf_evaluate/refcal_calibration")
# evaluate parses the imports of this file as text: one import per line (never `from x import a, b`).
"""refcal_calibration: calibration and refinement metrics of refcal_zoo as an `evaluate` metric."""

import datasets
import evaluate
import numpy as np

import refcal_zoo.metrics as refcal_metrics

_CITATION = """\
@inproceedings{guo2017calibration, title={On Calibration of Modern Neural Networks},
author={Guo, Chuan and Pleiss, Geoff and Sun, Yu and Weinberger, Kilian Q.}, booktitle={ICML}, year={2017}}
@inproceedings{nixon2019measuring, title={Measuring Calibration in Deep Learning},
author={Nixon, Jeremy and Dusenberry, Michael W. and Zhang, Linchuan and Jerfel, Ghassen and Tran, Dustin},
booktitle={CVPR Workshops}, year={2019}}
@inproceedings{blasiok2024smooth, title={Smooth ECE: Principled Reliability Diagrams via Kernel Smoothing},
author={B{\\l}asiok, Jaros{\\l}aw and Nakkiran, Preetum}, booktitle={ICLR}, year={2024}}
@inproceedings{geifman2019bias, title={Bias-Reduced Uncertainty Estimation for Deep Neural Classifiers},
author={Geifman, Yonatan and Uziel, Guy and El-Yaniv, Ran}, booktitle={ICLR}, year={2019}}
"""

_DESCRIPTION = """\
Calibration (ECE, MCE, equal-mass ECE, SCE, ACE, smooth ECE), refinement (misclassification AUROC, one-vs-one
AUROC, AUPR-error, FPR@95%TPR), selective classification (AURC, E-AURC) and proper scores (accuracy, NLL,
Brier) of a multiclass classifier, computed in float64 on the whole evaluation set by
`refcal_zoo.metrics.evaluate_predictions`. Optional per shot-group (many/medium/few) breakdown for
long-tailed data.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of per-sample lists of K logits or K probabilities.
    references: list of integer labels in [0, K).
    train_class_counts: optional list of K training counts per class; adds many/, medium/, few/ keys.
    n_bins: number of bins of the binned calibration errors (default 15).
    inputs: "auto" (probabilities iff every entry is in [0, 1] and rows sum to 1 within 1e-4), "logits"
        or "probs".
    group_thresholds: (hi, lo) shot-group thresholds, default (100, 20).
Returns:
    A flat dict with the keys accuracy, nll, brier, ece, mce, ece_equal_mass, sce, ace, smece,
    auroc_misclassification, auroc_ovo, aupr_error, fpr_at_95tpr, aurc, eaurc and n (fractions, not %).
Examples:
    >>> metric = evaluate.load("refcal_zoo/metrics/hf_evaluate/refcal_calibration")
    >>> logits = [[2.0, 0.5], [0.1, 1.0], [1.5, 0.2]]
    >>> out = metric.compute(predictions=logits, references=[0, 1, 1], inputs="logits")
    >>> round(out["accuracy"], 4)
    0.6667
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RefcalCalibration(evaluate.Metric):
    """`evaluate` wrapper of :func:`refcal_zoo.metrics.evaluate_predictions`."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION + "\nMetric keys:\n"
            + "\n".join(f"    {k}: {v}" for k, v in refcal_metrics.METRIC_DEFINITIONS.items()),
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Value("int64"),
                }
            ),
            reference_urls=["https://arxiv.org/abs/1706.04599", "https://arxiv.org/abs/2309.12236"],
        )

    def _compute(
        self,
        predictions,
        references,
        train_class_counts=None,
        n_bins=15,
        inputs="auto",
        group_thresholds=(100, 20),
    ):
        return refcal_metrics.evaluate_predictions(
            np.asarray(predictions, dtype=np.float64),
            np.asarray(references, dtype=np.int64),
            train_class_counts=train_class_counts,
            n_bins=n_bins,
            inputs=inputs,
            group_thresholds=tuple(group_thresholds),
        )
