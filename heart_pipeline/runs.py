"""Per-run output folders, run names and failure reports shared by the flows.

Every flow run writes into its own folder, so runs never overwrite each other.
"""

from __future__ import annotations

import os
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from heart_pipeline.caching import fingerprint_file


def create_run_folder(runs_dir: Path, flow_name: str, run_id: str | None) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    suffix = (run_id or uuid.uuid4().hex)[:8]
    path = runs_dir / flow_name / f"{stamp}-{suffix}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def adopt_outputs(source: Path, destination: Path) -> Path:
    """Make a cached step's outputs (written by an earlier run) part of this run's folder too.

    Hard links cost no space and keep the earlier run's files untouched; a copy is the fallback
    across file systems.
    """
    if source.resolve() == destination.resolve() or destination.exists():
        return destination

    def link_or_copy(src: str, dst: str) -> str:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
        return dst

    shutil.copytree(source, destination, copy_function=link_or_copy)
    return destination


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
    fingerprint = data_fingerprint_for_name(path, int(settings.data.max_file_mb * 2**20))
    return f"{prefix}-{fingerprint}-{datetime.now(UTC):%m%d-%H%M%S}"


def training_run_name() -> str:
    return run_name("train")


def data_quality_run_name() -> str:
    return run_name("dq")


def scoring_run_name() -> str:
    return run_name("score")


def failure_markdown(flow_name: str, run: Any, state: Any) -> str:
    parameters = "\n".join(f"- `{k}` = `{v}`" for k, v in (run.parameters or {}).items()) or "- (defaults)"
    return (
        f"# {flow_name} failed\n\n"
        f"**Why:** {state.message or state.name}\n\n"
        f"Flow run `{run.name}` (`{run.id}`) ended in state **{state.name}**.\n\n"
        f"Parameters:\n{parameters}\n\n"
        "Nothing was registered in MLflow and no earlier run's outputs were touched. "
        "Data-quality failures name the file, the column and the lines; fix the file and run again.\n"
    )


def publish_failure_report(flow: Any, run: Any, state: Any) -> None:
    """Prefect on_failure/on_crashed hook: leave a markdown artifact saying what failed and why."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.context import FlowRunContext

    markdown = failure_markdown(flow.name, run, state)
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
                flow_run_id=run.id,
                description="Why this run failed",
            )
        )
