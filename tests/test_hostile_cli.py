"""Every hostile file through the real CLI and a real Prefect server: one line, exit 1, a Failed
flow run, and an earlier good run's registered models and output folder left exactly as they were."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from tests.helpers import BIN, cli_env, write_test_config
from tests.hostile import CASES, MEANING_CASES, HostileCase


def folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def registry_snapshot(tracking_uri: str) -> list[tuple[str, str, str]]:
    client = mlflow.MlflowClient(tracking_uri)
    return sorted((v.name, v.version, v.run_id) for v in client.search_model_versions())


def run_count(tracking_uri: str) -> int:
    client = mlflow.MlflowClient(tracking_uri)
    return sum(len(client.search_runs([e.experiment_id])) for e in client.search_experiments())


def newest_flow_run(flow_name: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=1,
        )
    return runs[0]


@pytest.fixture(scope="module")
def good_run(prefect_server: str, tmp_path_factory: pytest.TempPathFactory, clean_csv: Path, session_dir: Path) -> dict:
    directory = tmp_path_factory.mktemp("hostile")
    config = write_test_config(directory)
    env = cli_env(prefect_server, session_dir / "prefect-home")
    result = subprocess.run(
        [str(BIN / "heart-pipeline"), "train", "--data", str(clean_csv), "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    tracking_uri = f"sqlite:///{directory / 'mlflow.db'}"
    (run_dir,) = (directory / "runs" / "heart-training").iterdir()
    return {
        "config": config,
        "env": env,
        "tracking_uri": tracking_uri,
        "run_dir": run_dir,
        "digest": folder_digest(run_dir),
        "registry": registry_snapshot(tracking_uri),
        "runs": run_count(tracking_uri),
        "directory": directory,
    }


# Every case runs at function level in test_data_gate.py; through the whole CLI (a Prefect flow run, the
# exit code, the last stderr line, the untouched registry) a few representatives are enough: one refused
# before reading, one refused by a critical rule, one by the quarantine budget, and two files whose every
# cell is valid but whose meaning is wrong (an inverted label, a foreign coding).
CLI_CASES = [c for c in CASES if c.name in ("missing-file", "target-value-2", "every-row-invalid")] + [
    c for c in MEANING_CASES if c.name in ("inverted-target", "uci-codes-under-our-header")
]

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.name for c in CLI_CASES])
def test_hostile_file_fails_cleanly_and_touches_nothing(
    case: HostileCase, good_run: dict, tmp_path: Path, clean_frame: pd.DataFrame
) -> None:
    if case.name == "unreadable-permissions" and os.geteuid() == 0:
        pytest.skip("root reads files whatever their permissions")
    path = case.build(tmp_path, clean_frame)
    result = subprocess.run(
        [str(BIN / "heart-pipeline"), "train", "--data", str(path), "--config", str(good_run["config"])],
        env=good_run["env"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    last_line = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1, result.stderr[-3000:]
    assert last_line.startswith(f"heart-pipeline: error: {path}"), last_line
    assert case.expected in last_line, last_line

    flow_run = newest_flow_run("heart-training")
    assert flow_run.state.is_failed(), flow_run.state
    assert case.expected in (flow_run.state.message or ""), flow_run.state.message

    assert registry_snapshot(good_run["tracking_uri"]) == good_run["registry"], "no model may be registered"
    assert run_count(good_run["tracking_uri"]) == good_run["runs"]
    assert folder_digest(good_run["run_dir"]) == good_run["digest"], "the good run's outputs must not change"
    path.chmod(0o644) if path.is_file() else None


# `evaluate` on a hostile site file: the same one line and exit code, and no evaluation run, version tag or
# alias change. One refused while reading (a row with an extra field), one by the columns rule (another
# dataset), one by meaning (an inverted label: the label checks run on external files too).
EVALUATE_CASES = [c for c in CASES if c.name in ("row-with-extra-field", "different-dataset")] + [
    c for c in MEANING_CASES if c.name == "inverted-target"
]


def version_tags(tracking_uri: str) -> list[dict[str, str]]:
    client = mlflow.MlflowClient(tracking_uri)
    return [dict(v.tags) for v in sorted(client.search_model_versions(), key=lambda v: int(v.version))]


@pytest.mark.parametrize("case", EVALUATE_CASES, ids=[c.name for c in EVALUATE_CASES])
def test_hostile_site_file_fails_evaluation_and_records_nothing(
    case: HostileCase, good_run: dict, tmp_path: Path, clean_frame: pd.DataFrame
) -> None:
    path = case.build(tmp_path, clean_frame)
    tags_before = version_tags(good_run["tracking_uri"])
    result = subprocess.run(
        [str(BIN / "heart-pipeline"), "evaluate", "--data", str(path), "--config", str(good_run["config"])],
        env=good_run["env"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    last_line = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1, result.stderr[-3000:]
    assert last_line.startswith(f"heart-pipeline: error: {path}"), last_line
    assert case.expected in last_line, last_line
    assert newest_flow_run("heart-external-validation").state.is_failed()
    assert registry_snapshot(good_run["tracking_uri"]) == good_run["registry"]
    assert version_tags(good_run["tracking_uri"]) == tags_before, "no version may be tagged as validated"
    assert run_count(good_run["tracking_uri"]) == good_run["runs"], "no evaluation run may be recorded"
