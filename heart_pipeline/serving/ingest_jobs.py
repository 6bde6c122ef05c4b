"""Files sent to the API's /ingest, and the data-quality jobs that check them.

Each upload gets a folder ``<runs_dir>/ingested/<job id>/`` holding the CSV, the job's config, its
state (``job.json``), the CLI's JSON result and the tail of its log, and the flow's own run folder.
The check runs as ``heart-pipeline validate`` in a child process: the request returns at once with
a status URL, the API never imports a flow (imports run one way), and a crash of the check cannot
take the API down. Deleting a job's folder removes everything it wrote on disk (its MLflow run stays).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from heart_pipeline.config import Settings
from heart_pipeline.errors import shorten

UPLOAD_NAME = "data.csv"
STATE_NAME = "job.json"
RESULT_NAME = "result.json"
LOG_NAME = "validate.log"
CONFIG_NAME = "config.yaml"
LOG_TAIL_BYTES = 4096


@dataclass(frozen=True)
class Retention:
    keep_last: int
    max_age_days: float


def _write_json(path: Path, content: dict[str, Any]) -> None:
    """Write then rename, so a reader never sees half a state file."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(content, indent=2), encoding="utf-8")
    partial.replace(path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def public_paths(value: Any, root: Path) -> Any:
    """``value`` with every absolute path made relative to ``root`` (or cut to its file name).

    API answers must not tell a client how the server's disk is laid out.
    """
    if isinstance(value, dict):
        return {k: public_paths(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [public_paths(v, root) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        path = Path(value)
        return str(path.relative_to(root)) if path.is_relative_to(root) else path.name
    return value


class IngestJobs:
    """Stores uploads and runs one ``heart-pipeline validate`` child process per upload."""

    def __init__(self, settings: Settings, retention: Retention, max_running: int) -> None:
        self.settings = settings
        self.runs_dir = settings.resolve(settings.outputs.runs_dir)
        self.inbox = self.runs_dir / "ingested"
        self.retention = retention
        self.max_running = max_running
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.reserved = 0  # places taken by uploads still streaming in, not yet started
        self.lock = threading.Lock()

    def job_dir(self, job_id: str) -> Path | None:
        # Ids are generated here; anything else (.., /, a symlink name) is simply not a job.
        if not job_id.replace("-", "").isalnum():
            return None
        path = self.inbox / job_id
        return path if (path / STATE_NAME).is_file() else None

    async def store(self, chunks: AsyncIterator[bytes]) -> tuple[str, int]:
        """Stream an upload to disk; a failure (body too large, client gone) leaves no folder behind."""
        job_id = f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:6]}"
        folder = self.inbox / job_id
        folder.mkdir(parents=True)
        size = 0
        try:
            with (folder / UPLOAD_NAME).open("wb") as out:
                async for chunk in chunks:
                    out.write(chunk)
                    size += len(chunk)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return job_id, size

    def discard(self, job_id: str) -> None:
        shutil.rmtree(self.inbox / job_id, ignore_errors=True)

    def prepare(self, job_id: str) -> tuple[Path, Path]:
        """The job's upload and its config, whose outputs stay inside the job's folder (written here)."""
        folder = self.inbox / job_id
        config = self.settings.model_dump(mode="json")
        config["outputs"]["runs_dir"] = str(folder)
        (folder / CONFIG_NAME).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        return folder / UPLOAD_NAME, folder / CONFIG_NAME

    def record_launch(self, job_id: str, launched: dict[str, Any]) -> dict[str, Any]:
        """The job's check runs as a Prefect deployment run: its state is that run's (GET /runs/{id})."""
        state = {
            "id": job_id,
            "state": "launched",
            "mode": "prefect-deployment",
            "submitted_at": datetime.now(UTC).isoformat(),
            "flow_run_id": launched["flow_run_id"],
            "ui_url": launched["ui_url"],
        }
        _write_json(self.inbox / job_id / STATE_NAME, state)
        return state

    def start(self, job_id: str) -> dict[str, Any]:
        """Start the check of an upload in a child process; its outputs stay inside the job's folder."""
        folder = self.inbox / job_id
        self.prepare(job_id)
        state = {"id": job_id, "state": "running", "mode": "embedded", "submitted_at": datetime.now(UTC).isoformat()}
        _write_json(folder / STATE_NAME, state)
        # The runner records the check's end itself, so a job's state survives a restart of the API.
        runner = [sys.executable, "-m", "heart_pipeline.serving.ingest_jobs", str(folder)]
        process = subprocess.Popen(runner, stdin=subprocess.DEVNULL, start_new_session=True)
        with self.lock:
            self.running[job_id] = process
            self.reserved = max(0, self.reserved - 1)  # the reservation becomes this running check
        return state

    def _reap(self) -> None:
        with self.lock:
            for job_id, process in list(self.running.items()):
                if process.poll() is not None:
                    del self.running[job_id]

    def reserve(self) -> bool:
        """Take one of the ``max_running`` places, checked and counted in one step, or return False.

        An upload streams in before its check starts; counting only started checks let four uploads
        pass a limit of two. ``start`` turns the reservation into a running check; ``release`` gives
        it back when the upload is refused."""
        self._reap()
        with self.lock:
            if len(self.running) + self.reserved >= self.max_running:
                return False
            self.reserved += 1
            return True

    def release(self) -> None:
        with self.lock:
            self.reserved = max(0, self.reserved - 1)

    def status(self, job_id: str) -> dict[str, Any] | None:
        """The job's state, and once it ended, the check's result (passed) or its one-line reason."""
        folder = self.job_dir(job_id)
        if folder is None:
            return None
        state = _read_json(folder / STATE_NAME) or {"id": job_id, "state": "unknown"}
        runner = (state.pop("pid", None), state.pop("pid_started", None))
        if state["state"] == "running" and not _alive(*runner) and job_id not in self.running:
            state["state"] = "interrupted"  # its runner died before recording an end
        if state["state"] == "passed":
            state["result"] = public_paths(_read_json(folder / RESULT_NAME), self.runs_dir)
        elif state["state"] == "failed":
            state["reason"] = last_error_line(folder / LOG_NAME).replace(f"{self.runs_dir}/", "")
        return state

    def latest_finished(self) -> dict[str, Any] | None:
        for folder in sorted(self.inbox.glob("*/"), reverse=True):
            status = self.status(folder.name)
            if status is not None and status["state"] in ("passed", "failed"):
                return status
        return None

    def enforce_retention(self, now: float | None = None) -> list[str]:
        """Delete job folders beyond the newest ``keep_last`` or older than ``max_age_days``; never a running one."""
        now = time.time() if now is None else now
        folders = sorted((p for p in self.inbox.glob("*/") if p.is_dir()), reverse=True)
        removed = []
        for index, folder in enumerate(folders):
            status = self.status(folder.name)
            if status is not None and status["state"] == "running":
                continue
            too_old = now - folder.stat().st_mtime > self.retention.max_age_days * 86400
            # A launched check may still be waiting for a worker: only the age rule deletes its upload.
            launched = status is not None and status["state"] == "launched"
            if (index >= self.retention.keep_last and not launched) or too_old:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder.name)
        return removed


def last_error_line(log: Path) -> str:
    """The CLI's last stderr line (its one-line reason), without the program prefix."""
    try:
        with log.open("rb") as handle:
            handle.seek(max(0, log.stat().st_size - LOG_TAIL_BYTES))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return "the check left no log"
    lines = [line for line in tail.splitlines() if line.strip()]
    last = lines[-1] if lines else "the check ended with no message"
    return shorten(last.removeprefix("heart-pipeline: error: "))


def _alive(pid: int | None, started: float | None) -> bool:
    """Whether the process that recorded (pid, start time) still runs (a reused pid has another start time)."""
    import psutil

    if pid is None or started is None:
        return False
    try:
        return bool(psutil.Process(pid).create_time() == started)
    except psutil.Error:
        return False


def run_check(folder: Path) -> int:
    """Run ``heart-pipeline validate --json`` on the job's upload and record how it ended in job.json."""
    import psutil

    state_path = folder / STATE_NAME
    state = _read_json(state_path) or {"id": folder.name}
    state.update(state="running", pid=os.getpid(), pid_started=psutil.Process().create_time())
    _write_json(state_path, state)
    command = [sys.executable, "-m", "heart_pipeline.cli", "validate", "--json"]
    command += ["--data", str(folder / UPLOAD_NAME), "--config", str(folder / CONFIG_NAME)]
    with (folder / RESULT_NAME).open("wb") as stdout, (folder / LOG_NAME).open("wb") as stderr:
        code = subprocess.run(command, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, check=False).returncode
    state.update(state="passed" if code == 0 else "failed", exit_code=code, finished_at=datetime.now(UTC).isoformat())
    _write_json(state_path, state)
    return code


if __name__ == "__main__":
    sys.exit(run_check(Path(sys.argv[1])))
