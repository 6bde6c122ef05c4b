"""Score step: label new patients with the registered ``champion`` model."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task

from heart_pipeline.config import Settings
from heart_pipeline.data_contract.files import write_csv_for_people
from heart_pipeline.results import ScoringResult
from heart_pipeline.tracking.registry import champion_version, load_model_version, predict_with_threshold


def score_rows(model: Any, patients: pd.DataFrame, feature_columns: list[str], version: str) -> pd.DataFrame:
    """The input columns plus the probability of disease, the label at the model's threshold, and the version."""
    probability, label = predict_with_threshold(model, patients[feature_columns].astype("float64"))
    return patients.assign(probability=probability, label=label, model_version=version)


def write_predictions(predictions: pd.DataFrame, out_dir: Path, out_path: Path | None) -> tuple[Path, Path | None]:
    """predictions.csv in the run folder, and an atomic copy at ``out_path`` (a reader never sees half a file)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "predictions.csv"
    write_csv_for_people(predictions, path)
    if out_path is None:
        return path, None
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(f".{out_path.name}.partial")
    shutil.copyfile(path, partial)
    partial.replace(out_path)
    return path, out_path


@task(name="score", retries=1, retry_delay_seconds=5)
def score_patients_task(
    patients: pd.DataFrame, feature_columns: list[str], settings: Settings, out_dir: Path, out_path: Path | None
) -> ScoringResult:
    from prefect import get_run_logger

    name = settings.mlflow.registered_model
    # One exact version (not the alias), so labels and the reported version always agree.
    version = champion_version(settings.tracking_uri, name)
    model = load_model_version(settings.tracking_uri, name, version)
    predictions = score_rows(model, patients, feature_columns, version)
    path, copied = write_predictions(predictions, out_dir, out_path)
    result = ScoringResult(str(path), len(predictions), version, str(copied) if copied else None)
    get_run_logger().info("Scored %d rows with %s v%s -> %s", result.rows_scored, name, version, result.where)
    return result
