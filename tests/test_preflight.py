"""Checks that run before any server starts, and the reused background Prefect server."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import time
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest

from heart_pipeline.config import PROJECT_ROOT, load_config
from heart_pipeline.errors import DataError
from heart_pipeline.operations import local_server, preflight
from heart_pipeline.operations.preflight import StoreUnavailable
from tests.helpers import BIN, run_cli, write_test_config


def test_a_tracking_store_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    store.write_text("not a database, just text " * 100)
    with pytest.raises(StoreUnavailable, match=f"{store}: cannot be read as SQLite"):
        preflight.check_tracking_store(f"sqlite:///{store}")


def test_a_tracking_store_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="not a regular file"):
        preflight.check_tracking_store(f"sqlite:///{tmp_path}")


def test_a_tracking_store_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    with pytest.raises(StoreUnavailable, match="cannot create its folder"):
        preflight.check_tracking_store(f"sqlite:///{tmp_path / 'plain' / 'mlflow.db'}")


def test_a_good_or_absent_tracking_store_passes(tmp_path: Path) -> None:
    preflight.check_tracking_store(f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}")  # MLflow will create it
    current = tmp_path / "current.db"
    with sqlite3.connect(current) as connection:
        connection.execute("CREATE TABLE alembic_version (version_num TEXT)")
        connection.execute("INSERT INTO alembic_version VALUES (?)", (preflight.mlflow_schema_revision(),))
    preflight.check_tracking_store(f"sqlite:///{current}")


def test_a_missing_data_file_is_refused_without_reading(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        preflight.check_data_file(tmp_path / "absent.csv", max_memory_mb=10)
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(DataError, match="file is empty"):
        preflight.check_data_file(tmp_path / "empty.csv", max_memory_mb=10)


def _train_without_a_server(config: Path, root: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["HEART_PIPELINE_ROOT"] = str(root)  # a started server would record itself under this root
    started = time.monotonic()
    result = subprocess.run(
        [str(BIN / "heart-pipeline"), "train", "--config", str(config), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result, time.monotonic() - started


@pytest.mark.e2e
def test_cli_reports_bad_inputs_before_any_server_starts(tmp_path: Path) -> None:
    """No PREFECT_API_URL: the CLI would start a background server, but a missing file or a broken
    tracking store is reported first, in seconds, with one line and no server started."""
    codebook = PROJECT_ROOT / load_config().contract.codebook_path
    config = write_test_config(tmp_path, contract__codebook_path=str(codebook))
    result, seconds = _train_without_a_server(config, tmp_path, "--data", str(tmp_path / "absent.csv"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("absent.csv: file not found")
    (tmp_path / "mlflow.db").write_text("garbage " * 100)
    result, seconds = _train_without_a_server(config, tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot be read as SQLite" in result.stderr.strip().splitlines()[-1]
    assert seconds < 30
    assert not (tmp_path / ".prefect").exists(), "no server may have been started"


@pytest.mark.e2e
def test_background_server_is_started_once_reused_and_stopped(tmp_path: Path) -> None:
    layout = replace(local_server.default_layout(), state_dir=tmp_path, prefect_home=tmp_path)
    database = local_server.prepare_database(layout)  # what `make install` does for the project's server
    with closing(sqlite3.connect(database)) as db:
        assert db.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,), "migrated to one head"
    assert local_server.prepare_database(layout) == database, "idempotent"
    first = local_server.start(layout)
    try:
        assert first.started_now
        local_server.wait_ready(first)
        again = local_server.start(layout)
        assert not again.started_now and again.pid == first.pid and again.api_url == first.api_url
        assert local_server.running(layout) is not None
    finally:
        stopped = local_server.stop(layout)
    assert stopped and local_server.running(layout) is None


def closed_port() -> int:
    """A port nothing listens on: bound, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_server_is_named_at_once() -> None:
    uri = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=f"MLflow tracking server {uri} is not answering"):
        preflight.check_tracking_store(uri)
    assert time.monotonic() - started < 5


def test_foreign_and_outdated_schemas_are_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE patients (id INTEGER)")
    with pytest.raises(StoreUnavailable, match="without MLflow's schema"):
        preflight.check_tracking_store(f"sqlite:///{foreign}")
    outdated = tmp_path / "old.db"
    with sqlite3.connect(outdated) as connection:
        connection.execute("CREATE TABLE alembic_version (version_num TEXT)")
        connection.execute("INSERT INTO alembic_version VALUES ('451aebb31d03')")
    with pytest.raises(StoreUnavailable, match="schema version 451aebb31d03, this MLflow expects"):
        preflight.check_tracking_store(f"sqlite:///{outdated}")


@pytest.mark.e2e
def test_train_against_unreachable_store_fails_in_seconds(tmp_path: Path, bundled_csv: Path) -> None:
    """The CLI, with MLflow's own retry settings left at the project's defaults: under 30 s, store named."""
    uri = f"http://127.0.0.1:{closed_port()}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PREFECT_HOME": str(tmp_path / "prefect")}
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "PREFECT_API_URL"):
        env.pop(name, None)
    config = write_test_config(tmp_path)
    started = time.monotonic()
    result = run_cli("train", "--data", str(bundled_csv), "--config", str(config), env=env, timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert f"MLflow tracking server {uri} is not answering" in last
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists(), "no flow may start before the store is known to answer"
    assert elapsed < 30, f"took {elapsed:.1f}s"


@pytest.mark.e2e
def test_concurrent_first_runs_create_the_tracking_store_once(tmp_path: Path) -> None:
    """Four processes check a store that does not exist yet at the same moment: one creates it, all pass."""
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    code = f"from heart_pipeline.operations import preflight; preflight.check_before_run({uri!r})"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    calls = [
        subprocess.Popen([str(BIN / "python"), "-c", code], env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    errors = [call.communicate(timeout=300)[1] for call in calls]
    assert [call.returncode for call in calls] == [0, 0, 0, 0], [e.strip().splitlines()[-1:] for e in errors]
    preflight.check_tracking_store(uri)  # MLflow's current schema, complete
