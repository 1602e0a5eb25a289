"""dlwb.metrics vs sklearn.metrics: accuracy, precision/recall/F1 (macro), ROC curves and AUC, edge cases."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as sk

from dlwb import metrics

TOL = 1e-12  # both sides compute the same ratios of counts in float64


def random_labels(seed, n=200, k=5):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, k, n)
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, k, n))  # a classifier right about 60% + chance
    return y_true, y_pred


def sk_macro(y_true, y_pred, k):
    p, r, f, _ = sk.precision_recall_fscore_support(y_true, y_pred, labels=list(range(k)), average="macro",
                                                    zero_division=0)
    return p, r, f


def test_accuracy_is_the_same_on_numpy_and_torch():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((40, 5))  # (N, k)
    y = logits.argmax(axis=1)
    y[:23] = (y[:23] + 1) % 5  # 23 wrong, 17 right
    on_numpy = metrics.accuracy(logits, y)
    assert isinstance(on_numpy, np.float64) and on_numpy == 17 / 40 == sk.accuracy_score(y, logits.argmax(axis=1))
    logits_t, y_t = torch.from_numpy(logits).float(), torch.from_numpy(y)
    on_torch = metrics.accuracy(logits_t, y_t)
    assert on_torch.shape == () and on_torch.dtype == torch.float32  # a tensor, where the inputs are
    assert on_torch.item() == pytest.approx(on_numpy, rel=1e-7)
    assert torch.equal(on_torch, (logits_t.argmax(dim=-1) == y_t).float().mean())  # the Trainer's old metric


def test_metrics_imports_nothing_above_numpy():
    script = ("import sys\nimport dlwb.metrics\n"
              "print(sorted(m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}).stdout
    assert out.strip().splitlines()[-1] == "[]", f"importing dlwb.metrics loaded {out.strip()}"


@pytest.mark.parametrize("seed", range(5))
def test_macro_scores_match_sklearn(seed):
    k = 3 + seed
    y_true, y_pred = random_labels(seed, k=k)
    ours = metrics.precision_recall_f1(y_true, y_pred, k)
    assert all(isinstance(v, float) for v in ours)
    np.testing.assert_allclose(ours, sk_macro(y_true, y_pred, k), rtol=TOL, atol=TOL)


def test_per_class_scores_match_sklearn():
    y_true, y_pred = random_labels(7, k=4)
    precision, recall, f1 = metrics.precision_recall_f1(y_true, y_pred, 4, average=None)
    ref = sk.precision_recall_fscore_support(y_true, y_pred, labels=[0, 1, 2, 3], average=None, zero_division=0)
    for ours, theirs in zip((precision, recall, f1), ref[:3]):
        assert ours.shape == (4,)
        np.testing.assert_allclose(ours, theirs, rtol=TOL, atol=TOL)


def test_f1_is_the_harmonic_mean_of_precision_and_recall():
    y_true, y_pred = random_labels(7, n=300, k=4)
    precision, recall, f1 = metrics.precision_recall_f1(y_true, y_pred, 4, average=None)
    assert np.all(precision + recall > 0)
    np.testing.assert_allclose(f1, 2 / (1 / precision + 1 / recall), rtol=0, atol=TOL)
    # Dominated by the smaller of the two: precision 1, recall 0.1 -> F1 2/11, far below their mean 0.55.
    p, r, f = metrics.precision_recall_f1([1] * 10 + [0] * 90, [1] + [0] * 99, 2, average=None)
    assert (p[1], r[1]) == (1.0, 0.1) and f[1] == pytest.approx(2 / 11, abs=TOL)


def test_class_never_predicted_counts_as_zero_precision_without_warnings():
    y_true = np.array([0, 0, 1, 1, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 0, 1, 0])  # class 2 is never predicted
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0/0 must not warn (sklearn would, without zero_division)
        precision, recall, f1 = metrics.precision_recall_f1(y_true, y_pred, 3, average=None)
    assert precision[2] == 0.0 and recall[2] == 0.0 and f1[2] == 0.0
    np.testing.assert_allclose(precision, [1 / 3, 2 / 4, 0.0])
    np.testing.assert_allclose(recall, [1 / 2, 2 / 2, 0 / 3])
    np.testing.assert_allclose(metrics.precision_recall_f1(y_true, y_pred, 3), sk_macro(y_true, y_pred, 3),
                               rtol=TOL, atol=TOL)


def test_class_absent_from_both_still_counts_in_the_macro_mean():
    y_true = np.array([0, 1, 1, 0])
    y_pred = np.array([0, 1, 0, 0])
    p3, r3, f3 = metrics.precision_recall_f1(y_true, y_pred, 3)  # class 2 appears nowhere
    p2, r2, f2 = metrics.precision_recall_f1(y_true, y_pred, 2)
    assert p3 == pytest.approx(p2 * 2 / 3) and r3 == pytest.approx(r2 * 2 / 3) and f3 == pytest.approx(f2 * 2 / 3)
    np.testing.assert_allclose((p3, r3, f3), sk_macro(y_true, y_pred, 3), rtol=TOL, atol=TOL)


def test_perfect_predictions_and_bad_average():
    y = np.array([0, 1, 2, 2, 1])
    assert metrics.precision_recall_f1(y, y) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="average"):
        metrics.precision_recall_f1(y, y, average="micro")


@pytest.mark.parametrize("seed", range(5))
def test_roc_curve_matches_sklearn_including_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 100)
    scores = np.round(rng.random(100) + 0.3 * y, 1)  # rounded, so many scores tie
    fpr, tpr, thresholds = metrics.roc_curve(y, scores)
    ref_fpr, ref_tpr, ref_thresholds = sk.roc_curve(y, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(tpr, ref_tpr, rtol=TOL, atol=TOL)
    np.testing.assert_array_equal(thresholds, ref_thresholds)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert metrics.auc(fpr, tpr) == pytest.approx(sk.roc_auc_score(y, scores), rel=TOL, abs=TOL)
    assert metrics.auc(fpr, tpr) == pytest.approx(sk.auc(ref_fpr, ref_tpr), rel=TOL, abs=TOL)


def test_auc_of_perfect_reversed_and_constant_scores():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.7])
    assert metrics.auc(*metrics.roc_curve(y, s)[:2]) == pytest.approx(1.0)
    assert metrics.auc(*metrics.roc_curve(y, -s)[:2]) == pytest.approx(0.0)
    assert metrics.auc(*metrics.roc_curve(y, np.zeros(6))[:2]) == pytest.approx(0.5)  # one threshold: the diagonal


def test_roc_curve_needs_both_classes():
    with pytest.raises(ValueError, match="both positives and negatives"):
        metrics.roc_curve([1, 1, 1], [0.2, 0.5, 0.9])
    with pytest.raises(ValueError, match="both positives and negatives"):
        metrics.roc_curve([0, 0], [0.2, 0.5])
    with pytest.raises(ValueError, match="values"):
        metrics.roc_curve([0, 1, 1], [0.2, 0.5])


@pytest.mark.parametrize("seed", range(3))
def test_one_vs_rest_auc_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    k, n = 4, 300
    y = rng.integers(0, k, n)
    logits = rng.standard_normal((n, k)) + 1.5 * np.eye(k)[y]  # informative, imperfect scores
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)  # (n, k), rows sum to 1
    ours = metrics.roc_auc_ovr(y, probs)
    assert ours == pytest.approx(sk.roc_auc_score(y, probs, multi_class="ovr", average="macro"), rel=TOL, abs=TOL)
    per_class = metrics.roc_auc_ovr(y, probs, average=None)
    assert per_class.shape == (k,)
    for c in range(k):
        assert per_class[c] == pytest.approx(sk.roc_auc_score(y == c, probs[:, c]), rel=TOL, abs=TOL)


def test_one_vs_rest_auc_errors():
    probs = np.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"\[2\] never occur"):
        metrics.roc_auc_ovr([0, 1, 0, 1], probs)
    with pytest.raises(ValueError, match="shape"):
        metrics.roc_auc_ovr([0, 1, 2], probs)
