"""Loss functions and their gradients, from scratch in NumPy.

Defined in chapter 01 (``notebooks/01_losses.ipynb``), where each loss is derived from a likelihood,
checked against ``torch.nn.functional`` and ``keras.losses``, and differentiated by hand; entropy and the KL
divergence follow, as used by distillation (chapter 10). Lab 01 asks for the stable softmax cross-entropy and
its gradient.

Conventions (those of the frameworks' default ``"mean"`` reduction):

- A loss returns a Python ``float``, the mean over samples of the per-sample loss.
  For the elementwise losses (MSE, MAE, binary cross-entropy) every entry of the array is a sample:
  the mean runs over all its entries. For the categorical cross-entropies a sample is a row of an
  ``(N, k)`` array; its loss is a *sum* over the ``k`` classes, and the mean runs over the ``N`` rows only.
  The same holds for :func:`entropy` and :func:`kl_divergence`, whose rows are probability distributions.
- ``<loss>_grad`` returns the gradient of that mean with respect to the first argument (predictions,
  probabilities or logits), with the first argument's shape.
- Inputs are converted to float64. Shapes are checked, never broadcast: an ``(N, 1)`` prediction
  minus an ``(N,)`` target would silently become an ``(N, N)`` array.
"""

from __future__ import annotations

import numpy as np


def _as_pair(y_pred, y_true):
    """Predictions and targets as float64 arrays of the same, non-empty shape."""
    y_pred = np.asarray(y_pred, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.float64)
    if y_pred.shape != y_true.shape:
        raise ValueError(
            f"predictions have shape {y_pred.shape} but targets have shape {y_true.shape}; they must be equal "
            f"(reshape one of them: (N, 1) against (N,) would broadcast to (N, N))"
        )
    if y_pred.size == 0:
        raise ValueError("empty input: the mean over zero samples is undefined")
    return y_pred, y_true


def mse(y_pred, y_true) -> float:
    r"""Mean squared error over all :math:`n` entries: :math:`\frac1n \sum_i (\hat y_i - y_i)^2`.

    The negative log-likelihood of Gaussian noise with a fixed variance, up to constants.

    Defined in chapter 01.
    """
    y_pred, y_true = _as_pair(y_pred, y_true)
    return float(np.mean((y_pred - y_true) ** 2))


def mse_grad(y_pred, y_true) -> np.ndarray:
    r"""Gradient of :func:`mse` with respect to ``y_pred``: :math:`\frac2n (\hat y - y)`.

    Defined in chapter 01.
    """
    y_pred, y_true = _as_pair(y_pred, y_true)
    return 2.0 * (y_pred - y_true) / y_pred.size


def mae(y_pred, y_true) -> float:
    r"""Mean absolute error over all :math:`n` entries: :math:`\frac1n \sum_i |\hat y_i - y_i|`.

    The negative log-likelihood of Laplace noise, up to constants; less sensitive to outliers than MSE.

    Defined in chapter 01.
    """
    y_pred, y_true = _as_pair(y_pred, y_true)
    return float(np.mean(np.abs(y_pred - y_true)))


def mae_grad(y_pred, y_true) -> np.ndarray:
    r"""(Sub)gradient of :func:`mae` with respect to ``y_pred``: :math:`\frac1n \operatorname{sign}(\hat y - y)`.

    At :math:`\hat y_i = y_i` the absolute value has no derivative; like PyTorch we use 0 there.

    Defined in chapter 01.
    """
    y_pred, y_true = _as_pair(y_pred, y_true)
    return np.sign(y_pred - y_true) / y_pred.size


def _check_probabilities(p) -> None:
    """Raise a ValueError (with a hint about logits) unless every entry of ``p`` is in [0, 1]."""
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError(
            f"predictions must be probabilities in [0, 1], but they range from {np.nanmin(p):.4g} to "
            f"{np.nanmax(p):.4g}. Are they logits (raw outputs of a linear layer)? Then use the from-logits "
            f"loss (binary_cross_entropy_with_logits / softmax_cross_entropy), or apply sigmoid/softmax first."
        )


def binary_cross_entropy(p, y, eps: float = 1e-7) -> float:
    r"""Binary cross-entropy of probabilities, averaged over all :math:`n` entries.

    :math:`-\frac1n \sum_i \big[y_i \log p_i + (1 - y_i) \log(1 - p_i)\big]`, the negative log-likelihood
    of Bernoulli labels :math:`y_i \in \{0, 1\}` (soft labels in [0, 1] work too). ``p`` is clipped to
    ``[eps, 1 - eps]`` so that the logarithms stay finite (Keras clips the same way; PyTorch instead
    clamps each log at -100). Raises ``ValueError`` if ``p`` leaves [0, 1]: those are logits.

    Defined in chapter 01.
    """
    p, y = _as_pair(p, y)
    _check_probabilities(p)
    p = np.clip(p, eps, 1.0 - eps)  # log(0) = -inf
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def binary_cross_entropy_grad(p, y, eps: float = 1e-7) -> np.ndarray:
    r"""Gradient of :func:`binary_cross_entropy` with respect to ``p``: :math:`\frac1n \frac{p - y}{p (1 - p)}`.

    It grows without bound as a wrong prediction approaches 0 or 1; ``p`` is clipped as in the loss.

    Defined in chapter 01.
    """
    p, y = _as_pair(p, y)
    _check_probabilities(p)
    p = np.clip(p, eps, 1.0 - eps)
    return (p - y) / (p * (1.0 - p)) / p.size


def binary_cross_entropy_with_logits(z, y) -> float:
    r"""Binary cross-entropy of logits :math:`z` (:math:`p = \sigma(z)`), stable for any finite :math:`z`.

    :math:`-[y \log \sigma(z) + (1 - y) \log(1 - \sigma(z))] = \log(1 + e^{z}) - y z
    = \max(z, 0) - y z + \log(1 + e^{-|z|})`, averaged over all entries. The last form never
    exponentiates a positive number, so it cannot overflow, and never takes the log of 0.

    Defined in chapter 01.
    """
    z, y = _as_pair(z, y)
    return float(np.mean(np.maximum(z, 0.0) - y * z + np.log1p(np.exp(-np.abs(z)))))


def binary_cross_entropy_with_logits_grad(z, y) -> np.ndarray:
    r"""Gradient of :func:`binary_cross_entropy_with_logits` with respect to ``z``: :math:`\frac1n (\sigma(z) - y)`.

    Defined in chapter 01.
    """
    z, y = _as_pair(z, y)
    e = np.exp(-np.abs(z))  # in (0, 1]: no overflow
    sigma = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return (sigma - y) / z.size


def logsumexp(z, axis: int = -1, keepdims: bool = False) -> np.ndarray:
    r""":math:`\log \sum_j e^{z_j}` along ``axis``, as :math:`m + \log \sum_j e^{z_j - m}` with :math:`m = \max_j z_j`.

    Subtracting the maximum changes nothing mathematically but keeps every ``exp`` in (0, 1]: no overflow,
    and the largest term is exactly 1, so the sum never underflows to 0 either.

    Defined in chapter 01.
    """
    z = np.asarray(z, dtype=np.float64)
    m = np.max(z, axis=axis, keepdims=True)
    out = m + np.log(np.sum(np.exp(z - m), axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


def log_softmax(z, axis: int = -1) -> np.ndarray:
    r"""Log-probabilities :math:`\log \operatorname{softmax}(z)_j = z_j - \log \sum_l e^{z_l}`, stably.

    Defined in chapter 01.
    """
    z = np.asarray(z, dtype=np.float64)
    return z - logsumexp(z, axis=axis, keepdims=True)


def softmax(z, axis: int = -1) -> np.ndarray:
    r"""Probabilities :math:`\operatorname{softmax}(z)_j = e^{z_j} / \sum_l e^{z_l}`, stably (via :func:`log_softmax`).

    Defined in chapter 01.
    """
    return np.exp(log_softmax(z, axis=axis))


def one_hot(labels, num_classes: int) -> np.ndarray:
    """Integer labels of shape ``(N,)`` as float64 one-hot rows of shape ``(N, num_classes)``.

    Defined in chapter 01.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D array of integer class indices, got shape {labels.shape}, "
                         f"dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got values from {labels.min()} to {labels.max()}")
    return np.eye(num_classes)[labels]


def categorical_cross_entropy(probs, targets, eps: float = 1e-7) -> float:
    r"""Cross-entropy of class probabilities ``probs`` (N, k) against ``targets`` (N, k), one-hot or soft.

    :math:`-\frac1N \sum_{i=1}^N \sum_{j=1}^k t_{ij} \log p_{ij}`: a **sum** over classes, a **mean** over
    the :math:`N` samples (dividing by :math:`N k` instead would shrink the loss and its gradient :math:`k`-fold).
    For a one-hot row only the true class counts: a sample whose true class gets probability 0.3 costs
    :math:`-\ln 0.3 \approx 1.204` nats. ``probs`` is clipped to ``[eps, 1]`` to keep the log finite.

    Defined in chapter 01.
    """
    probs, targets = _as_pair(probs, targets)
    if probs.ndim != 2:
        raise ValueError(f"probs must have shape (N, k), got {probs.shape}; for one sample use probs[None, :]")
    _check_probabilities(probs)
    log_p = np.log(np.clip(probs, eps, 1.0))  # (N, k)
    return float(-np.sum(targets * log_p) / probs.shape[0])  # mean over the N samples only


def categorical_cross_entropy_grad(probs, targets, eps: float = 1e-7) -> np.ndarray:
    r"""Gradient of :func:`categorical_cross_entropy` with respect to ``probs``: :math:`-\frac1N \frac{t_{ij}}{p_{ij}}`.

    Defined in chapter 01.
    """
    probs, targets = _as_pair(probs, targets)
    if probs.ndim != 2:
        raise ValueError(f"probs must have shape (N, k), got {probs.shape}; for one sample use probs[None, :]")
    _check_probabilities(probs)
    return -targets / np.clip(probs, eps, 1.0) / probs.shape[0]


def _check_logits_labels(logits, labels):
    """Logits as a float64 (N, k) array and labels as N integers in [0, k); a ValueError says what is wrong."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if logits.ndim != 2 or logits.shape[0] == 0:
        raise ValueError(f"logits must have shape (N, k) with N >= 1, got {logits.shape}; "
                         f"for one sample use logits[None, :]")
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"labels must have shape ({logits.shape[0]},), one class index per row of logits, "
                         f"got {labels.shape}; for one-hot targets use categorical_cross_entropy(softmax(logits), ...)")
    one_hot(labels, logits.shape[1])  # raises unless the labels are integers in [0, k)
    return logits, labels


def softmax_cross_entropy(logits, labels) -> float:
    r"""Cross-entropy of integer ``labels`` (N,) given ``logits`` (N, k), stable for any finite logits.

    :math:`\frac1N \sum_i \big(\log \sum_j e^{z_{ij}} - z_{i, y_i}\big)`, i.e. the mean over samples of
    :math:`-\log \operatorname{softmax}(z_i)_{y_i}`, computed with :func:`logsumexp` so that no ``exp``
    overflows (what ``torch.nn.functional.cross_entropy`` and Keras' ``from_logits=True`` compute).

    Defined in chapter 01.
    """
    logits, labels = _check_logits_labels(logits, labels)
    n = logits.shape[0]
    return float(np.mean(logsumexp(logits, axis=1) - logits[np.arange(n), labels]))


def softmax_cross_entropy_grad(logits, labels) -> np.ndarray:
    r"""Gradient of :func:`softmax_cross_entropy` with respect to the logits: :math:`\frac1N (p - y)`.

    :math:`p = \operatorname{softmax}(z)` row by row and :math:`y` the one-hot labels; shape (N, k).

    Defined in chapter 01.
    """
    logits, labels = _check_logits_labels(logits, labels)
    n, k = logits.shape
    return (softmax(logits, axis=1) - one_hot(labels, k)) / n


def _check_distributions(name, p) -> None:
    """Raise a ValueError unless ``p`` is an (N, k) array, N >= 1, whose rows are probability distributions."""
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, k), one distribution per row, with N >= 1, got {p.shape}; "
                         f"for one distribution use {name}[None, :]")
    _check_probabilities(p)
    sums = p.sum(axis=1)
    if not np.allclose(sums, 1.0, rtol=0.0, atol=1e-6):
        raise ValueError(f"each row of {name} must sum to 1, but the sums range from {sums.min():.6g} to "
                         f"{sums.max():.6g}; normalise it first (softmax of logits, or divide by the row sums)")


def entropy(p) -> float:
    r"""Entropy :math:`H(p) = -\sum_j p_j \log p_j` of each row of ``p`` (N, k), averaged over the N rows (nats).

    Terms with :math:`p_j = 0` count 0 (the limit of :math:`x \log x`). A one-hot row has entropy 0, the uniform
    distribution over k classes :math:`\ln k`, the largest possible. PyTorch:
    ``torch.distributions.Categorical(probs=p).entropy().mean()``.

    Defined in chapter 01.
    """
    p = np.asarray(p, dtype=np.float64)
    _check_distributions("p", p)
    support = p > 0  # 0 log 0 = 0
    return float(-np.sum(p[support] * np.log(p[support])) / p.shape[0])


def kl_divergence(p, q) -> float:
    r"""KL divergence :math:`\mathrm{KL}(p \,\|\, q) = \sum_j p_j (\log p_j - \log q_j)` of each row, averaged over the
    N rows: ``p`` (N, k) the target distributions, ``q`` (N, k) the predicted ones.

    It equals :math:`H(p, q) - H(p)`, cross-entropy minus entropy; it is never negative, 0 only for
    :math:`q = p`, and not symmetric. Terms with :math:`p_j = 0` count 0; :math:`q_j = 0` where :math:`p_j > 0`
    makes it infinite. PyTorch: ``F.kl_div(log q, p, reduction="batchmean")`` (log-probabilities first; the
    default ``"mean"`` divides by N k); Keras: ``KLDivergence()(p, q)``, which clips both to [1e-7, 1].

    Defined in chapter 01.
    """
    p, q = _as_pair(p, q)
    _check_distributions("p", p)
    _check_distributions("q", q)
    support = p > 0  # 0 log(0 / q) = 0: classes the target rules out cost nothing
    with np.errstate(divide="ignore"):  # q = 0 where p > 0: log 0 = -inf, an infinite divergence
        terms = p[support] * (np.log(p[support]) - np.log(q[support]))  # (entries of the support,)
    return float(np.sum(terms) / p.shape[0])
