"""Train step: one sklearn Pipeline (preprocessor + classifier) per algorithm."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from prefect import task
from sklearn.base import ClassifierMixin, clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_curve
from sklearn.model_selection import FixedThresholdClassifier, StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline

from heart_pipeline.config import FeatureGroups, ModelName, ModelsConfig, Settings
from tasks.preprocess import PreparedData, build_preprocessor, read_split

ALGORITHMS: dict[str, type[ClassifierMixin]] = {
    "logistic_regression": LogisticRegression,
    "random_forest": RandomForestClassifier,
}


@dataclass(frozen=True)
class TrainedModel:
    name: str
    model_path: str
    params: dict[str, Any]
    n_train: int
    threshold: float
    threshold_note: str


def hyperparameters(name: ModelName, models: ModelsConfig) -> dict[str, Any]:
    return getattr(models, name).model_dump()


def build_model(name: ModelName, params: dict[str, Any], groups: FeatureGroups) -> Pipeline:
    """The deployable unit: raw patient rows in, class probabilities out."""
    return Pipeline([("preprocess", build_preprocessor(groups)), ("classifier", ALGORITHMS[name](**params))])


def youden_threshold(y_true: np.ndarray, proba: np.ndarray) -> float:
    """The probability cut that maximises sensitivity + specificity - 1."""
    fpr, tpr, thresholds = roc_curve(y_true, proba)
    best = int(np.argmax(tpr - fpr))
    return float(np.clip(thresholds[best], 0.0, 1.0))


def choose_threshold(
    model: Pipeline, x: pd.DataFrame, y: pd.Series, strategy: str, value: float, n_splits: int, seed: int
) -> tuple[float, str]:
    """The decision threshold and how it was chosen. Only training rows are used, never the test set."""
    if strategy == "fixed":
        return value, f"{value:g}: fixed in config (threshold.value)"
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    out_of_fold = cross_val_predict(clone(model), x, y, cv=folds, method="predict_proba")[:, 1]
    threshold = youden_threshold(y.to_numpy(), out_of_fold)
    return threshold, (
        f"{threshold:.3f}: maximises Youden's J (sensitivity + specificity - 1) on {n_splits}-fold "
        "out-of-fold predictions of the training rows; the test set was not used"
    )


def train_model(
    name: ModelName,
    params: dict[str, Any],
    groups: FeatureGroups,
    train_path: str,
    target: str,
    out_dir: Path,
    seed: int,
    threshold_strategy: str = "fixed",
    threshold_value: float = 0.5,
    n_splits: int = 5,
) -> TrainedModel:
    """Fit preprocessor + classifier, wrapped with its decision threshold so that ``predict`` (and
    so ``mlflow models serve``) labels rows exactly as batch scoring and the API do."""
    x_train, y_train = read_split(train_path, target)
    if "random_state" in params:
        params = {**params, "random_state": seed}
    pipeline = build_model(name, params, groups)
    threshold, note = choose_threshold(pipeline, x_train, y_train, threshold_strategy, threshold_value, n_splits, seed)
    model = FixedThresholdClassifier(pipeline, threshold=threshold, response_method="predict_proba")
    model.fit(x_train, y_train)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / f"{name}.joblib"
    joblib.dump(model, model_path)
    return TrainedModel(name, str(model_path), params, len(x_train), threshold, note)


def load_trained(trained: TrainedModel) -> FixedThresholdClassifier:
    return joblib.load(trained.model_path)


@task(name="train", task_run_name="train-{name}", tags=["training"])
async def train_model_task(
    name: ModelName, prepared: PreparedData, settings: Settings, seed: int, out_dir: Path
) -> TrainedModel:
    """Async so that the task's timeout really fires: the fit runs in a thread the task stops
    waiting for at the deadline (the thread itself finishes in the background)."""
    import anyio
    from prefect import get_run_logger

    fit = partial(
        train_model,
        name,
        hyperparameters(name, settings.models),
        settings.features,
        prepared.train_path,
        settings.data.target,
        out_dir,
        seed,
        settings.threshold.strategy,
        settings.threshold.value,
        settings.cross_validation.n_splits,
    )
    trained = await anyio.to_thread.run_sync(fit, abandon_on_cancel=True)
    get_run_logger().info("Trained %s on %d rows with %s", name, trained.n_train, trained.params)
    return trained
