"""The local stack behind `make up` / `make down` / `make status`.

Starts a Prefect server (SQLite under .prefect/), an MLflow tracking server (backend
mlruns/mlflow.db, artifacts served from mlruns/), creates the work pool, deploys prefect.yaml
and starts a process worker. Every process is started in its own session and its PID is
recorded, so `down` stops exactly what `up` started (children such as MLflow's huey
consumers included) and nothing else.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from heart_pipeline.config import PROJECT_ROOT, load_config
from heart_pipeline.errors import PipelineError

BIN = Path(sys.executable).parent
SERVICES = ("prefect-server", "mlflow-server", "worker")  # started in this order, stopped in reverse


class StackError(PipelineError):
    """The local stack could not start or stop cleanly."""


@dataclass(frozen=True)
class StackLayout:
    """Where the stack keeps its state; tests point all of it at a temp dir."""

    state_dir: Path  # PID files, logs, stack.json, stack.env
    prefect_home: Path  # Prefect server SQLite database and result storage
    mlflow_db: Path
    mlflow_artifacts: Path
    prefect_port: int = 4200
    mlflow_port: int = 5000
    host: str = "127.0.0.1"

    @property
    def prefect_api_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}/api"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    def pid_file(self, service: str) -> Path:
        return self.state_dir / f"{service}.pid"

    def log_file(self, service: str) -> Path:
        return self.state_dir / f"{service}.log"


def default_layout(prefect_port: int | None = None, mlflow_port: int | None = None) -> StackLayout:
    dot_prefect = PROJECT_ROOT / ".prefect"
    return StackLayout(
        state_dir=dot_prefect / "stack",
        prefect_home=dot_prefect,
        mlflow_db=PROJECT_ROOT / "mlruns" / "mlflow.db",
        mlflow_artifacts=PROJECT_ROOT / "mlruns",
        prefect_port=prefect_port or int(os.environ.get("PREFECT_PORT", 4200)),
        mlflow_port=mlflow_port or int(os.environ.get("MLFLOW_PORT", 5000)),
    )


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _stat_fields(stat: Path) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, ...

    The command name is in parentheses and may itself contain spaces, so split after its ")".
    """
    try:
        return stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) is not running.
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    return fields is None or fields[0] != "Z"


def _recorded_pid(layout: StackLayout, service: str) -> int | None:
    try:
        return int(layout.pid_file(service).read_text().strip())
    except (OSError, ValueError):
        return None


def _is_ours(pid: int, layout: StackLayout) -> bool:
    """Guard against PID reuse: the process must carry the marker env var this stack set."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return _alive(pid)
    return f"HEART_PIPELINE_STACK={layout.state_dir}".encode() in environ


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _base_env(layout: StackLayout) -> dict[str, str]:
    env = {
        **os.environ,
        "PREFECT_HOME": str(layout.prefect_home),
        "PREFECT_API_URL": layout.prefect_api_url,
        "MLFLOW_TRACKING_URI": layout.mlflow_url,
        "HEART_PIPELINE_STACK": str(layout.state_dir),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GX_ANALYTICS_ENABLED": "false",
    }
    env.pop("PREFECT_PROFILE", None)
    return env


def _spawn(layout: StackLayout, service: str, command: list[str], env: dict[str, str]) -> int:
    log = layout.log_file(service).open("ab")
    process = subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    layout.pid_file(service).write_text(str(process.pid))
    return process.pid


def _wait_healthy(layout: StackLayout, service: str, pid: int, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _http_ok(url):
            return
        if not _alive(pid):
            raise StackError(
                f"{service} exited during start-up; log {layout.log_file(service)}:\n{_tail(layout.log_file(service))}"
            )
        time.sleep(0.5)
    raise StackError(f"{service} not healthy at {url} after {timeout:.0f}s; log {layout.log_file(service)}")


def _run(command: list[str], env: dict[str, str], what: str) -> str:
    result = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise StackError(f"{what} failed ({' '.join(command[:4])}...): {(result.stderr or result.stdout)[-800:]}")
    return result.stdout


def up(layout: StackLayout, timeout: float = 120) -> dict[str, object]:
    """Start everything and return what runs where. Refuses to start over a running stack."""
    running = [s for s in SERVICES if (pid := _recorded_pid(layout, s)) and _alive(pid) and _is_ours(pid, layout)]
    if running:
        raise StackError(f"the stack is already running ({', '.join(running)}); `make status` or `make down`")
    for name, port in (("Prefect", layout.prefect_port), ("MLflow", layout.mlflow_port)):
        if not port_is_free(layout.host, port):
            variable = "PREFECT_PORT" if name == "Prefect" else "MLFLOW_PORT"
            raise StackError(
                f"port {port} for the {name} server is already in use on {layout.host}; stop what "
                f"holds it or choose another port, e.g. `make up {variable}={port + 1}`"
            )
    layout.state_dir.mkdir(parents=True, exist_ok=True)
    layout.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
    pool = load_config().prefect.work_pool
    env = _base_env(layout)
    started = time.monotonic()
    try:
        prefect_pid = _spawn(
            layout,
            "prefect-server",
            [
                str(BIN / "prefect"),
                "server",
                "start",
                "--host",
                layout.host,
                "--port",
                str(layout.prefect_port),
                "--analytics-off",
            ],
            env,
        )
        mlflow_pid = _spawn(
            layout,
            "mlflow-server",
            [
                str(BIN / "mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{layout.mlflow_db}",
                "--artifacts-destination",
                str(layout.mlflow_artifacts),
                "--host",
                layout.host,
                "--port",
                str(layout.mlflow_port),
                "--workers",
                "1",
            ],
            env,
        )
        _wait_healthy(layout, "prefect-server", prefect_pid, f"{layout.prefect_api_url}/health", timeout)
        _wait_healthy(layout, "mlflow-server", mlflow_pid, f"{layout.mlflow_url}/health", timeout)
        _run(
            [str(BIN / "prefect"), "work-pool", "create", pool, "--type", "process", "--overwrite"],
            env,
            f"creating work pool {pool}",
        )
        # {{ $PWD }} in prefect.yaml's pull step is filled in from this variable at deploy time.
        _run(
            [str(BIN / "prefect"), "--no-prompt", "deploy", "--all"],
            {**env, "PWD": str(PROJECT_ROOT)},
            "deploying prefect.yaml",
        )
        _spawn(layout, "worker", [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process"], env)
    except BaseException:
        down(layout)
        raise
    info: dict[str, object] = {
        "prefect_ui": f"http://{layout.host}:{layout.prefect_port}",
        "prefect_api_url": layout.prefect_api_url,
        "mlflow_ui": layout.mlflow_url,
        "work_pool": pool,
        "ready_after_seconds": round(time.monotonic() - started, 1),
        "layout": {k: str(v) for k, v in asdict(layout).items()},
    }
    (layout.state_dir / "stack.json").write_text(json.dumps(info, indent=2))
    (layout.state_dir / "stack.env").write_text(
        f"# source this file to talk to the local stack\n"
        f"export PREFECT_API_URL={layout.prefect_api_url}\n"
        f"export MLFLOW_TRACKING_URI={layout.mlflow_url}\n"
        f"export PATH={BIN}:$PATH\n"
    )
    return info


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in a process group, read from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat_fields(stat)
        if fields is not None and int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def _reap(pid: int) -> None:
    """Collect the exit status if we are the parent (as in tests), so no zombie lingers."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _stop(pid: int, grace: float) -> None:
    """SIGTERM the process group (the service and its children), then SIGKILL what is left."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(pid)
        if not group_members(pid):
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    time.sleep(0.5)
    _reap(pid)


def down(layout: StackLayout, grace: float = 15) -> list[str]:
    stopped = []
    for service in reversed(SERVICES):
        pid = _recorded_pid(layout, service)
        if pid and _is_ours(pid, layout):
            _stop(pid, grace)
            stopped.append(f"{service} (pid {pid})")
        layout.pid_file(service).unlink(missing_ok=True)
    return stopped


def status(layout: StackLayout) -> dict[str, str]:
    health = {
        "prefect-server": f"{layout.prefect_api_url}/health",
        "mlflow-server": f"{layout.mlflow_url}/health",
    }
    report = {}
    for service in SERVICES:
        pid = _recorded_pid(layout, service)
        if not pid or not _alive(pid) or not _is_ours(pid, layout):
            report[service] = "stopped"
            continue
        state = f"running (pid {pid})"
        if service in health:
            state += ", healthy" if _http_ok(health[service]) else ", NOT answering"
        report[service] = state
    return report
