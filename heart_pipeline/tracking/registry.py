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
import random
import re
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np
import pandas as pd

from heart_pipeline.config import PROJECT_ROOT
from heart_pipeline.errors import PipelineError
from heart_pipeline.tracking.trust import SKOPS_TRUSTED_TYPES, identity_tags, load_verified, model_file_name

P = ParamSpec("P")
R = TypeVar("R")

CHAMPION = "champion"
# Version tags (short scalars; longer text goes into the version's description).
DECISION_TAG = "promotion.decision"
PREVIOUS_CHAMPION_TAG = "promotion.previous_champion"
ROLLED_BACK_TAG = "promotion.rolled_back"
CONTENT_KEY_TAG = "content_key"
CODEBOOK_TAG = "codebook.version"
LABEL_TAG = "label.definition"
EXCLUDED_TAG = "training.excluded_columns"  # features the version was trained without ("none")
ROW_HASHES_ARTIFACT = "registry/training_row_hashes.txt"
# The registry's write lease (see ``registry_lease``): a holder that died is presumed gone after this.
LEASE_SUFFIX = ".lease"
LEASE_SECONDS = 60.0
LEASE_POLL_SECONDS = 0.2


# Blocks inside ``tracking_store`` across this process's threads, and the URI to restore after the last.
_store_lock = threading.Lock()
_store_state: dict[str, Any] = {"depth": 0, "previous": None}
# Tags that tie MLflow records to the pipeline: the Prefect flow run that wrote a run or version
# (the doctor and the failure report find a flow run's records by it).
FLOW_RUN_TAG = "prefect.flow_run_id"
# MLflow 3's UI opens an experiment in its GenAI view (traces, prompts) unless it is marked as
# model training; this is the tag and value its UI reads.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


@contextmanager
def tracking_store(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` for the block only.

    ``mlflow.set_tracking_uri`` also exports MLFLOW_TRACKING_URI, which this project reads as the
    user's override; left set, one flow's store would leak into the next flow in the same process.
    The setting is process-wide, so overlapping blocks in threads (concurrent tasks, concurrent
    promotions) restore the user's value only when the last one ends: restoring per block would
    let one thread's exit leave another thread's store exported for good.
    """
    import mlflow

    with _store_lock:
        if _store_state["depth"] == 0:
            _store_state["previous"] = os.environ.get("MLFLOW_TRACKING_URI")
        _store_state["depth"] += 1
        mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        with _store_lock:
            _store_state["depth"] -= 1
            if _store_state["depth"] == 0:
                # None restores MLflow's default; its type hint says str but it accepts None.
                mlflow.set_tracking_uri(_store_state["previous"])


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


def skops_trusted_types() -> list[str]:
    """What MLflow's save may trust: the project's list (MLflow dumps the model, then loads it back
    with this list, so a model holding any other type fails at logging, naming the type)."""
    return list(SKOPS_TRUSTED_TYPES)


def model_signature(feature_columns: list[str]) -> Any:
    """Raw feature columns in, class label out. Features are doubles: a scoring file with a blank
    cell turns an int column into float, which MLflow's schema enforcement would otherwise reject."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("double", c) for c in feature_columns]), outputs=Schema([ColSpec("long")])
    )


def _mlflow_error_code(exc: Exception) -> str:
    return str(getattr(exc, "error_code", ""))


@contextmanager
def registry_lease(client: Any, name: str, purpose: str, wait_seconds: float = LEASE_SECONDS) -> Iterator[None]:
    """Hold the one write lease of registered model ``name`` for the block.

    The lease is a registered model named ``<name>.lease``: creating a registered model is the one
    insert the MLflow API makes unique (the store refuses a second one), in a SQLite file and behind
    a remote tracking server alike, so whoever creates it holds the lease; deleting it releases. A
    holder that died leaves it behind: after ``LEASE_SECONDS`` it counts as stale and is broken.
    """
    import mlflow

    lease = f"{name}{LEASE_SUFFIX}"
    holder = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}:{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            client.create_registered_model(
                lease,
                tags={"holder": holder, "purpose": purpose, "expires": f"{time.time() + LEASE_SECONDS:.3f}"},
                description=f"Write lease of {name} while {purpose}; deleted when done. Not a model.",
            )
            break
        except mlflow.exceptions.MlflowException as exc:
            # Taken; or released between the store's refusal and its look-up of the holder.
            if _mlflow_error_code(exc) not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
        _break_if_stale(client, lease)
        if time.monotonic() > deadline:
            raise PipelineError(f"{name}: the registry stayed busy for {wait_seconds:.0f} s ({lease} is held)")
        time.sleep(LEASE_POLL_SECONDS * (1 + random.random()))  # jitter, so waiters do not retry in step
    try:
        yield
    finally:
        _release(client, lease, holder)


def _break_if_stale(client: Any, lease: str) -> None:
    import mlflow

    try:
        held = client.get_registered_model(lease)
    except mlflow.exceptions.MlflowException:
        return  # released meanwhile
    if float(held.tags.get("expires", "0")) < time.time():
        _release(client, lease, held.tags.get("holder", ""))


def _release(client: Any, lease: str, holder: str) -> None:
    import mlflow

    try:
        if client.get_registered_model(lease).tags.get("holder") == holder:
            client.delete_registered_model(lease)
    except mlflow.exceptions.MlflowException:
        pass  # already released or broken as stale


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


def alias_version(tracking_uri: str, name: str, alias: str) -> str:
    """The version ``name@alias`` points at now (one exact version, so every figure names it)."""
    import mlflow

    if alias == CHAMPION:
        return champion_version(tracking_uri, name)
    with tracking_store(tracking_uri):
        try:
            return str(mlflow.MlflowClient(tracking_uri).get_model_version_by_alias(name, alias).version)
        except mlflow.exceptions.MlflowException:
            raise PipelineError(f"no model '{name}@{alias}' in {tracking_uri}; give --version N instead") from None


VALIDATION_SITES_TAG = "validation.sites"


def record_validation_tags(tracking_uri: str, name: str, version: str, site: str, tags: dict[str, str]) -> None:
    """Tag a version with one site's external-validation figures and add the site to ``validation.sites``
    (a comma-separated list of every site the version was validated on)."""
    import mlflow

    with tracking_store(tracking_uri):
        client = mlflow.MlflowClient(tracking_uri)
        current = client.get_model_version(name, version).tags.get(VALIDATION_SITES_TAG, "")
        sites = [s for s in current.split(",") if s]
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        client.set_model_version_tag(name, version, VALIDATION_SITES_TAG, ",".join(dict.fromkeys([*sites, site])))


def predict_with_threshold(model: Any, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels from one pass through the pipeline.

    ``FixedThresholdClassifier.predict`` would run the preprocessor a second time; the label
    rule is the same (probability >= the model's threshold).
    """
    probability = model.predict_proba(features)[:, 1]
    return probability, (probability >= model.threshold).astype(int)


def _download(uri: str, directory: Path) -> Path:
    from mlflow.artifacts import download_artifacts

    return Path(download_artifacts(artifact_uri=uri, dst_path=str(directory)))


def fetch_model_file(files_uri: str, directory: Path, label: str) -> Path:
    """Download a model's MLmodel, refuse any format but skops, then download only its skops file
    (a pickle's bytes never reach this machine)."""
    import yaml

    base = files_uri.rstrip("/")
    mlmodel = yaml.safe_load(_download(f"{base}/MLmodel", directory).read_text(encoding="utf-8")) or {}
    return _download(f"{base}/{model_file_name(mlmodel, label)}", directory)


def logged_model_files_uri(client: Any, model_uri: str) -> str:
    """Where a logged (not yet registered) model's files are: MLflow 3's ``models:/m-<id>`` names a
    logged model, which artifact URIs do not resolve; ``runs:/<run>/<path>`` they do."""
    if model_uri.startswith("models:/m-"):
        return str(client.get_logged_model(model_uri.removeprefix("models:/")).artifact_location)
    return model_uri


def load_model_version(tracking_uri: str, name: str, version: str) -> Any:
    """The one way any part of the pipeline deserializes a registered model (API, scoring, promote).

    Loads one exact version (not the alias), so labels and the reported version always agree, and
    only after ``heart_pipeline.tracking.trust`` has checked its format, its bytes and its types.
    """
    import mlflow

    label = f"{name} v{version}"
    client = mlflow.MlflowClient(tracking_uri)
    try:
        registered = client.get_model_version(name, version)
        files_uri = client.get_model_version_download_uri(name, version)
    except mlflow.exceptions.MlflowException as exc:
        raise PipelineError(f"{label}: not found in {tracking_uri}: {exc.message}"[:400]) from None
    with tracking_store(tracking_uri), tempfile.TemporaryDirectory(prefix="heart-model-") as tmp:
        model_file = fetch_model_file(files_uri, Path(tmp), label)
        return load_verified(model_file, registered.tags, label)


def find_version(client: Any, name: str, condition: str) -> Any | None:
    """The oldest version of ``name`` matching an MLflow filter condition, or None."""
    found = client.search_model_versions(f"name='{name}' and {condition}")
    return min(found, key=lambda v: int(v.version)) if found else None


def ensure_registered_model(client: Any, name: str, description: str) -> None:
    import mlflow

    try:
        client.create_registered_model(name, description=description)
    except mlflow.exceptions.MlflowException as exc:
        if _mlflow_error_code(exc) != "RESOURCE_ALREADY_EXISTS":
            raise


@dataclass(frozen=True)
class Registration:
    version: str
    created: bool  # False: an earlier registration of this run or of an identical model was reused


def register_model_version(
    tracking_uri: str,
    name: str,
    run_id: str,
    model_uri: str,
    tags: dict[str, str],
    description: str,
) -> Registration:
    """Register the run's model as a version of ``name``, once, and only if no identical one exists.

    - a retry finds the version its first attempt made (looked up by source run), so a failure
      after ``create_model_version`` never leaves a second copy;
    - a rerun on the same data, settings and code finds the version with the same
      ``content_key`` tag and reuses it, so the registry does not churn;
    - the lookup and the creation happen under the registry lease, so two identical runs at once
      register one version;
    - every tag (the model file's SHA-256 and HMAC included) is written by ``create_model_version``
      itself: no version ever exists half-tagged.
    """
    import mlflow

    with tracking_store(tracking_uri):
        client = mlflow.MlflowClient(tracking_uri)
        if (mine := find_version(client, name, f"run_id='{run_id}'")) is not None:
            return Registration(str(mine.version), created=False)
        ensure_registered_model(
            client, name, "Heart-disease risk models; @champion serves. See each version's description."
        )
        with registry_lease(client, name, f"registering run {run_id}"):
            key = tags[CONTENT_KEY_TAG]
            if (same := find_version(client, name, f"tags.`{CONTENT_KEY_TAG}`='{key}'")) is not None:
                return Registration(str(same.version), created=False)
            with tempfile.TemporaryDirectory(prefix="heart-model-") as tmp:
                files_uri = logged_model_files_uri(client, model_uri)
                identity = identity_tags(fetch_model_file(files_uri, Path(tmp), f"{name} from run {run_id}"))
            # A logged model's URI (models:/m-...) must name its model id too, or a tracking server refuses it.
            model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
            created = client.create_model_version(
                name, model_uri, run_id=run_id, tags={**tags, **identity}, description=description, model_id=model_id
            )
    return Registration(str(created.version), created=True)


def save_training_row_hashes(client: Any, run_id: str, hashes: list[str]) -> None:
    """Keep which rows a model was trained on (hashes only, no patient data), for overlap checks."""
    client.log_text(run_id, "\n".join(hashes) + "\n", ROW_HASHES_ARTIFACT)


def training_row_hashes(client: Any, run_id: str) -> set[str] | None:
    """The row hashes saved with a version's run, or None when it has none (registered before they were kept)."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="heart-rows-") as tmp:
        try:
            path = client.download_artifacts(run_id, ROW_HASHES_ARTIFACT, tmp)
        except (mlflow.exceptions.MlflowException, OSError):
            return None
        return set(Path(path).read_text(encoding="utf-8").split())


def commit_if_champion_is(client: Any, name: str, expected: str | None, commit: Callable[[], None]) -> bool:
    """Compare-and-set for @champion: run ``commit`` (decision tags, alias move) under the registry
    lease only while the champion is still ``expected``, the version the decision was made against.
    False means it moved meanwhile: the caller compares again with the new champion."""
    with registry_lease(client, name, "deciding a promotion"):
        if current_champion(client, name) != expected:
            return False
        commit()
        return True


def rollback_champion(tracking_uri: str, name: str, to_version: str | None = None) -> tuple[str, str]:
    """Point ``champion`` back at the version it replaced (or at ``to_version``); returns (from, to).

    Under the registry lease, so a rollback and a promotion never interleave."""
    import mlflow

    with tracking_store(tracking_uri):
        client = mlflow.MlflowClient(tracking_uri)
        with registry_lease(client, name, "rolling back"):
            current = current_champion(client, name)
            if current is None:
                raise PipelineError(f"{name}: there is no champion to roll back")
            if to_version is None:
                to_version = client.get_model_version(name, current).tags.get(PREVIOUS_CHAMPION_TAG)
                if not to_version:
                    raise PipelineError(f"{name}: champion v{current} has no previous champion to roll back to")
            try:
                client.get_model_version(name, to_version)
            except mlflow.exceptions.MlflowException:
                raise PipelineError(f"{name}: version {to_version} does not exist") from None
            client.set_registered_model_alias(name, CHAMPION, to_version)
            client.set_model_version_tag(name, current, ROLLED_BACK_TAG, f"champion moved back to v{to_version}")
        # Keep the history walkable: rolling back again continues to the version before that one.
        return current, to_version


def description_sections(description: str) -> dict[str, str]:
    """A version description's ``## heading`` sections, in order: heading -> text."""
    sections = {}
    for block in re.split(r"^## ", description, flags=re.MULTILINE):
        if block.strip():
            heading, _, text = block.partition("\n")
            sections[heading.strip()] = text.strip()
    return sections


def render_description(sections: dict[str, str]) -> str:
    return "\n\n".join(f"## {heading}\n{text}" for heading, text in sections.items())


def set_description_section(client: Any, name: str, version: str, heading: str, text: str) -> None:
    """Write one section of a version's description and keep the others: the registration says what
    the model is, the promotion why it was or was not promoted."""
    sections = description_sections(client.get_model_version(name, version).description or "")
    client.update_model_version(name, version, description=render_description({**sections, heading: text}))
