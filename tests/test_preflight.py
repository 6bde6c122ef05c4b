"""Checks that run before any server starts, and the reused background Prefect server."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from heart_pipeline import local_server, preflight
from heart_pipeline.config import PROJECT_ROOT, load_config
from heart_pipeline.errors import ConfigError, DataError
from tests.helpers import BIN, write_test_config


def test_a_tracking_store_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    store.write_text("not a database, just text " * 100)
    with pytest.raises(ConfigError, match="tracking store cannot be opened"):
        preflight.check_tracking_store(f"sqlite:///{store}")


def test_a_tracking_store_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        preflight.check_tracking_store(f"sqlite:///{tmp_path}")


def test_a_tracking_store_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    with pytest.raises(ConfigError, match="is not a directory"):
        preflight.check_tracking_store(f"sqlite:///{tmp_path / 'plain' / 'mlflow.db'}")


def test_a_good_or_absent_tracking_store_passes(tmp_path: Path) -> None:
    preflight.check_tracking_store(f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}")
    sqlite3.connect(tmp_path / "mlflow.db").execute("create table t (x)").connection.close()
    preflight.check_tracking_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    preflight.check_tracking_store("http://127.0.0.1:5000")  # a server is MLflow's to check


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
    assert "tracking store cannot be opened" in result.stderr.strip().splitlines()[-1]
    assert seconds < 30
    assert not (tmp_path / ".prefect").exists(), "no server may have been started"


@pytest.mark.e2e
def test_background_server_is_started_once_reused_and_stopped(tmp_path: Path) -> None:
    layout = replace(local_server.default_layout(), state_dir=tmp_path, prefect_home=tmp_path)
    first = local_server.start(layout)
    try:
        assert first.started_now
        local_server.wait_ready(first, layout=layout)
        again = local_server.start(layout)
        assert not again.started_now and again.pid == first.pid and again.api_url == first.api_url
        assert local_server.running(layout) is not None
    finally:
        stopped = local_server.stop(layout)
    assert stopped and local_server.running(layout) is None
