"""Small Prefect helpers shared by tasks and flows."""

from __future__ import annotations

import logging
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


def flow_run_ui_url() -> str | None:
    """The current flow run's page in the Prefect UI (None outside a run or without a UI). Prefect's own
    ``flow_run.ui_url`` gives a /flow-runs/ path the 3.9 UI does not serve; ``url_for`` gives /runs/."""
    from prefect.runtime import flow_run
    from prefect.utilities.urls import url_for

    return url_for("flow-run", obj_id=flow_run.id) if flow_run.id else None


def tag_flow_run(tag: str) -> None:
    """Add ``tag`` to the current flow run, for filtering in the UI (one API call).

    Not ``prefect.tags()`` around the tasks: a task run with tags makes Prefect ask the server for the
    tags' concurrency slots before it starts, one round trip per task even when no limit exists.
    """
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    if flow_run.id is None:
        return
    with get_client(sync_client=True) as client:
        # The server's tags, not the run context's: those were read at start and miss the tags added since.
        current = client.read_flow_run(flow_run.id).tags
        client.update_flow_run(flow_run.id, tags=sorted({*current, tag}))


class ExpectedErrorsAsOneLine(logging.Filter):
    """Prefect logs a failed task or flow with its traceback (``exc_info=True``). For a
    PipelineError (a bad file, a bad config) the traceback says nothing the message doesn't, so
    the record keeps only the one-line reason, in the terminal and in the Prefect UI alike."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, PipelineError):
            record.msg, record.args = "Failed: %s", (" ".join(str(exc).split()),)
            record.exc_info, record.exc_text = None, None
        return True


class RoutineStateChanges(logging.Filter):
    """Drops routine INFO lines from a terminal: the per-task 'Finished in state Completed()' (one per
    task and model) and Great Expectations' notes about its temporary folders. They bury what
    matters; warnings, failures and every other line stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        routine = str(record.msg).startswith("Finished in state Completed")
        return not (routine or record.name.startswith("great_expectations"))


def install_log_filters() -> None:
    """One-line expected errors in every process that runs our flows (CLI, worker, tests).

    A filter on the run loggers themselves, so it acts before any handler (console or API);
    Prefect's dictConfig keeps existing loggers and their filters. Idempotent.
    """
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, ExpectedErrorsAsOneLine) for f in logger.filters):
            logger.addFilter(ExpectedErrorsAsOneLine())


def quiet_console() -> None:
    """For the CLI only: keep Prefect's terminal output to what a user acts on (the API still gets
    every line, so the Prefect UI shows the full log)."""
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import PrefectConsoleHandler

    ensure_logging_setup()  # later setups are incremental: they keep these handlers and filters
    for name in ("prefect", ""):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, PrefectConsoleHandler):
                handler.addFilter(RoutineStateChanges())


# Every flow imports this module (a worker loads flow files by path, so a package __init__ may not
# run): importing it makes expected data errors one line in that process's logs.
install_log_filters()
