"""Fail fast: a dead, unopenable, corrupt or outdated tracking store is named in seconds, before any work."""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from pathlib import Path

import pytest

from heart_pipeline.preflight import StoreUnavailable, check_tracking_store, mlflow_schema_revision
from tests.helpers import run_cli, write_test_config


def closed_port() -> int:
    """A port nothing listens on: bound, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_server_is_named_at_once() -> None:
    uri = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=f"MLflow tracking server {uri} is not answering"):
        check_tracking_store(uri)
    assert time.monotonic() - started < 5


def test_unopenable_sqlite_path_names_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreUnavailable, match=f"{blocker / 'mlflow.db'}: cannot create its folder"):
        check_tracking_store(f"sqlite:///{blocker / 'mlflow.db'}")
    with pytest.raises(StoreUnavailable, match=f"{tmp_path}: not a regular file"):
        check_tracking_store(f"sqlite:///{tmp_path}")


def test_corrupt_store_names_the_file(tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    store.write_bytes(b"this is not SQLite\n" * 100)
    with pytest.raises(StoreUnavailable, match=f"{store}: cannot be read as SQLite"):
        check_tracking_store(f"sqlite:///{store}")


def test_foreign_and_outdated_schemas_are_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE patients (id INTEGER)")
    with pytest.raises(StoreUnavailable, match="without MLflow's schema"):
        check_tracking_store(f"sqlite:///{foreign}")
    outdated = tmp_path / "old.db"
    with sqlite3.connect(outdated) as connection:
        connection.execute("CREATE TABLE alembic_version (version_num TEXT)")
        connection.execute("INSERT INTO alembic_version VALUES ('451aebb31d03')")
    with pytest.raises(StoreUnavailable, match="schema version 451aebb31d03, this MLflow expects"):
        check_tracking_store(f"sqlite:///{outdated}")


def test_fresh_and_current_stores_pass(tmp_path: Path) -> None:
    check_tracking_store(f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}")  # MLflow will create it
    current = tmp_path / "current.db"
    with sqlite3.connect(current) as connection:
        connection.execute("CREATE TABLE alembic_version (version_num TEXT)")
        connection.execute("INSERT INTO alembic_version VALUES (?)", (mlflow_schema_revision(),))
    check_tracking_store(f"sqlite:///{current}")


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
