"""One sorted pass per class column, shared by SCE, ACE and the one-vs-one AUROC.

For class ``k`` the column ``p[:, k]`` of *all* samples is sorted once. From the sorted column and the
prefix count of samples whose label is ``k`` we read off

* the equal-width classwise bins of SCE (bin edges located with ``searchsorted``),
* the equal-count ranges of ACE (``array_split`` of the stable order),
* for every other class ``b``: ``S[k, b] = sum_{j: y_j = b} (#{i: y_i = k, p_ik < p_jk} + 0.5 #{... = ...})``,
  the Mann-Whitney statistic behind ``AUC(k | b)``, for all ``b`` at once via one ``bincount``.

This replaces scikit-learn's loop over K(K-1)/2 class pairs (each re-scanning the data) by K sorts; columns
are processed by a small thread pool (numpy releases the GIL in sort/arithmetic).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ._inputs import Prepared
from ._sort import stable_argsort_nonneg

#: Below this many matrix entries the pass runs in the calling thread.
_PARALLEL_MIN_ENTRIES = 2_000_000
#: Columns transposed together (one contiguous copy per block).
_BLOCK = 8


@dataclass
class ClasswiseStats:
    sce: float  # classwise ECE averaged over the K columns (nan if not computed)
    ace: float  # Nixon et al. ACE (nan if not computed)
    pair_u: np.ndarray | None  # (K, K) S[k, b] as above (None if not computed)
    class_counts: np.ndarray  # (K,) number of samples per label


def _equal_count_bounds(n: int, n_ranges: int) -> np.ndarray:
    """Boundaries of ``np.array_split(range(n), n_ranges)`` with empty chunks dropped."""
    sizes = np.full(n_ranges, n // n_ranges, dtype=np.int64)
    sizes[: n % n_ranges] += 1
    sizes = sizes[sizes > 0]
    return np.concatenate(([0], np.cumsum(sizes)))


def _column(
    col: np.ndarray,
    labels: np.ndarray,
    k: int,
    n_classes: int,
    inner_edges: np.ndarray | None,
    range_bounds: np.ndarray | None,
    want_u: bool,
) -> tuple[float, float, np.ndarray | None]:
    n = col.shape[0]
    order = stable_argsort_nonneg(col)  # stable: ACE splits tied values by sample index
    ps = col[order]
    tied = n > 1 and bool(np.any(ps[1:] == ps[:-1]))
    ys = labels[order]
    cum = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(ys == k, out=cum[1:])

    sce_k = ace_k = float("nan")
    if inner_edges is not None or range_bounds is not None:
        parts = [np.array([0, n])]
        if inner_edges is not None:
            # bins (lo, hi]: number of values <= each inner edge; p = 0 falls in the first bin
            sce_bounds = np.concatenate(([0], np.searchsorted(ps, inner_edges, side="right"), [n]))
            parts.append(sce_bounds)
        if range_bounds is not None:
            parts.append(range_bounds)
        allb = np.unique(np.concatenate(parts))
        seg = np.add.reduceat(ps, allb[:-1])  # every segment non-empty (allb strictly increasing)
        prefix = np.concatenate(([0.0], np.cumsum(seg)))

        def psum(bounds: np.ndarray) -> np.ndarray:
            return np.diff(prefix[np.searchsorted(allb, bounds)])

        if inner_edges is not None:
            hits = np.diff(cum[sce_bounds])
            sce_k = float(np.sum(np.abs(hits - psum(sce_bounds))) / n)
        if range_bounds is not None:
            hits = np.diff(cum[range_bounds])
            sizes = np.diff(range_bounds)
            ace_k = float(np.mean(np.abs(hits - psum(range_bounds)) / sizes))

    u_row = None
    if want_u:
        if tied:
            new_group = np.empty(n, dtype=bool)
            new_group[0] = True
            np.not_equal(ps[1:], ps[:-1], out=new_group[1:])
            gid = np.cumsum(new_group) - 1
            starts = np.flatnonzero(new_group)
            ends = np.append(starts[1:], n)
            below = cum[starts]
            # #(label k strictly below) + 0.5 #(label k tied), per group, broadcast to members
            weight = (below + 0.5 * (cum[ends] - below))[gid]
        else:
            weight = cum[:-1]
        u_row = np.bincount(ys, weights=weight, minlength=n_classes)
    return sce_k, ace_k, u_row


def classwise_pass(
    probs: np.ndarray | Prepared,
    labels: np.ndarray,
    *,
    n_bins: int | None,
    n_ranges: int | None,
    want_u: bool,
    n_threads: int | None = None,
) -> ClasswiseStats:
    """Compute SCE (``n_bins`` equal-width bins), ACE (``n_ranges`` ranges) and/or the OvO pair statistics.

    ``probs`` is an ``(N, K)`` probability matrix or a :class:`Prepared` set (columns computed on demand).
    """
    if isinstance(probs, Prepared):
        n, n_classes = probs.n, probs.k
        get_block = probs.columns
    else:
        n, n_classes = probs.shape

        def get_block(k0: int, k1: int) -> np.ndarray:
            return np.ascontiguousarray(probs[:, k0:k1].T, dtype=np.float64)

    labels = labels.astype(np.int32 if n_classes < 2**31 else np.int64, copy=False)  # cheaper gathers
    inner_edges = np.linspace(0.0, 1.0, n_bins + 1)[1:-1] if n_bins else None
    range_bounds = _equal_count_bounds(n, n_ranges) if n_ranges else None

    def work(k0: int) -> list[tuple[float, float, np.ndarray | None]]:
        # transpose a block of columns at once: one pass over the rows instead of one per column
        block = get_block(k0, min(k0 + _BLOCK, n_classes))
        return [
            _column(block[j], labels, k0 + j, n_classes, inner_edges, range_bounds, want_u)
            for j in range(block.shape[0])
        ]

    if n_threads is None:
        n_threads = min(os.cpu_count() or 1, 8)
    starts = range(0, n_classes, _BLOCK)
    if n_threads > 1 and n * n_classes >= _PARALLEL_MIN_ENTRIES and len(starts) > 1:
        with ThreadPoolExecutor(max_workers=min(n_threads, len(starts))) as pool:
            results = [r for block in pool.map(work, starts) for r in block]
    else:
        results = [r for k0 in starts for r in work(k0)]

    sce = float(np.mean([r[0] for r in results])) if n_bins else float("nan")
    ace = float(np.mean([r[1] for r in results])) if n_ranges else float("nan")
    pair_u = np.stack([r[2] for r in results]) if want_u else None
    return ClasswiseStats(sce, ace, pair_u, np.bincount(labels, minlength=n_classes))


def ovo_from_pair_u(pair_u: np.ndarray, class_counts: np.ndarray) -> float:
    """Macro one-vs-one AUROC (Hand & Till) over pairs of classes that are present."""
    present = np.flatnonzero(class_counts > 0)
    if present.size < 2:
        return float("nan")
    s = pair_u[np.ix_(present, present)]
    cnt = class_counts[present].astype(np.float64)
    denom = np.outer(cnt, cnt)
    pair = 1.0 - (s + s.T) / (2.0 * denom)  # (AUC(a|b) + AUC(b|a)) / 2
    iu = np.triu_indices(present.size, k=1)
    return float(np.mean(pair[iu]))
