"""Score step: label new patients with the registered ``champion`` model."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task

from heart_pipeline.config import Settings
from heart_pipeline.errors import PipelineError
from tasks.promote import CHAMPION, current_champion
from tasks.track import tracking_store


@dataclass(frozen=True)
class ScoringResult:
    predictions_path: str
    rows_scored: int
    model_version: str
    copied_to: str | None


def champion_version(tracking_uri: str, name: str) -> str:
    import mlflow

    with tracking_store(tracking_uri):
        version = current_champion(mlflow.MlflowClient(tracking_uri), name)
    if version is None:
        raise PipelineError(f"no model '{name}@{CHAMPION}' in {tracking_uri}: run `heart-pipeline train` first")
    return version


def load_model_version(tracking_uri: str, name: str, version: str) -> Any:
    """Load one exact version (not the alias), so labels and the reported version always agree."""
    import mlflow.sklearn

    with tracking_store(tracking_uri):
        return mlflow.sklearn.load_model(f"models:/{name}/{version}")


def predict_with_threshold(model: Any, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels from one pass through the pipeline.

    ``FixedThresholdClassifier.predict`` would run the preprocessor a second time; the label
    rule is the same (probability >= the model's threshold).
    """
    probability = model.predict_proba(features)[:, 1]
    return probability, (probability >= model.threshold).astype(int)


def score_rows(model: Any, patients: pd.DataFrame, feature_columns: list[str], version: str) -> pd.DataFrame:
    """The input columns plus the probability of disease, the label at the model's threshold, and the version."""
    probability, label = predict_with_threshold(model, patients[feature_columns].astype("float64"))
    return patients.assign(probability=probability, label=label, model_version=version)


def score_file(
    validated_path: Path, feature_columns: list[str], tracking_uri: str, name: str, out_dir: Path, out_path: Path | None
) -> ScoringResult:
    version = champion_version(tracking_uri, name)
    model = load_model_version(tracking_uri, name, version)
    predictions = score_rows(model, pd.read_csv(validated_path), feature_columns, version)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "predictions.csv"
    predictions.to_csv(path, index=False)
    copied = None
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        partial = out_path.with_name(f".{out_path.name}.partial")
        shutil.copyfile(path, partial)
        partial.replace(out_path)  # a reader never sees half a file
        copied = str(out_path)
    return ScoringResult(str(path), len(predictions), version, copied)


@task(name="score", retries=1, retry_delay_seconds=5)
def score_patients_task(
    validated_path: Path, feature_columns: list[str], settings: Settings, out_dir: Path, out_path: Path | None
) -> ScoringResult:
    from prefect import get_run_logger

    result = score_file(
        validated_path, feature_columns, settings.tracking_uri, settings.mlflow.registered_model, out_dir, out_path
    )
    get_run_logger().info(
        "Scored %d rows with %s v%s -> %s",
        result.rows_scored,
        settings.mlflow.registered_model,
        result.model_version,
        result.copied_to or result.predictions_path,
    )
    return result
