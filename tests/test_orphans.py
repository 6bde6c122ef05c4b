"""Worker processes left by a killed CLI run are found by the run mark they inherited, and stopped."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest

from heart_pipeline.operations import orphans, stack

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.mark.e2e
def test_only_workers_of_an_ended_run_are_orphans_and_reaped(tmp_path) -> None:
    me = psutil.Process()
    dead_run = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_run.wait()  # a CLI run that has ended: its PID no longer runs with its start time
    left = subprocess.Popen(SLEEP, env={**os.environ, orphans.RUN_MARKER: f"{dead_run.pid}:{me.create_time()}"})
    live = subprocess.Popen(SLEEP, env={**os.environ, orphans.RUN_MARKER: f"{me.pid}:{me.create_time()}"})
    unmarked = subprocess.Popen(SLEEP, env={k: v for k, v in os.environ.items() if k != orphans.RUN_MARKER})
    try:
        assert {p.pid for p in orphans.orphans()} == {left.pid}
        assert orphans.reap(grace=5) == [f"pid {left.pid}: -c import time; time.sleep(60)"]
        assert left.wait(timeout=10) is not None
        assert live.poll() is None and unmarked.poll() is None
    finally:
        for process in (left, live, unmarked):
            process.kill()
            process.wait()


def test_servers_started_by_a_run_do_not_inherit_its_mark(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(orphans.RUN_MARKER, "1:0")
    layout = stack.StackLayout(tmp_path, tmp_path, tmp_path / "db", tmp_path)
    assert orphans.RUN_MARKER not in stack._base_env(layout)
