"""Shared fixtures (helpers live in tests/helpers.py). Test data is generated at test time from the
bundled default data."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Before anything imports prefect: Prefect reads PREFECT_HOME once, at import, and keeps its result
# storage and task cache there. A private home per test session keeps results and cache hits from
# leaking into ~/.prefect or between sessions.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="heart-pipeline-tests-"))
os.environ["PREFECT_HOME"] = str(_SESSION_HOME / "prefect-home")
# Tests must never write to a tracking server or Prefect API the developer happens to have configured.
for _variable in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
    os.environ.pop(_variable, None)

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import heart_pipeline  # noqa: E402, F401  (telemetry defaults)
from heart_pipeline.config import load_config  # noqa: E402
from heart_pipeline.tasks.load import write_default_dataset  # noqa: E402


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("session")


@pytest.fixture(scope="session")
def bundled_csv(session_dir: Path) -> Path:
    """The default data exactly as `make run` writes it: UCI Cleveland converted to our codebook
    (303 rows; 4 missing ca and 2 missing thal, as in UCI's file)."""
    path = session_dir / "bundled" / "heart.csv"
    write_default_dataset(path, load_config())
    return path


@pytest.fixture(scope="session")
def clean_frame(bundled_csv: Path) -> pd.DataFrame:
    """The bundled rows that pass every rule: the base the hostile corpus is built from."""
    frame = pd.read_csv(bundled_csv).dropna().reset_index(drop=True)
    return frame.astype({column: "int64" for column in frame if (frame[column] % 1 == 0).all()})


@pytest.fixture(scope="session")
def clean_csv(session_dir: Path, clean_frame: pd.DataFrame) -> Path:
    path = session_dir / "clean" / "heart.csv"
    path.parent.mkdir(parents=True)
    clean_frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def prefect_server(session_dir: Path) -> Iterator[str]:
    """One real Prefect server (the test harness) for the whole session; yields its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    # Generous: on a loaded 2-core machine the harness server can take over a minute to answer.
    with prefect_test_harness(server_startup_timeout=180):
        yield str(PREFECT_API_URL.value())
