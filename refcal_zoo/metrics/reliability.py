"""Reliability diagrams (PNG) for model cards: binned accuracy vs confidence plus a confidence histogram.

Uses matplotlib's object API (``Figure`` + ``FigureCanvasAgg``) so it renders headless without touching the
caller's pyplot state or backend, and writes atomically (temporary file in the target folder, then
``os.replace``) so a crash never leaves a half-written image behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ._inputs import InputKind, prepare
from ._smooth import SmoothECE
from .calibration import _ece_mce, bin_top_label


def reliability_diagram(
    logits_or_probs: Any,
    labels: Any,
    path: str | os.PathLike[str],
    *,
    n_bins: int = 15,
    title: str | None = None,
    smooth: bool = True,
    inputs: InputKind = "auto",
    dpi: int = 150,
) -> Path:
    """Write a reliability diagram of the top-label confidence to ``path`` (PNG) and return the path.

    Top panel: accuracy of each non-empty equal-width bin (bars), the gap to the bin's mean confidence
    (hatched), the diagonal of perfect calibration and, if ``smooth``, the kernel-smoothed accuracy curve
    at the smECE bandwidth. Bottom panel: fraction of samples per bin. ECE (and smECE) are in the title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    p = prepare(logits_or_probs, labels, inputs)
    edges, counts, conf_sums, correct_sums = bin_top_label(p.conf, p.correct, n_bins)
    ece_value, _ = _ece_mce(p.conf, p.correct, n_bins)
    width = 1.0 / n_bins
    nz = counts > 0
    acc = correct_sums[nz] / counts[nz]
    mean_conf = conf_sums[nz] / counts[nz]
    left = edges[:-1][nz]

    fig = Figure(figsize=(5.0, 6.2), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 1, height_ratios=(3, 1))
    ax = fig.add_subplot(grid[0])
    axh = fig.add_subplot(grid[1], sharex=ax)

    ax.bar(left, acc, width=width, align="edge", color="#4c72b0", edgecolor="white", label="accuracy")
    ax.bar(
        left, mean_conf - acc, bottom=acc, width=width, align="edge", color="none",
        edgecolor="#c44e52", hatch="//", linewidth=0.8, label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], "--", color="0.3", linewidth=1.0, label="perfect calibration")
    heading = f"ECE {ece_value:.4f} ({n_bins} bins)"
    if smooth:
        est = SmoothECE(p.conf, p.correct)
        sm_value, sigma = est.value()
        t, rs, _ = est.curve(sigma, full_support=True)  # untruncated kernel: smooth even for wide σ
        keep = (t >= p.conf.min()) & (t <= p.conf.max())  # only where there are confidences
        acc_curve = np.clip(t - rs, 0.0, 1.0)  # E[correct | conf = t] = t - smoothed residual
        ax.plot(t[keep], acc_curve[keep], color="#dd8452", linewidth=2.0, label=f"kernel-smoothed (σ={sigma:.3f})")
        heading += f", smECE {sm_value:.4f}"
    heading += f"\naccuracy {np.mean(p.correct):.4f}, n={p.n}"
    ax.set_title(f"{title}\n{heading}" if title else heading, fontsize=10)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=8)
    ax.tick_params(labelbottom=False)

    axh.bar(edges[:-1], counts / p.n, width=width, align="edge", color="0.55", edgecolor="white")
    axh.set_xlabel("confidence (max probability)")
    axh.set_ylabel("fraction of samples")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=dpi)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
