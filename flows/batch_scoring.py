"""heart-batch-scoring: load -> validate (contract minus target rules; unrecorded columns warned about) ->
score with @champion, missing values imputed by the model and reported per column."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from heart_pipeline.config import load_settings_and_contract
from heart_pipeline.data_contract.contract import tolerating_unrecorded
from heart_pipeline.evidence.render import scoring_summary_markdown
from heart_pipeline.operations.preflight import check_tracking_store
from heart_pipeline.operations.runs import FAILURE_HOOKS, create_run_folder, scoring_run_name
from heart_pipeline.operations.runtime import flow_run_id, tag_flow_run
from heart_pipeline.tasks.score import gate_for_file, load_for_scoring_task, score_patients_task
from heart_pipeline.tasks.validate import apply_gate_task, save_validation_task, validate_dataset_task


@flow(
    name="heart-batch-scoring",
    flow_run_name=scoring_run_name,
    **FAILURE_HOOKS,
)
def heart_batch_scoring(data_path: str, out_path: str | None = None, config_path: str | None = None) -> dict[str, Any]:
    """Score a CSV of patients (no target column) with models:/heart-disease@champion.

    Invalid rows are quarantined, not scored; predictions.csv goes to the run folder (and to
    ``out_path`` if given).
    """
    settings, contract = load_settings_and_contract(config_path)
    check_tracking_store(settings.tracking_uri)  # fail in seconds, before any work
    scoring_contract = tolerating_unrecorded(contract.for_scoring(settings.data.target), settings.data.target)
    run_dir = create_run_folder(settings.resolve(settings.outputs.runs_dir), "heart-batch-scoring", flow_run_id())

    dataset, sites = load_for_scoring_task(settings.resolve(data_path), settings, scoring_contract.columns)
    tag_flow_run(f"data:{dataset.fingerprint[:8]}")
    # Each patient is scored on its own, so any share of invalid rows is quarantined, not fatal; a column
    # the site does not record is a warning, and its missing values go to the model's imputers.
    gate = gate_for_file(scoring_contract, dataset)
    validated = validate_dataset_task(dataset, gate, settings.validation, max_invalid_fraction=1.0)
    report = apply_gate_task(save_validation_task(validated, dataset.path, run_dir / "validation"))
    scored = score_patients_task(
        validated.kept,
        list(scoring_contract.columns),
        settings,
        run_dir / "scoring",
        settings.resolve(out_path) if out_path else None,
        sites,
    )
    result = {
        "run_dir": str(run_dir),
        "validation_report": report.html_report_path,
        "registered_model": settings.mlflow.registered_model,
        "predictions_path": scored.predictions_path,
        "copied_to": scored.copied_to,
        "rows_in": report.rows_in,
        "rows_scored": scored.rows_scored,
        "rows_quarantined": report.rows_quarantined,
        "quarantine_path": report.quarantine_path,
        "model_version": scored.model_version,
        "placeholders_read_as_missing": dataset.placeholders_read_as_missing,
        "imputed_shares": scored.imputed_shares,
        "warnings": scored.warnings,
        "monitoring": scored.monitoring,
    }
    create_markdown_artifact(
        key="heart-batch-scoring-summary",
        markdown=scoring_summary_markdown(result),
        description=f"Scored {scored.rows_scored} of {report.rows_in} patients with "
        f"{settings.mlflow.registered_model} v{scored.model_version}",
    )
    return result
