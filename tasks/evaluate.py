"""Evaluate step: held-out test metrics, repeated stratified CV with confidence intervals, plots."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from prefect import task
from sklearn.base import BaseEstimator
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold, cross_validate

from heart_pipeline.config import CrossValidationConfig, Settings, load_codebook_for
from heart_pipeline.data_contract.files import write_csv_for_people
from heart_pipeline.evidence.plots import PLOT_FILES, model_figures, png_bytes
from heart_pipeline.evidence.stats import bootstrap_intervals, corrected_confidence_interval, held_out_metrics
from heart_pipeline.operations.compute import in_tree_order, one_job_inside, parallel_work
from heart_pipeline.results import Evaluation
from heart_pipeline.tasks.preprocess import PreparedData
from heart_pipeline.tasks.train import TrainedModel

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CV_SCORERS = {"roc_auc": "roc_auc", "accuracy": "accuracy", "log_loss": "neg_log_loss"}


def cross_validated_metrics(
    model: BaseEstimator, x: pd.DataFrame, y: pd.Series, n_splits: int, n_repeats: int, seed: int
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Mean, std and 95% CI of ROC-AUC, accuracy and log loss over repeated stratified folds.

    The folds depend only on the seed and the data, so every algorithm is scored on the same folds.
    """
    folds = RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=n_repeats, random_state=seed)
    # n_jobs unset: the folds run where compute.parallel_work says (this machine's cores or Dask)
    result = cross_validate(one_job_inside(model), x, y, cv=folds, scoring=CV_SCORERS)
    n_test = len(y) // n_splits
    metrics: dict[str, float] = {}
    scores: dict[str, list[float]] = {}
    for name in CV_SCORERS:
        values = result[f"test_{name}"] * (-1 if name == "log_loss" else 1)
        bounds = (0.0, float("inf")) if name == "log_loss" else (0.0, 1.0)
        low, high = corrected_confidence_interval(values, len(y) - n_test, n_test, bounds=bounds)
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


def held_out_probabilities(trained: TrainedModel, prepared: PreparedData) -> np.ndarray:
    with in_tree_order():
        return trained.model.predict_proba(prepared.x_test)[:, 1]


def evaluate_model(
    trained: TrainedModel, prepared: PreparedData, proba: np.ndarray, cv: CrossValidationConfig, seed: int
) -> Evaluation:
    """Test-set metrics at the model's threshold, and repeated-CV metrics with corrected intervals on the
    training rows (the same folds for every model)."""
    metrics = held_out_metrics(prepared.y_test.to_numpy(), proba, trained.threshold)
    metrics.update(bootstrap_intervals(prepared.y_test.to_numpy(), proba, trained.threshold, seed))
    cv_metrics, cv_scores = cross_validated_metrics(
        trained.model, prepared.x_train, prepared.y_train, cv.n_splits, cv.n_repeats, seed
    )
    metrics.update(cv_metrics)
    with in_tree_order():
        train_proba = trained.model.predict_proba(prepared.x_train)[:, 1]
    metrics["train_roc_auc"] = float(roc_auc_score(prepared.y_train, train_proba))
    return Evaluation(trained.name, metrics, trained.threshold, trained.threshold_note, cv_scores)


def write_evaluation(evaluation: Evaluation, figures: dict[str, Figure], out_dir: Path) -> Evaluation:
    """PNGs and the metrics CSV in the run folder; the same file names for every model (one folder each)
    and every run (``PLOT_FILES``), so MLflow compares runs image by image."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {}
    for kind, figure in figures.items():
        path = out_dir / PLOT_FILES[kind]
        path.write_bytes(png_bytes(figure))
        plots[kind] = str(path)
    metrics_csv = out_dir / "metrics.csv"
    write_csv_for_people(
        pd.DataFrame([{"model": evaluation.name, "threshold": evaluation.threshold, **evaluation.metrics}]), metrics_csv
    )
    return replace(evaluation, plots=plots, metrics_csv=str(metrics_csv))


@task(name="evaluate", task_run_name="evaluate-{trained.name}")
def evaluate_model_task(
    trained: TrainedModel,
    prepared: PreparedData,
    settings: Settings,
    seed: int,
    out_dir: Path,
    dask_address: str | None = None,
) -> Evaluation:
    from prefect import get_run_logger

    proba = held_out_probabilities(trained, prepared)
    with parallel_work(settings.compute.n_jobs, dask_address):
        evaluation = evaluate_model(trained, prepared, proba, settings.cross_validation, seed)
    figures = model_figures(
        trained.model,
        prepared.x_test,
        prepared.y_test.to_numpy(),
        trained.name,
        evaluation.metrics,
        load_codebook_for(settings),
        seed,
        training=(prepared.x_train, prepared.y_train.to_numpy()),
    )
    evaluation = write_evaluation(evaluation, figures, out_dir / trained.name)
    m = evaluation.metrics
    get_run_logger().info(
        "%s: test ROC-AUC %.3f (95%% CI %.3f-%.3f), accuracy %.3f, recall %.3f; CV ROC-AUC %.3f (95%% CI %.3f-%.3f)",
        trained.name,
        m["test_roc_auc"],
        m["test_roc_auc_ci95_low"],
        m["test_roc_auc_ci95_high"],
        m["test_accuracy"],
        m["test_recall"],
        m["cv_roc_auc_mean"],
        m["cv_roc_auc_ci95_low"],
        m["cv_roc_auc_ci95_high"],
    )
    return evaluation
