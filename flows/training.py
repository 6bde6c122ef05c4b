"""heart-training: load -> validate -> preprocess -> train and evaluate each model -> track
-> register -> promote the best model to @champion if it passes the gate."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from heart_pipeline.config import Settings, load_settings_and_contract
from heart_pipeline.data_contract.contract import without_columns
from heart_pipeline.evidence.render import champion_headline, mlflow_ui_command, training_summary_markdown
from heart_pipeline.operations.compute import dask_cluster
from heart_pipeline.operations.preflight import check_tracking_store
from heart_pipeline.operations.runs import FAILURE_HOOKS, create_run_folder, training_run_name
from heart_pipeline.operations.runtime import flow_run_id, tag_flow_run
from heart_pipeline.tasks.evaluate import evaluate_model_task
from heart_pipeline.tasks.load import load_dataset_task
from heart_pipeline.tasks.model_card import publish_model_cards_task
from heart_pipeline.tasks.preprocess import preprocess_task
from heart_pipeline.tasks.promote import decision_summary, promote_best_model_task
from heart_pipeline.tasks.register import register_model_task
from heart_pipeline.tasks.track import EVIDENCE_TAG, log_model_run_task, log_validation_run_task
from heart_pipeline.tasks.train import train_model_task
from heart_pipeline.tasks.validate import apply_gate_task, save_validation_task, validate_dataset_task
from heart_pipeline.tracking.registry import (
    TRIGGERED_BY_TAG,
    compare_runs_ui_url,
    experiment_ui_url,
    model_version_ui_url,
    run_ui_url,
)


@flow(
    name="heart-training",
    flow_run_name=training_run_name,
    **FAILURE_HOOKS,
)
def heart_training(  # noqa: PLR0913 - a deployment's parameters are its interface (prefect.yaml, the API, the trigger)
    data_path: str | None = None,
    models: list[str] | None = None,
    seed: int | None = None,
    config_path: str | None = None,
    disease_label: int | None = None,
    dask_address: str | None = None,
    exclude_columns: list[str] | None = None,
    triggered_by: str | None = None,
) -> dict[str, Any]:
    """Train, evaluate and register Logistic Regression and Random Forest on a validated CSV.

    Defaults come from config/config.yaml: data.path, training.models, split.seed and data.disease_label
    (the file's code for disease: 0 for files coded like Kaggle's heart.csv). With ``dask_address``
    (a scheduler address, or "auto": DASK_SCHEDULER_ADDRESS else a local cluster) the CV folds and the
    forest's trees run on that Dask cluster. ``exclude_columns`` (with training.exclude_columns): features
    the models are trained without, e.g. a column a site never records; their values are not judged, and
    the version is tagged with them (training.excluded_columns). ``triggered_by`` says what started the
    run when it was not a person or the schedule (prefect.yaml's drift trigger fills it from the event);
    it is tagged on the flow run and on every MLflow run.
    """
    settings, contract = load_settings_and_contract(config_path)
    settings = settings.with_disease_label(disease_label).without_columns(exclude_columns)
    contract = without_columns(contract, settings.training.exclude_columns)
    check_tracking_store(settings.tracking_uri)  # fail in seconds, before any work
    seed = settings.split.seed if seed is None else seed
    run_dir = create_run_folder(settings.resolve(settings.outputs.runs_dir), "heart-training", flow_run_id())
    run_tags = {"prefect.flow_run_id": flow_run_id()}
    if triggered_by:
        announce_trigger(triggered_by)
        run_tags[TRIGGERED_BY_TAG] = triggered_by[:500]

    dataset = load_dataset_task(settings.resolve(data_path or settings.data.path), settings, contract.columns)
    tag_flow_run(f"data:{dataset.fingerprint[:8]}")
    validated = validate_dataset_task(dataset, contract, settings.validation)
    report = apply_gate_task(save_validation_task(validated, dataset.path, run_dir / "validation"))
    prepared = preprocess_task(validated.kept, settings, seed, run_dir / "data")
    trained, evaluations = train_and_evaluate(
        models or settings.training.models, prepared, settings, seed, run_dir, dask_address
    )
    tracked = []
    # MLflow logging runs one model at a time: the fluent API and SQLite are not built for parallel writers.
    # The validation report goes to MLflow once per flow run; each model run links to it.
    evidence_url = log_validation_run_task(report, dataset.summary, settings, run_tags)
    model_run_tags = {**run_tags, EVIDENCE_TAG: evidence_url}
    for model, evaluation in zip(trained, evaluations, strict=True):
        logged = log_model_run_task(model, evaluation, dataset.summary, report, prepared, settings, model_run_tags)
        tracked.append(register_model_task(logged, evaluation, prepared, settings, run_tags))
    decision = promote_best_model_task(tracked, evaluations, prepared, settings)
    publish_model_cards_task([t.version for t in tracked], settings)
    return publish_training_result(tracked, evaluations, decision, report, dataset.fingerprint, run_dir, settings)


def announce_trigger(triggered_by: str) -> None:
    """Say on the flow run what started it: a tag to filter by, a log line, and a link artifact back to
    the monitoring run when the trigger's text carries its address."""
    tag_flow_run("triggered-by-event")
    get_run_logger().info("Started by %s", triggered_by[:500])
    link = re.search(r"https?://\S+?(?=[)\s]|$)", triggered_by)
    if link:
        create_link_artifact(
            key="triggered-by", link=link.group(0), link_text="the monitoring run", description=triggered_by[:500]
        )


def train_and_evaluate(
    names: list[str], prepared: Any, settings: Settings, seed: int, run_dir: Path, dask_address: str | None
) -> tuple[list[Any], list[Any]]:
    """One model after the other, each with the run's whole core budget (or the Dask cluster):
    two concurrent models would oversubscribe the cores (compute.py)."""
    trained, evaluations = [], []
    with dask_cluster(dask_address, settings.compute.local_dask_workers) as address:
        for name in names:
            # submit + result: the train task is async (so its timeout fires); this waits for it
            model = (
                train_model_task.with_options(timeout_seconds=settings.training.timeout_seconds)
                .submit(name, prepared, settings, seed, address)
                .result()
            )
            trained.append(model)
            evaluations.append(evaluate_model_task(model, prepared, settings, seed, run_dir / "evaluation", address))
    return trained, evaluations


def publish_training_result(
    tracked: list[Any],
    evaluations: list[Any],
    decision: Any,
    report: Any,
    fingerprint: str,
    run_dir: Path,
    settings: Settings,
) -> dict[str, Any]:
    """The flow's result and its summary artifact: each model's run, version and metrics, and the decision."""
    model_rows = [
        {
            "name": t.name,
            "run_id": t.run_id,
            "run_url": t.ui_url,
            "version": t.version,
            "version_url": model_version_ui_url(settings.mlflow_ui_url, t.registered_model, t.version),
            "model_card_url": run_ui_url(
                settings.mlflow_ui_url, t.experiment_id, t.run_id, "model_card/model_card.html"
            ),
            "registered_model": t.registered_model,
            "threshold": e.threshold,
            "metrics": e.metrics,
        }
        for t, e in zip(tracked, evaluations, strict=True)
    ]
    promotion = decision_summary(decision)
    ui = settings.mlflow_ui_url
    links = {
        "mlflow_experiment_url": experiment_ui_url(ui, tracked[0].experiment_id) if tracked else None,
        "mlflow_compare_url": compare_runs_ui_url(ui, tracked[0].experiment_id, [t.run_id for t in tracked])
        if len(tracked) > 1
        else None,
    }
    try:  # after the promotion committed, nothing may fail the run: a summary that cannot publish is said
        create_markdown_artifact(
            key="heart-training-summary",
            markdown=training_summary_markdown(model_rows, promotion, report.summary(), links),
            description=champion_headline(promotion),
        )
    except Exception as exc:  # noqa: BLE001
        get_run_logger().warning("%s, then could not publish the run summary: %s", champion_headline(promotion), exc)
    return {
        "run_dir": str(run_dir),
        "promotion": promotion,
        "data_fingerprint": fingerprint,
        "validation": report.summary(),
        "validation_report": report.html_report_path,
        "mlflow_ui_command": mlflow_ui_command(
            settings.tracking_uri, str(settings.resolve(settings.mlflow.artifact_root))
        ),
        "models": {m["name"]: m for m in model_rows},
        **links,
    }
