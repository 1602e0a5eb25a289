"""Backpropagation by hand: a two-layer perceptron in NumPy, and the numerical gradient check.

Defined in chapter 03, where every line is derived with the chain rule; lab 03 asks for the
same forward and backward pass in a classifier.

Rows are samples (the layout of Keras' ``Dense``; PyTorch's ``nn.Linear`` stores ``W.T``)::

    X                           (N, d_in)     the inputs
    Z1    = X @ W1 + b1         (N, h)        W1 (d_in, h), b1 (h,)
    H     = phi(Z1)             (N, h)        phi: "sigmoid", "tanh" or "relu"
    Y_hat = H @ W2 + b2         (N, d_out)    W2 (h, d_out), b2 (d_out,)
    L     = mean((Y_hat - Y)^2)               mean squared error over all N * d_out entries
                                              (chapter 01's :func:`dlwb.losses.mse`)

Parameters travel as a dict ``{"W1", "b1", "W2", "b2"}`` of arrays, and so do their gradients.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dlwb.losses import mse

Params = dict[str, np.ndarray]


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function ``sigma(z) = 1 / (1 + exp(-z))``, without overflow for large ``|z|``.

    Defined in chapter 03.
    """
    return np.exp(-np.logaddexp(0.0, -z))  # logaddexp(0, -z) = log(1 + e^-z), safe where e^-z overflows


def sigmoid_grad(z: np.ndarray) -> np.ndarray:
    """``sigma'(z) = sigma(z) * (1 - sigma(z))``; at most 1/4 (at z = 0).

    Defined in chapter 03.
    """
    s = sigmoid(z)
    return s * (1.0 - s)


def tanh(z: np.ndarray) -> np.ndarray:
    """``tanh(z) = (e^z - e^-z) / (e^z + e^-z) = 2 sigma(2z) - 1``.

    Defined in chapter 03.
    """
    return np.tanh(z)


def tanh_grad(z: np.ndarray) -> np.ndarray:
    """``tanh'(z) = 1 - tanh(z)^2``; at most 1 (at z = 0).

    Defined in chapter 03.
    """
    return 1.0 - np.tanh(z) ** 2


def relu(z: np.ndarray) -> np.ndarray:
    """``relu(z) = max(z, 0)``.

    Defined in chapter 03.
    """
    return np.maximum(z, 0.0)


def relu_grad(z: np.ndarray) -> np.ndarray:
    """``relu'(z) = 1 if z > 0 else 0``; at z = 0 it is taken as 0, as PyTorch and TensorFlow do.

    Defined in chapter 03.
    """
    return (z > 0).astype(z.dtype)


ACTIVATIONS: dict[str, tuple[Callable, Callable]] = {
    "sigmoid": (sigmoid, sigmoid_grad),
    "tanh": (tanh, tanh_grad),
    "relu": (relu, relu_grad),
}


def get_activation(name: str) -> tuple[Callable, Callable]:
    """The pair ``(phi, phi_grad)`` for an activation name in :data:`ACTIVATIONS`.

    Defined in chapter 03.
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def init_mlp(d_in: int, hidden: int, d_out: int, *, seed: int = 0, dtype=np.float64) -> Params:
    """Random parameters for ``d_in -> hidden -> d_out``, drawn as PyTorch's ``nn.Linear`` does.

    Every weight and bias of a layer with ``fan_in`` inputs is uniform in
    ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]``. ``seed`` feeds a private generator, so the
    global NumPy state is untouched.

    Defined in chapter 03.
    """
    rng = np.random.default_rng(seed)
    bound1, bound2 = 1.0 / np.sqrt(d_in), 1.0 / np.sqrt(hidden)
    return {
        "W1": rng.uniform(-bound1, bound1, size=(d_in, hidden)).astype(dtype),  # (d_in, h)
        "b1": rng.uniform(-bound1, bound1, size=(hidden,)).astype(dtype),  # (h,)
        "W2": rng.uniform(-bound2, bound2, size=(hidden, d_out)).astype(dtype),  # (h, d_out)
        "b2": rng.uniform(-bound2, bound2, size=(d_out,)).astype(dtype),  # (d_out,)
    }


def mlp_forward(params: Params, X: np.ndarray, activation: str = "tanh") -> tuple[np.ndarray, dict]:
    """Forward pass ``Y_hat = phi(X @ W1 + b1) @ W2 + b2``.

    Returns ``Y_hat`` of shape ``(N, d_out)`` and the cache ``{"X", "Z1", "H"}`` that the
    backward pass needs.

    Defined in chapter 03.
    """
    phi, _ = get_activation(activation)
    Z1 = X @ params["W1"] + params["b1"]  # (N, h)
    H = phi(Z1)  # (N, h)
    Y_hat = H @ params["W2"] + params["b2"]  # (N, d_out)
    return Y_hat, {"X": X, "Z1": Z1, "H": H}


def mse_grad(Y_hat: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """``dL/dY_hat = 2 (Y_hat - Y) / (N d_out)``, shape ``(N, d_out)``.

    Defined in chapter 03.
    """
    return 2.0 * (Y_hat - Y) / Y_hat.size


def mlp_backward(params: Params, cache: dict, dY_hat: np.ndarray, activation: str = "tanh") -> Params:
    """Backward pass: the gradients of the loss with respect to every parameter.

    Given ``dY_hat = dL/dY_hat`` of shape ``(N, d_out)``, the chain rule gives::

        dW2 = H^T dY_hat                 (h, d_out)
        db2 = sum over rows of dY_hat    (d_out,)
        dH  = dY_hat W2^T                (N, h)
        dZ1 = dH * phi'(Z1)              (N, h)     elementwise
        dW1 = X^T dZ1                    (d_in, h)
        db1 = sum over rows of dZ1       (h,)

    Each gradient has the shape of its parameter. Returns ``{"W1", "b1", "W2", "b2"}``.

    Defined in chapter 03.
    """
    _, phi_grad = get_activation(activation)
    dW2 = cache["H"].T @ dY_hat  # (h, d_out)
    db2 = dY_hat.sum(axis=0)  # (d_out,): b2 is added to every row, so its gradient sums the rows
    dH = dY_hat @ params["W2"].T  # (N, h)
    dZ1 = dH * phi_grad(cache["Z1"])  # (N, h): the chain rule through phi, one element at a time
    dW1 = cache["X"].T @ dZ1  # (d_in, h)
    db1 = dZ1.sum(axis=0)  # (h,)
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


def loss_and_grads(params: Params, X: np.ndarray, Y: np.ndarray, activation: str = "tanh") -> tuple[float, Params]:
    """The MSE loss of the network on ``(X, Y)`` and its gradients: forward, then backward.

    Defined in chapter 03.
    """
    Y_hat, cache = mlp_forward(params, X, activation)
    return mse(Y_hat, Y), mlp_backward(params, cache, mse_grad(Y_hat, Y), activation)


def numerical_gradient(f: Callable[[Params], float], params: Params, eps: float = 1e-6) -> Params:
    """Central differences ``(f(p + eps e_i) - f(p - eps e_i)) / (2 eps)`` for every element ``i``.

    ``f`` maps the parameter dict to a scalar loss. Each element is nudged in place and put
    back, so ``params`` is unchanged afterwards. The error is ``O(eps^2)`` from the Taylor
    series plus about ``1e-16 |f| / eps`` of rounding: use float64 and ``eps`` near 1e-6.
    Costs two evaluations of ``f`` per parameter element, so only for small networks.

    Defined in chapter 03.
    """
    grads = {}
    for name, p in params.items():
        g = np.zeros_like(p, dtype=np.float64)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            try:
                p[idx] = old + eps
                f_plus = f(params)
                p[idx] = old - eps
                f_minus = f(params)
            finally:
                p[idx] = old
            g[idx] = (f_plus - f_minus) / (2 * eps)
        grads[name] = g
    return grads


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """``||a - b|| / (||a|| + ||b||)`` (Euclidean norms); 0 when both are zero.

    Scale-free: about 1e-16 for arrays equal up to rounding, 1 for unrelated arrays.

    Defined in chapter 03.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    denominator = np.linalg.norm(a) + np.linalg.norm(b)
    return 0.0 if denominator == 0 else float(np.linalg.norm(a - b) / denominator)


def gradient_check(f: Callable[[Params], float], params: Params, grads: Params, eps: float = 1e-6) -> dict[str, float]:
    """Relative error between ``grads`` and the numerical gradient of ``f``, per parameter.

    In float64 a correct backward pass gives errors below 1e-6 (typically 1e-9 or less);
    a wrong one gives errors near 1.

    Defined in chapter 03.
    """
    numeric = numerical_gradient(f, params, eps)
    return {name: relative_error(grads[name], numeric[name]) for name in params}


def sgd_step(params: Params, grads: Params, lr: float) -> Params:
    """One step of gradient descent, ``p <- p - lr * dL/dp``, as a new dict.

    Defined in chapter 03.
    """
    return {name: p - lr * grads[name] for name, p in params.items()}


def train_mlp(params: Params, X: np.ndarray, Y: np.ndarray, *, activation: str = "tanh", lr: float = 0.1,
              num_epochs: int = 1000) -> tuple[Params, list[float]]:
    """Full-batch gradient descent on the MSE: ``num_epochs`` steps of forward, backward, update.

    Returns the trained parameters (``params`` itself is not modified) and the loss before
    each step.

    Defined in chapter 03.
    """
    losses = []
    for _ in range(num_epochs):
        loss, grads = loss_and_grads(params, X, Y, activation)
        losses.append(loss)
        params = sgd_step(params, grads, lr)
    return params, losses
