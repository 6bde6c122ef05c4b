"""What a dead process leaves in MLflow, found and closed.

A flow run that crashes, is cancelled or is killed can leave MLflow runs in RUNNING (forever: MLflow
has no heartbeat of its own) and registered versions that never got a promotion decision. The flows'
crash and cancellation hooks close what their own flow run left; ``heart-pipeline doctor`` finds what
a SIGKILL left, and ``--fix`` closes it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from heart_pipeline.tracking.registry import DECISION_TAG, FLOW_RUN_TAG

# A run or version younger than this may belong to a flow that is still working.
DEFAULT_MIN_AGE_MINUTES = 30.0
UNDECIDED = "none: the flow run ended before a promotion decision"


@dataclass(frozen=True)
class StuckRun:
    run_id: str
    experiment: str
    name: str
    flow_run_id: str
    age_minutes: float


@dataclass(frozen=True)
class UndecidedVersion:
    registered_model: str
    version: str
    run_id: str
    flow_run_id: str
    age_minutes: float


def _age_minutes(epoch_ms: int | None, now: float) -> float:
    return (now - (epoch_ms or 0) / 1000) / 60


def running_runs(client: Any, flow_run_id: str | None = None, min_age_minutes: float = 0.0) -> list[StuckRun]:
    """MLflow runs still RUNNING, in every experiment; only ``flow_run_id``'s when given."""
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    if not experiments:
        return []
    query = "attributes.status = 'RUNNING'"
    if flow_run_id:
        query += f" and tags.`{FLOW_RUN_TAG}` = '{flow_run_id}'"
    now = time.time()
    found = []
    for run in client.search_runs(list(experiments), filter_string=query, max_results=1000):
        age = _age_minutes(run.info.start_time, now)
        if age >= min_age_minutes:
            found.append(
                StuckRun(
                    run.info.run_id,
                    experiments.get(run.info.experiment_id, run.info.experiment_id),
                    run.info.run_name or "",
                    run.data.tags.get(FLOW_RUN_TAG, ""),
                    round(age, 1),
                )
            )
    return found


def undecided_versions(
    client: Any, registered_model: str, flow_run_id: str | None = None, min_age_minutes: float = 0.0
) -> list[UndecidedVersion]:
    """Versions of ``registered_model`` with no promotion decision tag (only ``flow_run_id``'s when given)."""
    query = f"name='{registered_model}'"
    if flow_run_id:
        query += f" and tags.`{FLOW_RUN_TAG}` = '{flow_run_id}'"
    now = time.time()
    return [
        UndecidedVersion(
            registered_model,
            str(v.version),
            v.run_id or "",
            v.tags.get(FLOW_RUN_TAG, ""),
            round(_age_minutes(v.creation_timestamp, now), 1),
        )
        for v in client.search_model_versions(query)
        if DECISION_TAG not in v.tags and _age_minutes(v.creation_timestamp, now) >= min_age_minutes
    ]


def end_runs(client: Any, runs: list[StuckRun], status: str = "KILLED") -> None:
    for run in runs:
        client.set_terminated(run.run_id, status=status)


def mark_undecided(client: Any, versions: list[UndecidedVersion]) -> None:
    for version in versions:
        client.set_model_version_tag(version.registered_model, version.version, DECISION_TAG, UNDECIDED)


def diagnose(
    tracking_uri: str, registered_model: str, fix: bool = False, min_age_minutes: float = DEFAULT_MIN_AGE_MINUTES
) -> dict[str, Any]:
    """List (and with ``fix``, close) runs stuck in RUNNING and versions without a decision."""
    import mlflow

    from heart_pipeline.tracking.registry import tracking_store

    with tracking_store(tracking_uri):
        client = mlflow.MlflowClient(tracking_uri)
        runs = running_runs(client, min_age_minutes=min_age_minutes)
        versions = undecided_versions(client, registered_model, min_age_minutes=min_age_minutes)
        if fix:
            end_runs(client, runs)
            mark_undecided(client, versions)
    return {
        "tracking_store": tracking_uri,
        "older_than_minutes": min_age_minutes,
        "runs_stuck_in_running": [vars(r) for r in runs],
        "versions_without_decision": [vars(v) for v in versions],
        "fixed": fix,
        "next": None if fix or not (runs or versions) else "heart-pipeline doctor --fix (runs KILLED, versions tagged)",
    }


def close_flow_run_records(
    tracking_uri: str, registered_model: str, flow_run_id: str, status: str
) -> tuple[list[StuckRun], list[Any]]:
    """End the MLflow runs ``flow_run_id`` left RUNNING (as ``status``); return them and every model
    version it registered. A flow's failure, crash and cancellation hooks call this."""
    import mlflow

    from heart_pipeline.tracking.registry import tracking_store

    with tracking_store(tracking_uri):
        client = mlflow.MlflowClient(tracking_uri)
        runs = running_runs(client, flow_run_id)
        end_runs(client, runs, status)
        registered = client.search_model_versions(
            f"name='{registered_model}' and tags.`{FLOW_RUN_TAG}` = '{flow_run_id}'"
        )
        return runs, sorted(registered, key=lambda v: int(v.version))
