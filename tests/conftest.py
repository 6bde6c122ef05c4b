"""Shared fixtures. Test data comes from scikit-lego's bundled copy, generated at test time."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

import heart_pipeline  # noqa: F401  (telemetry defaults)
from heart_pipeline.config import DEFAULT_CONFIG_PATH, PROJECT_ROOT
from tasks.load import write_default_dataset

BIN = Path(sys.executable).parent

# Tests must never write to a tracking server the developer happens to have configured.
os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("session")


@pytest.fixture(scope="session")
def bundled_csv(session_dir: Path) -> Path:
    """The default data exactly as `make run` writes it (2 malformed thal rows included)."""
    path = session_dir / "bundled" / "heart.csv"
    write_default_dataset(path)
    return path


@pytest.fixture(scope="session")
def clean_frame(bundled_csv: Path) -> pd.DataFrame:
    """The bundled rows that pass every rule: the base the hostile corpus is built from."""
    return pd.read_csv(bundled_csv).dropna().astype({"thal": "int64"}).reset_index(drop=True)


@pytest.fixture(scope="session")
def clean_csv(session_dir: Path, clean_frame: pd.DataFrame) -> Path:
    path = session_dir / "clean" / "heart.csv"
    path.parent.mkdir(parents=True)
    clean_frame.to_csv(path, index=False)
    return path


def write_test_config(directory: Path, **overrides: object) -> Path:
    """A config whose outputs and MLflow store live in ``directory``; CV is trimmed for speed."""
    config = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    config["outputs"]["runs_dir"] = str(directory / "runs")
    config["mlflow"]["tracking_uri"] = f"sqlite:///{directory / 'mlflow.db'}"
    config["mlflow"]["artifact_root"] = str(directory / "mlartifacts")
    config["cross_validation"]["n_repeats"] = 1
    config["models"]["random_forest"]["n_estimators"] = 50
    config["contract"]["suite_path"] = str(PROJECT_ROOT / config["contract"]["suite_path"])
    for dotted, value in overrides.items():
        node = config
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    path = directory / "config.yaml"
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def prefect_server(session_dir: Path) -> Iterator[str]:
    """One real Prefect server (the test harness) for the whole session; yields its API URL."""
    os.environ["PREFECT_HOME"] = str(session_dir / "prefect-home")
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield str(PREFECT_API_URL.value())


def cli_env(api_url: str, home: Path, tracking_uri: str | None = None) -> dict[str, str]:
    env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env
