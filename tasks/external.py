"""External validation step: a registered model measured on another site's labelled patients.

Pure functions score the rows the gate kept (recorded values valid; missing values go to the model's
imputers), compute every figure with its interval (``evidence.external``) and the subgroup table
(``evidence.subgroups``), and say which columns the predictions rest on imputed values for. The
thin ``@task`` wrappers write the run folder, log the MLflow evaluation run and tag the model version.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from prefect import task

from heart_pipeline.config import Settings
from heart_pipeline.errors import PipelineError
from heart_pipeline.evidence.external import (
    HEADLINE_METRICS,
    decision_curve,
    metrics_with_intervals,
    site_slug,
    threshold_grid,
)
from heart_pipeline.evidence.plots import (
    EXTERNAL_PLOT_FILES,
    calibration_figure,
    decision_curve_figure,
    png_bytes,
    roc_figure,
)
from heart_pipeline.evidence.subgroups import (
    subgroup_warnings,
)
from heart_pipeline.monitoring.record import record_scored_batch_safely
from heart_pipeline.operations.runtime import retry_unless_pipeline_error
from heart_pipeline.results import ExternalValidation, ValidationReport
from heart_pipeline.tasks.evaluate import subgroups_of, write_subgroups
from heart_pipeline.tasks.score import imputation_report
from heart_pipeline.tracking.registry import (
    CHAMPION,
    alias_version,
    ensure_experiment,
    load_model_version,
    record_validation_tags,
    run_ui_url,
    source_tags,
    uses_tracking_store,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class SiteContext:
    """What one site's evaluation knows besides its rows: its name, the gate's report, the model
    version, the cells read as missing (placeholders) and the rows' site labels (by file line)."""

    site: str
    report: ValidationReport
    version: str
    placeholders: dict[str, int] = field(default_factory=dict)
    sites: pd.Series | None = None


RUN_KIND_TAG = "run_kind"


def site_floor_warning(metrics: dict[str, float], floor: float) -> list[str]:
    sensitivity = metrics["sensitivity"]
    if not sensitivity < floor:
        return []
    return [
        f"sensitivity over the whole site {sensitivity:.2f} [{metrics['sensitivity_ci95_low']:.2f}, "
        f"{metrics['sensitivity_ci95_high']:.2f}] is below the promotion floor {floor:.2f} "
        f"(promotion.floors.test_recall): the model misses {1 - sensitivity:.0%} of patients with disease here"
    ]


def evaluate_site(
    model: Any, kept: pd.DataFrame, context: SiteContext, settings: Settings
) -> tuple[ExternalValidation, pd.DataFrame]:
    """Every figure of ``model`` on the gate's kept rows (indexed by file line), and the predictions."""
    seed, target = settings.split.seed, settings.data.target
    features = [c for c in kept.columns if c != target]
    threshold = float(model.threshold)
    proba = model.predict_proba(kept[features].astype("float64"))[:, 1]
    y = kept[target].astype(int).to_numpy()
    metrics = metrics_with_intervals(y, proba, threshold, seed)
    grid = settings.evaluation.decision_curve
    curve = decision_curve(y, proba, threshold_grid(grid.low, grid.high, grid.step))
    site_column = settings.evaluation.site_column
    sites = context.sites
    frame = kept if sites is None else kept.assign(**{site_column: sites.reindex(kept.index).to_numpy()})
    subgroups = subgroups_of(frame, y, proba, threshold, settings, seed)
    shares, imputation = imputation_report(model, kept, settings)
    floor = settings.promotion.floors.get("test_recall", 0.0)
    warnings = [
        *imputation,
        *site_floor_warning(metrics, floor),
        *subgroup_warnings(subgroups),
    ]
    report = context.report
    record = ExternalValidation(
        site=context.site,
        data_path=report.data_path,
        data_fingerprint=report.fingerprint,
        registered_model=settings.mlflow.registered_model,
        model_version=context.version,
        threshold=threshold,
        n=len(kept),
        rows_in=report.rows_in,
        rows_quarantined=report.rows_quarantined,
        prevalence=float(y.mean()) if len(y) else float("nan"),
        metrics=metrics,
        decision_curve=curve,
        subgroups=subgroups,
        imputed_shares=shares,
        placeholders_read_as_missing=dict(context.placeholders),
        warnings=warnings,
        validation_report=report.html_report_path,
    )
    predictions = frame.assign(
        probability=proba, label=(proba >= threshold).astype(int), model_version=context.version
    ).rename_axis("source_line")
    return record, predictions.reset_index()


def site_figures(record: ExternalValidation, predictions: pd.DataFrame, target: str) -> dict[str, Figure]:
    y = predictions[target].astype(int).to_numpy()
    proba = predictions["probability"].to_numpy(dtype="float64")
    label = f"{record.registered_model} v{record.model_version}"
    where = f"site {record.site}"
    intervals = {f"test_{k}": v for k, v in record.metrics.items()}
    brier = record.metrics["brier"]
    return {
        "roc_curve": roc_figure(y, proba, record.threshold, label, intervals, where=where),
        "calibration": calibration_figure(y, proba, record.threshold, label, brier, where=where),
        "decision_curve": decision_curve_figure(record.decision_curve, record.threshold, label, where),
    }


def record_json(record: ExternalValidation) -> str:
    return json.dumps(asdict(record), indent=2, default=_plain)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def write_site_outputs(
    record: ExternalValidation, predictions: pd.DataFrame, figures: dict[str, Figure], out_dir: Path
) -> ExternalValidation:
    """predictions.csv, the plots, the subgroup table (JSON, CSV, markdown) and the record as JSON."""
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions.to_csv(out_dir / "predictions.csv", index=False)
    plots = {}
    for kind, figure in figures.items():
        path = out_dir / EXTERNAL_PLOT_FILES[kind]
        path.write_bytes(png_bytes(figure))
        plots[kind] = str(path)
    write_subgroups(record.subgroups, out_dir)
    final = replace(record, predictions_path=str(out_dir / "predictions.csv"), plots=plots)
    (out_dir / "external_validation.json").write_text(record_json(final), encoding="utf-8")
    return final


def validation_tags(record: ExternalValidation) -> dict[str, str]:
    """``validation.<site>.<metric>`` = ``0.873 [0.830, 0.920]`` for the headline, plus rows and the run."""
    prefix = f"validation.{site_slug(record.site)}"
    tags = {f"{prefix}.n": str(record.n), f"{prefix}.prevalence": f"{record.prevalence:.3f}"}
    for name in HEADLINE_METRICS:
        low, high = record.metrics.get(f"{name}_ci95_low"), record.metrics.get(f"{name}_ci95_high")
        tags[f"{prefix}.{name}"] = f"{record.metrics[name]:.3f} [{low:.3f}, {high:.3f}]"
    tags[f"{prefix}.run_id"] = record.run_id
    return tags


@uses_tracking_store
def log_external_run(
    record: ExternalValidation, out_dir: Path, settings: Settings, tags: dict[str, str]
) -> ExternalValidation:
    """One MLflow evaluation run per site, linked to the model version (tags both ways)."""
    import mlflow

    experiment_id = ensure_experiment(
        settings.tracking_uri, settings.mlflow.experiment, settings.resolve(settings.mlflow.artifact_root)
    )
    run_tags = {
        **tags,
        **source_tags("prefect flow heart-external-validation"),
        RUN_KIND_TAG: "external_validation",
        "model.name": record.registered_model,
        "model.version": record.model_version,
        "validation.site": record.site,
        "data.fingerprint": record.data_fingerprint,
    }
    name = f"external-{site_slug(record.site)}-v{record.model_version}-{record.data_fingerprint[:8]}"
    with mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=run_tags) as run:
        mlflow.log_params(
            {"site": record.site, "data.path": record.data_path, "rows_in": record.rows_in, "rows_scored": record.n}
            | {"threshold": record.threshold, "model": f"{record.registered_model} v{record.model_version}"}
        )
        mlflow.log_metrics({k: v for k, v in record.metrics.items() if np.isfinite(v)})
        mlflow.log_metrics({f"imputed_share.{k}": v for k, v in record.imputed_shares.items()})
        for path in record.plots.values():
            mlflow.log_artifact(path, artifact_path="plots")
        for file in ("subgroups.json", "subgroups.csv", "subgroups.md", "external_validation.json"):
            mlflow.log_artifact(str(out_dir / file), artifact_path="evaluation")
        run_id = run.info.run_id
    logged = replace(record, run_id=run_id, run_url=run_ui_url(settings.mlflow_ui_url, experiment_id, run_id))
    record_validation_tags(
        settings.tracking_uri,
        record.registered_model,
        record.model_version,
        site_slug(record.site),
        validation_tags(logged),
    )
    return logged


def choose_version(settings: Settings, version: str | None, alias: str | None) -> str:
    """``version`` as given, else the one ``alias`` (default: champion) points at now."""
    if version is not None and alias is not None:
        raise PipelineError("give --version or --alias, not both")
    if version is not None:
        return str(version)
    return alias_version(settings.tracking_uri, settings.mlflow.registered_model, alias or CHAMPION)


@task(name="load-model", retries=1, retry_delay_seconds=5, retry_condition_fn=retry_unless_pipeline_error)
def load_model_task(settings: Settings, version: str | None, alias: str | None) -> tuple[str, Any]:
    """The exact version to validate and the model, through the project's trusted loader."""
    chosen = choose_version(settings, version, alias)
    return chosen, load_model_version(settings.tracking_uri, settings.mlflow.registered_model, chosen)


@task(name="evaluate-site", task_run_name="evaluate-site-{context.site}")
def evaluate_site_task(
    model: Any, kept: pd.DataFrame, context: SiteContext, settings: Settings, out_dir: Path
) -> ExternalValidation:
    from prefect import get_run_logger

    record, predictions = evaluate_site(model, kept, context, settings)
    record = write_site_outputs(record, predictions, site_figures(record, predictions, settings.data.target), out_dir)
    logger = get_run_logger()
    # A labelled batch: the monitor judges its discrimination and calibration, not only its drift.
    target = settings.data.target
    logger.info(
        "%s",
        record_scored_batch_safely(
            settings,
            context.version,
            kept.drop(columns=[target]),
            predictions["probability"].to_numpy(),
            kept[target].astype(int).to_numpy(),
            f"external-validation:{context.site}",
            record.imputed_shares,
        ),
    )
    m = record.metrics
    logger.info(
        "%s: %d of %d rows scored, ROC-AUC %.3f [%.3f, %.3f], mean predicted %.2f vs observed %.2f",
        record.site,
        record.n,
        record.rows_in,
        m["roc_auc"],
        m["roc_auc_ci95_low"],
        m["roc_auc_ci95_high"],
        m["mean_predicted"],
        m["observed_rate"],
    )
    for warning in record.warnings:
        logger.warning("%s", warning)
    return record


@task(name="track-external-validation", task_run_name="track-external-{record.site}")
def log_external_run_task(
    record: ExternalValidation, out_dir: Path, settings: Settings, tags: dict[str, str]
) -> ExternalValidation:
    return log_external_run(record, out_dir, settings, tags)
