"""Self-checks for lab exercises: say exactly what is wrong, where, and what to try.

Used by the visible check cells of every lab (``solutions/`` and the generated ``labs/``).
Each check prints one ``✓`` line when it passes and raises :class:`CheckFailed` (an
``AssertionError``) with a message naming the quantity, the problem (type, shape,
non-finite values, which element differs and by how much) and a hint when it fails.
A stub that still raises ``NotImplementedError`` is reported as "not attempted yet" (still a
``NotImplementedError``, so an untouched lab stops at its first exercise and nowhere else).

Defined for the labs of chapters 01–03.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class CheckFailed(AssertionError):
    """A self-check found a problem; the message says what and how to fix it."""


def _fail(name: str, problem: str, hint: str | None) -> None:
    message = f"{name}: {problem}"
    if hint:
        message += f"\nHint: {hint}"
    raise CheckFailed(message)


def passed(name: str, detail: str = "") -> None:
    print(f"✓ {name}" + (f": {detail}" if detail else ""))


def to_numpy(value) -> np.ndarray:
    """Convert an array-like (NumPy, PyTorch, TensorFlow/Keras, list, scalar) to a NumPy array."""
    if hasattr(value, "detach"):  # torch.Tensor
        value = value.detach().cpu().numpy()
    elif hasattr(value, "numpy") and not isinstance(value, np.ndarray):  # tf.Tensor, keras variable
        value = value.numpy()
    return np.asarray(value)


def attempt(name: str, fn: Callable, *args, **kwargs):
    """Call the student's ``fn``; a stub that still raises says "not attempted yet".

    The error stays a ``NotImplementedError`` (with a friendlier message), so an untouched lab
    stops at its first exercise with that error and nothing else.
    """
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise NotImplementedError(
            f"{name}: not attempted yet: the function still raises NotImplementedError.\n"
            "Hint: replace `raise NotImplementedError()` in the exercise cell with your code and run that cell again."
        ) from None


def check_shape(name: str, actual, expected_shape: tuple[int, ...], *, hint: str | None = None) -> None:
    """``actual`` must have exactly ``expected_shape``."""
    shape = tuple(to_numpy(actual).shape)
    if shape != tuple(expected_shape):
        _fail(name, f"shape is {shape}, expected {tuple(expected_shape)}.", hint)


def check_finite(name: str, actual, *, hint: str | None = None) -> None:
    """No NaN or infinity anywhere in ``actual``."""
    arr = to_numpy(actual).astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0]) if arr.ndim else ()
        _fail(name, f"{int(bad.sum())} non-finite value(s) (NaN or inf); the first is {arr[where]} at index {where}.",
              hint or "look for exp() of large numbers, log(0) or a division by zero.")


def check_close(name: str, actual, expected, *, rtol: float = 1e-6, atol: float = 1e-8,
                hint: str | None = None, quiet: bool = False) -> None:
    """``actual`` must equal ``expected`` elementwise within ``|a - e| <= atol + rtol * |e|``.

    Checks, in order: that ``actual`` is not ``None``, its shape, finiteness, then values;
    the message names the element that differs most and the tolerance used.
    """
    if actual is None:
        _fail(name, "got None: did the function forget to `return` its result?", hint)
    a, e = to_numpy(actual), to_numpy(expected)
    if a.dtype == object:
        _fail(name, f"got an object array or a non-numeric value of type {type(actual).__name__}.", hint)
    if a.shape != e.shape:
        _fail(name, f"shape is {a.shape}, expected {e.shape}.", hint)
    check_finite(name, a, hint=hint)
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    excess = np.abs(a64 - e64) - (atol + rtol * np.abs(e64))
    if (excess > 0).any():
        worst = np.unravel_index(int(np.argmax(excess)), excess.shape) if excess.ndim else ()
        where = f" at index {tuple(int(i) for i in worst)}" if excess.ndim else ""
        count = f"{int((excess > 0).sum())} of {excess.size} values differ; " if excess.size > 1 else ""
        _fail(name, f"{count}the largest difference is{where}: got {a64[worst]:.8g}, expected {e64[worst]:.8g} "
                    f"(tolerance: atol={atol:g}, rtol={rtol:g}).", hint)
    if not quiet:
        passed(name, f"matches within atol={atol:g}, rtol={rtol:g}")


def check_true(name: str, condition: bool, problem: str, *, hint: str | None = None) -> None:
    """A named condition that must hold; ``problem`` says what is wrong when it does not."""
    if not bool(condition):
        _fail(name, problem, hint)
    passed(name)
