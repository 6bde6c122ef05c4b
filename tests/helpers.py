"""Helpers shared by the tests: test configs, CLI environments, the venv's bin folder."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from heart_pipeline.config import Settings, load_config, load_settings_and_contract, write_private_config
from heart_pipeline.data_contract.contract import Contract
from heart_pipeline.results import Evaluation, TrackedModel, ValidationReport
from heart_pipeline.tasks.evaluate import evaluate_model, held_out_probabilities
from heart_pipeline.tasks.load import Dataset, load_dataset, read_heart_csv
from heart_pipeline.tasks.preprocess import PreparedData, prepare_training_data
from heart_pipeline.tasks.register import register_logged_model
from heart_pipeline.tasks.track import log_model_run
from heart_pipeline.tasks.train import train_model
from heart_pipeline.tasks.validate import ValidationResult, validate_frame, write_validation_outputs

BIN = Path(sys.executable).parent
# The tests' row budget (data.max_rows): small, so the over-budget case writes a small file.
TEST_MAX_ROWS = 20_000


def write_test_config(directory: Path, **overrides: object) -> Path:
    """A config whose outputs and MLflow store live in ``directory``; CV is trimmed for speed.
    Overrides use ``__`` for dots: ``write_test_config(d, validation__on_warning="fail")``."""
    trimmed = {"cross_validation.n_repeats": 1, "models.random_forest.n_estimators": 50, "data.max_rows": TEST_MAX_ROWS}
    return write_private_config(directory, {**trimmed, **{k.replace("__", "."): v for k, v in overrides.items()}})


def make_settings(directory: Path, **overrides: object) -> tuple[Path, Settings, Contract]:
    config = write_test_config(directory, **overrides)
    settings, contract = load_settings_and_contract(config)
    return config, settings, contract


def run_gate(
    path: Path,
    contract: Contract,
    out_dir: Path | None = None,
    on_warning: str = "quarantine",
    max_invalid_fraction: float = 0.2,
) -> ValidationReport:
    """The gate on a file, as the flows run it; with ``out_dir`` the evidence is written there."""
    data = load_config().data.model_copy(update={"max_rows": TEST_MAX_ROWS})
    raw = read_heart_csv(path, data, contract.columns)
    result = validate_frame(raw, str(path), contract, on_warning, max_invalid_fraction)
    return write_validation_outputs(result, out_dir, keep_rows=True) if out_dir else result.report


def cli_env(api_url: str, home: Path, tracking_uri: str | None = None) -> dict[str, str]:
    env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


_validated: dict[tuple, tuple[Dataset, ValidationResult]] = {}


def validated_file(data: Path, settings: Settings) -> tuple[Dataset, ValidationResult]:
    """The load and gate steps on ``data``, run once per file and gate settings in a session
    (Great Expectations takes seconds; tests build many candidates from the same file)."""
    key = (str(data), data.stat().st_mtime_ns, settings.data.model_dump_json(), settings.validation.model_dump_json())
    if key not in _validated:
        _, contract = load_settings_and_contract()
        dataset = load_dataset(data, settings, contract.columns)
        _validated[key] = (
            dataset,
            validate_frame(dataset.raw, dataset.path, contract, **settings.validation.model_dump()),
        )
    return _validated[key]


def build_candidates(
    settings: Settings, data: Path, tag: str, relabel: Callable[[pd.DataFrame], pd.DataFrame] | None = None
) -> tuple[list[TrackedModel], list[Evaluation], PreparedData]:
    """The training flow's steps called as plain functions (no Prefect), with the test config's values.

    ``relabel`` rewrites the validated rows before the split (e.g. to train a backwards champion).
    """
    dataset, validated = validated_file(data, settings)
    seed = settings.split.seed
    kept = relabel(validated.kept) if relabel else validated.kept
    prepared = prepare_training_data(kept, settings.data.target, settings.split.test_size, seed)
    tracked, evaluations = [], []
    for name in settings.training.models:
        trained = train_model(name, prepared, settings, seed)
        proba = held_out_probabilities(trained, prepared)
        evaluation = evaluate_model(trained, prepared, proba, settings, seed)
        tags = {"prefect.flow_run_id": tag}
        logged = log_model_run(trained, evaluation, dataset.summary, validated.report, prepared, settings, tags)
        tracked.append(register_logged_model(logged, evaluation, prepared, settings, tags))
        evaluations.append(evaluation)
    return tracked, evaluations, prepared


def with_changes(settings: Settings, **sections: dict) -> Settings:
    """``settings`` with some fields of some sections replaced: ``with_changes(s, promotion={"margin": 1})``."""
    return settings.model_copy(update={k: getattr(settings, k).model_copy(update=v) for k, v in sections.items()})


class MarkerWritingModel:
    """Unpickling this object writes a file: the stand-in for any code an attacker wants run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def predict(self, rows: object) -> np.ndarray:
        return np.zeros(len(rows))  # type: ignore[arg-type]

    def __reduce__(self) -> tuple:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def run_cli(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``heart-pipeline ARGS`` as a user runs it, output captured."""
    return subprocess.run(
        [str(BIN / "heart-pipeline"), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def prefect_env(api_url: str, home: Path) -> dict[str, str]:
    """The environment of `prefect` CLI calls and workers against the session's server."""
    from heart_pipeline.config import PROJECT_ROOT

    env = {
        **os.environ,
        "PREFECT_API_URL": api_url,
        "PREFECT_HOME": str(home),
        "PREFECT_WORKER_QUERY_SECONDS": "2",  # the worker polls often, so the test is quick
        "PWD": str(PROJECT_ROOT),  # prefect.yaml's pull step: {{ $PWD }} at deploy time
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("MLFLOW_TRACKING_URI", None)  # runs log to the config's private store
    return env


def prefect_cli(env: dict[str, str], *args: str) -> None:
    from heart_pipeline.config import PROJECT_ROOT

    result = subprocess.run(
        [str(BIN / "prefect"), *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


@contextmanager
def process_worker(env: dict[str, str], pool: str, log_path: Path) -> Iterator[None]:
    """A real process worker polling ``pool`` for the block; stopped with its children after."""
    import psutil

    from heart_pipeline.config import PROJECT_ROOT

    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield
        finally:
            tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
            for member in tree:
                member.terminate()
            _, alive = psutil.wait_procs(tree, timeout=20)
            for member in alive:
                member.kill()
