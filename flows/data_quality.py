"""heart-data-quality: load -> validate -> record the evidence in MLflow -> pass or fail the gate."""

from __future__ import annotations

from typing import Any

from prefect import flow

from heart_pipeline.config import load_settings_and_contract
from heart_pipeline.operations.preflight import check_tracking_store
from heart_pipeline.operations.runs import FAILURE_HOOKS, create_run_folder, data_quality_run_name
from heart_pipeline.operations.runtime import flow_run_id, tag_flow_run
from heart_pipeline.tasks.load import load_dataset_task
from heart_pipeline.tasks.track import log_validation_run_task
from heart_pipeline.tasks.validate import apply_gate_task, save_validation_task, validate_dataset_task


@flow(
    name="heart-data-quality",
    flow_run_name=data_quality_run_name,
    **FAILURE_HOOKS,
)
def heart_data_quality(
    data_path: str | None = None, config_path: str | None = None, disease_label: int | None = None
) -> dict[str, Any]:
    """Check a CSV against the data contract without training; fails on any critical rule.
    ``disease_label``: the file's code for disease (default data.disease_label)."""
    settings, contract = load_settings_and_contract(config_path)
    settings = settings.with_disease_label(disease_label)
    check_tracking_store(settings.tracking_uri)  # fail in seconds, before any work
    run_dir = create_run_folder(settings.resolve(settings.outputs.runs_dir), "heart-data-quality", flow_run_id())

    dataset = load_dataset_task(settings.resolve(data_path or settings.data.path), settings, contract.columns)
    tag_flow_run(f"data:{dataset.fingerprint[:8]}")
    validated = validate_dataset_task(dataset, contract, settings.validation)
    report = save_validation_task(validated, dataset.path, run_dir / "validation", keep_rows=True)
    mlflow_url = log_validation_run_task(report, dataset.summary, settings, {"prefect.flow_run_id": flow_run_id()})
    apply_gate_task(report)
    return {
        "run_dir": str(run_dir),
        "mlflow_run": mlflow_url,
        **report.summary(),
        "quarantine_path": report.quarantine_path,
        "report_path": report.report_path,
        "validation_report": report.html_report_path,
    }
