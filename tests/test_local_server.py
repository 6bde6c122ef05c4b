"""The CLI's background Prefect server under concurrency, stop, corruption and its UI address.

Each test gives the server its own home (``prefect.local_server_home``) and a free port in a temp
config, so it never meets the project's server or another worktree's.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pandas as pd
import psutil
import pytest

from heart_pipeline.config import PROJECT_ROOT, load_config
from heart_pipeline.operations import local_server, server_watchdog, stack, zombies
from tests.helpers import BIN, write_test_config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def private_server(tmp_path: Path) -> tuple[Path, stack.StackLayout]:
    """A config whose background server lives in ``tmp_path/server`` on a free, non-default port."""
    config = write_test_config(
        tmp_path,
        prefect__local_server_home=str(tmp_path / "server"),
        prefect__local_server_port=free_port(),
        contract__codebook_path=str(PROJECT_ROOT / load_config().contract.codebook_path),
    )
    return config, local_server.default_layout(load_config(config))


def cli_without_server(root: Path | None = None) -> dict[str, str]:
    """The CLI's environment with no Prefect server configured; ``root`` as its project root if given."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    if root is not None:
        env["HEART_PIPELINE_ROOT"] = str(root)
    return env


def small_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.head(60).to_csv(path, index=False)
    return path


@pytest.mark.e2e
def test_four_concurrent_first_calls_share_one_server_whose_ui_calls_its_own_port(
    tmp_path: Path, clean_frame: pd.DataFrame
) -> None:
    config, layout = private_server(tmp_path)
    data = small_csv(clean_frame, tmp_path / "small.csv")
    command = [str(BIN / "heart-pipeline"), "validate", "--data", str(data), "--config", str(config)]
    try:
        calls = [
            subprocess.Popen(command, env=cli_without_server(), stderr=subprocess.PIPE, text=True) for _ in range(4)
        ]
        errors = [call.communicate(timeout=400)[1] for call in calls]
        assert [call.returncode for call in calls] == [0, 0, 0, 0], [e.strip().splitlines()[-1] for e in errors]
        record = local_server.read_record(layout.state_dir)
        assert record is not None and record.state == "ready" and record.port == layout.prefect_port
        assert [p.pid for p in local_server.project_processes(layout)] == [record.pid], "one server, the recorded one"
        with urllib.request.urlopen(f"http://127.0.0.1:{record.port}/ui-settings", timeout=10) as answer:
            ui = json.load(answer)
        assert ui["api_url"] == f"http://127.0.0.1:{record.port}/api"
        names = [a["name"] for a in server_watchdog._post_json(f"{ui['api_url']}/automations/filter", {})]
        assert names == [zombies.AUTOMATION_NAME], "one crashed-run automation, created once"
    finally:
        local_server.stop(layout)
    assert local_server.project_processes(layout) == []


MARKED_LISTENER = (
    "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); time.sleep(60)"
)


@pytest.mark.e2e
def test_stop_also_stops_an_unrecorded_server_of_this_project_and_nothing_else(tmp_path: Path) -> None:
    _, layout = private_server(tmp_path)
    layout.state_dir.mkdir(parents=True)
    ours = {**os.environ, stack.MARKER: str(layout.state_dir)}
    port = layout.prefect_port
    listener = subprocess.Popen([sys.executable, "-c", MARKED_LISTENER, str(port)], env=ours, start_new_session=True)
    other = {**os.environ, stack.MARKER: str(tmp_path / "another-project")}
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=other)
    try:
        deadline = time.monotonic() + 20
        while stack.port_is_free("127.0.0.1", port) and time.monotonic() < deadline:
            time.sleep(0.1)
        local_server._write_record(
            layout.state_dir, local_server.Record(listener.pid + 10**7, port, time.time(), "ready", time.time())
        )
        stopped = local_server.stop(layout)
        assert stopped == [f"unrecorded background prefect-server (pid {listener.pid})"]
        assert listener.wait(timeout=10) is not None
        assert bystander.poll() is None, "another project's process is left alone"
        assert local_server.read_record(layout.state_dir) is None
    finally:
        for process in (listener, bystander):
            process.kill()
            process.wait()


@pytest.mark.e2e
def test_stack_down_just_before_a_call_leaves_no_unrecorded_server(tmp_path: Path, clean_frame: pd.DataFrame) -> None:
    """`stack down` 0.3 s before `validate` (no server yet): whatever order the lock gives them, every
    process of the project's server afterwards is the recorded one."""
    config, layout = private_server(tmp_path)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(config.read_text())  # the project's config for both
    (tmp_path / "great_expectations").symlink_to(PROJECT_ROOT / "great_expectations")  # its shipped resources
    data = small_csv(clean_frame, tmp_path / "small.csv")
    env = cli_without_server(tmp_path)
    try:
        down = subprocess.Popen([str(BIN / "heart-pipeline"), "stack", "down"], env=env, stderr=subprocess.PIPE)
        time.sleep(0.3)
        call = subprocess.run(
            [str(BIN / "heart-pipeline"), "validate", "--data", str(data)], env=env, capture_output=True, timeout=300
        )
        down.communicate(timeout=120)
        record = local_server.read_record(layout.state_dir)
        processes = [p.pid for p in local_server.project_processes(layout)]
        assert processes == ([record.pid] if record else []), "no process of the server outside the record"
        assert call.returncode == 0, call.stderr.decode()[-500:]
    finally:
        local_server.stop(layout)
    assert local_server.project_processes(layout) == []


def corrupt_copy(path: Path) -> Path:
    """An SQLite database with a few pages of data, then garbage written over its second page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE flow_run (id INTEGER PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO flow_run (name) VALUES (?)", [("x" * 200,) for _ in range(200)])
    with path.open("r+b") as handle:
        handle.seek(4096)
        handle.write(b"\xde\xad\xbe\xef garbage " * 400)
    return path


def test_a_corrupt_database_is_one_line_naming_the_file_and_the_remedy(tmp_path: Path) -> None:
    _, layout = private_server(tmp_path)
    database = corrupt_copy(layout.prefect_home / local_server.DATABASE)
    with pytest.raises(local_server.LocalServerError) as raised:
        local_server.start(layout)
    message = str(raised.value)
    assert "\n" not in message and str(database) in message and "heart-pipeline stack reset-local" in message
    assert local_server.read_record(layout.state_dir) is None, "no server was started on it"
    log = layout.log_file(local_server.SERVICE)
    log.write_text("Traceback ...\nsqlite3.DatabaseError: database disk image is malformed\n")
    assert str(database) in (local_server.corruption_message(layout) or "")
    moved = local_server.reset(layout)
    assert not database.exists() and len(moved) == 1 and moved[0].startswith(f"moved {database} to ")


@pytest.mark.e2e
def test_cli_on_a_corrupt_background_database_says_one_line(tmp_path: Path, clean_frame: pd.DataFrame) -> None:
    config, layout = private_server(tmp_path)
    database = corrupt_copy(layout.prefect_home / local_server.DATABASE)
    data = small_csv(clean_frame, tmp_path / "small.csv")
    result = subprocess.run(
        [str(BIN / "heart-pipeline"), "validate", "--data", str(data), "--config", str(config)],
        env=cli_without_server(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert str(database) in last and "is corrupt" in last and "stack reset-local" in last
    reset = subprocess.run(
        [str(BIN / "heart-pipeline"), "stack", "reset-local", "--config", str(config)],
        env=cli_without_server(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert reset.returncode == 0 and reset.stdout.startswith(f"moved {database} to "), reset.stdout + reset.stderr
    assert not database.exists()


@pytest.mark.e2e
def test_a_database_that_broke_while_the_server_ran_is_named_on_the_next_call(tmp_path: Path) -> None:
    """A server that answers /health but whose log shows SQLite corruption is not adopted: the call gets the
    one line instead of minutes of HTTP 503 retries. The server here is a stand-in answering /api/health."""
    _, layout = private_server(tmp_path)
    (tmp_path / "www" / "api").mkdir(parents=True)
    (tmp_path / "www" / "api" / "health").write_text("true")
    port = layout.prefect_port
    stand_in = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path / "www")],
        env={**os.environ, stack.MARKER: str(layout.state_dir)},
        stderr=subprocess.DEVNULL,
    )
    try:
        layout.state_dir.mkdir(parents=True)
        local_server._write_record(layout.state_dir, local_server.Record(stand_in.pid, port, 0, "ready", 0))
        assert local_server._answers(layout.prefect_api_url, within=20)
        assert local_server.start(layout).pid == stand_in.pid, "a healthy server is adopted"
        layout.log_file("prefect-server").write_text("sqlite3.DatabaseError: database disk image is malformed\n")
        with pytest.raises(local_server.LocalServerError, match=r"prefect\.db is corrupt"):
            local_server.start(layout)
    finally:
        stand_in.kill()
        stand_in.wait()


def test_a_starting_server_is_waited_for_not_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A live process recorded as starting a moment ago is adopted without a health check."""
    _, layout = private_server(tmp_path)
    layout.state_dir.mkdir(parents=True)
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], env={**os.environ, stack.MARKER: str(layout.state_dir)}
    )
    try:
        record = local_server.Record(sleeper.pid, layout.prefect_port, time.time(), "starting", time.time())
        local_server._write_record(layout.state_dir, record)
        found = local_server.start(layout)
        assert (found.pid, found.started_now) == (sleeper.pid, False)
        assert psutil.pid_exists(sleeper.pid) and sleeper.poll() is None
        stale = replace(record, started_at=time.time() - local_server.START_TIMEOUT_SECONDS - 1)
        local_server._write_record(layout.state_dir, stale)
        monkeypatch.setattr(local_server, "PROBE_SECONDS", 1.0)
        assert local_server._adoptable(layout, stale) is None, "never answered within the start timeout: replaced"
        assert sleeper.wait(timeout=10) is not None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_watchdog_ends_the_server_when_home_or_environment_is_gone_or_idle(tmp_path: Path) -> None:
    home, python = tmp_path / "home", tmp_path / "python"
    home.mkdir()
    python.touch()
    watch = server_watchdog.Watch(home, home / "server.json", "http://127.0.0.1:1/api", 600, (python,))
    now = time.time()
    assert server_watchdog.reason_to_end(watch, now - 599, now) is None
    assert "idle for 10.0 min" in (server_watchdog.reason_to_end(watch, now - 600, now) or "")
    (home / "server.json").write_text(json.dumps({"last_used": now - 30}))
    assert server_watchdog.reason_to_end(watch, now - 3600, now) is None, "a CLI call 30 s ago counts as use"
    python.unlink()
    assert f"environment is gone ({python} missing)" in (server_watchdog.reason_to_end(watch, now, now) or "")
    (home / "server.json").unlink()
    home.rmdir()
    assert f"home {home} is gone" in (server_watchdog.reason_to_end(watch, now, now) or "")


@pytest.mark.e2e
def test_an_idle_background_server_ends_itself_and_its_ui_calls_its_own_port(tmp_path: Path) -> None:
    _, layout = private_server(tmp_path)
    server = local_server.start(layout, idle_minutes=0.1)  # 6 s, checked every 1.5 s
    try:
        local_server.wait_ready(server)
        with urllib.request.urlopen(f"http://127.0.0.1:{layout.prefect_port}/ui-settings", timeout=10) as answer:
            assert json.load(answer)["api_url"] == f"http://127.0.0.1:{layout.prefect_port}/api"
        ended = psutil.wait_procs([psutil.Process(server.pid)], timeout=60)[0]
        assert ended, "still running a minute after it became idle"
        assert "ending the background Prefect server: idle for" in layout.log_file("prefect-server").read_text()
        assert local_server.project_processes(layout) == [], "the server ended with its watchdog"
    finally:
        local_server.stop(layout)


@pytest.mark.e2e
@pytest.mark.parametrize("removed", ["environment", "home", "nothing, SIGTERM"])
def test_the_watchdog_ends_its_server_when_the_environment_or_home_is_deleted(tmp_path: Path, removed: str) -> None:
    """The watchdog with a stand-in server (a script, as the venv's prefect is): deleting that executable
    (a deleted venv) or the home (a deleted checkout) ends both within a check interval; SIGTERM ends both."""
    home, server = tmp_path / "home", tmp_path / "venv" / "prefect"
    home.mkdir()
    server.parent.mkdir()
    started = tmp_path / "started"
    server.write_text(f"#!{sys.executable}\nimport time\nopen({str(started)!r}, 'w').close()\ntime.sleep(120)\n")
    server.chmod(0o755)
    command = [sys.executable, "-m", "heart_pipeline.operations.server_watchdog", "--home", str(home)]
    command += [
        "--api-url",
        "http://127.0.0.1:1/api",
        "--idle-minutes",
        "60",
        "--check-seconds",
        "0.5",
        "--",
        str(server),
    ]
    watchdog = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not started.exists() and time.monotonic() < deadline:  # the stand-in has read its script
            time.sleep(0.1)
        (child,) = psutil.Process(watchdog.pid).children()
        if removed == "nothing, SIGTERM":
            watchdog.terminate()  # what `stop` does first: the server gets it too
            assert watchdog.wait(timeout=30) != 0
        else:
            shutil.rmtree(server.parent if removed == "environment" else home)
            assert watchdog.wait(timeout=30) == 0
            expected = f"{server} missing" if removed == "environment" else f"home {home} is gone"
            assert expected in (watchdog.stderr.read() if watchdog.stderr else "")
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    finally:
        watchdog.kill()
        watchdog.wait()
