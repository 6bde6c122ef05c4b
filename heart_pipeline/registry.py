"""MLflow plumbing with one home: the tracking store, experiments, the model registry, the
``champion`` alias, loading a version and the label rule. Steps, the CLI and the API import it;
it imports no step or flow.

MLflow is imported inside the functions: `import mlflow` costs seconds, and many callers (config
checks, `--help`, the API's schema) never touch the store.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np
import pandas as pd

from heart_pipeline.config import PROJECT_ROOT
from heart_pipeline.errors import PipelineError

P = ParamSpec("P")
R = TypeVar("R")

CHAMPION = "champion"
# Tags that tie MLflow records to the pipeline: the Prefect flow run that wrote a run or version,
# and the promotion decision every version gets (the doctor finds versions that never got one).
FLOW_RUN_TAG = "prefect.flow_run_id"
DECISION_TAG = "promotion.decision"
# MLflow 3's UI opens an experiment in its GenAI view (traces, prompts) unless it is marked as
# model training; this is the tag and value its UI reads.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
SKOPS_TRUSTED_PREFIXES = ("numpy.", "sklearn.", "scipy.")


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
        # None restores MLflow's default; its type hint says str but it accepts None.
        mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]


def uses_tracking_store(func: Callable[P, R]) -> Callable[P, R]:
    """Run ``func`` inside ``tracking_store`` of its ``tracking_uri`` argument (or its ``settings``')."""
    signature = inspect.signature(func)

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        arguments = signature.bind(*args, **kwargs).arguments
        uri = arguments["tracking_uri"] if "tracking_uri" in arguments else arguments["settings"].tracking_uri
        with tracking_store(uri):
            return func(*args, **kwargs)

    return wrapper


@functools.cache
def source_tags(source_name: str, root: Path = PROJECT_ROOT) -> dict[str, str]:
    """MLflow's own source and git fields (the UI's Source column, the commit link), filled with MLflow's
    own git helpers from the project folder: MLflow would otherwise take them from sys.argv[0], which
    under Prefect is its engine module, not this project."""
    from mlflow.entities import SourceType
    from mlflow.utils import mlflow_tags
    from mlflow.utils.git_utils import get_git_branch, get_git_commit, get_git_repo_url

    tags = {
        mlflow_tags.MLFLOW_SOURCE_NAME: source_name,
        mlflow_tags.MLFLOW_SOURCE_TYPE: SourceType.to_string(SourceType.LOCAL),
    }
    for key, value in (
        (mlflow_tags.MLFLOW_GIT_COMMIT, get_git_commit(str(root))),
        (mlflow_tags.MLFLOW_GIT_BRANCH, get_git_branch(str(root))),
        (mlflow_tags.MLFLOW_GIT_REPO_URL, get_git_repo_url(str(root))),
    ):
        if value:
            tags[key] = value
    if mlflow_tags.MLFLOW_GIT_COMMIT in tags:
        try:
            from git import Repo

            tags[mlflow_tags.MLFLOW_GIT_DIRTY] = str(Repo(root, search_parent_directories=True).is_dirty()).lower()
        except Exception:  # noqa: BLE001 - a missing dirty flag is not worth failing a run
            pass
    return tags


@contextmanager
def store_initialisation_lock(tracking_uri: str) -> Iterator[None]:
    """Serialise the first use of a local SQLite store across processes.

    MLflow creates and migrates a new SQLite store on first use, and two runs doing so at once fail
    with "table _alembic_tmp_experiments already exists". A file lock beside the database makes the
    second process wait for the first; remote stores need none.
    """
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        yield
        return
    import fcntl

    lock_path = Path(tracking_uri[len(prefix) :] + ".init.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_experiment(tracking_uri: str, name: str, artifact_root: Path) -> str:
    """Get or create the experiment. Local stores get an explicit artifact location under mlruns/,
    because MLflow would otherwise put artifacts relative to whatever the current directory is."""
    import mlflow

    with store_initialisation_lock(tracking_uri):
        client = mlflow.MlflowClient(tracking_uri)
        experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return str(experiment.experiment_id)
    location = None if tracking_uri.startswith(("http://", "https://")) else (artifact_root / name).as_uri()
    try:
        return str(
            client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        )
    except mlflow.exceptions.MlflowException:
        # A concurrent run created it first.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def run_ui_url(ui_base: str, experiment_id: str, run_id: str) -> str:
    return f"{ui_base}/#/experiments/{experiment_id}/runs/{run_id}"


def model_version_ui_url(ui_base: str, name: str, version: str) -> str:
    return f"{ui_base}/#/models/{name}/versions/{version}"


def pinned_requirements() -> list[str]:
    """Exact versions of what the saved Pipeline needs; avoids MLflow's slow requirement inference."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("scikit-learn", "pandas", "numpy", "scipy", "skops")]


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


def current_champion(client: Any, name: str) -> str | None:
    import mlflow

    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except mlflow.exceptions.MlflowException:
        return None


def champion_version(tracking_uri: str, name: str) -> str:
    import mlflow

    with tracking_store(tracking_uri):
        version = current_champion(mlflow.MlflowClient(tracking_uri), name)
    if version is None:
        raise PipelineError(f"no model '{name}@{CHAMPION}' in {tracking_uri}: run `heart-pipeline train` first")
    return version


def load_model_version(tracking_uri: str, name: str, version: str) -> Any:
    """Load one exact version (not the alias), so labels and the reported version always agree."""
    import mlflow.sklearn

    with tracking_store(tracking_uri):
        return mlflow.sklearn.load_model(f"models:/{name}/{version}")


def register_model_version(tracking_uri: str, name: str, run_id: str, model_uri: str, tags: dict[str, str]) -> str:
    """Register the run's model as a version of ``name``, once: a retry finds the version it made before.

    Looking the version up by its source run makes the call idempotent, so a task retry after a
    failure past this point never registers a second copy.
    """
    import mlflow

    # Inside the store's context: MLflow resolves a logged model's models:/m-... URI through the
    # fluent API's store, not the client's.
    with tracking_store(tracking_uri):
        client = mlflow.MlflowClient(tracking_uri)
        for existing in client.search_model_versions(f"name='{name}' and run_id='{run_id}'"):
            return str(existing.version)
        try:
            client.create_registered_model(name)
        except mlflow.exceptions.MlflowException:
            pass  # it exists already
        # A logged model's URI (models:/m-...) must name its model id too, or a tracking server refuses it.
        model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
        created = client.create_model_version(name, model_uri, run_id=run_id, tags=tags, model_id=model_id)
        return str(created.version)


def predict_with_threshold(model: Any, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels from one pass through the pipeline.

    ``FixedThresholdClassifier.predict`` would run the preprocessor a second time; the label
    rule is the same (probability >= the model's threshold).
    """
    probability = model.predict_proba(features)[:, 1]
    return probability, (probability >= model.threshold).astype(int)


def rollback_champion(tracking_uri: str, name: str, to_version: str | None = None) -> tuple[str, str]:
    """Point ``champion`` back at the version it replaced (or at ``to_version``); returns (from, to)."""
    import mlflow

    with tracking_store(tracking_uri):
        client = mlflow.MlflowClient(tracking_uri)
        current = current_champion(client, name)
        if current is None:
            raise PipelineError(f"{name}: there is no champion to roll back")
        if to_version is None:
            to_version = client.get_model_version(name, current).tags.get("promotion.previous_champion")
            if not to_version:
                raise PipelineError(f"{name}: champion v{current} has no previous champion to roll back to")
        try:
            client.get_model_version(name, to_version)
        except mlflow.exceptions.MlflowException:
            raise PipelineError(f"{name}: version {to_version} does not exist") from None
        client.set_registered_model_alias(name, CHAMPION, to_version)
        client.set_model_version_tag(name, current, "promotion.rolled_back", f"champion moved back to v{to_version}")
        # Keep the history walkable: rolling back again continues to the version before that one.
        return current, to_version
