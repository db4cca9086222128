"""Property-based tests (hypothesis) of the metric input boundary: logits or probabilities, any finite values.

The documented rules (``refcal_zoo/metrics/_inputs.py``): ``inputs="auto"`` takes a matrix as probabilities only
when every entry is in [0, 1] and rows sum to 1 within 1e-4, else as logits, warning when every entry is in
[0, 1] (ambiguous); ``inputs="probs"`` refuses rows off by more than 1e-2; non-finite values and bad labels
are refused. The references are computed here with scipy, not with the package.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import log_softmax, softmax

from refcal_zoo.metrics import evaluate_predictions
from refcal_zoo.metrics._inputs import AUTO_PROBS_ROW_SUM_ATOL, PROBS_ROW_SUM_MAX_ERR, prepare

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def problems(draw, low=-30.0, high=30.0):
    """An (N, K) float64 matrix of finite values in [low, high] and N labels in [0, K)."""
    n = draw(st.integers(1, 25))
    k = draw(st.integers(2, 7))
    x = draw(arrays(np.float64, (n, k), elements=st.floats(low, high, allow_nan=False, allow_infinity=False)))
    y = draw(arrays(np.int64, (n,), elements=st.integers(0, k - 1)))
    return x, y


def quiet_prepare(x, y, inputs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return prepare(x, y, inputs=inputs)


@SETTINGS
@given(problems())
def test_logits_match_an_independent_log_softmax(problem):
    z, y = problem
    prep = quiet_prepare(z, y, "logits")
    ref = log_softmax(z, axis=1)
    np.testing.assert_allclose(prep.log_prob_true, ref[np.arange(len(y)), y], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(prep.conf, np.exp(ref).max(axis=1), rtol=1e-10, atol=1e-12)
    assert np.array_equal(ref[np.arange(len(y)), prep.pred], ref.max(axis=1))  # the prediction is an argmax
    assert np.array_equal(prep.correct, prep.pred == y)


@SETTINGS
@given(problems(), st.floats(-1e3, 1e3))
def test_a_constant_shift_of_the_logits_changes_nothing(problem, c):
    z, y = problem
    a, b = quiet_prepare(z, y, "logits"), quiet_prepare(z + c, y, "logits")
    np.testing.assert_allclose(a.log_prob_true, b.log_prob_true, atol=1e-9)
    np.testing.assert_allclose(a.conf, b.conf, atol=1e-9)


@SETTINGS
@given(problems(low=-10, high=10))
def test_auto_recognises_softmax_output_as_probabilities(problem):
    z, y = problem
    p = softmax(z, axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # normalised probabilities: no warning
        prep_p = prepare(p, y, inputs="auto")
    assert not prep_p.from_logits
    prep_z = quiet_prepare(z, y, "logits")
    np.testing.assert_allclose(prep_p.prob_true, prep_z.prob_true, atol=1e-12)
    np.testing.assert_allclose(prep_p.log_prob_true, np.log(np.clip(prep_z.prob_true, 2.2e-16, 1)), atol=1e-9)


@SETTINGS
@given(problems(low=0.0, high=1.0))
def test_auto_warns_on_an_unnormalised_matrix_in_0_1_and_treats_it_as_logits(problem):
    x, y = problem
    assume(np.max(np.abs(x.sum(axis=1) - 1.0)) > AUTO_PROBS_ROW_SUM_ATOL)
    with pytest.warns(UserWarning, match="treats this matrix as logits"):
        prep = prepare(x, y, inputs="auto")
    assert prep.from_logits
    np.testing.assert_allclose(prep.log_prob_true, log_softmax(x, axis=1)[np.arange(len(y)), y], atol=1e-10)


@SETTINGS
@given(problems(low=0.0, high=1.0))
def test_probs_refuses_rows_that_do_not_sum_to_one(problem):
    x, y = problem
    assume(np.max(np.abs(x.sum(axis=1) - 1.0)) > PROBS_ROW_SUM_MAX_ERR)
    with pytest.raises(ValueError, match="rows sum to 1 only within"):
        prepare(x, y, inputs="probs")
    with pytest.raises(ValueError, match="rows sum to 1 only within"):
        evaluate_predictions(x, y, inputs="probs")


@SETTINGS
@given(problems(), st.data(), st.sampled_from([np.nan, np.inf, -np.inf]))
def test_non_finite_values_are_refused(problem, data, bad):
    x, y = problem
    i = data.draw(st.integers(0, x.shape[0] - 1))
    j = data.draw(st.integers(0, x.shape[1] - 1))
    x = x.copy()
    x[i, j] = bad
    for inputs in ("auto", "logits", "probs"):
        with pytest.raises(ValueError, match="NaN or Inf"):
            prepare(x, y, inputs=inputs)


@SETTINGS
@given(problems(), st.data())
def test_labels_out_of_range_or_wrong_length_are_refused(problem, data):
    x, y = problem
    k = x.shape[1]
    bad = y.copy()
    bad[data.draw(st.integers(0, len(y) - 1))] = data.draw(st.one_of(st.integers(-100, -1), st.integers(k, k + 100)))
    with pytest.raises(ValueError, match="labels out of range"):
        prepare(x, bad, inputs="logits")
    with pytest.raises(ValueError, match="length mismatch"):
        prepare(x, np.append(y, 0), inputs="logits")
