"""heart-training: load -> validate -> preprocess -> train (LR and RF concurrently) -> evaluate -> track."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from heart_pipeline.config import ModelName, load_settings_and_contract
from heart_pipeline.runs import create_run_folder
from heart_pipeline.runtime import flow_run_id
from tasks.evaluate import evaluate_model_task
from tasks.load import load_dataset_task
from tasks.preprocess import preprocess_dataset_task
from tasks.track import log_model_run_task, training_summary_markdown
from tasks.train import hyperparameters, train_model_task
from tasks.validate import validate_dataset_task


@flow(name="heart-training")
def heart_training(
    data_path: str | None = None,
    models: list[ModelName] | None = None,
    seed: int | None = None,
    config_path: str | None = None,
) -> dict[str, Any]:
    """Train and register Logistic Regression and Random Forest on a validated heart-disease CSV."""
    settings, contract = load_settings_and_contract(config_path)
    data = settings.resolve(data_path or settings.data.path)
    seed = settings.split.seed if seed is None else seed
    model_names = models or settings.training.models
    run_dir = create_run_folder(settings.resolve(settings.outputs.runs_dir), "heart-training", flow_run_id())

    dataset = load_dataset_task(
        data, settings.data.na_values, settings.data.max_file_mb, settings.resolve(settings.data.path)
    )
    report = validate_dataset_task(
        data,
        contract,
        settings.data.na_values,
        settings.data.max_file_mb,
        settings.validation.on_warning,
        settings.validation.max_invalid_fraction,
        run_dir / "validation",
    )
    prepared = preprocess_dataset_task(
        Path(report.validated_path),
        settings.data.target,
        settings.features,
        settings.split.test_size,
        seed,
        run_dir / "data",
    )
    trained = [
        train_model_task.with_options(timeout_seconds=settings.training.timeout_seconds, tags=[f"model:{name}"]).submit(
            name,
            hyperparameters(name, settings.models),
            settings.features,
            prepared.train_path,
            settings.data.target,
            run_dir / "models",
            seed,
        )
        for name in model_names
    ]
    evaluated = [
        evaluate_model_task.submit(
            model,
            prepared.train_path,
            prepared.test_path,
            settings.data.target,
            settings.evaluation.threshold,
            settings.cross_validation.n_splits,
            settings.cross_validation.n_repeats,
            seed,
            run_dir / "evaluation",
        )
        for model in trained
    ]
    evaluations = [future.result() for future in evaluated]
    tracked = [
        log_model_run_task(
            model.result(),
            evaluation,
            dataset,
            report,
            prepared,
            settings.data.target,
            settings.tracking_uri,
            settings.mlflow.experiment,
            settings.resolve(settings.mlflow.artifact_root),
            settings.mlflow.registered_models[evaluation.name],
            {"prefect.flow_run_id": flow_run_id()},
        )
        for model, evaluation in zip(trained, evaluations, strict=True)
    ]
    create_markdown_artifact(
        key="heart-training-summary",
        markdown=training_summary_markdown(tracked, evaluations, report, settings.tracking_uri),
    )
    return {
        "run_dir": str(run_dir),
        "data_fingerprint": dataset.fingerprint,
        "validation": report.summary(),
        "models": {
            t.name: {
                "run_id": t.run_id,
                "version": t.version,
                "registered_model": t.registered_model,
                "test_metrics": {k: v for k, v in e.metrics.items() if k.startswith("test_")},
            }
            for t, e in zip(tracked, evaluations, strict=True)
        },
    }
