"""The local stack behind `make up` / `make down` / `make status`.

Starts a Prefect server (SQLite under .prefect/), an MLflow tracking server (backend
mlruns/mlflow.db, artifacts served from mlruns/), creates the work pool, deploys prefect.yaml
and starts a process worker. Every process is started in its own session and its PID is
recorded, so `down` stops exactly what `up` started (children such as MLflow's huey
consumers included) and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import psutil

from heart_pipeline.config import PROJECT_ROOT, load_config
from heart_pipeline.errors import PipelineError
from heart_pipeline.operations.orphans import RUN_MARKER
from heart_pipeline.operations.zombies import ensure_zombie_automation, heartbeat_env

BIN = Path(sys.executable).parent
SERVICES = ("prefect-server", "mlflow-server", "worker")  # started in this order, stopped in reverse
MARKER = "HEART_PIPELINE_STACK"  # set in every service's environment: tells our processes from PID reuse


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
    """The stack's places and ports from config/config.yaml (`stack:` and `mlflow:`); PREFECT_PORT and
    MLFLOW_PORT (make up PREFECT_PORT=...) override the ports."""
    settings = load_config()
    store = settings.mlflow.tracking_uri
    if not store.startswith("sqlite:///"):
        raise StackError(f"mlflow.tracking_uri is {store!r}: the local stack serves a sqlite:/// store only")
    return StackLayout(
        state_dir=settings.resolve(settings.stack.state_dir),
        prefect_home=settings.resolve(settings.stack.prefect_home),
        mlflow_db=settings.resolve(store.removeprefix("sqlite:///")),
        mlflow_artifacts=settings.resolve(settings.mlflow.artifact_root),
        prefect_port=prefect_port or int(os.environ.get("PREFECT_PORT") or settings.stack.prefect_port),
        mlflow_port=mlflow_port or int(os.environ.get("MLFLOW_PORT") or settings.stack.mlflow_port),
        host=settings.stack.host,
    )


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _process(pid: int | None, layout: StackLayout) -> psutil.Process | None:
    """The live process this stack started under ``pid``, or None.

    Guards against PID reuse: the process must carry the marker variable this stack set in its
    environment. psutil reads environments on Linux and macOS alike; where the OS refuses
    (another user's process), it is not ours.
    """
    if not pid:
        return None
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        if process.environ().get(MARKER) != str(layout.state_dir):
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    return process


def _recorded_pid(layout: StackLayout, service: str) -> int | None:
    try:
        return int(layout.pid_file(service).read_text().strip())
    except (OSError, ValueError):
        return None


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
        MARKER: str(layout.state_dir),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GX_ANALYTICS_ENABLED": "false",
    }
    env.pop("PREFECT_PROFILE", None)
    env.pop(RUN_MARKER, None)  # servers outlive the CLI call that starts them: not its orphans
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
        if _process(pid, layout) is None:
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


def _server_commands(layout: StackLayout) -> dict[str, list[str]]:
    return {
        "prefect-server": [
            str(BIN / "prefect"),
            "server",
            "start",
            "--host",
            layout.host,
            "--port",
            str(layout.prefect_port),
            "--analytics-off",
        ],
        # --artifacts-destination makes the server proxy artifacts (mlflow-artifacts:/ URIs), so a
        # client never needs the server's file system; `mlflow ui` on the same folders must then be
        # given the same flag to show them (see the README).
        "mlflow-server": [
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
    }


def _check_can_start(layout: StackLayout) -> None:
    running = [s for s in SERVICES if _process(_recorded_pid(layout, s), layout)]
    if running:
        raise StackError(f"the stack is already running ({', '.join(running)}); `make status` or `make down`")
    for name, port in (("Prefect", layout.prefect_port), ("MLflow", layout.mlflow_port)):
        if not port_is_free(layout.host, port):
            variable = "PREFECT_PORT" if name == "Prefect" else "MLFLOW_PORT"
            raise StackError(
                f"port {port} for the {name} server is already in use on {layout.host}; stop what "
                f"holds it or choose another port, e.g. `make up {variable}={port + 1}`"
            )


def _quiet(_: str) -> None:
    """The default progress reporter: tests and library callers get no output."""


def up(layout: StackLayout, timeout: float = 120, progress: Callable[[str], None] = _quiet) -> dict[str, object]:
    """Start everything and return what runs where. Refuses to start over a running stack.

    ``progress`` receives one line per stage (the servers alone take 15 to 60 s to answer).
    """
    _check_can_start(layout)
    layout.state_dir.mkdir(parents=True, exist_ok=True)
    layout.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
    pool = load_config().prefect.work_pool
    env = _base_env(layout)
    started = time.monotonic()

    def say(message: str) -> None:
        progress(f"[{time.monotonic() - started:5.1f}s] {message}")

    # Record the ports before anything can fail, so `status` and `down` find this stack.
    record = layout.state_dir / "stack.json"
    record.write_text(json.dumps({"layout": {k: str(v) for k, v in asdict(layout).items()}}, indent=2))
    try:
        _start_services(layout, env, pool, timeout, say)
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
    record.write_text(json.dumps(info, indent=2))
    (layout.state_dir / "stack.env").write_text(
        f"# source this file to talk to the local stack\n"
        f"export PREFECT_API_URL={layout.prefect_api_url}\n"
        f"export MLFLOW_TRACKING_URI={layout.mlflow_url}\n"
        f"export PATH={BIN}:$PATH\n"
    )
    return info


def _start_services(
    layout: StackLayout, env: dict[str, str], pool: str, timeout: float, say: Callable[[str], None]
) -> None:
    """The servers, the work pool, the deployments, the crashed-run automation, then the worker."""
    pids = {}
    for service, command in _server_commands(layout).items():
        pids[service] = _spawn(layout, service, command, env)
        say(f"started {service} (pid {pids[service]}, log {layout.log_file(service)})")
    _wait_healthy(layout, "prefect-server", pids["prefect-server"], f"{layout.prefect_api_url}/health", timeout)
    say(f"Prefect server answers on {layout.prefect_api_url}")
    _wait_healthy(layout, "mlflow-server", pids["mlflow-server"], f"{layout.mlflow_url}/health", timeout)
    say(f"MLflow server answers on {layout.mlflow_url}")
    _run(
        [str(BIN / "prefect"), "work-pool", "create", pool, "--type", "process", "--overwrite"],
        env,
        f"creating work pool {pool}",
    )
    say(f"work pool {pool} ready; deploying prefect.yaml")
    # {{ $PWD }} in prefect.yaml's pull step is filled in from this variable at deploy time.
    _run(
        [str(BIN / "prefect"), "--no-prompt", "deploy", "--all"],
        {**env, "PWD": str(PROJECT_ROOT)},
        "deploying prefect.yaml",
    )
    # A flow-run process that dies (SIGKILL, OOM) stops its heartbeats; this automation marks it Crashed.
    ensure_zombie_automation(layout.prefect_api_url)
    say("deployments and the zombie-run automation created; starting the worker")
    _spawn(
        layout,
        "worker",
        [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process"],
        {**env, **heartbeat_env()},
    )


def recorded_layout(layout: StackLayout) -> StackLayout:
    """The layout `up` recorded in ``stack.json`` (its ports, its folders), else ``layout`` itself."""
    try:
        recorded = json.loads((layout.state_dir / "stack.json").read_text())["layout"]
        kinds: dict[str, type] = {"prefect_port": int, "mlflow_port": int, "host": str}
        return StackLayout(**{f.name: kinds.get(f.name, Path)(recorded[f.name]) for f in fields(StackLayout)})
    except (OSError, ValueError, KeyError):
        return layout


def stop_tree(root: psutil.Process, grace: float) -> list[psutil.Process]:
    """SIGTERM a service and all its descendants (MLflow's huey consumers, the worker's flow runs),
    wait up to ``grace`` seconds, SIGKILL what is left; returns the processes that had to be killed."""
    try:
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    for process in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(tree, timeout=grace)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=5)
    return alive


def down(layout: StackLayout, grace: float = 15) -> list[str]:
    """Stop exactly what `up` started (verified by PID and environment marker), children included."""
    stopped = []
    for service in reversed(SERVICES):
        pid = _recorded_pid(layout, service)
        process = _process(pid, layout)
        if process is not None:
            killed = stop_tree(process, grace)
            stopped.append(f"{service} (pid {pid})" + (f", {len(killed)} killed after {grace:g}s" if killed else ""))
        layout.pid_file(service).unlink(missing_ok=True)
    return stopped


def status(layout: StackLayout) -> dict[str, str]:
    """Each service: 'running (pid N), healthy', '... NOT answering at URL', or 'stopped'."""
    health = {
        "prefect-server": f"{layout.prefect_api_url}/health",
        "mlflow-server": f"{layout.mlflow_url}/health",
    }
    report = {}
    for service in SERVICES:
        pid = _recorded_pid(layout, service)
        if _process(pid, layout) is None:
            report[service] = "stopped"
            continue
        state = f"running (pid {pid})"
        if service in health:
            state += ", healthy" if _http_ok(health[service]) else f", NOT answering at {health[service]}"
        report[service] = state
    return report


def status_ok(report: dict[str, str]) -> bool:
    """Everything runs and every server answers."""
    return all(state.startswith("running") and "NOT answering" not in state for state in report.values())
