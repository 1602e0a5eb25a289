"""dlwb.losses vs torch.nn.functional, keras.losses and autograd (PyTorch and tf.GradientTape).

Everything runs in float64 (Keras losses are built with ``dtype="float64"``). Tolerance for values and
gradients, vs PyTorch and vs Keras alike: rtol 1e-10, atol 1e-12 (the same float64 arithmetic up to the
order of summation). Extreme logits (±1000) must give finite results equal to the frameworks' within the
same tolerance. Probabilities stay in [0.01, 0.99], where no implementation clips.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dlwb import losses

RTOL, ATOL = 1e-10, 1e-12
SIZES = [(1, 2), (16, 3), (64, 10)]  # (N, d) for elementwise losses, (N, k) for categorical ones


# --------------------------------------------------------------------------- inputs
def regression(rng, n, d):
    return rng.standard_normal((n, d)), rng.standard_normal((n, d))


def probabilities(rng, n, d):
    return rng.uniform(0.01, 0.99, (n, d)), rng.integers(0, 2, (n, d)).astype(np.float64)


def binary_logits(rng, n, d):
    return 3.0 * rng.standard_normal((n, d)), rng.integers(0, 2, (n, d)).astype(np.float64)


def class_probabilities(rng, n, k):
    probs = losses.softmax(rng.standard_normal((n, k)))
    return probs, losses.one_hot(rng.integers(0, k, n), k)


def class_logits(rng, n, k):
    return 3.0 * rng.standard_normal((n, k)), rng.integers(0, k, n)


# --------------------------------------------------------------------------- references
def keras_loss(cls, **kwargs):
    """A Keras loss object computing in float64; called as ``fn(y_true, y_pred)``, as Keras does."""
    import keras

    return getattr(keras.losses, cls)(dtype="float64", **kwargs)


#: name -> (loss, gradient, torch reference(pred, target), keras (class, kwargs), inputs)
CASES = {
    "mse": (losses.mse, losses.mse_grad, F.mse_loss, ("MeanSquaredError", {}), regression),
    "mae": (losses.mae, losses.mae_grad, F.l1_loss, ("MeanAbsoluteError", {}), regression),
    "binary_cross_entropy": (losses.binary_cross_entropy, losses.binary_cross_entropy_grad,
                             F.binary_cross_entropy, ("BinaryCrossentropy", {}), probabilities),
    "binary_cross_entropy_with_logits": (
        losses.binary_cross_entropy_with_logits, losses.binary_cross_entropy_with_logits_grad,
        F.binary_cross_entropy_with_logits, ("BinaryCrossentropy", {"from_logits": True}), binary_logits),
    "categorical_cross_entropy": (
        losses.categorical_cross_entropy, losses.categorical_cross_entropy_grad,
        lambda p, t: F.nll_loss(torch.log(p), t.argmax(dim=1)),  # torch has no loss of probabilities: NLL of log p
        ("CategoricalCrossentropy", {}), class_probabilities),
    "softmax_cross_entropy": (losses.softmax_cross_entropy, losses.softmax_cross_entropy_grad, F.cross_entropy,
                              ("SparseCategoricalCrossentropy", {"from_logits": True}), class_logits),
}


def torch_value_and_grad(reference, pred, target):
    pred_t = torch.tensor(pred, dtype=torch.float64, requires_grad=True)
    target_t = torch.from_numpy(np.asarray(target))
    loss = reference(pred_t, target_t)
    loss.backward()
    return loss.item(), pred_t.grad.numpy()


def keras_value_and_grad(spec, pred, target):
    import tensorflow as tf

    cls, kwargs = spec
    pred_v = tf.Variable(pred, dtype=tf.float64)
    with tf.GradientTape() as tape:
        loss = keras_loss(cls, **kwargs)(np.asarray(target), pred_v)
    return float(loss.numpy()), tape.gradient(loss, pred_v).numpy()


def assert_close(actual, expected, rtol=RTOL, atol=ATOL, what=""):
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.all(np.isfinite(actual)), f"{what}: non-finite values"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


# --------------------------------------------------------------------------- parity
@pytest.mark.parametrize("size", SIZES, ids=[f"{n}x{d}" for n, d in SIZES])
@pytest.mark.parametrize("name", CASES)
def test_value_and_gradient_match_torch(name, size):
    loss, grad, reference, _, inputs = CASES[name]
    pred, target = inputs(np.random.default_rng(sum(size)), *size)
    expected_loss, expected_grad = torch_value_and_grad(reference, pred, target)
    value = loss(pred, target)
    assert isinstance(value, float), f"{name} must return a Python float, got {type(value).__name__}"
    assert_close(value, expected_loss, what=f"{name} vs torch")
    assert_close(grad(pred, target), expected_grad, what=f"{name}_grad vs torch autograd")


@pytest.mark.parametrize("size", SIZES, ids=[f"{n}x{d}" for n, d in SIZES])
@pytest.mark.parametrize("name", CASES)
def test_value_and_gradient_match_keras(name, size):
    pytest.importorskip("keras")
    loss, grad, _, spec, inputs = CASES[name]
    pred, target = inputs(np.random.default_rng(100 + sum(size)), *size)
    expected_loss, expected_grad = keras_value_and_grad(spec, pred, target)
    if name == "categorical_cross_entropy":
        # Keras first rescales each row to sum to 1 (p / sum(p)), which adds 1 / (N sum(p)) = 1 / N to every
        # entry of the gradient: a direction along (1, ..., 1) that leaves the probability simplex.
        expected_grad = expected_grad - 1.0 / len(pred)
    assert_close(loss(pred, target), expected_loss, what=f"{name} vs keras.losses.{spec[0]}")
    assert_close(grad(pred, target), expected_grad, what=f"{name}_grad vs tf.GradientTape")


def test_keras_functional_api_agrees_per_sample():
    """keras.losses.* functions return one loss per sample (mean over the last axis); their mean is ours."""
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(7)
    pred, target = regression(rng, 8, 4)
    assert_close(losses.mse(pred, target), np.mean(keras.losses.mean_squared_error(target, pred)))
    logits, labels = class_logits(rng, 8, 5)
    per_sample = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    assert np.asarray(per_sample).shape == (8,)
    assert_close(losses.softmax_cross_entropy(logits, labels), np.mean(per_sample))


def test_softmax_cross_entropy_with_one_hot_targets_matches_keras_categorical():
    pytest.importorskip("keras")
    logits, labels = class_logits(np.random.default_rng(3), 12, 6)
    targets = losses.one_hot(labels, 6)
    expected = keras_loss("CategoricalCrossentropy", from_logits=True)(targets, logits)
    assert_close(losses.softmax_cross_entropy(logits, labels), float(expected))
    assert_close(losses.softmax_cross_entropy(logits, labels),
                 losses.categorical_cross_entropy(losses.softmax(logits), targets))


def test_many_classes_and_a_batch_of_one():
    rng = np.random.default_rng(11)
    for n, k in [(1, 1000), (1, 2), (3, 5000)]:
        logits, labels = class_logits(rng, n, k)
        expected_loss, expected_grad = torch_value_and_grad(F.cross_entropy, logits, labels)
        assert_close(losses.softmax_cross_entropy(logits, labels), expected_loss, what=f"loss {n}x{k}")
        assert_close(losses.softmax_cross_entropy_grad(logits, labels), expected_grad, what=f"grad {n}x{k}")


# --------------------------------------------------------------------------- extreme logits
EXTREME_LOGITS = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 1000.0], [0.0, 0.0, -1000.0]])


def test_softmax_cross_entropy_is_stable_at_1000():
    labels = np.array([0, 0, 2])  # right, 2000 below the maximum, 1000 below the maximum
    expected_loss, expected_grad = torch_value_and_grad(F.cross_entropy, EXTREME_LOGITS, labels)
    value = losses.softmax_cross_entropy(EXTREME_LOGITS, labels)
    assert_close(value, expected_loss, what="loss at ±1000 vs torch")
    assert_close(value, (0.0 + (2000.0 + math.log(2.0)) + (1000.0 + math.log(2.0))) / 3, what="loss at ±1000, exact")
    assert_close(losses.softmax_cross_entropy_grad(EXTREME_LOGITS, labels), expected_grad, what="grad at ±1000")


def test_softmax_cross_entropy_at_1000_matches_keras():
    pytest.importorskip("keras")
    labels = np.array([1, 2, 0])
    expected_loss, expected_grad = keras_value_and_grad(CASES["softmax_cross_entropy"][3], EXTREME_LOGITS, labels)
    assert_close(losses.softmax_cross_entropy(EXTREME_LOGITS, labels), expected_loss)
    assert_close(losses.softmax_cross_entropy_grad(EXTREME_LOGITS, labels), expected_grad)


def test_binary_cross_entropy_with_logits_is_stable_at_1000():
    z = np.array([[1000.0, -1000.0], [1000.0, -1000.0], [0.0, 30.0]])
    y = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    expected_loss, expected_grad = torch_value_and_grad(F.binary_cross_entropy_with_logits, z, y)
    assert_close(losses.binary_cross_entropy_with_logits(z, y), expected_loss, what="loss at ±1000 vs torch")
    assert_close(losses.binary_cross_entropy_with_logits_grad(z, y), expected_grad, what="grad at ±1000 vs torch")
    assert_close(losses.binary_cross_entropy_with_logits(z, y), (2000.0 + math.log(2.0) + 30.0) / 6)
    pytest.importorskip("keras")
    keras_loss_value, keras_grad = keras_value_and_grad(("BinaryCrossentropy", {"from_logits": True}), z, y)
    assert_close(losses.binary_cross_entropy_with_logits(z, y), keras_loss_value, what="loss at ±1000 vs keras")
    assert_close(losses.binary_cross_entropy_with_logits_grad(z, y), keras_grad, what="grad at ±1000 vs keras")


def test_softmax_helpers_are_stable_and_consistent():
    z = np.array([[1000.0, 1000.0], [-1000.0, -1001.0], [710.0, 0.0]])  # exp(710) overflows float64
    assert_close(losses.logsumexp(z, axis=1), [1000.0 + math.log(2.0), -1000.0 + math.log1p(math.exp(-1.0)), 710.0])
    assert_close(losses.softmax(z), torch.softmax(torch.from_numpy(z), dim=1).numpy())
    assert_close(losses.log_softmax(z), torch.log_softmax(torch.from_numpy(z), dim=1).numpy())
    assert_close(losses.softmax(z).sum(axis=1), np.ones(3))
    assert losses.logsumexp(z, keepdims=True).shape == (3, 1)
    assert_close(losses.logsumexp(z.T, axis=0), losses.logsumexp(z, axis=1))


# --------------------------------------------------------------------------- the worked example of chapter 01
def test_worked_example_one_sample_costs_1_204_nats():
    probs = np.array([[0.3, 0.5, 0.2]])  # the true class (0) gets probability 0.3
    targets = np.array([[1.0, 0.0, 0.0]])
    value = losses.categorical_cross_entropy(probs, targets)
    assert_close(value, -math.log(0.3))
    assert round(value, 3) == 1.204
    logits = np.log(probs)  # softmax(log p) = p
    assert_close(losses.softmax_cross_entropy(logits, [0]), -math.log(0.3))
    assert_close(F.cross_entropy(torch.from_numpy(logits), torch.tensor([0])).item(), value)


def test_the_article_example_divides_by_the_number_of_classes():
    """The bug hunt of chapter 01: ten classes, true class at 0.3; the article's class mean reports 0.1204."""
    probs = np.full((1, 10), 0.7 / 9)
    probs[0, 0] = 0.3
    targets = losses.one_hot(np.array([0]), 10)
    value = losses.categorical_cross_entropy(probs, targets)
    assert_close(value, -math.log(0.3))
    article = float(np.mean(np.mean(-targets * np.log(probs), axis=1)))  # the mean over the class axis
    assert round(article, 4) == 0.1204
    assert_close(article * 10, value)
    assert_close(F.cross_entropy(torch.log(torch.from_numpy(probs)), torch.tensor([0])).item(), value)


def test_mean_is_over_samples_not_classes():
    probs = np.array([[0.3, 0.5, 0.2], [0.1, 0.1, 0.8]])
    targets = losses.one_hot(np.array([0, 2]), 3)
    per_sample = [-math.log(0.3), -math.log(0.8)]
    assert_close(losses.categorical_cross_entropy(probs, targets), np.mean(per_sample))
    wrong = float(np.mean(-targets * np.log(probs)))  # the mistake: a mean over all N * k entries
    assert_close(wrong * 3, np.mean(per_sample))  # ... is k = 3 times too small


def test_gradient_formulas_in_closed_form():
    logits, labels = np.array([[2.0, 1.0, 0.1]]), np.array([0])
    p = losses.softmax(logits)
    assert_close(losses.softmax_cross_entropy_grad(logits, labels), p - np.array([[1.0, 0.0, 0.0]]))  # p - y
    assert_close(losses.mse_grad([3.0, 1.0], [1.0, 1.0]), [2.0, 0.0])  # 2 (y_hat - y) / n
    assert_close(losses.mae_grad([3.0, 1.0, -2.0], [1.0, 1.0, 0.0]), [1 / 3, 0.0, -1 / 3])  # sign / n
    assert_close(losses.binary_cross_entropy_with_logits_grad([0.0], [1.0]), [-0.5])  # sigma(0) - 1


def test_mae_subgradient_at_zero_is_zero_like_torch():
    pred, target = np.array([1.0, 2.0, -1.0]), np.array([1.0, 0.0, 0.0])
    _, expected_grad = torch_value_and_grad(F.l1_loss, pred, target)
    assert_close(losses.mae_grad(pred, target), expected_grad)
    assert losses.mae_grad(pred, target)[0] == 0.0


def test_binary_cross_entropy_stays_finite_at_0_and_1():
    p, y = np.array([0.0, 1.0, 0.5]), np.array([1.0, 0.0, 1.0])  # two confidently wrong predictions
    value = losses.binary_cross_entropy(p, y, eps=1e-7)
    assert_close(value, (2 * -math.log(1e-7) + math.log(2.0)) / 3)  # the clip at eps = 1e-7 bounds each term
    assert np.all(np.isfinite(losses.binary_cross_entropy_grad(p, y)))


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize("loss", [losses.mse, losses.mae, losses.binary_cross_entropy,
                                  losses.binary_cross_entropy_with_logits, losses.mse_grad,
                                  losses.binary_cross_entropy_with_logits_grad])
def test_mismatched_shapes_are_an_error_not_a_broadcast(loss):
    with pytest.raises(ValueError, match=r"\(4, 1\).*\(4,\)"):
        loss(np.full((4, 1), 0.5), np.full(4, 0.5))


def test_empty_input_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        losses.mse(np.zeros(0), np.zeros(0))


@pytest.mark.parametrize("loss", [losses.binary_cross_entropy, losses.binary_cross_entropy_grad])
def test_logits_given_as_probabilities_are_an_error(loss):
    with pytest.raises(ValueError, match="logits"):
        loss(np.array([2.5, -1.3, 0.4]), np.array([1.0, 1.0, 0.0]))


def test_categorical_cross_entropy_validates():
    with pytest.raises(ValueError, match=r"\(N, k\)"):
        losses.categorical_cross_entropy(np.array([0.3, 0.7]), np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="logits"):
        losses.categorical_cross_entropy(np.array([[3.0, -1.0]]), np.array([[1.0, 0.0]]))


@pytest.mark.parametrize("logits, labels, match", [
    (np.zeros(3), [0], r"\(N, k\)"),  # one sample without its batch axis
    (np.zeros((2, 3)), [0], r"shape \(2,\)"),  # one label for two rows
    (np.zeros((2, 3)), np.eye(3)[[0, 1]], r"shape \(2,\)"),  # one-hot instead of indices
    (np.zeros((2, 3)), [0.0, 1.0], "integer"),  # float labels
    (np.zeros((2, 3)), [0, 3], r"\[0, 3\)"),  # a label out of range
    (np.zeros((2, 3)), [-1, 0], r"\[0, 3\)"),
])
def test_softmax_cross_entropy_validates(logits, labels, match):
    for fn in (losses.softmax_cross_entropy, losses.softmax_cross_entropy_grad):
        with pytest.raises(ValueError, match=match):
            fn(logits, labels)


def test_losses_accept_lists_and_float32():
    assert losses.mse([1.0, 2.0], [1.0, 0.0]) == 2.0
    z = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    assert losses.softmax_cross_entropy_grad(z, np.array([2])).dtype == np.float64
    assert_close(losses.softmax_cross_entropy(z, [2]), F.cross_entropy(torch.tensor(z, dtype=torch.float64),
                                                                       torch.tensor([2])).item())


# --------------------------------------------------------------------------- entropy and KL divergence
def distributions(rng, n, k, scale=1.0):
    return losses.softmax(scale * rng.standard_normal((n, k)))


@pytest.mark.parametrize("size", SIZES, ids=[f"{n}x{k}" for n, k in SIZES])
def test_kl_divergence_and_entropy_match_torch(size):
    rng = np.random.default_rng(200 + sum(size))
    p, q = distributions(rng, *size), distributions(rng, *size)
    expected = F.kl_div(torch.log(torch.from_numpy(q)), torch.from_numpy(p), reduction="batchmean").item()
    value = losses.kl_divergence(p, q)
    assert isinstance(value, float)
    assert_close(value, expected, what="kl_divergence vs F.kl_div(batchmean)")
    h = torch.distributions.Categorical(probs=torch.from_numpy(p)).entropy().mean().item()
    assert_close(losses.entropy(p), h, what="entropy vs torch Categorical")


@pytest.mark.parametrize("size", SIZES, ids=[f"{n}x{k}" for n, k in SIZES])
def test_kl_divergence_matches_keras(size):
    pytest.importorskip("keras")
    rng = np.random.default_rng(300 + sum(size))
    p, q = distributions(rng, *size), distributions(rng, *size)  # all entries far above Keras' clip at 1e-7
    assert_close(losses.kl_divergence(p, q), float(keras_loss("KLDivergence")(p, q)), what="vs keras KLDivergence")


def test_cross_entropy_is_entropy_plus_kl_and_kl_is_not_negative():
    rng = np.random.default_rng(12)
    p, q = distributions(rng, 32, 7, 3.0), distributions(rng, 32, 7, 3.0)
    assert_close(losses.categorical_cross_entropy(q, p), losses.entropy(p) + losses.kl_divergence(p, q))
    rows = [losses.kl_divergence(p[i:i + 1], q[i:i + 1]) for i in range(32)]
    assert min(rows) > 0.0
    assert_close(np.mean(rows), losses.kl_divergence(p, q))  # a mean over the rows
    assert losses.kl_divergence(p, p) == 0.0
    # With one-hot targets the entropy is 0: cross-entropy and KL divergence are the same number.
    onehot = losses.one_hot(rng.integers(0, 7, 32), 7)
    assert losses.entropy(onehot) == 0.0
    assert_close(losses.kl_divergence(onehot, q), losses.categorical_cross_entropy(q, onehot))


def test_kl_divergence_is_not_symmetric_and_follows_torch_at_zeros():
    p, q = np.array([[0.9, 0.1]]), np.array([[0.5, 0.5]])
    assert_close(losses.kl_divergence(p, q), 0.9 * math.log(1.8) + 0.1 * math.log(0.2))
    assert_close(losses.kl_divergence(q, p), 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(5.0))
    p, q = np.array([[0.5, 0.5, 0.0]]), np.array([[0.45, 0.45, 0.1]])  # p rules out a class that q allows
    assert_close(losses.kl_divergence(p, q), math.log(0.5 / 0.45))  # 0 log(0 / q) = 0
    assert losses.kl_divergence(q, p) == math.inf  # q allows what p rules out
    for a, b in [(p, q), (q, p)]:
        expected = F.kl_div(torch.log(torch.from_numpy(b)), torch.from_numpy(a), reduction="batchmean").item()
        assert losses.kl_divergence(a, b) == pytest.approx(expected, rel=RTOL)


def test_entropy_limits_and_temperature():
    k = 8
    assert_close(losses.entropy(np.full((3, k), 1.0 / k)), math.log(k))
    z = 3.0 * np.random.default_rng(5).standard_normal((1, k))
    temperatures = [0.1, 0.5, 1.0, 2.0, 4.0, 100.0]
    h = [losses.entropy(losses.softmax(z / T)) for T in temperatures]
    assert all(a < b for a, b in zip(h, h[1:])), "softmax(z / T) flattens as T grows"
    assert h[0] < 0.05 and math.log(k) - h[-1] < 1e-3


def test_soft_target_kl_gradient_is_q_minus_p_over_t():
    rng = np.random.default_rng(9)
    teacher, student, T = 3.0 * rng.standard_normal((16, 5)), 3.0 * rng.standard_normal((16, 5)), 4.0
    s = torch.tensor(student, requires_grad=True)
    loss = F.kl_div(F.log_softmax(s / T, dim=1), F.softmax(torch.from_numpy(teacher) / T, dim=1), reduction="batchmean")
    loss.backward()
    p, q = losses.softmax(teacher / T), losses.softmax(student / T)
    assert_close(losses.kl_divergence(p, q), loss.item())
    assert_close((q - p) / (T * 16), s.grad.numpy())


def test_default_mean_reduction_of_kl_div_divides_by_classes():
    rng = np.random.default_rng(4)
    p, q = distributions(rng, 6, 10), distributions(rng, 6, 10)
    with pytest.warns(UserWarning, match="batchmean"):
        mean = F.kl_div(torch.log(torch.from_numpy(q)), torch.from_numpy(p), reduction="mean").item()
    assert_close(mean * 10, losses.kl_divergence(p, q))


@pytest.mark.parametrize("fn", [losses.entropy, lambda p: losses.kl_divergence(p, p)])
@pytest.mark.parametrize("bad, match", [
    (np.array([0.5, 0.5]), r"\(N, k\)"),  # one distribution without its batch axis
    (np.zeros((0, 3)), r"\(N, k\)|empty"),
    (np.array([[0.5, 0.6]]), "sum to 1"),
    (np.array([[2.0, -1.0]]), "logits"),
])
def test_entropy_and_kl_validate(fn, bad, match):
    with pytest.raises(ValueError, match=match):
        fn(bad)


def test_kl_divergence_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        losses.kl_divergence(np.full((2, 3), 1 / 3), np.full((2, 4), 0.25))
