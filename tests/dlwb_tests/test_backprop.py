"""dlwb.backprop: hand-written gradients vs PyTorch autograd, tf.GradientTape and central differences.

Everything runs in float64, where the analytic gradients must agree with the frameworks' to
rounding (rtol 1e-10, atol 1e-12) and with central differences (eps 1e-6) to a relative error
below 1e-6.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlwb import backprop as bp
from dlwb.losses import mse

RTOL, ATOL = 1e-10, 1e-12  # hand-written vs autograd: the same float64 arithmetic up to summation order
NUMERIC_TOL = 1e-6  # relative error of the central-difference check in float64 (eps = 1e-6)
ACTIVATION_NAMES = ["sigmoid", "tanh", "relu"]
SIZES = [(1, 2, 5, 1), (7, 3, 4, 2), (16, 5, 8, 3)]  # (N, d_in, hidden, d_out)


def problem(n, d_in, hidden, d_out, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d_in))  # (N, d_in)
    Y = rng.standard_normal((n, d_out))  # (N, d_out)
    return bp.init_mlp(d_in, hidden, d_out, seed=seed + 1), X, Y


def torch_grads(params, X, Y, activation):
    """The same network as nn.Sequential: nn.Linear stores the weight as (out, in), i.e. W.T."""
    layers = {"sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}
    d_in, hidden = params["W1"].shape
    d_out = params["W2"].shape[1]
    net = torch.nn.Sequential(torch.nn.Linear(d_in, hidden), layers[activation](), torch.nn.Linear(hidden, d_out))
    net = net.double()
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(params["W1"].T))
        net[0].bias.copy_(torch.from_numpy(params["b1"]))
        net[2].weight.copy_(torch.from_numpy(params["W2"].T))
        net[2].bias.copy_(torch.from_numpy(params["b2"]))
    loss = torch.nn.MSELoss()(net(torch.from_numpy(X)), torch.from_numpy(Y))
    loss.backward()
    grads = {"W1": net[0].weight.grad.numpy().T, "b1": net[0].bias.grad.numpy(),
             "W2": net[2].weight.grad.numpy().T, "b2": net[2].bias.grad.numpy()}
    return loss.item(), grads


def keras_grads(params, X, Y, activation):
    """The same network as two keras Dense layers (kernel (in, out), like W), differentiated by tf.GradientTape."""
    import keras
    import tensorflow as tf

    dense1 = keras.layers.Dense(params["W1"].shape[1], activation=activation, dtype="float64")
    dense2 = keras.layers.Dense(params["W2"].shape[1], dtype="float64")
    dense1.build((None, params["W1"].shape[0]))
    dense2.build((None, params["W2"].shape[0]))
    dense1.set_weights([params["W1"], params["b1"]])
    dense2.set_weights([params["W2"], params["b2"]])
    variables = [dense1.kernel, dense1.bias, dense2.kernel, dense2.bias]
    with tf.GradientTape() as tape:
        Y_hat = dense2(dense1(tf.constant(X)))
        loss = keras.losses.MeanSquaredError(dtype="float64")(tf.constant(Y), Y_hat)  # float32 by default
    dW1, db1, dW2, db2 = (g.numpy() for g in tape.gradient(loss, variables))
    return float(loss), {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


def assert_grads_close(ours, ref, label):
    assert set(ours) == set(ref) == {"W1", "b1", "W2", "b2"}
    for name in ours:
        assert ours[name].shape == ref[name].shape, f"{label}: d{name} shape {ours[name].shape} != {ref[name].shape}"
        np.testing.assert_allclose(ours[name], ref[name], rtol=RTOL, atol=ATOL, err_msg=f"{label}: d{name}")


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_activation_derivatives_match_torch_autograd(activation):
    z = np.linspace(-6, 6, 241) + 1e-3  # avoid relu's kink at exactly 0
    phi, phi_grad = bp.get_activation(activation)
    zt = torch.from_numpy(z).requires_grad_(True)
    out = getattr(torch, activation)(zt)
    out.sum().backward()
    np.testing.assert_allclose(phi(z), out.detach().numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(phi_grad(z), zt.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_sigmoid_is_stable_for_large_inputs():
    z = np.array([-1000.0, -40.0, 0.0, 40.0, 1000.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        s = bp.sigmoid(z)
    np.testing.assert_allclose(s, [0.0, 4.248354255291589e-18, 0.5, 1.0, 1.0], rtol=1e-12, atol=0)


def test_relu_grad_at_zero_is_zero_and_keeps_dtype():
    z = np.array([-1.0, 0.0, 2.0], dtype=np.float32)
    assert bp.relu_grad(z).tolist() == [0.0, 0.0, 1.0]
    assert bp.relu_grad(z).dtype == np.float32 and bp.relu(z).dtype == np.float32


def test_unknown_activation_says_which_exist():
    with pytest.raises(ValueError, match="choose one of"):
        bp.get_activation("gelu")


def test_init_mlp_shapes_bounds_and_private_seed():
    state = np.random.get_state()[1].copy()
    params = bp.init_mlp(3, 4, 2, seed=5)
    assert {k: v.shape for k, v in params.items()} == {"W1": (3, 4), "b1": (4,), "W2": (4, 2), "b2": (2,)}
    assert all(v.dtype == np.float64 for v in params.values())
    assert np.abs(params["W1"]).max() <= 1 / np.sqrt(3) and np.abs(params["W2"]).max() <= 1 / np.sqrt(4)
    assert np.array_equal(np.random.get_state()[1], state), "init_mlp must not touch NumPy's global generator"
    assert all(np.array_equal(params[k], bp.init_mlp(3, 4, 2, seed=5)[k]) for k in params)


@pytest.mark.parametrize("framework, seed", [("torch", 0), ("tf.GradientTape", 10)])
@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "N{}-{}-{}-{}".format(*s))
def test_gradients_match_the_frameworks(framework, seed, activation, size):
    """The same loss and gradients as PyTorch's autograd and TensorFlow's GradientTape."""
    params, X, Y = problem(*size, seed=seed)
    loss, grads = bp.loss_and_grads(params, X, Y, activation)
    ref_loss, ref_grads = {"torch": torch_grads, "tf.GradientTape": keras_grads}[framework](params, X, Y, activation)
    assert loss == pytest.approx(ref_loss, rel=RTOL, abs=ATOL)
    assert_grads_close(grads, ref_grads, f"{framework}, {activation}")


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "N{}-{}-{}-{}".format(*s))
def test_gradients_pass_the_numerical_check(activation, size):
    params, X, Y = problem(*size, seed=20)
    _, grads = bp.loss_and_grads(params, X, Y, activation)
    before = {k: v.copy() for k, v in params.items()}
    errors = bp.gradient_check(lambda p: bp.loss_and_grads(p, X, Y, activation)[0], params, grads)
    assert set(errors) == set(params)
    assert max(errors.values()) < NUMERIC_TOL, errors
    assert all(np.array_equal(params[k], before[k]) for k in params), "the check must restore every parameter"


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_index_formulas_of_the_chapter_equal_the_backward_pass(activation):
    """The element-wise formulas of chapter 03, section 3, written out with einsum (i sample, l input,
    k hidden unit, j output), equal mlp_backward, including the factor 2 / (N d_out) of the mean."""
    params, X, Y = problem(9, 3, 4, 3, seed=30)
    phi, phi_grad = bp.get_activation(activation)
    Z1 = X @ params["W1"] + params["b1"]  # (N, h)
    E = phi(Z1) @ params["W2"] + params["b2"] - Y  # (N, d_out)
    scale = 2.0 / Y.size  # 2 / (N d_out)
    by_index = {
        "W2": scale * np.einsum("ij,ik->kj", E, phi(Z1)),
        "b2": scale * np.einsum("ij->j", E),
        "W1": scale * np.einsum("ij,kj,ik,il->lk", E, params["W2"], phi_grad(Z1), X),
        "b1": scale * np.einsum("ij,kj,ik->k", E, params["W2"], phi_grad(Z1)),
    }
    assert_grads_close(bp.loss_and_grads(params, X, Y, activation)[1], by_index, f"index formulas, {activation}")


def test_gradient_is_that_of_the_mean_not_the_sum():
    """Repeating every sample leaves a mean's gradient unchanged; the sum's would double."""
    params, X, Y = problem(6, 2, 5, 2, seed=40)
    loss, grads = bp.loss_and_grads(params, X, Y, "tanh")
    loss2, grads2 = bp.loss_and_grads(params, np.concatenate([X, X]), np.concatenate([Y, Y]), "tanh")
    assert loss2 == pytest.approx(loss, rel=1e-12)
    assert_grads_close(grads2, grads, "the data repeated twice")
    summed = {k: Y.size * g for k, g in grads.items()}  # the gradient of the summed squared error
    errors = bp.gradient_check(lambda p: bp.loss_and_grads(p, X, Y, "tanh")[0], params, summed)
    assert all(e == pytest.approx((Y.size - 1) / (Y.size + 1), abs=1e-6) for e in errors.values()), errors


def test_numerical_check_catches_a_wrong_gradient():
    params, X, Y = problem(8, 2, 5, 1, seed=3)
    _, grads = bp.loss_and_grads(params, X, Y, "tanh")
    grads["W1"] = grads["W1"].T.reshape(grads["W1"].shape)  # a classic bug: a wrong transpose
    grads["b2"] = grads["b2"] / 2  # another: forgetting the 2 of the square's derivative
    errors = bp.gradient_check(lambda p: bp.loss_and_grads(p, X, Y, "tanh")[0], params, grads)
    assert errors["W1"] > 1e-2 and errors["b2"] > 1e-2
    assert errors["b1"] < NUMERIC_TOL and errors["W2"] < NUMERIC_TOL


def test_numerical_gradient_of_a_quadratic_is_exact():
    params = {"w": np.array([[1.0, -2.0], [0.5, 3.0]])}
    grads = bp.numerical_gradient(lambda p: float(np.sum(p["w"] ** 2)), params)
    np.testing.assert_allclose(grads["w"], 2 * params["w"], rtol=1e-8)


def test_relative_error():
    assert bp.relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert bp.relative_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert bp.relative_error([1.0, 0.0], [-1.0, 0.0]) == pytest.approx(1.0)
    assert bp.relative_error([1.0], [1.0 + 1e-9]) == pytest.approx(5e-10, rel=1e-3)


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_training_decreases_the_mse(activation):
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(200, 2))  # (N, 2)
    Y = (np.sin(X[:, 0]) * np.cos(X[:, 1]))[:, None]  # (N, 1)
    params = bp.init_mlp(2, 5, 1, seed=0)
    before = {k: v.copy() for k, v in params.items()}
    trained, losses = bp.train_mlp(params, X, Y, activation=activation, lr=0.1, num_epochs=2000)
    assert len(losses) == 2000 and np.all(np.isfinite(losses))
    final = mse(bp.mlp_forward(trained, X, activation)[0], Y)
    assert final < 0.25 * losses[0], f"{activation}: MSE went from {losses[0]:.4f} to only {final:.4f}"
    assert final < 0.03
    assert np.mean(np.diff(losses) <= 1e-12) > 0.95, "full-batch descent with a small step should rarely go up"
    assert all(np.array_equal(params[k], before[k]) for k in params), "train_mlp must not modify its input"


def test_sgd_step_moves_against_the_gradient():
    params = {"w": np.array([1.0, -1.0])}
    new = bp.sgd_step(params, {"w": np.array([0.5, -2.0])}, lr=0.1)
    np.testing.assert_allclose(new["w"], [0.95, -0.8])
    assert params["w"].tolist() == [1.0, -1.0]
