"""Train step: one sklearn Pipeline (preprocessor + classifier) per algorithm."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import joblib
from prefect import task
from sklearn.base import ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
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


def hyperparameters(name: ModelName, models: ModelsConfig) -> dict[str, Any]:
    return getattr(models, name).model_dump()


def build_model(name: ModelName, params: dict[str, Any], groups: FeatureGroups) -> Pipeline:
    """The deployable unit: raw patient rows in, class probabilities out."""
    return Pipeline([("preprocess", build_preprocessor(groups)), ("classifier", ALGORITHMS[name](**params))])


def train_model(
    name: ModelName,
    params: dict[str, Any],
    groups: FeatureGroups,
    train_path: str,
    target: str,
    out_dir: Path,
    seed: int | None = None,
) -> TrainedModel:
    x_train, y_train = read_split(train_path, target)
    if seed is not None and "random_state" in params:
        params = {**params, "random_state": seed}
    model = build_model(name, params, groups).fit(x_train, y_train)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / f"{name}.joblib"
    joblib.dump(model, model_path)
    return TrainedModel(name=name, model_path=str(model_path), params=params, n_train=len(x_train))


def load_trained(trained: TrainedModel) -> Pipeline:
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
    )
    trained = await anyio.to_thread.run_sync(fit, abandon_on_cancel=True)
    get_run_logger().info("Trained %s on %d rows with %s", name, trained.n_train, trained.params)
    return trained
