"""Validation and conversion of metric inputs.

Every metric in :mod:`refcal_zoo.metrics` takes a whole evaluation set: an ``(N, K)`` matrix of logits or
probabilities and ``N`` integer labels in ``[0, K)``, as numpy arrays, torch tensors (any device, any float
dtype) or nested lists. Everything is converted once to float64 numpy and checked here, so that a bad input
fails loudly with a ``ValueError`` that names the problem instead of producing a silently wrong number.

Logits or probabilities? ``inputs="auto"`` treats the matrix as probabilities only if every entry lies in
``[0, 1]`` and every row sums to 1 within ``1e-4``; otherwise it is treated as logits and soft-maxed in
float64. A matrix that looks like probabilities but is not normalised (every entry in ``[0, 1]``, rows not
summing to 1) is ambiguous: it is still treated as logits, with a ``UserWarning`` that says so and how to
choose. ``inputs="probs"`` refuses (``ValueError``) values outside ``[0, 1]`` and rows that sum to 1 only
within more than ``1e-2``, and warns between ``1e-3`` and ``1e-2``. Callers who know what they pass
(recommended) force it with ``inputs="logits"`` or ``"probs"``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

InputKind = Literal["auto", "logits", "probs"]

#: Row-sum tolerance used by ``inputs="auto"`` to recognise probability matrices.
AUTO_PROBS_ROW_SUM_ATOL = 1e-4
#: Largest row-sum error ``inputs="probs"`` accepts (with a warning above 1e-3); beyond it a ValueError.
PROBS_ROW_SUM_MAX_ERR = 1e-2
#: Probabilities are clipped to ``[PROB_EPS, 1]`` before ``log`` when NLL is computed from probabilities
#: (same floor as ``sklearn.metrics.log_loss``: float64 machine epsilon).
PROB_EPS = float(np.finfo(np.float64).eps)


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined on this input (e.g. AUROC when all predictions are correct); reported as nan."""


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Convert numpy / torch / list input to a numpy array without importing torch."""
    if hasattr(x, "detach") and hasattr(x, "cpu") and hasattr(x, "numpy"):  # torch.Tensor (duck-typed)
        x = x.detach().cpu()
        if getattr(x, "is_floating_point", lambda: False)() and x.dtype.itemsize < 4:
            x = x.float()  # bfloat16 / float16 have no (exact) numpy counterpart
        x = x.numpy()
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as e:  # ragged lists etc.
        raise ValueError(f"{name} could not be converted to an array: {e}") from e
    if arr.dtype == object or arr.dtype.kind in "USV":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr


def as_labels(labels: Any, n: int | None = None, k: int | None = None) -> np.ndarray:
    """Validate integer class labels (1-D, integral, in ``[0, k)``) and return them as ``np.intp``."""
    y = _to_numpy(labels, "labels")
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D (N,), got shape {y.shape}")
    if y.size == 0:
        raise ValueError("labels is empty: metrics need at least one sample")
    if n is not None and y.shape[0] != n:
        raise ValueError(f"length mismatch: logits_or_probs has {n} rows but labels has {y.shape[0]} entries")
    if y.dtype.kind == "b":
        y = y.astype(np.intp)
    elif y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ValueError("labels must be integers (got non-integral or non-finite float values)")
        y = y.astype(np.intp)
    elif y.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    y_min, y_max = int(y.min()), int(y.max())
    if y_min < 0 or (k is not None and y_max >= k):
        bad = y_min if y_min < 0 else y_max
        raise ValueError(f"labels out of range: got label {bad}, labels must lie in [0, K) with K={k}")
    return y.astype(np.intp, copy=False)


def _looks_like_probs(x: np.ndarray) -> bool:
    if x.min() < 0.0 or x.max() > 1.0:
        return False
    return bool(np.all(np.abs(x.sum(axis=1, dtype=np.float64) - 1.0) <= AUTO_PROBS_ROW_SUM_ATOL))


def resolve_input_kind(x: np.ndarray, inputs: str) -> Literal["logits", "probs"]:
    """Decide whether ``x`` holds logits or probabilities (see module docstring for the ``auto`` rule)."""
    if inputs not in ("auto", "logits", "probs"):
        raise ValueError(f"inputs must be 'auto', 'logits' or 'probs', got {inputs!r}")
    if inputs == "auto":
        if _looks_like_probs(x):
            return "probs"
        if x.min() >= 0.0 and x.max() <= 1.0:  # looks like probabilities, but the rows are not normalised
            row_err = float(np.max(np.abs(x.sum(axis=1, dtype=np.float64) - 1.0)))
            what = "e.g. float16 probabilities" if row_err <= 1e-2 else "unnormalised probabilities?"
            warnings.warn(
                f"inputs='auto' treats this matrix as logits (softmax applied): every entry lies in [0, 1] but "
                f"the rows sum to 1 only within {row_err:.2g} (> {AUTO_PROBS_ROW_SUM_ATOL}; {what}); pass "
                "inputs='probs' for (normalised) probabilities or inputs='logits' to silence this",
                UserWarning,
                stacklevel=4,
            )
        return "logits"
    return inputs  # type: ignore[return-value]


def _check_matrix(x: Any, name: str = "logits_or_probs") -> np.ndarray:
    arr = _to_numpy(x, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, K), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (N=0): metrics need at least one sample")
    if arr.shape[1] < 2:
        raise ValueError(f"{name} must have K >= 2 columns (classes), got shape {arr.shape}")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        raise ValueError(
            f"{name} contains NaN or Inf in {bad.size} row(s) (first: row {int(bad[0])}); "
            "metrics need finite logits/probabilities"
        )
    return arr


#: Rows per chunk in the single pass over the input: about 64k matrix entries, so each chunk stays in cache.
_CHUNK_ENTRIES = 1 << 16


@dataclass
class Prepared:
    """Validated evaluation set with the per-sample quantities every metric needs (float64).

    The ``(N, K)`` float64 probability matrix is *not* materialised: ``columns(k0, k1)`` computes blocks of it
    on demand (from the logits with the stored row maximum and softmax normaliser, bit-identical to a
    float64 softmax of the whole matrix), which keeps memory at the size of the input. ``probs`` materialises
    it when really needed. ``source`` is the caller's array (not copied, never modified).
    """

    source: np.ndarray  # (N, K) validated logits or probabilities, original float dtype
    labels: np.ndarray  # (N,) intp
    from_logits: bool
    row_max: np.ndarray | None  # (N,) float64 max logit (logits only)
    row_sum: np.ndarray | None  # (N,) float64 sum_k exp(z_k - max) (logits only)
    log_prob_true: np.ndarray  # (N,) log p(y)
    prob_true: np.ndarray  # (N,) p(y)
    sum_sq: np.ndarray  # (N,) sum_k p_k^2
    conf: np.ndarray  # (N,) max_k p_k
    pred: np.ndarray  # (N,) argmax_k p_k
    correct: np.ndarray  # (N,) bool

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    @property
    def k(self) -> int:
        return int(self.source.shape[1])

    def _to_probs(self, block: np.ndarray) -> np.ndarray:
        """float64 probabilities (a new array) of ``block = source[:, cols]`` (all rows)."""
        out = np.array(block, dtype=np.float64, copy=True)
        if self.from_logits:
            out -= self.row_max[:, None]
            np.exp(out, out=out)
            out /= self.row_sum[:, None]
        return out

    def columns(self, k0: int, k1: int) -> np.ndarray:
        """Probabilities of classes ``k0..k1-1`` for all samples, as a C-contiguous ``(k1 - k0, N)`` array."""
        n = self.n
        out = np.empty((k1 - k0, n), dtype=np.float64)
        step = 8192  # transpose by row chunks that stay in cache (a plain strided copy is ~5x slower)
        for s in range(0, n, step):
            out[:, s : s + step] = self.source[s : s + step, k0:k1].T
        if self.from_logits:
            out -= self.row_max
            np.exp(out, out=out)
            out /= self.row_sum
        return out

    def columns_at(self, cols: np.ndarray) -> np.ndarray:
        """Probabilities of the given classes for all samples, as an ``(N, len(cols))`` array."""
        return self._to_probs(self.source[:, cols])

    @property
    def probs(self) -> np.ndarray:
        """The full ``(N, K)`` float64 probability matrix (materialised on each access)."""
        return self._to_probs(self.source)

    def subset(self, mask: np.ndarray) -> Prepared:
        """Rows selected by a boolean mask or index array (nothing is recomputed)."""

        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[mask]

        return Prepared(
            source=self.source[mask],
            labels=self.labels[mask],
            from_logits=self.from_logits,
            row_max=take(self.row_max),
            row_sum=take(self.row_sum),
            log_prob_true=self.log_prob_true[mask],
            prob_true=self.prob_true[mask],
            sum_sq=self.sum_sq[mask],
            conf=self.conf[mask],
            pred=self.pred[mask],
            correct=self.correct[mask],
        )


def prepare(logits_or_probs: Any, labels: Any, inputs: InputKind | str = "auto") -> Prepared:
    """Validate ``(logits_or_probs, labels)`` and compute the per-sample quantities in one float64 pass.

    From logits: ``p = exp(z - max) / sum exp(z - max)`` and ``log p(y) = (z_y - max) - log(sum ...)``
    (a float64 log-softmax, never ``log(softmax)``). From probabilities: ``log(clip(p_y, eps, 1))``.
    Raises ``ValueError`` for non-numeric, empty, non-2-D, single-column, non-finite inputs, labels outside
    ``[0, K)`` or of the wrong length, and (with ``inputs="probs"``) values outside ``[0, 1]`` or rows that do
    not sum to 1 within ``PROBS_ROW_SUM_MAX_ERR``. Every metric accepts the returned object in place of
    ``logits_or_probs`` (computed once, reused).
    """
    if isinstance(logits_or_probs, Prepared):  # already prepared: reuse (labels must agree if given)
        if labels is not None and not np.array_equal(
            as_labels(labels, n=logits_or_probs.n, k=logits_or_probs.k), logits_or_probs.labels
        ):
            raise ValueError("labels differ from the labels of the Prepared evaluation set")
        return logits_or_probs
    x = _check_matrix(logits_or_probs)
    n, k = x.shape
    y = as_labels(labels, n=n, k=k)
    kind = resolve_input_kind(x, inputs)
    from_logits = kind == "logits"
    if not from_logits:
        if x.min() < 0.0 or x.max() > 1.0:
            raise ValueError(
                "inputs='probs' but some values lie outside [0, 1]; "
                "pass logits with inputs='logits' or 'auto'"
            )
        row_err = float(np.max(np.abs(x.sum(axis=1, dtype=np.float64) - 1.0)))
        if row_err > PROBS_ROW_SUM_MAX_ERR:
            raise ValueError(
                f"inputs='probs' but the rows sum to 1 only within {row_err:.3g} (> {PROBS_ROW_SUM_MAX_ERR}): "
                "these are not probabilities; normalise the rows or pass logits with inputs='logits'"
            )
        if row_err > 1e-3:
            warnings.warn(
                f"inputs='probs' but rows sum to 1 only within {row_err:.3g}; "
                "NLL/Brier assume normalised rows",
                UserWarning,
                stacklevel=3,
            )
    row_max = np.empty(n) if from_logits else None
    row_sum = np.empty(n) if from_logits else None
    log_prob_true, prob_true, sum_sq, conf = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    pred = np.empty(n, dtype=np.intp)
    step = max(1, _CHUNK_ENTRIES // k)
    rows_idx = np.arange(step)
    for s in range(0, n, step):
        e = min(n, s + step)
        r = rows_idx[: e - s]
        z = np.array(x[s:e], dtype=np.float64)  # float64 copy of the chunk
        if from_logits:
            m = z.max(axis=1)
            z -= m[:, None]
            shifted_true = z[r, y[s:e]]
            np.exp(z, out=z)
            tot = z.sum(axis=1)
            z /= tot[:, None]
            row_max[s:e], row_sum[s:e] = m, tot
            log_prob_true[s:e] = shifted_true - np.log(tot)
        pt = z[r, y[s:e]]
        if not from_logits:
            log_prob_true[s:e] = np.log(np.clip(pt, PROB_EPS, 1.0))
        prob_true[s:e] = pt
        sum_sq[s:e] = np.einsum("ij,ij->i", z, z)
        am = z.argmax(axis=1)
        pred[s:e] = am
        conf[s:e] = z[r, am]
    return Prepared(
        source=x,
        labels=y,
        from_logits=from_logits,
        row_max=row_max,
        row_sum=row_sum,
        log_prob_true=log_prob_true,
        prob_true=prob_true,
        sum_sq=sum_sq,
        conf=conf,
        pred=pred,
        correct=pred == y,
    )
