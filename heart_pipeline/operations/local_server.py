"""One Prefect server per project, started in the background once and reused by every CLI call.

Without ``PREFECT_API_URL`` Prefect starts a temporary server for each flow call and stops it at
exit: 10 to 20 s per call before the first task runs, plus a few seconds of shutdown. Instead the
CLI starts ``prefect server start`` once, in its own session with a project-local ``PREFECT_HOME``
(``.prefect/local-server/``), records its PID and port, and points later calls at it. The server
starts while the CLI imports the flows, so even the first call pays little of its start-up.

Prefect's own ``prefect server start --background`` is not used: it pipes the server's output
into the starting process, which exits (a full or broken pipe then stalls the server's logging),
and leaves the server in the caller's process group, so Ctrl-C on the first ``train`` would stop
the server every later call relies on. The stack's process handling (own session, recorded PID,
marker variable against PID reuse) does it right, so this reuses it.

Concurrency: starting, adopting and stopping happen under one lock (``flock`` on ``lock`` in the
server's home). ``server.json`` records the server's PID, port, start time and state: ``starting``
until some caller has seen it answer, then ``ready``. A caller that finds a live ``starting`` server
waits for it (up to ``START_TIMEOUT_SECONDS``) instead of replacing it; only a server that answered
once and no longer does, or one that never answered within that time, is replaced. ``stop`` takes the
same lock, so a start running concurrently is either stopped with everything else or starts after it,
recorded; it also stops any process of this project's server that the record does not name (the
project's marker variable in its environment, or a listener on the recorded port carrying it).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import psutil

from heart_pipeline.config import Settings, load_config
from heart_pipeline.operations import stack
from heart_pipeline.operations.zombies import ensure_zombie_automation

SERVICE = "prefect-server"
RECORD = "server.json"
DATABASE = "prefect.db"
START_TIMEOUT_SECONDS = 180.0  # a starting server is waited for this long before it counts as wedged
PROBE_SECONDS = 10.0  # a recorded, ready server gets this long to answer before it is replaced
CHECK_SECONDS_MAX = 30.0  # the watchdog looks at least this often (more often for short idle times)
LOG_TAIL_BYTES = 256 * 1024  # how much of the server's log is searched for signs of corruption
CORRUPTION_SIGNS = ("database disk image is malformed", "file is not a database", "malformed database schema")


class LocalServerError(stack.StackError):
    """The background server could not be started, adopted or stopped; the message says what to do."""


@dataclass(frozen=True)
class LocalServer:
    api_url: str
    pid: int
    started_now: bool  # False: an earlier call's server was reused (or is being started by another call)
    layout: stack.StackLayout


@dataclass(frozen=True)
class Record:
    """What ``server.json`` says about the server: written under the lock, read by every caller."""

    pid: int
    port: int
    started_at: float  # time.time() when it was spawned
    state: str  # "starting" until a caller saw it answer, then "ready"
    last_used: float  # time.time() of the last CLI call that started or adopted it (the watchdog's idle clock)


def default_layout(settings: Settings | None = None) -> stack.StackLayout:
    """From the config: ``prefect.local_server_home`` and ``_port``, ``stack.host``."""
    settings = settings or load_config()
    home = settings.resolve(settings.prefect.local_server_home)
    return stack.StackLayout(
        state_dir=home,
        prefect_home=home,
        mlflow_db=home / "unused.db",  # this layout runs no MLflow server
        mlflow_artifacts=home,
        prefect_port=settings.prefect.local_server_port,
        host=settings.stack.host,
    )


def read_record(state_dir: Path) -> Record | None:
    try:
        found = json.loads((state_dir / RECORD).read_text())
        started = float(found["started_at"])
        used = float(found.get("last_used", started))
        return Record(int(found["pid"]), int(found["port"]), started, str(found["state"]), used)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_record(state_dir: Path, record: Record) -> None:
    """Write then rename: a reader never sees half a record."""
    partial = state_dir / f".{RECORD}.partial"
    partial.write_text(json.dumps(vars(record)))
    partial.replace(state_dir / RECORD)


def _free_port(host: str, preferred: int) -> int:
    if stack.port_is_free(host, preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _server_env(layout: stack.StackLayout) -> dict[str, str]:
    """The stack's environment for the background server and its database commands, minus two of the
    stack's variables: the flow's own tracking store applies, and `prefect server start` would take
    its host and port from PREFECT_API_URL. The UI is told its own API address: without
    PREFECT_UI_API_URL it calls the default 127.0.0.1:4200, the stack's server or nothing."""
    env = stack._base_env(layout)
    env.pop("MLFLOW_TRACKING_URI")
    env.pop("PREFECT_API_URL")
    env["PREFECT_UI_API_URL"] = layout.prefect_api_url
    env["PREFECT_UI_URL"] = layout.prefect_api_url.removesuffix("/api")
    return env


@contextmanager
def _exclusive(state_dir: Path) -> Iterator[None]:
    """Start, adopt, stop and migrate one at a time per server home (released if the holder dies)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _answers(api_url: str, within: float) -> bool:
    deadline = time.monotonic() + within
    while True:
        if stack._http_ok(f"{api_url}/health"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def running(layout: stack.StackLayout | None = None) -> LocalServer | None:
    """The recorded server if it is ours (PID and marker variable), alive and answering."""
    layout = layout or default_layout()
    record = read_record(layout.state_dir)
    if record is None or stack._process(record.pid, layout) is None:
        return None
    layout = replace(layout, prefect_port=record.port)
    if not stack._http_ok(f"{layout.prefect_api_url}/health"):
        return None
    return LocalServer(layout.prefect_api_url, record.pid, started_now=False, layout=layout)


def _adoptable(layout: stack.StackLayout, record: Record | None) -> LocalServer | None:
    """The recorded server if a caller should use it (or wait for it); a wedged one is stopped."""
    process = stack._process(record.pid, layout) if record else None
    if record is None or process is None:
        return None
    layout = replace(layout, prefect_port=record.port)
    found = LocalServer(layout.prefect_api_url, record.pid, started_now=False, layout=layout)
    if record.state == "starting" and time.time() - record.started_at < START_TIMEOUT_SECONDS:
        _write_record(layout.state_dir, replace(record, last_used=time.time()))
        return found  # still starting: wait_ready waits for it, nobody replaces it
    if _answers(found.api_url, within=PROBE_SECONDS):
        if message := corruption_message(layout):  # its database broke while it ran: every call would fail
            raise LocalServerError(message)
        record = replace(record, last_used=time.time())
        _write_record(layout.state_dir, record)
        if record.state != "ready":
            _mark_ready(layout, record)
        return found
    stack.stop_tree(process, grace=5)  # ours, but wedged: replace it
    return None


def _launch_command(layout: stack.StackLayout, idle_minutes: float) -> list[str]:
    """``prefect server start`` under the watchdog that ends it when idle or orphaned (server_watchdog)."""
    check_seconds = min(CHECK_SECONDS_MAX, idle_minutes * 60 / 4)
    return [
        sys.executable,
        "-m",
        "heart_pipeline.operations.server_watchdog",
        *("--home", str(layout.state_dir), "--api-url", layout.prefect_api_url),
        *("--idle-minutes", f"{idle_minutes:g}", "--check-seconds", f"{check_seconds:g}"),
        "--",
        *stack._server_commands(layout)[SERVICE],
    ]


def start(layout: stack.StackLayout | None = None, idle_minutes: float | None = None) -> LocalServer:
    """Reuse the recorded server (running or starting) or start one; returns at once (see ``wait_ready``).
    A new server ends itself after ``idle_minutes`` (default: prefect.background_server_idle_minutes)."""
    layout = layout or default_layout()
    idle = idle_minutes or load_config().prefect.background_server_idle_minutes
    with _exclusive(layout.state_dir):
        found = _adoptable(layout, read_record(layout.state_dir))
        if found:
            return found
        for stray in project_processes(layout):  # a server the record does not name must not hold the port
            stack.stop_tree(stray, grace=5)
        check_database(layout.prefect_home / DATABASE)
        layout = replace(layout, prefect_port=_free_port(layout.host, layout.prefect_port))
        log = layout.log_file(SERVICE)
        if log.exists():  # this server's log alone, so that its failure is read from its own lines
            log.replace(log.with_name(f"{log.name}.previous"))
        pid = stack._spawn(layout, SERVICE, _launch_command(layout, idle), _server_env(layout))
        now = time.time()
        _write_record(layout.state_dir, Record(pid, layout.prefect_port, now, "starting", now))
        return LocalServer(layout.prefect_api_url, pid, started_now=True, layout=layout)


def wait_ready(server: LocalServer, timeout: float = START_TIMEOUT_SECONDS) -> None:
    """Wait until ``server`` answers (at once when it already does); then it is recorded as ready."""
    layout = server.layout
    try:
        stack._wait_healthy(layout, SERVICE, server.pid, f"{server.api_url}/health", timeout)
    except stack.StackError as exc:
        raise LocalServerError(corruption_message(layout) or str(exc)) from None
    with _exclusive(layout.state_dir):
        record = read_record(layout.state_dir)
        if record is not None and record.pid == server.pid and record.state != "ready":
            _mark_ready(layout, record)


def _mark_ready(layout: stack.StackLayout, record: Record) -> None:
    """The first caller to see the server answer (under the lock) gives it the stack's crashed-run
    automation, so a killed CLI run is marked Crashed as a stack run is, then records it as ready."""
    ensure_zombie_automation(replace(layout, prefect_port=record.port).prefect_api_url)
    _write_record(layout.state_dir, replace(record, state="ready"))


def _marked(process: psutil.Process, layout: stack.StackLayout) -> bool:
    with contextlib.suppress(psutil.Error):
        return process.environ().get(stack.MARKER) == str(layout.state_dir)
    return False


def project_processes(layout: stack.StackLayout, port: int | None = None) -> list[psutil.Process]:
    """The topmost processes of this project's background server: every process carrying its marker
    (whatever the record says), and the one listening on ``port`` when it carries the marker."""
    marked = {p.pid: p for p in psutil.process_iter() if p.pid != os.getpid() and _marked(p, layout)}
    if port is not None:
        with contextlib.suppress(psutil.Error):
            for connection in psutil.net_connections(kind="tcp"):
                if connection.laddr and connection.laddr.port == port and connection.status == psutil.CONN_LISTEN:
                    listener = psutil.Process(connection.pid) if connection.pid else None
                    if listener is not None and _marked(listener, layout):
                        marked.setdefault(listener.pid, listener)
    roots = []
    for process in marked.values():
        with contextlib.suppress(psutil.Error):
            parent = process.parent()
            if parent is None or parent.pid not in marked:
                roots.append(process)
    return roots


def stop(layout: stack.StackLayout | None = None) -> list[str]:
    """Stop the recorded server and any other process of this project's server, under the start lock:
    a start running concurrently is stopped too, or starts afterwards and is recorded."""
    layout = layout or default_layout()
    with _exclusive(layout.state_dir):
        record = read_record(layout.state_dir)
        port = record.port if record else layout.prefect_port
        recorded = stack._process(record.pid, layout) if record else None
        stopped = []
        if recorded is not None:
            stack.stop_tree(recorded, grace=15)
            stopped.append(f"background {SERVICE} (pid {recorded.pid})")
        for stray in project_processes(layout, port):
            stack.stop_tree(stray, grace=15)
            stopped.append(f"unrecorded background {SERVICE} (pid {stray.pid})")
        layout.pid_file(SERVICE).unlink(missing_ok=True)
        (layout.state_dir / RECORD).unlink(missing_ok=True)
    return stopped


def check_database(path: Path) -> None:
    """Raise ``LocalServerError`` (one line: the file and the remedy) if the server's database is corrupt.

    Prefect would start on it, fail its migration or its first queries, and show the cause only in
    its log. A missing file is fine: the server creates it."""
    if not path.exists():
        return
    try:
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5)) as connection:
            verdict = str(connection.execute("PRAGMA quick_check(1)").fetchone()[0])
    except sqlite3.Error as exc:
        verdict = str(exc)
    if verdict != "ok" and "locked" not in verdict:
        raise LocalServerError(corrupt_database_line(path, verdict))


def corrupt_database_line(path: Path, reason: str) -> str:
    return (
        f"the background Prefect server's database {path} is corrupt ({reason.splitlines()[0][:80]}); "
        "`heart-pipeline stack reset-local` (with the run's --config, if any) moves it aside; it holds only "
        "the CLI's Prefect run history"
    )


def corruption_message(layout: stack.StackLayout) -> str | None:
    """The one-line corruption message if the server's log (its own: each start sets the previous one
    aside) shows SQLite corruption in its last ``LOG_TAIL_BYTES``, else None."""
    try:
        with layout.log_file(SERVICE).open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
            tail = log.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    sign = next((s for s in CORRUPTION_SIGNS if s in tail), None)
    return corrupt_database_line(layout.prefect_home / DATABASE, sign) if sign else None


def reset(layout: stack.StackLayout | None = None) -> list[str]:
    """Stop the background server and move its database aside (``prefect.db.corrupt-<time>``)."""
    layout = layout or default_layout()
    done = [f"stopped {what}" for what in stop(layout)]
    database = layout.prefect_home / DATABASE
    with _exclusive(layout.state_dir):
        for path in (database, database.with_name(f"{DATABASE}-wal"), database.with_name(f"{DATABASE}-shm")):
            if path.exists():
                aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
                path.replace(aside)
                done.append(f"moved {path} to {aside}")
    return done


def use_for_this_process(settings: Settings | None = None) -> LocalServer | None:
    """Point this process (and its children, e.g. Dask workers) at a reused or fresh local server,
    unless the user already chose a server with PREFECT_API_URL. Call before Prefect is imported."""
    if os.environ.get("PREFECT_API_URL"):
        return None
    server = start(default_layout(settings), settings.prefect.background_server_idle_minutes if settings else None)
    os.environ["PREFECT_API_URL"] = server.api_url
    return server


def prepare_database(layout: stack.StackLayout | None = None) -> Path:
    """Create and migrate the background server's database ahead of the first flow call.

    A fresh Prefect database runs every migration when the server first starts: about 15 s on a
    2-core machine, which the first ``train`` would wait for. ``make install`` calls this once
    (``python -m heart_pipeline.operations.local_server``), so the first call waits only for the server's
    start-up, which overlaps with importing the flow. Idempotent: an up-to-date database is left as is.
    """
    layout = layout or default_layout()
    env = _server_env(layout)
    with _exclusive(layout.state_dir):  # not while a call is starting the server on the same database
        check_database(layout.prefect_home / DATABASE)
        done = subprocess.run(
            [str(stack.BIN / "prefect"), "server", "database", "upgrade", "-y"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"prefect server database upgrade failed: {(done.stderr or done.stdout).strip()[-500:]}")
    return layout.prefect_home / DATABASE


if __name__ == "__main__":
    print(f"heart-pipeline: local Prefect database ready at {prepare_database()}", file=sys.stderr)
