"""Lab self-checks: what they accept, and that their messages say what is wrong and where."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlwb import checks
from dlwb.checks import CheckFailed


def test_check_close_passes_and_prints(capsys):
    checks.check_close("softmax", torch.tensor([0.5, 0.5]), np.array([0.5, 0.5]))
    assert capsys.readouterr().out.startswith("✓ softmax")


def test_check_close_names_the_worst_element():
    expected = np.arange(6, dtype=float).reshape(2, 3)
    actual = expected.copy()
    actual[1, 2] += 0.5
    actual[0, 1] += 0.1
    with pytest.raises(CheckFailed) as err:
        checks.check_close("loss", actual, expected, rtol=0, atol=1e-3, hint="check the mean")
    message = str(err.value)
    assert "loss:" in message and "2 of 6 values differ" in message
    assert "index (1, 2)" in message and "got 5.5, expected 5" in message
    assert "Hint: check the mean" in message


@pytest.mark.parametrize(("actual", "problem"), [
    (None, "got None: did the function forget to `return`"),
    (np.zeros((3, 2)), "shape is (3, 2), expected (2, 3)"),
    (np.array([[0, np.nan, 0], [0, 0, np.inf]]), "2 non-finite value(s)"),
    (np.array([{"a": 1}]), "object array"),
])
def test_check_close_explains_other_problems(actual, problem):
    with pytest.raises(CheckFailed, match=problem.replace("(", r"\(").replace(")", r"\)").replace("`", ".")):
        checks.check_close("x", actual, np.zeros((2, 3)) if problem != "object array" else np.zeros(1))


def test_scalar_comparison():
    checks.check_close("scalar", 1.2039728, -np.log(0.3), rtol=1e-6, quiet=True)
    with pytest.raises(CheckFailed, match="got 1.1, expected 1.2039728"):
        checks.check_close("scalar", 1.1, -np.log(0.3))


def test_check_shape_and_true():
    checks.check_shape("grad", np.zeros((4, 10)), (4, 10))
    with pytest.raises(CheckFailed, match=r"shape is \(10, 4\), expected \(4, 10\)"):
        checks.check_shape("grad", np.zeros((10, 4)), (4, 10), hint="transpose?")
    checks.check_true("loss decreases", True, "it did not")
    with pytest.raises(CheckFailed, match="loss decreases: went up from 1 to 2"):
        checks.check_true("loss decreases", False, "went up from 1 to 2")


def test_attempt_turns_a_stub_into_a_clear_not_attempted():
    def stub(x):
        raise NotImplementedError()

    with pytest.raises(NotImplementedError, match="softmax: not attempted yet"):
        checks.attempt("softmax", stub, 1)
    assert checks.attempt("double", lambda x: 2 * x, 3) == 6


def test_to_numpy_accepts_the_frameworks():
    import keras

    assert checks.to_numpy(torch.ones(2, requires_grad=True)).tolist() == [1.0, 1.0]
    assert checks.to_numpy(keras.ops.ones((2,))).tolist() == [1.0, 1.0]
    assert checks.to_numpy([1, 2]).dtype.kind == "i"
