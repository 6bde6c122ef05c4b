"""The stack's process handling on psutil, without servers: tree stop with SIGKILL escalation,
the PID-reuse guard, and status read from what `up` recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from heart_pipeline.operations import stack

# A parent that ignores SIGTERM and has a child that ignores it too: only SIGKILL stops them.
IGNORE_SIGTERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
CHILD = IGNORE_SIGTERM + "time.sleep(60)"
STUBBORN = (
    IGNORE_SIGTERM + f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {CHILD!r}]); time.sleep(60)"
)


def layout(tmp_path: Path, prefect_port: int = 1, mlflow_port: int = 2) -> stack.StackLayout:
    return stack.StackLayout(tmp_path, tmp_path / "home", tmp_path / "db", tmp_path / "art", prefect_port, mlflow_port)


@pytest.mark.e2e
def test_stop_tree_escalates_to_sigkill_for_the_whole_tree(tmp_path: Path):
    marker = layout(tmp_path)
    env = {**os.environ, stack.MARKER: str(marker.state_dir)}
    parent = subprocess.Popen([sys.executable, "-c", STUBBORN], env=env, start_new_session=True)
    process = psutil.Process(parent.pid)
    deadline = time.monotonic() + 30
    while not process.children() and time.monotonic() < deadline:
        time.sleep(0.1)
    tree = [process, *process.children(recursive=True)]
    assert len(tree) == 2
    assert stack._process(parent.pid, marker) is not None
    assert stack._process(parent.pid, layout(tmp_path / "other")) is None, "another stack's marker is not ours"
    killed = stack.stop_tree(process, grace=1)
    assert {p.pid for p in killed} == {p.pid for p in tree}
    _, alive = psutil.wait_procs(tree, timeout=5)
    assert alive == []


def test_status_reads_the_recorded_ports_and_fails_when_nothing_answers(tmp_path: Path):
    recorded = layout(tmp_path, 4311, 5111)
    (tmp_path / "stack.json").write_text(
        json.dumps({"layout": {k: str(v) for k, v in recorded.__dict__.items()}}), encoding="utf-8"
    )
    found = stack.recorded_layout(layout(tmp_path, 4200, 5000))
    assert (found.prefect_port, found.mlflow_port, found.mlflow_db) == (4311, 5111, tmp_path / "db")
    report = stack.status(found)
    assert set(report.values()) == {"stopped"}
    assert not stack.status_ok(report)
    assert stack.status_ok({"prefect-server": "running (pid 1), healthy", "worker": "running (pid 2)"})
    assert not stack.status_ok({"prefect-server": "running (pid 1), NOT answering at http://x/health"})
