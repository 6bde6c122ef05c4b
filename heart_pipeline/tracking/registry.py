"""MLflow plumbing with one home: the tracking store, experiments, the model registry, the
``champion`` alias, loading a version and the label rule. Steps, the CLI and the API import it;
it imports no step or flow.

MLflow is imported inside the functions: `import mlflow` costs seconds, and many callers (config
checks, `--help`, the API's schema) never touch the store.
"""

from __future__ import annotations

import functools
import inspect
import json
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
from urllib.parse import quote

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
TRIGGERED_BY_TAG = "heart.triggered_by"  # what started a run that no person started (a monitoring event)
TRAINING_PROFILE_ARTIFACT = "monitoring/training_profile.json"  # per column shares and risk of the training rows
# The registry's write lease (see ``registry_lease``): a holder renews it every LEASE_SECONDS / 6 and
# stops writing when less than LEASE_MARGIN of it is left; one it stopped renewing (it died) is broken
# after LEASE_SECONDS. Safe while no single store call takes longer than LEASE_SECONDS * LEASE_MARGIN.
LEASE_SUFFIX = ".lease."
LEASE_SECONDS = 20.0
LEASE_MARGIN = 0.25
LEASE_WAIT_SECONDS = 60.0
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


# MLflow 3.17's UI opens on its GenAI view (traces, tokens) in a fresh browser, whatever the experiment's
# tags: its sidebar toggle is kept by the browser. The query parameter below is the one the UI itself
# reads first, so every link the project prints or publishes opens the classic model-training view.
CLASSIC_VIEW = "workflowType=machine_learning"


def experiment_ui_url(ui_base: str, experiment_id: str) -> str:
    """The experiment's runs table, in the classic (model training) view."""
    return f"{ui_base}/#/experiments/{experiment_id}/runs?{CLASSIC_VIEW}"


def run_ui_url(ui_base: str, experiment_id: str, run_id: str, artifact: str | None = None) -> str:
    """A run's page, or one of its artifacts opened in the run's artifact view."""
    where = f"/artifacts/{quote(artifact)}" if artifact else ""
    return f"{ui_base}/#/experiments/{experiment_id}/runs/{run_id}{where}?{CLASSIC_VIEW}"


def model_version_ui_url(ui_base: str, name: str, version: str) -> str:
    return f"{ui_base}/#/models/{quote(name)}/versions/{version}?{CLASSIC_VIEW}"


def compare_runs_ui_url(ui_base: str, experiment_id: str, run_ids: list[str]) -> str:
    """MLflow's run comparison (metrics, parameters and, image by image, the plots logged at the run root)."""
    runs = quote(json.dumps(run_ids, separators=(",", ":")))
    experiments = quote(json.dumps([experiment_id], separators=(",", ":")))
    return f"{ui_base}/#/compare-runs?runs={runs}&experiments={experiments}&{CLASSIC_VIEW}"


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


class LeaseLost(PipelineError):
    """This holder's lease expired or was broken: it must not write."""


@dataclass
class Lease:
    """One holder's claim on the registry's write lease: epoch ``number`` of registered model ``name``."""

    client: Any
    name: str
    number: int
    holder: str
    seconds: float
    expires: float  # the last expiry this holder wrote (and the store acknowledged)
    lost: str | None = None

    @property
    def model(self) -> str:
        return lease_model_name(self.name, self.number)

    def time_left(self) -> float:
        return self.expires - self.seconds * LEASE_MARGIN - time.time()

    def check(self) -> None:
        """Raise LeaseLost unless this holder may still write: its lease has more than the margin left
        (by its own clock), it was not broken (no later epoch), and it was not collected."""
        if self.lost is None and self.time_left() <= 0:
            self.lost = f"its lease expired at {self.expires:.3f} (not renewed in time)"
        if self.lost is None:
            epochs = lease_epochs(self.client, self.name)
            if self.number not in epochs:
                self.lost = f"{self.model} was collected by a later holder"
            elif max(epochs) > self.number:
                self.lost = f"{lease_model_name(self.name, max(epochs))} was taken after this one went stale"
            elif self.time_left() <= 0:
                self.lost = f"its lease expired at {self.expires:.3f} while it checked"
        if self.lost:
            raise LeaseLost(f"{self.name}: lost the registry write lease ({self.lost}); nothing more is written")

    def renew(self) -> bool:
        """Extend the lease, only while it is still safely ours (never resurrect an expired one)."""
        if self.lost or self.time_left() <= 0:
            self.lost = self.lost or f"its lease expired at {self.expires:.3f} before it was renewed"
            return False
        expires = time.time() + self.seconds  # taken before the call: the store holds at most this
        self.client.set_registered_model_tag(self.model, "expires", f"{expires:.3f}")
        self.expires = expires
        return True


def lease_model_name(name: str, number: int) -> str:
    return f"{name}{LEASE_SUFFIX}{number:010d}"


def lease_epochs(client: Any, name: str) -> dict[int, Any]:
    """Every epoch of ``name``'s lease in the store: number -> registered model (with its tags)."""
    prefix = f"{name}{LEASE_SUFFIX}"
    found = client.search_registered_models(filter_string=f"name LIKE '{prefix}%'", max_results=1000)
    return {
        int(m.name[len(prefix) :]): m for m in found if m.name.startswith(prefix) and m.name[len(prefix) :].isdigit()
    }


def _is_free(model: Any, now: float) -> bool:
    """Released by its holder, or not renewed by it before its expiry (``now`` read before the look-up)."""
    try:
        expires = float(model.tags.get("expires", "0"))
    except ValueError:
        expires = 0.0  # garbled (only this code writes it): treated as expired
    return "released" in model.tags or expires < now


def _try_acquire(client: Any, name: str, purpose: str, holder: str, seconds: float) -> Lease | None:
    """One attempt: create the epoch after the top one if the top one is free. None: not this time."""
    import mlflow

    now = time.time()
    epochs = lease_epochs(client, name)
    top = max(epochs, default=0)
    if epochs and not _is_free(epochs[top], now):
        return None
    expires = time.time() + seconds
    number = top + 1
    try:
        client.create_registered_model(
            lease_model_name(name, number),
            tags={"holder": holder, "purpose": purpose[:200], "expires": f"{expires:.3f}"},
            description=f"Write lease of {name} (epoch {number}, {purpose[:200]}). Not a model.",
        )
    except mlflow.exceptions.MlflowException as exc:
        if _mlflow_error_code(exc) == "RESOURCE_ALREADY_EXISTS":
            return None  # another contender took this epoch: it holds the lease
        raise
    lease = Lease(client, name, number, holder, seconds, expires)
    later = [n for n in lease_epochs(client, name) if n > number]
    if later:  # a slow attempt re-created an epoch that had been collected: not the lease
        _delete_lease_model(client, lease.model)
        return None
    return lease


def _delete_lease_model(client: Any, model: str) -> None:
    import mlflow

    try:
        client.delete_registered_model(model)
    except mlflow.exceptions.MlflowException:
        pass  # already collected by another holder


@contextmanager
def registry_lease(
    client: Any,
    name: str,
    purpose: str,
    wait_seconds: float = LEASE_WAIT_SECONDS,
    lease_seconds: float = LEASE_SECONDS,
) -> Iterator[Lease]:
    """Hold the one write lease of registered model ``name`` for the block; call ``lease.check()``
    right before each write (it raises LeaseLost when the lease is no longer this holder's).

    MLflow has no compare-and-set, but creating a registered model is a unique insert, in a SQLite
    file and behind a tracking server alike. The lease is therefore a chain of epochs: registered
    models ``<name>.lease.<n>``, each created once, by the one holder of epoch n. A contender creates
    epoch n+1 only after reading epoch n (the top one) as free: released by its holder, or past the
    expiry its holder keeps renewing. Two contenders that read the same free epoch race to create the
    same next name and exactly one wins, so breaking a stale lease is a compare-and-set on that
    lease's identity (its epoch number), and never deletes anyone's live lease. The winner then checks
    that no later epoch exists (a slow attempt may re-create a collected number: it gives up); on
    release it deletes the epochs before its own.

    A holder renews its expiry from a heartbeat thread, never once its expiry is less than the margin
    (LEASE_MARGIN of the lease) away, and ``check`` fails from that point on, so a holder that stalled
    stops before writing rather than overlap with the one that broke its lease. This is sound while
    one store call takes less than the margin and clocks agree to within it.
    """
    holder = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}:{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + wait_seconds
    while (lease := _try_acquire(client, name, purpose, holder, lease_seconds)) is None:
        if time.monotonic() > deadline:
            raise PipelineError(f"{name}: the registry stayed busy for {wait_seconds:.0f} s (its write lease is held)")
        time.sleep(min(LEASE_POLL_SECONDS, lease_seconds / 40) * (1 + random.random()))  # jitter
    stop = threading.Event()
    heartbeat = threading.Thread(target=_renew_until, args=(lease, stop), name=f"lease-{lease.number}", daemon=True)
    heartbeat.start()
    try:
        yield lease
    finally:
        stop.set()
        heartbeat.join()
        _release(lease)


def _renew_until(lease: Lease, stop: threading.Event) -> None:
    while not stop.wait(lease.seconds / 6):
        try:
            if not lease.renew():
                return
        except Exception:  # noqa: BLE001 - a failed renewal is retried; the lease expires if none succeeds
            continue


def _release(lease: Lease) -> None:
    """Mark this epoch released (only its holder ever writes to it, so no compare is needed), then
    collect the epochs before it (off the next holder's path: deleting an earlier epoch is safe at any
    time, as its holder, if alive, sees that and stops, and a re-created one is given up)."""
    import mlflow

    try:
        lease.client.set_registered_model_tag(lease.model, "released", f"{time.time():.3f}")
        for old in (n for n in lease_epochs(lease.client, lease.name) if n < lease.number):
            _delete_lease_model(lease.client, lease_model_name(lease.name, old))
    except mlflow.exceptions.MlflowException:
        pass  # collected by a later holder: nothing to release


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
        with registry_lease(client, name, f"registering run {run_id}") as lease:
            key = tags[CONTENT_KEY_TAG]
            if (same := find_version(client, name, f"tags.`{CONTENT_KEY_TAG}`='{key}'")) is not None:
                return Registration(str(same.version), created=False)
            with tempfile.TemporaryDirectory(prefix="heart-model-") as tmp:
                files_uri = logged_model_files_uri(client, model_uri)
                identity = identity_tags(fetch_model_file(files_uri, Path(tmp), f"{name} from run {run_id}"))
            # A logged model's URI (models:/m-...) must name its model id too, or a tracking server refuses it.
            model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
            lease.check()
            created = client.create_model_version(
                name, model_uri, run_id=run_id, tags={**tags, **identity}, description=description, model_id=model_id
            )
    return Registration(str(created.version), created=True)


def save_training_row_hashes(client: Any, run_id: str, hashes: list[str]) -> None:
    """Keep which rows a model was trained on (hashes only, no patient data), for overlap checks."""
    client.log_text(run_id, "\n".join(hashes) + "\n", ROW_HASHES_ARTIFACT)


def run_artifact_text(client: Any, run_id: str, path: str) -> str | None:
    """An artifact's text, or None when the run has none at that path (a run logged before it was kept)."""
    folder, _, name = path.rpartition("/")
    if name not in {Path(a.path).name for a in client.list_artifacts(run_id, folder or None)}:
        return None
    with tempfile.TemporaryDirectory(prefix="heart-artifact-") as directory:
        return Path(client.download_artifacts(run_id, path, directory)).read_text(encoding="utf-8")


def training_row_hashes(client: Any, run_id: str) -> set[str] | None:
    """The row hashes saved with a version's run, or None when it has none (registered before they were kept)."""
    text = run_artifact_text(client, run_id, ROW_HASHES_ARTIFACT)
    return None if text is None else set(text.split())


def training_profile(client: Any, run_id: str) -> dict[str, Any] | None:
    """The profile of a version's training rows and out-of-fold risk (monitoring's reference), or None
    for a version trained before profiles were kept."""
    text = run_artifact_text(client, run_id, TRAINING_PROFILE_ARTIFACT)
    return None if text is None else json.loads(text)


def commit_if_champion_is(
    client: Any, name: str, expected: str | None, commit: Callable[[Callable[[], None]], None]
) -> bool:
    """Compare-and-set for @champion: run ``commit`` (decision tags, alias move) under the registry
    lease only while the champion is still ``expected``, the version the decision was made against.
    ``commit`` gets the lease's check, to call right before the alias moves. False means it moved
    meanwhile: the caller compares again with the new champion."""
    with registry_lease(client, name, "deciding a promotion") as lease:
        if current_champion(client, name) != expected:
            return False
        lease.check()
        commit(lease.check)
        return True


def rollback_champion(tracking_uri: str, name: str, to_version: str | None = None) -> tuple[str, str]:
    """Point ``champion`` back at the version it replaced (or at ``to_version``); returns (from, to).

    Under the registry lease, so a rollback and a promotion never interleave."""
    import mlflow

    with tracking_store(tracking_uri):
        client = mlflow.MlflowClient(tracking_uri)
        with registry_lease(client, name, "rolling back") as lease:
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
            lease.check()
            client.set_registered_model_alias(name, CHAMPION, to_version)
            client.set_model_version_tag(name, current, ROLLED_BACK_TAG, f"champion moved back to v{to_version}")
        # Keep the history walkable: rolling back again continues to the version before that one.
        return current, to_version


# A description's first line, before any ``## `` section: what the version is and its decision. The
# registry's versions table shows only a description's first line.
HEADLINE = ""
# The longest description the registry stores (MLflow's model_versions.description is VARCHAR(5000)).
MAX_DESCRIPTION = 5000


def description_sections(description: str) -> dict[str, str]:
    """A version description's first line (key ``HEADLINE``) and ``## heading`` sections, in order."""
    head, *blocks = re.split(r"^## ", description, flags=re.MULTILINE)
    sections = {HEADLINE: head.strip()} if head.strip() else {}
    for block in blocks:
        if block.strip():
            heading, _, text = block.partition("\n")
            sections[heading.strip()] = text.strip()
    return sections


def render_description(sections: dict[str, str]) -> str:
    """The headline first (plain text, one line), then each ``## heading`` section; cut to MAX_DESCRIPTION
    (the last section loses its tail, and says so)."""
    headline = " ".join(sections.get(HEADLINE, "").split())
    body = "\n\n".join(f"## {heading}\n{text}" for heading, text in sections.items() if heading != HEADLINE)
    text = f"{headline}\n\n{body}" if headline else body
    if len(text) <= MAX_DESCRIPTION:
        return text
    cut = "\n\n(cut to fit the registry's limit)"
    return text[: MAX_DESCRIPTION - len(cut)] + cut


def description_with(current: str, headline: str, heading: str, text: str) -> str:
    """``current`` with a new first line and one section replaced (the others kept): the registration says
    what the model is, the promotion why it was or was not promoted."""
    return render_description({**description_sections(current), HEADLINE: headline, heading: text})


def set_description_section(client: Any, name: str, version: str, heading: str, text: str) -> None:
    """Write one section of a version's description and keep the others."""
    sections = description_sections(client.get_model_version(name, version).description or "")
    client.update_model_version(name, version, description=render_description({**sections, heading: text}))
