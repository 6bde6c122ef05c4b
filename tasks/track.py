"""Track step: one MLflow run per model (params, metrics, plots, data-quality evidence, the model
artifact). Registering that model as a version is the next step (tasks/register.py); the two are
separate tasks, so a retry of either never repeats the other's side effect."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task

from heart_pipeline.config import Settings, load_codebook_for
from heart_pipeline.evidence.render import markdown_text
from heart_pipeline.monitoring.drift import training_profile
from heart_pipeline.results import DatasetSummary, Evaluation, LoggedRun, ValidationReport
from heart_pipeline.tasks.preprocess import PreparedData
from heart_pipeline.tasks.train import TrainedModel
from heart_pipeline.tracking.registry import (
    FLOW_RUN_TAG,
    TRAINING_PROFILE_ARTIFACT,
    ensure_experiment,
    model_signature,
    pinned_requirements,
    run_ui_url,
    skops_trusted_types,
    source_tags,
    uses_tracking_store,
)


def local_dataset_source(path: str) -> Any:
    """The file:// source for mlflow.data (passing a bare path triggers an ambiguity warning in MLflow 3.17)."""
    from mlflow.data.dataset_source_registry import get_registered_sources

    source_class: Any = next(s for s in get_registered_sources() if s._get_source_type() == "local")
    return source_class(Path(path).resolve().as_uri())


# Model runs point at the one data-quality run of their flow run, which holds the validation report.
EVIDENCE_TAG = "data_quality.run_url"


def mlflow_run_name(what: str, fingerprint: str, when: datetime | None = None) -> str:
    """Unique and readable in the runs table: what ran, on which data, when (UTC)."""
    return f"{what}-{fingerprint[:8]}-{(when or datetime.now(UTC)):%Y%m%d-%H%M%S}"


def prefect_source() -> tuple[str, str]:
    """(MLflow source name, a clickable Prefect flow-run link or a plain note) for the current flow run.

    A temporary Prefect server (no PREFECT_API_URL) is gone when the command ends, so its URL would
    be a dead link: the note then says where the run was instead.
    """
    from prefect.runtime import flow_run
    from prefect.settings import get_current_settings

    source = f"prefect flow {flow_run.flow_name or 'local'}"
    if flow_run.id is None:
        return source, "Logged outside a Prefect flow run."
    if get_current_settings().server.ephemeral.enabled and not get_current_settings().api.url:
        return source, f"Prefect flow run `{flow_run.name}` ran on a temporary server (no UI kept)."
    # Prefect's own URL builder: the same link its engine logs ("View at ..."), which the UI routes.
    from prefect.utilities.urls import url_for

    url = url_for("flow-run", obj_id=flow_run.id)
    return source, f"Prefect flow run: [{flow_run.name}]({url})" if url else f"Prefect flow run `{flow_run.name}`."


def headline_metrics(evaluation: Evaluation) -> list[tuple[str, str]]:
    """The numbers a reader looks for first, with their intervals where the evaluation has them."""
    m = evaluation.metrics

    def with_interval(key: str) -> str:
        low, high = m.get(f"{key}_ci95_low"), m.get(f"{key}_ci95_high")
        return f"{m[key]:.3f}" + (f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else "")

    cv = with_interval("cv_roc_auc_mean") if "cv_roc_auc_mean" in m else "-"
    rows = [("CV ROC-AUC (mean, 95% CI)", cv)]
    for key, label in (
        ("test_roc_auc", "test ROC-AUC"),
        ("test_recall", "test recall"),
        ("test_precision", "test precision"),
    ):
        if key in m:
            rows.append((label, with_interval(key)))
    rows.append(("decision threshold", f"{evaluation.threshold:.3f}"))
    return rows


def run_note(evaluation: Evaluation, dataset: DatasetSummary, prefect_link: str, evidence: str) -> str:
    """The run's description (mlflow.note.content): headline numbers, the data, and where to look next."""
    table = "\n".join(f"| {label} | {value} |" for label, value in headline_metrics(evaluation))
    return (
        f"**{evaluation.name}** on data `{dataset.fingerprint[:12]}` ({dataset.path})\n\n"
        f"| metric | value |\n|---|---|\n{table}\n\n"
        f"{prefect_link}\n\n{evidence}\n"
    )


def log_training_input(run_id: str, dataset: DatasetSummary, n_rows: int, signature: Any, tracking_uri: str) -> None:
    """The training data as an MLflow dataset input, described from what the pipeline already knows:
    the file's SHA-256 as the digest and the model signature as the schema. ``mlflow.data.from_pandas``
    would hash and infer a schema over every training row instead (seconds per model at 1M rows)."""
    import mlflow
    from mlflow.entities import Dataset, DatasetInput, InputTag

    entity = Dataset(
        name=f"heart-train-{dataset.fingerprint[:8]}",
        digest=dataset.fingerprint[:36],
        source_type="local",
        source=local_dataset_source(dataset.path).to_json(),
        schema=json.dumps({"mlflow_colspec": signature.inputs.to_dict()}),
        profile=json.dumps({"num_rows": n_rows}),
    )
    mlflow.MlflowClient(tracking_uri).log_inputs(
        run_id, datasets=[DatasetInput(entity, tags=[InputTag("mlflow.data.context", "training")])]
    )


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

    tracking_uri = settings.tracking_uri
    experiment_id = ensure_experiment(
        tracking_uri, settings.mlflow.experiment, settings.resolve(settings.mlflow.artifact_root)
    )
    ui_base = settings.mlflow_ui_url
    flow_run = tags.get(FLOW_RUN_TAG, "")
    if flow_run and (existing := find_logged_run(tracking_uri, experiment_id, flow_run, trained.name)):
        run_id = existing.info.run_id
        return LoggedRun(
            trained.name,
            run_id,
            experiment_id,
            f"runs:/{run_id}/{trained.name}",
            run_ui_url(ui_base, experiment_id, run_id),
        )
    source, prefect_link = prefect_source()
    run_tags = {
        **tags,
        **source_tags(source),
        "algorithm": trained.name,
        "data.fingerprint": dataset.fingerprint,
        "data.provenance": dataset.provenance,
    }
    evidence_url = tags.get(EVIDENCE_TAG, "")
    evidence = f"Validation report (once per flow run): [data-quality run]({evidence_url})" if evidence_url else ""
    signature = model_signature(list(prepared.x_train.columns))
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=mlflow_run_name(trained.name, dataset.fingerprint),
        tags=run_tags,
        description=run_note(evaluation, dataset, prefect_link, evidence),
    ) as run:
        log_run_contents(trained, evaluation, dataset, report, prepared, list(load_codebook_for(settings).columns))
        log_training_input(run.info.run_id, dataset, prepared.n_train, signature, tracking_uri)
        info = log_model_artifact(trained, signature, prepared)
    return LoggedRun(
        trained.name,
        run.info.run_id,
        experiment_id,
        info.model_uri,
        run_ui_url(ui_base, experiment_id, run.info.run_id),
    )


def run_params(
    trained: TrainedModel,
    evaluation: Evaluation,
    dataset: DatasetSummary,
    report: ValidationReport,
    prepared: PreparedData,
) -> dict[str, Any]:
    """What one model run was made from: its hyperparameters, seed, threshold, data and split."""
    return {
        **{f"model.{k}": v for k, v in trained.params.items()},
        "algorithm": trained.name,
        "seed": trained.seed,
        "threshold": evaluation.threshold,
        "data.path": dataset.path,
        "data.rows_in": report.rows_in,
        "data.rows_kept": report.rows_kept,
        "data.rows_quarantined": report.rows_quarantined,
        "data.duplicates_removed": prepared.duplicates_removed,
        "data.disease_share": round(float(report.disease_share_kept), 4)
        if report.disease_share_kept is not None
        else "",
        "split.n_train": prepared.n_train,
        "split.n_test": prepared.n_test,
    }


INTERVAL_SUFFIXES = ("_ci95_low", "_ci95_high")


def split_metrics(metrics: dict[str, float]) -> tuple[dict[str, float], dict[str, list[Any]]]:
    """(the point metrics MLflow's runs table shows, a table of every metric with its 95% interval).

    Logged as metrics, the interval bounds and SDs made 56 columns that hid the headline ones."""
    headline = {k: v for k, v in metrics.items() if not k.endswith((*INTERVAL_SUFFIXES, "_std"))}
    names = sorted(headline)
    table: dict[str, list[Any]] = {
        "metric": names,
        "value": [headline[n] for n in names],
        "ci95_low": [metrics.get(f"{n.removesuffix('_mean')}_ci95_low") for n in names],
        "ci95_high": [metrics.get(f"{n.removesuffix('_mean')}_ci95_high") for n in names],
        "sd": [metrics.get(f"{n.removesuffix('_mean')}_std") for n in names],
    }
    return headline, table


def log_run_contents(
    trained: TrainedModel,
    evaluation: Evaluation,
    dataset: DatasetSummary,
    report: ValidationReport,
    prepared: PreparedData,
    coded_columns: list[str],
) -> None:
    """Params, metrics, plots, the CV scores, the gate's summary and the monitoring reference into the
    active run."""
    import mlflow

    mlflow.log_params(run_params(trained, evaluation, dataset, report, prepared))
    headline, table = split_metrics(evaluation.metrics)
    mlflow.log_metrics(headline)
    # Every figure with its interval, as one table MLflow's artifact view shows (not 18 more columns).
    mlflow.log_table(table, "metrics/metrics_with_intervals.json")
    for path in evaluation.plots.values():
        # At the run's root: MLflow's run comparison lists only root-level files, image by image.
        mlflow.log_artifact(path)
    if evaluation.metrics_csv:
        mlflow.log_artifact(evaluation.metrics_csv, artifact_path="metrics")
    for path in evaluation.subgroup_files:
        mlflow.log_artifact(path, artifact_path="subgroups")
    cv = {"threshold": evaluation.threshold, "how_chosen": evaluation.threshold_note, "cv_scores": evaluation.cv_scores}
    mlflow.log_dict(cv, "metrics/cv_scores.json")
    # The full validation report is logged once per flow run (the data-quality run), not per model.
    mlflow.log_dict(report.summary(), "data_quality/validation_summary.json")
    mlflow.log_dict(monitoring_reference(trained, prepared, coded_columns), TRAINING_PROFILE_ARTIFACT)


def monitoring_reference(trained: TrainedModel, prepared: PreparedData, coded_columns: list[str]) -> dict[str, Any]:
    """What monitoring compares scored batches with: the training rows' shares per column and the model's
    risk on patients it did not see (out-of-fold; the held-out rows when the threshold was fixed)."""
    risk = trained.out_of_fold_risk
    if risk is None:
        risk = trained.model.predict_proba(prepared.x_test.astype("float64"))[:, 1]
    source = f"{trained.name} training rows ({prepared.n_train})"
    return training_profile(prepared.x_train, coded_columns, np.asarray(risk), source)


def log_model_artifact(trained: TrainedModel, signature: Any, prepared: PreparedData) -> Any:
    """The fitted pipeline in skops format, with its signature, an input example and pinned requirements."""
    import mlflow.sklearn

    return mlflow.sklearn.log_model(
        trained.model,
        name=trained.name,
        signature=signature,
        input_example=prepared.x_train.head(2).astype("float64"),
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
        skops_trusted_types=skops_trusted_types(),
        pip_requirements=pinned_requirements(),
    )


def log_data_quality(report: ValidationReport) -> None:
    """The gate's evidence, once per flow run: summary, quarantine, the JSON report and the
    self-contained HTML report next to it when the validate step wrote one."""
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
) -> LoggedRun:
    """One MLflow run per flow run for the data-quality evidence (pass or fail)."""
    import mlflow

    experiment_id = ensure_experiment(
        settings.tracking_uri,
        f"{settings.mlflow.experiment}-data-quality",
        settings.resolve(settings.mlflow.artifact_root),
    )
    source, prefect_link = prefect_source()
    run_tags = {
        **tags,
        **source_tags(source),
        "data.fingerprint": dataset.fingerprint,
        "data.path": dataset.path,
        "gate.decision": report.decision,
    }
    note = (
        f"Data-quality check of `{dataset.path}` (`{dataset.fingerprint[:12]}`): **{report.decision}**; "
        f"{report.rows_in} rows in, {report.rows_used} used, {report.rows_quarantined} quarantined.\n\n"
        "Report: artifacts under `data_quality/` (the HTML page, and the JSON report).\n\n"
        f"{prefect_link}\n"
    )
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=mlflow_run_name("data-quality", dataset.fingerprint),
        tags=run_tags,
        description=note,
    ) as run:
        mlflow.log_metrics(
            {
                "rows_in": report.rows_in,
                "rows_kept": report.rows_used,
                "rows_quarantined": report.rows_quarantined,
                "duplicate_rows": report.duplicate_rows,
                "critical_failures": len(report.critical_failures),
                "failed_expectations": sum(not o.success for o in report.outcomes),
            }
        )
        log_data_quality(report)
    run_id = run.info.run_id
    if not report.passed:
        # A refused file is a failed check: MLflow's runs table shows it red, not as a green FINISHED run.
        mlflow.MlflowClient(settings.tracking_uri).set_terminated(run_id, "FAILED")
    return LoggedRun(
        "data-quality", run_id, experiment_id, "", run_ui_url(settings.mlflow_ui_url, experiment_id, run_id)
    )


def report_link_markdown(logged: LoggedRun, report: ValidationReport, tracking_uri: str) -> str:
    """Where a browser opens the validation report: the MLflow UI's artifact view when the store is a
    server, else the file's path (browsers refuse file:// links from a web page)."""
    page = report.html_report_path or report.report_path
    if tracking_uri.startswith(("http://", "https://")):
        base = logged.ui_url.split("/#/")[0]
        url = run_ui_url(base, logged.experiment_id, logged.run_id, f"data_quality/{Path(str(page)).name}")
        return f"[Validation report in MLflow]({url})"
    where = markdown_text(page)
    return (
        f"Validation report: {where} (open the file in a browser); also in the MLflow run "
        f"[{logged.run_id}]({logged.ui_url}) under data_quality/ once `mlflow ui` serves the store."
    )


@task(name="track-data-quality", retries=2, retry_delay_seconds=5)
def log_validation_run_task(
    report: ValidationReport, dataset: DatasetSummary, settings: Settings, tags: dict[str, str]
) -> str:
    from prefect.artifacts import create_markdown_artifact

    logged = log_validation_run(report, dataset, settings, tags)
    create_markdown_artifact(
        key="data-quality-mlflow-run",
        markdown=report_link_markdown(logged, report, settings.tracking_uri),
        description="Where to open this flow run's validation report",
    )
    return logged.ui_url
