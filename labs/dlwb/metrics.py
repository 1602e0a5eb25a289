"""Classification metrics from scratch: accuracy, the confusion matrix, precision, recall, F1, ROC curves, AUC.

Defined in chapter 03, where each is derived from the confusion matrix (:func:`confusion_matrix`:
rows are true classes, columns predicted classes) and checked against ``sklearn.metrics``.
Only NumPy: :mod:`dlwb.plots` draws these numbers, and nothing here depends on it. :func:`accuracy`,
the metric :class:`dlwb.train.Trainer` reports, takes NumPy arrays or torch tensors without importing torch.
"""

from __future__ import annotations

import numpy as np


def accuracy(logits, y):
    """Share of rows whose largest logit is the true class: ``mean(argmax(logits) == y)``.

    ``logits`` (N, k) and labels ``y`` (N,), both NumPy arrays or both torch tensors. The
    count is made where the arrays are: tensors give a 0-dim float32 tensor on their own
    device (no copy to the CPU, so :class:`dlwb.train.Trainer` calls it on every batch),
    NumPy arrays a float64.

    Defined in chapter 03.
    """
    correct = (logits.argmax(-1) == y).sum()  # (): the number of right predictions, as an integer
    return correct / len(y)  # integer / int: float32 for a tensor, float64 for NumPy


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """Counts ``C[i, j]`` = number of samples of true class ``i`` predicted as class ``j``.

    Defined in chapter 03.
    """
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must have the same shape")
    largest = int(max(y_true.max(), y_pred.max()))
    k = num_classes or largest + 1
    if largest >= k or min(y_true.min(), y_pred.min()) < 0:
        raise ValueError(f"labels must be in [0, {k}); found {min(y_true.min(), y_pred.min())}..{largest}: "
                         "pass the right num_classes")
    return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)


def safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise ``numerator / denominator``, with 0 where the denominator is 0.

    Defined in chapter 03.
    """
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator != 0)


def precision_recall_f1(y_true, y_pred, num_classes: int | None = None, *, average: str | None = "macro"):
    """Precision, recall and F1 of a classifier, per class or their macro average.

    With the confusion matrix ``C`` and, for class ``c``, ``TP = C[c, c]``,
    ``FP = sum_i C[i, c] - TP`` (its column) and ``FN = sum_j C[c, j] - TP`` (its row)::

        precision_c = TP / (TP + FP)      of the samples predicted c, the share that are c
        recall_c    = TP / (TP + FN)      of the samples that are c, the share predicted c
        F1_c        = 2 TP / (2 TP + FP + FN) = 2 precision_c recall_c / (precision_c + recall_c)

    F1 is the harmonic mean of precision and recall, not their average: it is
    high only when both are.

    A ratio ``0 / 0`` (a class never predicted, or never present) counts as 0, as with
    scikit-learn's ``zero_division=0``. ``average="macro"`` returns the unweighted means over
    all ``num_classes`` classes as three floats; ``average=None`` the three per-class arrays.

    Defined in chapter 03.
    """
    if average not in ("macro", None):
        raise ValueError(f"average must be 'macro' or None, got {average!r}")
    cm = confusion_matrix(y_true, y_pred, num_classes)  # (k, k)
    tp = np.diag(cm)  # (k,)
    predicted = cm.sum(axis=0)  # (k,) TP + FP: column sums
    actual = cm.sum(axis=1)  # (k,) TP + FN: row sums
    precision = safe_divide(tp, predicted)
    recall = safe_divide(tp, actual)
    f1 = safe_divide(2 * tp, predicted + actual)  # 2 TP / (2 TP + FP + FN)
    if average is None:
        return precision, recall, f1
    return float(precision.mean()), float(recall.mean()), float(f1.mean())


def roc_curve(y_true, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ROC curve of a binary score: false- and true-positive rates at every threshold.

    ``y_true`` holds 1 (or True) for positives and 0 for negatives; a sample is predicted
    positive when ``score >= threshold``. Lowering the threshold past each distinct score
    moves the curve up (a positive) or right (a negative)::

        TPR(t) = #{positives with score >= t} / #positives
        FPR(t) = #{negatives with score >= t} / #negatives

    Returns ``(fpr, tpr, thresholds)``, starting at ``(0, 0)`` with threshold ``inf``; the
    same points as ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``.

    Defined in chapter 03.
    """
    y_true = np.asarray(y_true).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if y_true.shape != scores.shape:
        raise ValueError(f"y_true has {y_true.size} values but scores has {scores.size}")
    n_pos = int(y_true.sum())
    if n_pos == 0 or n_pos == y_true.size:
        raise ValueError("a ROC curve needs both positives and negatives in y_true; only one class is present")
    order = np.argsort(-scores, kind="stable")  # highest score first
    scores, y_true = scores[order], y_true[order]
    last_of_each = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]  # last index of each distinct score
    tps = np.cumsum(y_true)[last_of_each]  # positives with score >= threshold
    fps = last_of_each + 1 - tps  # negatives with score >= threshold
    fpr = np.r_[0.0, fps / (y_true.size - n_pos)]
    tpr = np.r_[0.0, tps / n_pos]
    thresholds = np.r_[np.inf, scores[last_of_each]]
    return fpr, tpr, thresholds


def auc(x, y) -> float:
    """Area under the curve through the points ``(x_i, y_i)`` (``x`` sorted), by the trapezoidal rule.

    Defined in chapter 03.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def roc_auc_ovr(y_true, probs, *, average: str | None = "macro"):
    """One-vs-rest ROC AUC of a multi-class classifier.

    For each class ``c`` the positives are the samples of class ``c``, the score is
    ``probs[:, c]`` (shape of ``probs``: ``(N, k)``), and the AUC is the area under that ROC
    curve. ``average="macro"`` returns the mean over the ``k`` classes (as
    ``sklearn.metrics.roc_auc_score(..., multi_class="ovr")``), ``None`` the per-class array.
    Every class must occur in ``y_true``.

    Defined in chapter 03.
    """
    if average not in ("macro", None):
        raise ValueError(f"average must be 'macro' or None, got {average!r}")
    y_true, probs = np.asarray(y_true), np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) != len(y_true):
        raise ValueError(f"probs must have shape (N, k) with N = {len(y_true)}, got {probs.shape}")
    missing = sorted(set(range(probs.shape[1])) - set(y_true.tolist()))
    if missing:
        raise ValueError(f"class(es) {missing} never occur in y_true, so their one-vs-rest AUC is undefined")
    aucs = np.array([auc(*roc_curve(y_true == c, probs[:, c])[:2]) for c in range(probs.shape[1])])  # (k,)
    return aucs if average is None else float(aucs.mean())
