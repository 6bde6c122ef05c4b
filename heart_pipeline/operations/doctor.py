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

from heart_pipeline.operations import orphans
from heart_pipeline.tracking.registry import DECISION_TAG, FLOW_RUN_TAG

# A RUNNING run or an undecided version younger than this may belong to a flow that is still working.
# Ended runs need no such guard: a run that failed a minute ago is listed at once.
DEFAULT_MIN_AGE_MINUTES = 30.0
RECENT_FAILURES = 10  # the newest FAILED or KILLED runs listed
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


def _runs(client: Any, query: str, min_age_minutes: float = 0.0, limit: int = 1000) -> list[StuckRun]:
    """MLflow runs matching ``query`` in every experiment, newest first, at least ``min_age_minutes`` old."""
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    if not experiments:
        return []
    now = time.time()
    found = []
    for run in client.search_runs(
        list(experiments), filter_string=query, max_results=limit, order_by=["attributes.start_time DESC"]
    ):
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


def running_runs(client: Any, flow_run_id: str | None = None, min_age_minutes: float = 0.0) -> list[StuckRun]:
    """MLflow runs still RUNNING, in every experiment; only ``flow_run_id``'s when given."""
    query = "attributes.status = 'RUNNING'"
    if flow_run_id:
        query += f" and tags.`{FLOW_RUN_TAG}` = '{flow_run_id}'"
    return _runs(client, query, min_age_minutes)


def failed_runs(client: Any, limit: int = RECENT_FAILURES) -> list[StuckRun]:
    """The newest runs that ended FAILED or KILLED, whatever their age."""
    ended = [
        run for status in ("FAILED", "KILLED") for run in _runs(client, f"attributes.status = '{status}'", limit=limit)
    ]
    return sorted(ended, key=lambda run: run.age_minutes)[:limit]  # MLflow's search has no IN for status


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
        failures = failed_runs(client)
        if fix:
            end_runs(client, runs)
            mark_undecided(client, versions)
    left_behind = orphans.reap() if fix else [orphans.describe(p) for p in orphans.orphans()]
    return {
        "tracking_store": tracking_uri,
        "older_than_minutes": min_age_minutes,
        "runs_stuck_in_running": [vars(r) for r in runs],
        "versions_without_decision": [vars(v) for v in versions],
        "recently_failed_runs": [vars(r) for r in failures],
        "orphan_worker_processes": left_behind,
        "fixed": fix,
        "next": None
        if fix or not (runs or versions or left_behind)
        else "heart-pipeline doctor --fix (runs KILLED, versions tagged, orphan workers stopped)",
    }


ENDED_FLOW_RUN_STATES = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


def flow_run_state(api_url: str, flow_run_id: str) -> str | None:
    """The state type of a flow run on the Prefect server at ``api_url``; None if it does not know it."""
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{api_url}/flow_runs/{flow_run_id}", timeout=5) as response:
            return str(json.load(response).get("state_type"))
    except (urllib.error.URLError, OSError, ValueError, AttributeError):
        return None


def close_runs_of_ended_flow_runs(tracking_uri: str, api_url: str) -> list[StuckRun]:
    """End as KILLED the MLflow runs still RUNNING whose flow run has ended on the server at ``api_url``.

    A SIGKILLed flow run cannot end its MLflow runs; once Prefect marks it Crashed (the zombie
    automation), the next CLI run closes them, whatever their age. Runs of flow runs this server does
    not know (another server's, or none) are left to ``doctor``."""
    import mlflow

    from heart_pipeline.tracking.registry import tracking_store

    with tracking_store(tracking_uri):
        client = mlflow.MlflowClient(tracking_uri)
        ended = [
            run
            for run in running_runs(client)
            if run.flow_run_id and flow_run_state(api_url, run.flow_run_id) in ENDED_FLOW_RUN_STATES
        ]
        end_runs(client, ended)
    return ended


def _run_line(run: dict[str, Any]) -> str:
    flow_run = f", flow run {run['flow_run_id']}" if run["flow_run_id"] else ""
    where = f"{run['experiment']}, run {run['run_id']}{flow_run}"
    return f"  {run['name'] or run['run_id']} ({where}, {run['age_minutes']:g} min ago)"


def summary(result: dict[str, Any]) -> str:
    """``diagnose``'s result for people: what is stuck, what failed lately, what to do."""
    stuck, versions = result["runs_stuck_in_running"], result["versions_without_decision"]
    failures = result["recently_failed_runs"]
    done = "ended as KILLED" if result["fixed"] else "stuck in RUNNING"
    lines = [f"MLflow store {result['tracking_store']}"]
    lines.append(f"runs {done} (started over {result['older_than_minutes']:g} min ago): {len(stuck) or 'none'}")
    lines += [_run_line(run) for run in stuck]
    tagged = "tagged undecided" if result["fixed"] else "without a promotion decision"
    lines.append(f"model versions {tagged}: {len(versions) or 'none'}")
    lines += [
        f"  {v['registered_model']} v{v['version']} (run {v['run_id']}, {v['age_minutes']:g} min old)" for v in versions
    ]
    lines.append(f"latest failed or killed runs: {len(failures) or 'none'}")
    lines += [_run_line(run) for run in failures]
    workers = result["orphan_worker_processes"]
    lines.append(
        f"worker processes left by killed runs{' (stopped)' if result['fixed'] else ''}: {len(workers) or 'none'}"
    )
    lines += [f"  {worker}" for worker in workers]
    lines.append(f"next: {result['next']}" if result["next"] else "nothing to fix")
    return "\n".join(lines)


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
