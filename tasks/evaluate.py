"""Evaluate step: held-out test metrics, repeated stratified CV with confidence intervals, plots."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from prefect import task
from sklearn.base import BaseEstimator
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold, cross_validate

from heart_pipeline.config import Settings, load_codebook_for
from heart_pipeline.data_contract.files import write_csv_for_people
from heart_pipeline.evidence.plots import PLOT_FILES, model_figures, png_bytes
from heart_pipeline.evidence.render import subgroup_markdown
from heart_pipeline.evidence.stats import (
    BOOTSTRAP_RESAMPLES,
    bootstrap_intervals,
    corrected_confidence_interval,
    held_out_metrics,
)
from heart_pipeline.evidence.subgroups import SubgroupSettings, group_labels, subgroup_frame, subgroup_table
from heart_pipeline.operations.compute import in_tree_order, one_job_inside, parallel_work
from heart_pipeline.results import Evaluation, SubgroupResult
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


def subgroup_settings(settings: Settings, seed: int) -> SubgroupSettings:
    floor = settings.promotion.floors.get("test_recall", 0.0)
    return SubgroupSettings(settings.evaluation.min_group_rows, floor, seed, BOOTSTRAP_RESAMPLES)


def subgroups_of(
    frame: pd.DataFrame, y: np.ndarray, proba: np.ndarray, threshold: float, settings: Settings, seed: int
) -> list[SubgroupResult]:
    """The subgroup table of scored rows (sex, age band, and site when ``frame`` has the site column):
    the one call the internal test evaluation and external validation share."""
    sex = load_codebook_for(settings).columns["sex"].codes
    labels = group_labels(frame, settings.evaluation.age_bands, sex, settings.evaluation.site_column)
    return subgroup_table(labels, y, proba, threshold, subgroup_settings(settings, seed))


def write_subgroups(rows: list[SubgroupResult], out_dir: Path) -> list[Path]:
    """``subgroups.json`` (every figure), ``subgroups.csv`` and ``subgroups.md`` (readable)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "subgroups.json", out_dir / "subgroups.csv", out_dir / "subgroups.md"]
    paths[0].write_text(json.dumps([asdict(r) for r in rows], indent=2, default=_json_value), encoding="utf-8")
    subgroup_frame(rows).to_csv(paths[1], index=False)
    paths[2].write_text(subgroup_markdown(rows), encoding="utf-8")
    return paths


def _json_value(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else str(value)


def held_out_probabilities(trained: TrainedModel, prepared: PreparedData) -> np.ndarray:
    with in_tree_order():
        return trained.model.predict_proba(prepared.x_test)[:, 1]


def evaluate_model(
    trained: TrainedModel, prepared: PreparedData, proba: np.ndarray, settings: Settings, seed: int
) -> Evaluation:
    """Test-set metrics at the model's threshold, and repeated-CV metrics with corrected intervals on the
    training rows (the same folds for every model), and the held-out rows' subgroup table (sex, age band)."""
    metrics = held_out_metrics(prepared.y_test.to_numpy(), proba, trained.threshold)
    metrics.update(bootstrap_intervals(prepared.y_test.to_numpy(), proba, trained.threshold, seed))
    cv = settings.cross_validation
    cv_metrics, cv_scores = cross_validated_metrics(
        trained.model, prepared.x_train, prepared.y_train, cv.n_splits, cv.n_repeats, seed
    )
    metrics.update(cv_metrics)
    with in_tree_order():
        train_proba = trained.model.predict_proba(prepared.x_train)[:, 1]
    metrics["train_roc_auc"] = float(roc_auc_score(prepared.y_train, train_proba))
    y_test = prepared.y_test.to_numpy()
    groups = subgroups_of(prepared.x_test, y_test, proba, trained.threshold, settings, seed)
    return Evaluation(trained.name, metrics, trained.threshold, trained.threshold_note, cv_scores, subgroups=groups)


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
    subgroup_files = [str(p) for p in write_subgroups(evaluation.subgroups, out_dir)] if evaluation.subgroups else []
    return replace(evaluation, plots=plots, metrics_csv=str(metrics_csv), subgroup_files=subgroup_files)


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
        evaluation = evaluate_model(trained, prepared, proba, settings, seed)
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
