"""Per-run output folders, run names and failure reports shared by the flows.

Every flow run writes into its own folder, so runs never overwrite each other.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heart_pipeline.caching import fingerprint_file

if TYPE_CHECKING:
    from prefect import Flow
    from prefect.client.schemas.objects import FlowRun, State


def create_run_folder(runs_dir: Path, flow_name: str, run_id: str | None) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    suffix = (run_id or uuid.uuid4().hex)[:8]
    path = runs_dir / flow_name / f"{stamp}-{suffix}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def data_fingerprint_for_name(path: Path, max_bytes: int) -> str:
    """Short content hash for a run name; never raises (the load step reports real problems)."""
    try:
        if not path.is_file() or path.stat().st_size > max_bytes:
            return "nodata"
        return fingerprint_file(path)[:8]
    except OSError:
        return "nodata"


def run_name(prefix: str) -> str:
    """``<prefix>-<data sha256[:8]>-<time>``, computed from the flow run's ``data_path`` parameter."""
    from prefect.runtime import flow_run

    from heart_pipeline.config import load_config
    from heart_pipeline.errors import ConfigError

    parameters: dict[str, Any] = dict(flow_run.parameters or {})
    try:
        settings = load_config(parameters.get("config_path"))
    except ConfigError:
        return f"{prefix}-badconfig-{datetime.now(UTC):%m%d-%H%M%S}"
    path = settings.resolve(parameters.get("data_path") or settings.data.path)
    fingerprint = data_fingerprint_for_name(path, settings.data.max_memory_mb * 2**20)
    return f"{prefix}-{fingerprint}-{datetime.now(UTC):%m%d-%H%M%S}"


def training_run_name() -> str:
    return run_name("train")


def data_quality_run_name() -> str:
    return run_name("dq")


def scoring_run_name() -> str:
    return run_name("score")


def monitoring_run_name() -> str:
    """``monitor-<time>`` (a monitoring run reads the store, not a file)."""
    return f"monitor-{datetime.now(UTC):%m%d-%H%M%S}"


def external_validation_run_name() -> str:
    """``external-<first file's sha256[:8]>-<time>`` (the flow takes a list of files)."""
    from prefect.runtime import flow_run

    paths = (flow_run.parameters or {}).get("data_paths") or []
    fingerprint = data_fingerprint_for_name(Path(paths[0]), 2**31) if paths else "nodata"
    return f"external-{fingerprint}-{datetime.now(UTC):%m%d-%H%M%S}"


# Steps whose task runs write to MLflow (tracking, registration, the promotion tags and alias).
MLFLOW_TASK_PREFIXES = ("track", "register", "promote")


def touched_mlflow(flow_run_id: Any) -> bool:
    """Whether any MLflow-writing step of this flow run started (one Prefect API call, no MLflow import)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return any((t.name or "").startswith(MLFLOW_TASK_PREFIXES) for t in task_runs)


def mlflow_outcome(flow_run: FlowRun, state: State[Any]) -> str:
    """What this flow run left in MLflow, read from the store; runs it left RUNNING are ended on the way
    (KILLED after a crash or cancellation, FAILED after a failure)."""
    from heart_pipeline.config import load_config
    from heart_pipeline.errors import shorten

    try:
        if not touched_mlflow(flow_run.id):
            return "Nothing was written to MLflow: the run stopped before the tracking step."
        from heart_pipeline.operations.doctor import close_flow_run_records
        from heart_pipeline.operations.preflight import check_tracking_store

        settings = load_config((flow_run.parameters or {}).get("config_path"))
        check_tracking_store(settings.tracking_uri)  # seconds, so a dead store cannot stall this hook
        status = "KILLED" if state.is_crashed() or state.is_cancelled() else "FAILED"
        ended, versions = close_flow_run_records(
            settings.tracking_uri, settings.mlflow.registered_model, str(flow_run.id), status
        )
    except Exception as exc:  # noqa: BLE001 - the report must still be written
        return (
            f"Could not read what this run left in MLflow ({shorten(str(exc), 200)}); "
            "`heart-pipeline doctor` lists runs left RUNNING and versions without a decision."
        )
    from heart_pipeline.tracking.registry import DECISION_TAG

    if versions:
        listed = ", ".join(f"v{v.version} ({v.tags.get(DECISION_TAG, 'no promotion decision')})" for v in versions)
        registered = f"Registered in MLflow by this run: `{settings.mlflow.registered_model}` {listed}."
    else:
        registered = "Nothing was registered in MLflow by this run."
    if ended:
        registered += f" {len(ended)} MLflow run(s) it left RUNNING were ended as {status}."
    return registered


def caused_by_termination(exc: BaseException | None) -> bool:
    """Whether ``exc`` is, or was raised while handling, Prefect's SIGTERM signal.

    A SIGTERM that lands while Prefect creates a task run surfaces as an unrelated error
    ("Task run is not set") raised during the handling of the TerminationSignal.
    """
    from prefect.exceptions import TerminationSignal

    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, TerminationSignal):
            return True
        exc, seen = exc.__context__, seen + 1
    return False


def crash_if_terminated(flow_run: FlowRun, state: State[Any]) -> State[Any]:
    """A run stopped by SIGTERM is Crashed, whatever error the signal surfaced as; returns the final state."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    if not state.is_failed() or not caused_by_termination(state.result(raise_on_failure=False)):
        return state
    crashed: State[Any] = Crashed(message="Stopped by SIGTERM (a termination signal) before it finished.")
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run.id, crashed, force=True)
    return crashed


def publish_failure_report(flow: Flow[..., Any], flow_run: FlowRun, state: State[Any]) -> None:
    """Prefect on_failure/on_crashed/on_cancellation hook: close this run's MLflow records and leave a
    markdown artifact saying what failed, why, and what was registered."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.context import FlowRunContext

    from heart_pipeline.evidence.render import failure_markdown

    state = crash_if_terminated(flow_run, state)

    markdown = failure_markdown(flow.name, flow_run, state, mlflow_outcome(flow_run, state))
    if FlowRunContext.get() is not None:
        create_markdown_artifact(markdown=markdown, key=f"{flow.name}-failure", description="Why this run failed")
        return
    # Outside the run context (a crash), attach the artifact to the run explicitly.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactCreate

    with get_client(sync_client=True) as client:
        client.create_artifact(
            ArtifactCreate(
                key=f"{flow.name}-failure",
                type="markdown",
                data=markdown,
                flow_run_id=flow_run.id,
                description="Why this run failed",
            )
        )


# Every flow takes all three hooks: a run that fails, crashes or is cancelled closes its MLflow records
# and says why. (heart-training-dask once lacked on_cancellation: one definition keeps them together.)
FAILURE_HOOKS: dict[str, Any] = {
    "on_failure": [publish_failure_report],
    "on_crashed": [publish_failure_report],
    "on_cancellation": [publish_failure_report],
}
