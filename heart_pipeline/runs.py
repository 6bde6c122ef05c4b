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


def publish_failure_report(flow: Flow[..., Any], flow_run: FlowRun, state: State[Any]) -> None:
    """Prefect on_failure/on_crashed hook: leave a markdown artifact saying what failed and why."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.context import FlowRunContext

    from heart_pipeline.render import failure_markdown

    markdown = failure_markdown(flow.name, flow_run, state)
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
