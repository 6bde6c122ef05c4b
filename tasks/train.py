"""Train step: one sklearn Pipeline (preprocessor + classifier) per algorithm, with its decision threshold."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from sklearn.metrics import roc_curve
from sklearn.model_selection import FixedThresholdClassifier, StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline

from heart_pipeline.config import FeatureGroups, Settings, ThresholdConfig
from heart_pipeline.evidence.algorithms import ALGORITHMS
from heart_pipeline.operations.compute import one_job_inside, parallel_work
from heart_pipeline.tasks.preprocess import PreparedData, build_preprocessor, without


@dataclass(frozen=True)
class TrainedModel:
    name: str
    model: FixedThresholdClassifier  # preprocessor + classifier, labelling at ``threshold``
    params: dict[str, Any]
    seed: int
    n_train: int
    threshold: float
    threshold_note: str
    # Out-of-fold predicted risk of the training rows (None with a fixed threshold): how the model
    # rates patients it did not see, the reference monitoring compares scored batches with.
    out_of_fold_risk: np.ndarray | None = None


def build_model(name: str, params: dict[str, Any], groups: FeatureGroups, seed: int) -> Pipeline:
    """The deployable unit: raw patient rows in, class probabilities out."""
    return Pipeline([("preprocess", build_preprocessor(groups)), ("classifier", ALGORITHMS[name].build(params, seed))])


def youden_threshold(y_true: np.ndarray, proba: np.ndarray) -> float:
    """The probability cut that maximises sensitivity + specificity - 1."""
    fpr, tpr, thresholds = roc_curve(y_true, proba)
    best = int(np.argmax(tpr - fpr))
    return float(np.clip(thresholds[best], 0.0, 1.0))


def choose_threshold(
    model: Pipeline, x: pd.DataFrame, y: pd.Series, policy: ThresholdConfig, n_splits: int, seed: int
) -> tuple[float, str, np.ndarray | None]:
    """The decision threshold, how it was chosen, and the out-of-fold risk it was chosen on (None for a
    fixed threshold). Only training rows are used, never the test set."""
    if policy.strategy == "fixed":
        return policy.value, f"{policy.value:g}: fixed in config (threshold.value)", None
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    out_of_fold = cross_val_predict(one_job_inside(model), x, y, cv=folds, method="predict_proba")[:, 1]
    threshold = youden_threshold(y.to_numpy(), out_of_fold)
    return (
        threshold,
        f"{threshold:.3f}: maximises Youden's J (sensitivity + specificity - 1) on {n_splits}-fold "
        "out-of-fold predictions of the training rows; the test set was not used",
        out_of_fold,
    )


def train_model(name: str, prepared: PreparedData, settings: Settings, seed: int) -> TrainedModel:
    """Fit preprocessor + classifier on the training rows, wrapped with its decision threshold so that
    ``predict`` (and so ``mlflow models serve``) labels rows exactly as batch scoring and the API do."""
    params = settings.hyperparameters(name)
    pipeline = build_model(name, params, without(settings.features, settings.training.exclude_columns), seed)
    x_train, y_train = prepared.x_train, prepared.y_train
    threshold, note, out_of_fold = choose_threshold(
        pipeline, x_train, y_train, settings.threshold, settings.cross_validation.n_splits, seed
    )
    model = FixedThresholdClassifier(pipeline, threshold=threshold, response_method="predict_proba")
    model.fit(x_train, y_train)
    return TrainedModel(name, model, params, seed, len(x_train), threshold, note, out_of_fold)


def train_model_on(
    name: str, prepared: PreparedData, settings: Settings, seed: int, dask_address: str | None
) -> TrainedModel:
    """``train_model`` with its folds and trees on the run's cores or the Dask cluster (compute.py)."""
    with parallel_work(settings.compute.n_jobs, dask_address):
        return train_model(name, prepared, settings, seed)


@task(name="train", task_run_name="train-{name}")
async def train_model_task(
    name: str, prepared: PreparedData, settings: Settings, seed: int, dask_address: str | None = None
) -> TrainedModel:
    """Async so that the task's timeout really fires: the fit runs in a thread the task stops
    waiting for at the deadline (the thread itself finishes in the background)."""
    import anyio
    from prefect import get_run_logger

    fit = partial(train_model_on, name, prepared, settings, seed, dask_address)
    trained = await anyio.to_thread.run_sync(fit, abandon_on_cancel=True)
    get_run_logger().info("Trained %s on %d rows with %s, seed %d", name, trained.n_train, trained.params, seed)
    return trained
