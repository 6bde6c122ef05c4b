"""Small Prefect helpers shared by tasks and flows."""

from __future__ import annotations

from typing import Any

from heart_pipeline.errors import PipelineError


def retry_unless_pipeline_error(_task: Any, _task_run: Any, state: Any) -> bool:
    """Retry transient I/O failures, never a data or config problem: retrying cannot fix those."""
    try:
        state.result()
    except PipelineError:
        return False
    except Exception:  # noqa: BLE001 - anything else (disk, network) may be transient
        return True
    return False


def flow_run_id() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.id or "local")
