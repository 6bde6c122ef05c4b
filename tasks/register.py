"""Register step: make a logged model a version of the one registered model, once.

Separate from logging (tasks/track.py), so a retry of either never repeats the other's side
effect. A version is identified by a content key (data fingerprint, training settings, code,
library versions, algorithm and seed): a rerun that would train the very same model reuses its
version instead of registering a copy, and the promotion gate then reports that the champion is
already this model.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from prefect import task

from heart_pipeline.caching import fingerprint_file
from heart_pipeline.config import Settings, load_codebook_for
from heart_pipeline.evidence.algorithms import ALGORITHMS
from heart_pipeline.evidence.render import metrics_table_markdown
from heart_pipeline.results import Evaluation, LoggedRun, TrackedModel
from heart_pipeline.tasks.preprocess import PreparedData
from heart_pipeline.tracking.policy import own_numbers
from heart_pipeline.tracking.registry import (
    CODEBOOK_TAG,
    CONTENT_KEY_TAG,
    EXCLUDED_TAG,
    HEADLINE,
    LABEL_TAG,
    register_model_version,
    render_description,
    save_training_row_hashes,
    tracking_store,
)
from heart_pipeline.tracking.trust import code_fingerprint, content_key, row_hashes

# The code a model depends on: the base package and its steps (flows only compose them).
CODE_PACKAGES = ("heart_pipeline", "heart_pipeline.tasks")
LIBRARIES = ("scikit-learn", "numpy", "scipy", "pandas")


@cache
def code_version() -> str:
    """SHA-256 of the pipeline's sources, computed once per process."""
    directories = []
    for package in CODE_PACKAGES:
        spec = importlib.util.find_spec(package)
        directories += [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    return code_fingerprint(directories)


def training_settings(settings: Settings, algorithm: str) -> dict[str, Any]:
    """The settings that shape a trained model (paths left out: the same rows from another folder
    are the same data, and the data itself is in the key as its fingerprint)."""
    data = settings.data.model_dump(mode="json", exclude={"path"})
    return {
        "data": data,
        "contract": fingerprint_file(settings.resolve_resource(settings.contract.suite_path)),
        "validation": settings.validation.model_dump(mode="json"),
        "features": settings.features.model_dump(mode="json"),
        "excluded_columns": settings.training.exclude_columns,
        "split": settings.split.model_dump(mode="json"),
        "cross_validation": settings.cross_validation.model_dump(mode="json"),
        "threshold": settings.threshold.model_dump(mode="json"),
        "model": getattr(settings.models, algorithm).model_dump(mode="json"),
    }


def registration_tags(
    logged: LoggedRun, evaluation: Evaluation, fingerprint: str, settings: Settings, seed: int, n_train: int
) -> dict[str, str]:
    """What the version is, as short scalar tags (the registry UI cuts long values)."""
    book = load_codebook_for(settings)
    key = content_key(
        {
            "algorithm": logged.name,
            "data": fingerprint,
            "settings": training_settings(settings, logged.name),
            "seed": seed,
            "code": code_version(),
            "libraries": {lib: package_version(lib) for lib in LIBRARIES},
            "codebook": [book.version, book.label_short],
        }
    )
    return {
        CONTENT_KEY_TAG: key,
        "algorithm": logged.name,
        "data.fingerprint": fingerprint,
        CODEBOOK_TAG: str(book.version),
        LABEL_TAG: book.label_short,
        "seed": str(seed),
        EXCLUDED_TAG: ",".join(settings.training.exclude_columns) or "none",
        "training_rows": str(n_train),
        "code.version": code_version()[:16],
        "decision_threshold": f"{evaluation.threshold:.6f}",
        "test_roc_auc": f"{evaluation.metrics['test_roc_auc']:.4f}",
        "cv_roc_auc_mean": f"{evaluation.metrics['cv_roc_auc_mean']:.4f}",
    }


def registration_description(logged: LoggedRun, evaluation: Evaluation, tags: dict[str, str], flow_run: str) -> str:
    """The version's first description section: what it is, with its numbers as a table with intervals."""
    text = (
        f"{ALGORITHMS[logged.name].label} trained by heart-pipeline (Prefect flow run {flow_run or '-'}, "
        f"MLflow run {logged.run_id}) on data {tags['data.fingerprint'][:12]} ({tags['training_rows']} training "
        f"rows), seed {tags['seed']}, codebook v{tags[CODEBOOK_TAG]} with label {tags[LABEL_TAG]}. "
        f"Decision threshold {evaluation.threshold:.3f}. Test ROC-AUC {tags['test_roc_auc']}, "
        f"CV ROC-AUC {tags['cv_roc_auc_mean']}. Content key {tags[CONTENT_KEY_TAG][:16]}.\n\n"
        + metrics_table_markdown(evaluation.metrics)
        + "\n\nThe model card (intended use, subgroups, external validations, limitations) is in this run's "
        "artifacts under `model_card/`, and from `heart-pipeline card --version N`."
    )
    headline = (
        f"{logged.name} (seed {tags['seed']}, data {tags['data.fingerprint'][:12]}): registered, promotion not yet "
        f"decided. Own numbers: {own_numbers(evaluation.metrics)}."
    )
    return render_description({HEADLINE: headline, "Model": text})


def register_logged_model(
    logged: LoggedRun, evaluation: Evaluation, prepared: PreparedData, settings: Settings, tags: dict[str, str]
) -> TrackedModel:
    """Register ``logged`` (or find the version a retry or an identical earlier run made), after
    saving the hashes of its training rows with its run for the promotion gate's overlap check.
    The data fingerprint and the seed are read from the run, as the track step recorded them."""
    import mlflow

    name = settings.mlflow.registered_model
    flow_run = tags.get("prefect.flow_run_id", "")
    with tracking_store(settings.tracking_uri):
        client = mlflow.MlflowClient(settings.tracking_uri)
        run = client.get_run(logged.run_id).data
        fingerprint, seed = run.tags["data.fingerprint"], int(run.params["seed"])
        # Idempotent (the same file each time), so a retry may write it again.
        save_training_row_hashes(client, logged.run_id, row_hashes(prepared.x_train).tolist())
    version_tags = {
        **registration_tags(logged, evaluation, fingerprint, settings, seed, prepared.n_train),
        "prefect.flow_run_id": flow_run,
    }
    registration = register_model_version(
        settings.tracking_uri,
        name,
        logged.run_id,
        logged.model_uri,
        version_tags,
        registration_description(logged, evaluation, version_tags, flow_run),
    )
    return TrackedModel(
        logged.name,
        logged.run_id,
        logged.experiment_id,
        logged.model_uri,
        name,
        registration.version,
        logged.ui_url,
        created=registration.created,
    )


@task(name="register", task_run_name="register-{logged.name}", retries=2, retry_delay_seconds=5)
def register_model_task(
    logged: LoggedRun, evaluation: Evaluation, prepared: PreparedData, settings: Settings, tags: dict[str, str]
) -> TrackedModel:
    from prefect import get_run_logger

    tracked = register_logged_model(logged, evaluation, prepared, settings, tags)
    get_run_logger().info(
        "%s %s as %s version %s",
        "Registered" if tracked.created else "Reused the identical earlier registration of",
        tracked.name,
        tracked.registered_model,
        tracked.version,
    )
    return tracked
