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
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from heart_pipeline.config import load_config
from heart_pipeline.operations import stack

SERVICE = "prefect-server"


@dataclass(frozen=True)
class LocalServer:
    api_url: str
    pid: int
    started_now: bool  # False: an earlier call's server was reused


def default_layout() -> stack.StackLayout:
    """From config/config.yaml: ``prefect.local_server_home`` and ``_port``, ``stack.host``."""
    settings = load_config()
    home = settings.resolve(settings.prefect.local_server_home)
    return stack.StackLayout(
        state_dir=home,
        prefect_home=home,
        mlflow_db=home / "unused.db",  # this layout runs no MLflow server
        mlflow_artifacts=home,
        prefect_port=settings.prefect.local_server_port,
        host=settings.stack.host,
    )


def _recorded_port(state_dir: Path) -> int | None:
    try:
        return int(json.loads((state_dir / "server.json").read_text())["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _free_port(host: str, preferred: int) -> int:
    if stack.port_is_free(host, preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _server_env(layout: stack.StackLayout) -> dict[str, str]:
    """The stack's environment for the background server and its database commands, minus two of the
    stack's variables: the flow's own tracking store applies, and `prefect server start` would take
    its host and port from PREFECT_API_URL."""
    env = stack._base_env(layout)
    env.pop("MLFLOW_TRACKING_URI")
    env.pop("PREFECT_API_URL")
    return env


@contextmanager
def _exclusive(state_dir: Path) -> Iterator[None]:
    """Two CLI calls starting at once must not both start a server: the second waits and reuses."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def running(layout: stack.StackLayout | None = None) -> LocalServer | None:
    """The recorded server if it is ours (PID and marker variable), alive and answering."""
    layout = layout or default_layout()
    port = _recorded_port(layout.state_dir)
    pid = stack._recorded_pid(layout, SERVICE)
    if port is None or stack._process(pid, layout) is None:
        return None
    layout = replace(layout, prefect_port=port)
    if not stack._http_ok(f"{layout.prefect_api_url}/health"):
        return None
    return LocalServer(layout.prefect_api_url, int(pid or 0), started_now=False)


def start(layout: stack.StackLayout | None = None) -> LocalServer:
    """Reuse the recorded server or start one; returns at once (see ``wait_ready``)."""
    layout = layout or default_layout()
    with _exclusive(layout.state_dir):
        found = running(layout)
        if found:
            return found
        stale = stack._process(stack._recorded_pid(layout, SERVICE), layout)
        if stale is not None:
            stack.stop_tree(stale, grace=5)  # ours but not answering: replace it
        layout = replace(layout, prefect_port=_free_port(layout.host, layout.prefect_port))
        pid = stack._spawn(layout, SERVICE, stack._server_commands(layout)[SERVICE], _server_env(layout))
        (layout.state_dir / "server.json").write_text(json.dumps({"port": layout.prefect_port, "pid": pid}))
        return LocalServer(layout.prefect_api_url, pid, started_now=True)


def wait_ready(server: LocalServer, timeout: float = 120, layout: stack.StackLayout | None = None) -> None:
    if server.started_now:
        stack._wait_healthy(layout or default_layout(), SERVICE, server.pid, f"{server.api_url}/health", timeout)


def stop(layout: stack.StackLayout | None = None) -> list[str]:
    layout = layout or default_layout()
    pid = stack._recorded_pid(layout, SERVICE)
    process = stack._process(pid, layout)
    stopped = []
    if process is not None:
        stack.stop_tree(process, grace=15)
        stopped.append(f"background {SERVICE} (pid {pid})")
    layout.pid_file(SERVICE).unlink(missing_ok=True)
    (layout.state_dir / "server.json").unlink(missing_ok=True)
    return stopped


def use_for_this_process() -> LocalServer | None:
    """Point this process (and its children, e.g. Dask workers) at a reused or fresh local server,
    unless the user already chose a server with PREFECT_API_URL. Call before Prefect is imported."""
    if os.environ.get("PREFECT_API_URL"):
        return None
    server = start()
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
        done = subprocess.run(
            [str(stack.BIN / "prefect"), "server", "database", "upgrade", "-y"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"prefect server database upgrade failed: {(done.stderr or done.stdout).strip()[-500:]}")
    return layout.prefect_home / "prefect.db"


if __name__ == "__main__":
    print(f"heart-pipeline: local Prefect database ready at {prepare_database()}", file=sys.stderr)
