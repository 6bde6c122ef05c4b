"""Small Prefect helpers shared by tasks and flows."""

from __future__ import annotations

from typing import Any

from heart_pipeline.errors import PipelineError


def retry_unless_pipeline_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry transient I/O failures, never a data or config problem: retrying cannot fix those."""
    try:
        state.result()
    except PipelineError:
        return False
    except Exception:  # noqa: BLE001 - anything else (disk, network) may be transient
        return True
    return False


def run_cached(task: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a cached task; if its cached result points at files deleted since (say, a cleaned
    runs/ folder), run it again instead of failing downstream."""
    result = task(*args, **kwargs)
    if result.outputs_missing():
        from prefect import get_run_logger

        get_run_logger().warning("Cached %s outputs are gone; recomputing", task.name)
        result = task.with_options(refresh_cache=True)(*args, **kwargs)
    return result


def flow_run_id() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.id or "local")
