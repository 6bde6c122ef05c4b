"""What the terminal shows: one-line expected errors, no routine state lines, a short training summary."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from heart_pipeline import cli
from heart_pipeline.cli import build_parser, human_summary
from heart_pipeline.errors import DataError
from heart_pipeline.evidence.render import champion_line, mlflow_ui_command, training_terminal_summary
from heart_pipeline.operations.runtime import ExpectedErrorsAsOneLine, RoutineStateChanges


def record(message: str, level: int = logging.INFO, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    return logging.LogRecord("prefect.task_runs", level, __file__, 1, message, (), exc_info)


def test_an_expected_data_error_is_logged_as_one_line_without_traceback():
    try:
        raise DataError("data/x.csv: data-quality gate failed: column 'target' not in [0, 1]: [2] at line 9")
    except DataError as exc:
        failed = record("Task run failed with exception: %r", logging.ERROR, exc)
    assert ExpectedErrorsAsOneLine().filter(failed)
    text = logging.Formatter().format(failed)
    assert text == "Failed: data/x.csv: data-quality gate failed: column 'target' not in [0, 1]: [2] at line 9"
    try:
        raise ValueError("a bug")
    except ValueError as exc:
        bug = record("Task run failed with exception: %r", logging.ERROR, exc)
    ExpectedErrorsAsOneLine().filter(bug)
    assert "Traceback" in logging.Formatter().format(bug), "real bugs keep their traceback"


def test_routine_completed_lines_are_dropped_but_failures_kept():
    quiet = RoutineStateChanges()
    assert not quiet.filter(record("Finished in state Completed()"))
    assert quiet.filter(record("Finished in state Failed('boom')", logging.ERROR))
    assert quiet.filter(record("Quarantined: column 'thal' is missing at lines 249, 254", logging.WARNING))


RESULT = {
    "run_dir": "runs/heart-training/20261127T044722Z-ba9e1330",
    "validation": {"data_path": "data/heart.csv", "decision": "quarantined", "rows_in": 303, "rows_kept": 301,
                   "rows_quarantined": 2, "duplicate_rows": 0},
    "validation_report": "runs/heart-training/20261127T044722Z-ba9e1330/validation/report.html",
    "mlflow_ui_command": mlflow_ui_command("sqlite:///mlruns/mlflow.db", "mlruns"),
    "promotion": {"registered_model": "heart-disease", "challenger": "logistic_regression",
                  "challenger_version": "3", "promoted": False, "champion_version_before": "1",
                  "champion_version_after": "1", "reasons": ["the champion is already this model"]},
    "models": {
        "logistic_regression": {"version": "3", "threshold": 0.52, "metrics": {
            "test_roc_auc": 0.914, "test_roc_auc_ci95_low": 0.832, "test_roc_auc_ci95_high": 0.977,
            "cv_roc_auc_mean": 0.911, "cv_roc_auc_ci95_low": 0.876, "cv_roc_auc_ci95_high": 0.946}},
    },
}  # fmt: skip


def test_training_summary_is_short_and_says_where_to_look():
    text = training_terminal_summary(RESULT)
    assert len(text.splitlines()) <= 12
    assert "0.914 [0.832, 0.977]" in text and "0.911 [0.876, 0.946]" in text
    assert "heart-disease@champion stays v1" in text
    assert "Run folder: runs/heart-training/20261127T044722Z-ba9e1330" in text
    assert "mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --artifacts-destination mlruns" in text
    assert "{" not in text, "no JSON"


def test_the_help_names_every_command() -> None:
    description = build_parser().description or ""
    missing = [name for name in cli.SUBCOMMANDS if name not in description]
    assert not missing, f"`heart-pipeline --help` does not name {missing}"


def test_json_only_on_request():
    assert not build_parser().parse_args(["train"]).json
    assert build_parser().parse_args(["train", "--json"]).json
    assert human_summary("train", RESULT) == training_terminal_summary(RESULT)
    promoted = {**RESULT["promotion"], "promoted": True, "champion_version_before": None, "reasons": ["floors met"]}
    assert champion_line(promoted) == "heart-disease@champion -> logistic_regression v3 (first champion): floors met"


def _terminated_at(phase: str) -> Callable[[argparse.Namespace], dict[str, Any]]:
    """A command handler that receives SIGTERM before its flow, during it, or after it returned."""

    def flow() -> dict[str, Any]:
        if phase == "running":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here
        return {}

    def handler(_args: argparse.Namespace) -> dict[str, Any]:
        if phase != "not started":
            cli._call_flow(flow)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        return {}

    return handler


@pytest.mark.parametrize("phase", ["not started", "running", "finished"])
def test_the_sigterm_line_claims_a_crash_only_while_a_flow_runs(phase: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli.SUBCOMMANDS, "contract", ("help", _terminated_at(phase), []))
    monkeypatch.setattr(cli, "_flow_phase", ["not started"])
    monkeypatch.setattr(cli, "_last_words", [])
    previous = signal.getsignal(signal.SIGTERM)
    try:
        assert cli.main(["contract"]) == 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
    (line, _), *_ = cli._last_words
    assert ("marked Crashed" in line) == (phase == "running")
    assert line == cli.STOPPED_BY_SIGTERM_AFTER.get(phase, cli.STOPPED_BY_SIGTERM)
