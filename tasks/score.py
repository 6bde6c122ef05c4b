"""Score step: label patients with a registered model (the ``champion`` for batch scoring).

Rows whose recorded values are valid are scored; a missing value goes to the model's imputers, and
every run reports per column the share it imputed and warns by name when a column is mostly imputed
(a column the site does not record). The reading shared with external validation lives here too:
an optional site column split off, the codebook's "not measured" placeholders read as missing, and
the gate without the coding check for a file the project's own importer wrote.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task

from heart_pipeline.config import Settings, load_codebook_for
from heart_pipeline.data_contract.contract import Contract, without_coding_check
from heart_pipeline.data_contract.files import write_csv_for_people
from heart_pipeline.data_contract.recorded import imputation_warnings, imputed_shares
from heart_pipeline.monitoring.record import record_scored_batch_safely
from heart_pipeline.operations.runtime import retry_unless_pipeline_error
from heart_pipeline.results import ScoringResult
from heart_pipeline.tasks.load import Dataset, load_dataset, read_placeholders_as_missing, split_off_column
from heart_pipeline.tasks.preprocess import imputed_with
from heart_pipeline.tracking.registry import champion_version, load_model_version, predict_with_threshold


def columns_used(model: Any) -> list[str]:
    """The raw columns the fitted pipeline reads (a column it was trained without is not among them)."""
    pipeline = getattr(model, "estimator_", model)
    preprocess = pipeline.named_steps["preprocess"]
    return [str(c) for name, _, columns in preprocess.transformers_ if name != "remainder" for c in columns]


def load_for_scoring(path: Path, settings: Settings, columns: list[str]) -> tuple[Dataset, pd.Series | None]:
    """A file read for scoring: its optional site column split off (indexed by file line), and the
    codebook's "not measured" placeholders (chol 0) read as missing."""
    dataset, sites = split_off_column(load_dataset(path, settings, columns), settings.evaluation.site_column)
    return read_placeholders_as_missing(dataset, load_codebook_for(settings).not_measured), sites


@task(name="load", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_unless_pipeline_error)
def load_for_scoring_task(path: Path, settings: Settings, columns: list[str]) -> tuple[Dataset, pd.Series | None]:
    from prefect import get_run_logger

    dataset, sites = load_for_scoring(path, settings, columns)
    get_run_logger().info(
        "Loaded %s: %d rows, sha256 %s; provenance: %s; site column: %s; placeholders read as missing: %s",
        dataset.path,
        len(dataset.raw.frame),
        dataset.fingerprint[:12],
        dataset.provenance,
        "none" if sites is None else sorted({str(v) for v in sites.dropna().unique()}),
        dataset.placeholders_read_as_missing or "none",
    )
    return dataset, sites


def gate_for_file(contract: Contract, dataset: Dataset) -> Contract:
    """The gate a scored file runs: without the coding check when the project's importer wrote it
    (its codes are ours by construction; another population's shares must not read as another coding)."""
    return without_coding_check(contract) if dataset.converted_with else contract


def imputation_report(model: Any, rows: pd.DataFrame, settings: Settings) -> tuple[dict[str, float], list[str]]:
    """Per column the model reads, the share of ``rows`` it imputes, and a warning per mostly-imputed column."""
    shares = imputed_shares(rows, columns_used(model))
    mostly = settings.evaluation.mostly_imputed_share
    return shares, imputation_warnings(shares, mostly, imputed_with(settings.features))


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
    patients: pd.DataFrame,
    feature_columns: list[str],
    settings: Settings,
    out_dir: Path,
    out_path: Path | None,
    sites: pd.Series | None = None,
) -> ScoringResult:
    from prefect import get_run_logger

    name = settings.mlflow.registered_model
    # One exact version (not the alias), so labels and the reported version always agree.
    version = champion_version(settings.tracking_uri, name)
    model = load_model_version(settings.tracking_uri, name, version)
    predictions = score_rows(model, patients, feature_columns, version)
    if sites is not None:  # the file's site column, split off before the gate, goes back beside each patient
        predictions.insert(0, settings.evaluation.site_column, sites.reindex(predictions.index).to_numpy())
    path, copied = write_predictions(predictions, out_dir, out_path)
    shares, warnings = imputation_report(model, patients, settings)
    features = patients[feature_columns]
    monitoring = record_scored_batch_safely(
        settings, version, features, predictions["probability"].to_numpy(), None, "batch-scoring", shares
    )
    result = ScoringResult(
        str(path), len(predictions), version, str(copied) if copied else None, shares, warnings, monitoring
    )
    logger = get_run_logger()
    logger.info("Scored %d rows with %s v%s -> %s", result.rows_scored, name, version, result.where)
    logger.info("%s", monitoring)
    for warning in warnings:
        logger.warning("%s", warning)
    return result
