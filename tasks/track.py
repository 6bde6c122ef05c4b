"""Track step: one MLflow run per model (params, metrics, plots, data-quality evidence, the model
artifact). Registering that model as a version is the next step (tasks/register.py); the two are
separate tasks, so a retry of either never repeats the other's side effect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from heart_pipeline.config import Settings
from heart_pipeline.registry import (
    ensure_experiment,
    git_commit,
    model_signature,
    pinned_requirements,
    run_ui_url,
    skops_trusted_types,
    uses_tracking_store,
)
from heart_pipeline.results import DatasetSummary, Evaluation, LoggedRun, ValidationReport
from heart_pipeline.tasks.preprocess import PreparedData
from heart_pipeline.tasks.train import TrainedModel


def local_dataset_source(path: str) -> Any:
    """The file:// source for mlflow.data (passing a bare path triggers an ambiguity warning in MLflow 3.17)."""
    from mlflow.data.dataset_source_registry import get_registered_sources

    source_class: Any = next(s for s in get_registered_sources() if s._get_source_type() == "local")
    return source_class(Path(path).resolve().as_uri())


def find_logged_run(tracking_uri: str, experiment_id: str, flow_run_id: str, algorithm: str) -> Any:
    """A finished run this flow run already logged for ``algorithm`` (so a retry does not log it twice)."""
    import mlflow

    runs = mlflow.MlflowClient(tracking_uri).search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`prefect.flow_run_id` = '{flow_run_id}' and tags.algorithm = '{algorithm}' "
            "and attributes.status = 'FINISHED'"
        ),
        max_results=1,
    )
    return runs[0] if runs else None


@uses_tracking_store
def log_model_run(
    trained: TrainedModel,
    evaluation: Evaluation,
    dataset: DatasetSummary,
    report: ValidationReport,
    prepared: PreparedData,
    settings: Settings,
    tags: dict[str, str],
) -> LoggedRun:
    import mlflow
    import mlflow.sklearn
    from mlflow.data.pandas_dataset import from_pandas

    tracking_uri = settings.tracking_uri
    experiment_id = ensure_experiment(
        tracking_uri, settings.mlflow.experiment, settings.resolve(settings.mlflow.artifact_root)
    )
    ui_base = settings.mlflow_ui_url
    flow_run = tags.get("prefect.flow_run_id", "")
    if flow_run and (existing := find_logged_run(tracking_uri, experiment_id, flow_run, trained.name)):
        run_id = existing.info.run_id
        return LoggedRun(
            trained.name, run_id, experiment_id, f"runs:/{run_id}/model", run_ui_url(ui_base, experiment_id, run_id)
        )
    target = settings.data.target
    run_tags = {
        **tags,
        "algorithm": trained.name,
        "data.fingerprint": dataset.fingerprint,
        "git.commit": git_commit(),
        "data.provenance": dataset.provenance,
    }
    with mlflow.start_run(experiment_id=experiment_id, run_name=trained.name, tags=run_tags) as run:
        mlflow.log_params(
            {
                **{f"model.{k}": v for k, v in trained.params.items()},
                "algorithm": trained.name,
                "seed": trained.seed,
                "threshold": evaluation.threshold,
                "data.path": dataset.path,
                "data.rows_in": report.rows_in,
                "data.rows_kept": report.rows_kept,
                "data.rows_quarantined": report.rows_quarantined,
                "data.duplicates_removed": prepared.duplicates_removed,
                "split.n_train": prepared.n_train,
                "split.n_test": prepared.n_test,
            }
        )
        mlflow.log_metrics(evaluation.metrics)
        for path in evaluation.plots.values():
            mlflow.log_artifact(path, artifact_path="plots")
        if evaluation.metrics_csv:
            mlflow.log_artifact(evaluation.metrics_csv, artifact_path="metrics")
        mlflow.log_dict(
            {
                "threshold": evaluation.threshold,
                "how_chosen": evaluation.threshold_note,
                "cv_scores": evaluation.cv_scores,
            },
            "metrics/cv_scores.json",
        )
        log_data_quality(report)
        # Doubles, as in the model signature: integer columns would make MLflow warn that they cannot
        # hold missing values (true of the features at scoring time, which is why the signature uses doubles).
        training_rows = prepared.x_train.astype("float64").assign(**{target: prepared.y_train.astype("float64")})
        mlflow.log_input(
            from_pandas(
                training_rows,
                source=local_dataset_source(dataset.path),
                targets=target,
                name=f"heart-train-{dataset.fingerprint[:8]}",
            ),
            context="training",
        )
        info = mlflow.sklearn.log_model(
            trained.model,
            name="model",
            signature=model_signature(list(prepared.x_train.columns)),
            input_example=prepared.x_train.head(2).astype("float64"),
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
            skops_trusted_types=skops_trusted_types(),
            pip_requirements=pinned_requirements(),
        )
    return LoggedRun(
        trained.name,
        run.info.run_id,
        experiment_id,
        info.model_uri,
        run_ui_url(ui_base, experiment_id, run.info.run_id),
    )


def log_data_quality(report: ValidationReport) -> None:
    """The gate's evidence travels with the run: summary, quarantine and the full report."""
    import mlflow

    mlflow.log_dict(report.summary(), "data_quality/validation_summary.json")
    if report.quarantine_path:
        mlflow.log_artifact(report.quarantine_path, artifact_path="data_quality")
    if report.report_path:
        mlflow.log_artifact(report.report_path, artifact_path="data_quality")
    if report.html_report_path:  # the page people open: self-contained, so MLflow's artifact view shows it
        mlflow.log_artifact(report.html_report_path, artifact_path="data_quality")


@task(name="track", task_run_name="track-{trained.name}", retries=2, retry_delay_seconds=5)
def log_model_run_task(
    trained: TrainedModel,
    evaluation: Evaluation,
    dataset: DatasetSummary,
    report: ValidationReport,
    prepared: PreparedData,
    settings: Settings,
    tags: dict[str, str],
) -> LoggedRun:
    from prefect import get_run_logger

    logged = log_model_run(trained, evaluation, dataset, report, prepared, settings, tags)
    get_run_logger().info("Logged %s to MLflow run %s", logged.name, logged.run_id)
    return logged


@uses_tracking_store
def log_validation_run(
    report: ValidationReport, dataset: DatasetSummary, settings: Settings, tags: dict[str, str]
) -> str:
    """One MLflow run for a data-quality check (pass or fail); returns its UI URL."""
    import mlflow

    experiment_id = ensure_experiment(
        settings.tracking_uri,
        f"{settings.mlflow.experiment}-data-quality",
        settings.resolve(settings.mlflow.artifact_root),
    )
    run_tags = {
        **tags,
        "data.fingerprint": dataset.fingerprint,
        "data.path": dataset.path,
        "gate.decision": report.decision,
        "git.commit": git_commit(),
    }
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"data-quality-{dataset.fingerprint[:8]}", tags=run_tags
    ) as run:
        mlflow.log_metrics(
            {
                "rows_in": report.rows_in,
                "rows_kept": report.rows_kept,
                "rows_quarantined": report.rows_quarantined,
                "duplicate_rows": report.duplicate_rows,
                "critical_failures": len(report.critical_failures),
                "failed_expectations": sum(not o.success for o in report.outcomes),
            }
        )
        log_data_quality(report)
    return run_ui_url(settings.mlflow_ui_url, experiment_id, run.info.run_id)


@task(name="track-data-quality", retries=2, retry_delay_seconds=5)
def log_validation_run_task(
    report: ValidationReport, dataset: DatasetSummary, settings: Settings, tags: dict[str, str]
) -> str:
    from prefect.artifacts import create_link_artifact

    url = log_validation_run(report, dataset, settings, tags)
    create_link_artifact(
        key="data-quality-mlflow-run",
        link=url,
        link_text="MLflow run with the data-quality evidence (artifacts: data_quality/)",
        description="The MLflow run that records this data-quality check",
    )
    return url
