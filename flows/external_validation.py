"""heart-external-validation: for each labelled site file, load -> gate (meaning checks included) ->
score with one registered version -> every figure with its interval, subgroups -> MLflow evaluation
run and version tags; one comparison table over the sites."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from heart_pipeline.config import load_settings_and_contract
from heart_pipeline.data_contract.contract import tolerating_unrecorded
from heart_pipeline.errors import PipelineError
from heart_pipeline.evidence.external import site_names, site_slug
from heart_pipeline.evidence.render import external_validation_headline, external_validation_markdown
from heart_pipeline.operations.preflight import check_tracking_store
from heart_pipeline.operations.runs import FAILURE_HOOKS, create_run_folder, external_validation_run_name
from heart_pipeline.operations.runtime import flow_run_id, tag_flow_run
from heart_pipeline.tasks.external import (
    SiteContext,
    evaluate_site_task,
    load_model_task,
    log_external_run_task,
)
from heart_pipeline.tasks.model_card import publish_model_cards_task
from heart_pipeline.tasks.score import gate_for_file, load_for_scoring_task
from heart_pipeline.tasks.validate import apply_gate_task, save_validation_task, validate_dataset_task
from heart_pipeline.tracking.registry import FLOW_RUN_TAG


@flow(
    name="heart-external-validation",
    flow_run_name=external_validation_run_name,
    **FAILURE_HOOKS,
)
def heart_external_validation(
    data_paths: list[str],
    version: str | None = None,
    alias: str | None = None,
    sites: list[str] | None = None,
    config_path: str | None = None,
    disease_label: int | None = None,
) -> dict[str, Any]:
    """Measure one registered version (``version``, else ``alias``, else @champion) on labelled files
    from other sites. ``sites`` names each file's site (default: the file name). Rows whose recorded
    values are valid are scored; missing values go to the model's imputers, and each site reports the
    share imputed per column."""
    settings, contract = load_settings_and_contract(config_path)
    settings = settings.with_disease_label(disease_label)
    check_tracking_store(settings.tracking_uri)  # fail in seconds, before any work
    try:
        names = site_names(data_paths, sites)
    except ValueError as exc:
        raise PipelineError(str(exc)) from None
    run_dir = create_run_folder(settings.resolve(settings.outputs.runs_dir), "heart-external-validation", flow_run_id())
    gate = tolerating_unrecorded(contract, settings.data.target)
    chosen, model = load_model_task(settings, version, alias)
    tag_flow_run(f"model:v{chosen}")
    records = []
    for path, site in zip(data_paths, names, strict=True):
        out_dir = run_dir / site_slug(site)
        dataset, site_labels = load_for_scoring_task(settings.resolve(path), settings, contract.columns)
        validated = validate_dataset_task(dataset, gate_for_file(gate, dataset), settings.validation)
        report = apply_gate_task(save_validation_task(validated, dataset.path, out_dir / "validation"))
        context = SiteContext(site, report, chosen, dataset.placeholders_read_as_missing, site_labels)
        record = evaluate_site_task(model, validated.kept, context, settings, out_dir)
        records.append(log_external_run_task(record, out_dir, settings, {FLOW_RUN_TAG: flow_run_id()}))
    # The version's card now lists these sites (a card that cannot be written is a warning, not a failure).
    publish_model_cards_task([chosen], settings)
    result = {
        "run_dir": str(run_dir),
        "registered_model": settings.mlflow.registered_model,
        "model_version": chosen,
        "sites": [asdict(r) for r in records],
    }
    create_markdown_artifact(
        key="heart-external-validation",
        markdown=external_validation_markdown(result),
        description=external_validation_headline(result),
    )
    return result
