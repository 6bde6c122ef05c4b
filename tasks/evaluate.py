"""Evaluate step: held-out test metrics, repeated stratified CV with confidence intervals, plots."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: workers and CI have no display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from prefect import task
from scipy import stats
from sklearn.base import BaseEstimator, clone
from sklearn.calibration import CalibrationDisplay
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    PrecisionRecallDisplay,
    RocCurveDisplay,
    accuracy_score,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import RepeatedStratifiedKFold, cross_validate

from heart_pipeline.config import Settings
from tasks.preprocess import PreparedData, read_split
from tasks.train import TrainedModel, load_trained

CV_SCORERS = {"roc_auc": "roc_auc", "accuracy": "accuracy", "log_loss": "neg_log_loss"}


@dataclass(frozen=True)
class Evaluation:
    name: str
    metrics: dict[str, float]
    threshold: float
    threshold_note: str
    plots: dict[str, str] = field(default_factory=dict)
    metrics_csv: str = ""
    cv_scores: dict[str, list[float]] = field(default_factory=dict)


def held_out_metrics(y_true: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    """Held-out metrics at the given decision threshold."""
    predicted = (proba >= threshold).astype(int)
    return {
        "test_accuracy": float(accuracy_score(y_true, predicted)),
        "test_f1": float(f1_score(y_true, predicted, zero_division=0)),
        "test_precision": float(precision_score(y_true, predicted, zero_division=0)),
        "test_recall": float(recall_score(y_true, predicted, zero_division=0)),
        "test_roc_auc": float(roc_auc_score(y_true, proba)),
        "test_log_loss": float(log_loss(y_true, proba, labels=[0, 1])),
    }


def corrected_confidence_interval(
    scores: np.ndarray, n_train: int, n_test: int, n_splits: int, level: float = 0.95
) -> tuple[float, float]:
    """Nadeau-Bengio corrected t-interval for the mean of repeated k-fold scores.

    CV folds overlap, so the plain standard error is too small; the correction inflates the
    variance by n_test/n_train, which keeps the interval honest.
    """
    k = len(scores)
    if k < 2:
        return float(scores.mean()), float(scores.mean())
    variance = np.var(scores, ddof=1) * (1 / k + n_test / n_train)
    half = stats.t.ppf(0.5 + level / 2, df=k - 1) * math.sqrt(variance)
    return float(scores.mean() - half), float(scores.mean() + half)


def cross_validated_metrics(
    model: BaseEstimator, x: pd.DataFrame, y: pd.Series, n_splits: int, n_repeats: int, seed: int
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Mean, std and 95% CI of ROC-AUC, accuracy and log loss over repeated stratified folds.

    The folds depend only on the seed and the data, so every algorithm is scored on the same folds.
    """
    folds = RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=n_repeats, random_state=seed)
    result = cross_validate(clone(model), x, y, cv=folds, scoring=CV_SCORERS, n_jobs=1)
    n_test = len(y) // n_splits
    metrics: dict[str, float] = {}
    scores: dict[str, list[float]] = {}
    for name in CV_SCORERS:
        values = result[f"test_{name}"] * (-1 if name == "log_loss" else 1)
        low, high = corrected_confidence_interval(values, len(y) - n_test, n_test, n_splits)
        metrics.update(
            {
                f"cv_{name}_mean": float(values.mean()),
                f"cv_{name}_std": float(values.std(ddof=1)),
                f"cv_{name}_ci95_low": low,
                f"cv_{name}_ci95_high": high,
            }
        )
        scores[name] = values.tolist()
    return metrics, scores


def save_plots(name: str, y_true: np.ndarray, proba: np.ndarray, threshold: float, out_dir: Path) -> dict[str, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    plots: dict[str, str] = {}
    predicted = (proba >= threshold).astype(int)
    for kind, draw in {
        "roc_curve": lambda ax: RocCurveDisplay.from_predictions(
            y_true, proba, ax=ax, name=name, plot_chance_level=True
        ),
        "confusion_matrix": lambda ax: ConfusionMatrixDisplay.from_predictions(
            y_true, predicted, ax=ax, display_labels=["no disease", "disease"], colorbar=False
        ),
        "precision_recall_curve": lambda ax: PrecisionRecallDisplay.from_predictions(y_true, proba, ax=ax, name=name),
        "calibration_curve": lambda ax: CalibrationDisplay.from_predictions(y_true, proba, n_bins=8, ax=ax, name=name),
    }.items():
        figure, ax = plt.subplots(figsize=(5, 4.5))
        draw(ax)
        ax.set_title(f"{kind.replace('_', ' ')}: {name} (test set)")
        path = out_dir / f"{name}_{kind}.png"
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        plt.close(figure)
        plots[kind] = str(path)
    return plots


def evaluate_model(
    trained: TrainedModel,
    train_path: str,
    test_path: str,
    target: str,
    n_splits: int,
    n_repeats: int,
    seed: int,
    out_dir: Path,
) -> Evaluation:
    model = load_trained(trained)
    threshold = trained.threshold
    x_train, y_train = read_split(train_path, target)
    x_test, y_test = read_split(test_path, target)
    proba = model.predict_proba(x_test)[:, 1]
    metrics = held_out_metrics(y_test.to_numpy(), proba, threshold)
    cv_metrics, cv_scores = cross_validated_metrics(model, x_train, y_train, n_splits, n_repeats, seed)
    metrics.update(cv_metrics)
    train_proba = model.predict_proba(x_train)[:, 1]
    metrics["train_roc_auc"] = float(roc_auc_score(y_train, train_proba))
    plots = save_plots(trained.name, y_test.to_numpy(), proba, threshold, out_dir)
    metrics_csv = out_dir / f"{trained.name}_metrics.csv"
    pd.DataFrame([{"model": trained.name, "threshold": threshold, **metrics}]).to_csv(metrics_csv, index=False)
    return Evaluation(trained.name, metrics, threshold, trained.threshold_note, plots, str(metrics_csv), cv_scores)


@task(name="evaluate", task_run_name="evaluate-{trained.name}")
def evaluate_model_task(
    trained: TrainedModel, prepared: PreparedData, settings: Settings, seed: int, out_dir: Path
) -> Evaluation:
    from prefect import get_run_logger

    evaluation = evaluate_model(
        trained,
        prepared.train_path,
        prepared.test_path,
        settings.data.target,
        settings.cross_validation.n_splits,
        settings.cross_validation.n_repeats,
        seed,
        out_dir,
    )
    m = evaluation.metrics
    get_run_logger().info(
        "%s: test ROC-AUC %.3f, accuracy %.3f, recall %.3f; CV ROC-AUC %.3f (95%% CI %.3f-%.3f)",
        trained.name,
        m["test_roc_auc"],
        m["test_accuracy"],
        m["test_recall"],
        m["cv_roc_auc_mean"],
        m["cv_roc_auc_ci95_low"],
        m["cv_roc_auc_ci95_high"],
    )
    return evaluation
