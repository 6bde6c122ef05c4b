"""Track step: one MLflow run per model, with metrics, plots, data-quality evidence and a registered model."""

from __future__ import annotations

import functools
import inspect
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from prefect import task

from heart_pipeline.config import PROJECT_ROOT, Settings
from tasks.evaluate import Evaluation
from tasks.load import DatasetSummary
from tasks.preprocess import PreparedData, read_split
from tasks.train import TrainedModel, load_trained
from tasks.validate import ValidationReport

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class TrackedModel:
    name: str
    run_id: str
    experiment_id: str
    model_uri: str
    registered_model: str
    version: str
    ui_url: str


@contextmanager
def tracking_store(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` for the block only.

    ``mlflow.set_tracking_uri`` also exports MLFLOW_TRACKING_URI, which this project reads as the
    user's override; left set, one flow's store would leak into the next flow in the same process.
    """
    import mlflow

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def uses_tracking_store(func: Callable[P, R]) -> Callable[P, R]:
    """Run ``func`` inside ``tracking_store`` of its ``tracking_uri`` argument."""
    signature = inspect.signature(func)

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with tracking_store(signature.bind(*args, **kwargs).arguments["tracking_uri"]):
            return func(*args, **kwargs)

    return wrapper


def git_commit(root: Path = PROJECT_ROOT) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def ensure_experiment(tracking_uri: str, name: str, artifact_root: Path) -> str:
    """Get or create the experiment. Local stores get an explicit artifact location under mlruns/,
    because MLflow would otherwise put artifacts relative to whatever the current directory is."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    location = None if tracking_uri.startswith(("http://", "https://")) else (artifact_root / name).as_uri()
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except mlflow.exceptions.MlflowException:
        # A concurrent run created it first.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def run_ui_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    base = tracking_uri.rstrip("/") if tracking_uri.startswith("http") else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def pinned_requirements() -> list[str]:
    """Exact versions of what the pickled Pipeline needs; avoids MLflow's slow requirement inference."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("scikit-learn", "pandas", "numpy", "scipy", "skops")]


SKOPS_TRUSTED_PREFIXES = ("numpy.", "sklearn.", "scipy.")


def skops_trusted_types(model: Any) -> list[str]:
    """Types skops must be told to trust for this Pipeline; only numpy/sklearn/scipy internals qualify.

    skops is MLflow's safe default format, and unlike pickle it refuses to load arbitrary code.
    """
    import skops.io

    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    foreign = [t for t in untrusted if not t.startswith(SKOPS_TRUSTED_PREFIXES)]
    if foreign:
        raise TypeError(f"model holds types outside numpy/sklearn/scipy, refusing to trust them: {foreign}")
    return untrusted


def model_signature(feature_columns: list[str]) -> Any:
    """Raw feature columns in, class label out. Features are doubles: a scoring file with a blank
    cell turns an int column into float, which MLflow's schema enforcement would otherwise reject."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("double", c) for c in feature_columns]), outputs=Schema([ColSpec("long")])
    )


def local_dataset_source(path: str) -> Any:
    """The file:// source for mlflow.data (passing a bare path triggers an ambiguity warning in MLflow 3.17)."""
    from mlflow.data.dataset_source_registry import get_registered_sources

    source_class = next(s for s in get_registered_sources() if s._get_source_type() == "local")
    return source_class(Path(path).resolve().as_uri())


@uses_tracking_store
def log_model_run(
    trained: TrainedModel,
    evaluation: Evaluation,
    dataset: DatasetSummary,
    report: ValidationReport,
    prepared: PreparedData,
    target: str,
    tracking_uri: str,
    experiment: str,
    artifact_root: Path,
    registered_model: str,
    tags: dict[str, str],
) -> TrackedModel:
    import mlflow
    import mlflow.sklearn

    experiment_id = ensure_experiment(tracking_uri, experiment, artifact_root)
    model = load_trained(trained)
    x_train, y_train = read_split(prepared.train_path, target)
    x_example = x_train.head(2).astype("float64")
    run_tags = {
        **tags,
        "algorithm": trained.name,
        "data.fingerprint": dataset.fingerprint,
        "git.commit": git_commit(),
        "data.provenance": dataset.provenance,
    }
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{trained.name}", tags=run_tags) as run:
        mlflow.log_params(
            {
                **{f"model.{k}": v for k, v in trained.params.items()},
                "algorithm": trained.name,
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
        training_rows = x_train.astype("float64").assign(**{target: y_train.astype("float64")})
        mlflow.log_input(
            mlflow.data.from_pandas(
                training_rows,
                source=local_dataset_source(dataset.path),
                targets=target,
                name=f"heart-train-{dataset.fingerprint[:8]}",
            ),
            context="training",
        )
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=model_signature(list(x_train.columns)),
            input_example=x_example,
            registered_model_name=registered_model,
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
            skops_trusted_types=skops_trusted_types(model),
            pip_requirements=pinned_requirements(),
            await_registration_for=60,
        )
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient(tracking_uri)
    for key, value in {
        "algorithm": trained.name,
        "data.fingerprint": dataset.fingerprint,
        "decision_threshold": f"{evaluation.threshold:.6f}",
        "test_roc_auc": f"{evaluation.metrics['test_roc_auc']:.4f}",
        "cv_roc_auc_mean": f"{evaluation.metrics['cv_roc_auc_mean']:.4f}",
        "prefect.flow_run_id": tags.get("prefect.flow_run_id", ""),
    }.items():
        client.set_model_version_tag(registered_model, version, key, value)
    return TrackedModel(
        trained.name,
        run.info.run_id,
        experiment_id,
        info.model_uri,
        registered_model,
        version,
        run_ui_url(tracking_uri, experiment_id, run.info.run_id),
    )


def log_data_quality(report: ValidationReport) -> None:
    """The gate's evidence travels with the model: summary, quarantine and Data Docs HTML."""
    import mlflow

    mlflow.log_dict(report.summary(), "data_quality/validation_summary.json")
    if report.quarantine_path:
        mlflow.log_artifact(report.quarantine_path, artifact_path="data_quality")
    if report.report_path:
        mlflow.log_artifact(report.report_path, artifact_path="data_quality")
    if report.data_docs_path:
        mlflow.log_artifacts(str(Path(report.data_docs_path).parent), artifact_path="data_quality/data_docs")


@task(name="track", task_run_name="track-{trained.name}", retries=2, retry_delay_seconds=5)
def log_model_run_task(
    trained: TrainedModel,
    evaluation: Evaluation,
    dataset: DatasetSummary,
    report: ValidationReport,
    prepared: PreparedData,
    settings: Settings,
    tags: dict[str, str],
) -> TrackedModel:
    from prefect import get_run_logger

    tracked = log_model_run(
        trained,
        evaluation,
        dataset,
        report,
        prepared,
        settings.data.target,
        settings.tracking_uri,
        settings.mlflow.experiment,
        settings.resolve(settings.mlflow.artifact_root),
        settings.mlflow.registered_model,
        tags,
    )
    get_run_logger().info(
        "Logged %s to MLflow run %s; registered %s version %s",
        tracked.name,
        tracked.run_id,
        tracked.registered_model,
        tracked.version,
    )
    return tracked


def training_summary_markdown(
    tracked: list[TrackedModel], evaluations: list[Evaluation], report: ValidationReport, tracking_uri: str
) -> str:
    rows = []
    for t, e in zip(tracked, evaluations, strict=True):
        m = e.metrics
        rows.append(
            f"| {t.name} | {m['test_roc_auc']:.3f} | {m['test_accuracy']:.3f} | {m['test_f1']:.3f} | "
            f"{m['test_precision']:.3f} | {m['test_recall']:.3f} | {m['test_log_loss']:.3f} | "
            f"{m['cv_roc_auc_mean']:.3f} [{m['cv_roc_auc_ci95_low']:.3f}, {m['cv_roc_auc_ci95_high']:.3f}] | "
            f"{e.threshold:.3f} | `{t.registered_model}` v{t.version} | [run]({t.ui_url}) |"
        )
    return (
        "# heart-training results\n\n"
        f"Data `{report.data_path}`: {report.rows_in} rows in, {report.rows_kept} kept, "
        f"{report.rows_quarantined} quarantined, {report.duplicate_rows} duplicate rows.\n\n"
        "| model | test ROC-AUC | accuracy | F1 | precision | recall | log loss | CV ROC-AUC [95% CI] | threshold "
        "| registered | MLflow |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n\n"
        + "".join(f"Threshold of {e.name}: {e.threshold_note}.\n\n" for e in evaluations)
        + f"Tracking store: `{tracking_uri}`. For a local store: "
        "`mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db`, then open the links.\n"
    )


@uses_tracking_store
def log_validation_run(
    report: ValidationReport,
    dataset: DatasetSummary,
    tracking_uri: str,
    experiment: str,
    artifact_root: Path,
    tags: dict[str, str],
) -> str:
    """One MLflow run for a data-quality check (pass or fail); returns its UI URL."""

    import mlflow

    experiment_id = ensure_experiment(tracking_uri, experiment, artifact_root)
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
    return run_ui_url(tracking_uri, experiment_id, run.info.run_id)


@task(name="track-data-quality", retries=2, retry_delay_seconds=5)
def log_validation_run_task(
    report: ValidationReport, dataset: DatasetSummary, settings: Settings, tags: dict[str, str]
) -> str:
    from prefect.artifacts import create_link_artifact

    url = log_validation_run(
        report,
        dataset,
        settings.tracking_uri,
        f"{settings.mlflow.experiment}-data-quality",
        settings.resolve(settings.mlflow.artifact_root),
        tags,
    )
    create_link_artifact(
        key="data-quality-mlflow-run",
        link=url,
        link_text="MLflow run with the Data Docs (artifacts: data_quality/data_docs/index.html)",
    )
    return url
