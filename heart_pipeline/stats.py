"""Statistics with one home: held-out metrics, corrected CV intervals and the corrected paired t-test.

scikit-learn and SciPy are imported inside the functions, so that reading the config (which names
the metrics) stays cheap.
"""

from __future__ import annotations

import math

import numpy as np

# The held-out metrics every model reports, as ``test_<name>``; promotion floors may use any of them.
HELD_OUT_METRICS = ("accuracy", "f1", "precision", "recall", "roc_auc", "log_loss")


def held_out_metrics(y_true: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    """Held-out metrics at the given decision threshold (labels: probability >= threshold)."""
    from sklearn.metrics import accuracy_score, f1_score, log_loss, precision_score, recall_score, roc_auc_score

    predicted = (proba >= threshold).astype(int)
    both_classes = len(np.unique(y_true)) == 2
    return {
        "test_accuracy": float(accuracy_score(y_true, predicted)),
        "test_f1": float(f1_score(y_true, predicted, zero_division=0)),
        "test_precision": float(precision_score(y_true, predicted, zero_division=0)),
        "test_recall": float(recall_score(y_true, predicted, zero_division=0)),
        "test_roc_auc": float(roc_auc_score(y_true, proba)) if both_classes else float("nan"),
        "test_log_loss": float(log_loss(y_true, proba, labels=[0, 1])),
    }


def corrected_variance_factor(n_folds_total: int, n_train: int, n_test: int) -> float:
    """Nadeau-Bengio: CV folds overlap, so the plain 1/k variance factor is too small; add n_test/n_train."""
    return 1 / n_folds_total + n_test / n_train


def corrected_confidence_interval(
    scores: np.ndarray, n_train: int, n_test: int, level: float = 0.95
) -> tuple[float, float]:
    """Nadeau-Bengio corrected t-interval for the mean of repeated k-fold scores."""
    from scipy import stats

    k = len(scores)
    if k < 2:
        return float(scores.mean()), float(scores.mean())
    variance = np.var(scores, ddof=1) * corrected_variance_factor(k, n_train, n_test)
    half = stats.t.ppf(0.5 + level / 2, df=k - 1) * math.sqrt(variance)
    return float(scores.mean() - half), float(scores.mean() + half)


def corrected_paired_t_test(differences: np.ndarray, n_train: int, n_test: int) -> float:
    """Two-sided p-value that the mean of paired per-fold differences is zero (corrected resampled t-test)."""
    from scipy import stats

    k = len(differences)
    variance = np.var(differences, ddof=1) * corrected_variance_factor(k, n_train, n_test) if k >= 2 else 0.0
    if variance <= 0:
        return 1.0 if differences.mean() == 0 else 0.0
    t_stat = differences.mean() / math.sqrt(variance)
    return float(2 * stats.t.sf(abs(t_stat), df=k - 1))
