"""heart-data-quality end to end: Prefect artifacts, MLflow run with Data Docs, CLI exit codes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from tests.helpers import BIN, cli_env, write_test_config
from tests.hostile import CASES

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def checked(prefect_server: str, tmp_path_factory: pytest.TempPathFactory, bundled_csv: Path) -> dict:
    from heart_pipeline.flows.data_quality import heart_data_quality

    directory = tmp_path_factory.mktemp("dq")
    config = write_test_config(directory)
    state = heart_data_quality(data_path=str(bundled_csv), config_path=str(config), return_state=True)
    assert state.is_completed(), state.message
    return {"state": state, "result": state.result(), "directory": directory, "config": config}


def test_reports_counts_and_quarantine(checked: dict) -> None:
    result = checked["result"]
    assert (result["rows_in"], result["rows_kept"], result["rows_quarantined"]) == (303, 297, 6)
    quarantine = pd.read_csv(result["quarantine_path"])
    assert set(quarantine["rule"]) == {
        "expect_column_values_to_not_be_null(ca)",
        "expect_column_values_to_not_be_null(thal)",
    }
    assert Path(result["report_path"]).exists()
    assert "Data-quality gate: quarantined" in Path(result["validation_report"]).read_text()


def test_prefect_artifacts_list_every_expectation(checked: dict) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    flow_run_id = checked["state"].state_details.flow_run_id
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    by_key = {a.key: a for a in artifacts}
    assert {
        "data-quality-expectations",
        "data-quality-report",
        "data-quality-mlflow-run",
    } <= set(by_key)
    assert all(a.description for a in artifacts), [a.key for a in artifacts if not a.description]
    table = json.loads(by_key["data-quality-expectations"].data)
    results = [row["result"] for row in table]
    assert results == sorted(results, key=lambda r: r != "FAIL"), "failures first"
    thal = next(row for row in table if row["rule"] == "expect_column_values_to_not_be_null(thal)")
    assert thal["result"] == "FAIL" and thal["checks"] == "no missing value" and thal["lines"]


def test_the_evidence_opens_from_mlflow_and_shows_the_failure(checked: dict, tmp_path: Path) -> None:
    client = mlflow.MlflowClient(f"sqlite:///{checked['directory'] / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("heart-disease-data-quality")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags["gate.decision"] == "quarantined"
    assert run.data.metrics["rows_quarantined"] == 6
    local = Path(client.download_artifacts(run.info.run_id, "data_quality", str(tmp_path)))
    quarantine = pd.read_csv(local / "quarantine.csv")
    assert sorted(quarantine["column"].tolist()) == ["ca"] * 4 + ["thal"] * 2
    assert "thal" in (local / "validation_report.json").read_text()
    page = (local / "report.html").read_text()
    assert "Data-quality gate: quarantined" in page and "not_be_null(thal)" in page


def test_validate_cli_exits_non_zero_on_a_critical_failure(
    checked: dict, prefect_server: str, tmp_path: Path, clean_frame: pd.DataFrame, session_dir: Path
) -> None:
    case = next(c for c in CASES if c.name == "target-value-2")
    path = case.build(tmp_path, clean_frame)
    env = cli_env(prefect_server, session_dir / "prefect-home")
    result = subprocess.run(
        [str(BIN / "heart-pipeline"), "validate", "--data", str(path), "--config", str(checked["config"])],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"heart-pipeline: error: {path}: data-quality gate failed")
    assert case.expected in last_line
    assert "(full report: " in last_line and last_line.rstrip(")").endswith("report.html")
    # The failed check is still recorded, with its evidence, for the data owner.
    client = mlflow.MlflowClient(f"sqlite:///{checked['directory'] / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("heart-disease-data-quality")
    runs = client.search_runs([experiment.experiment_id])
    decisions = {r.data.tags["gate.decision"] for r in runs}
    assert "failed" in decisions
    # a refused file is a red run in MLflow, not a green FINISHED one
    assert {r.info.status for r in runs if r.data.tags["gate.decision"] == "failed"} == {"FAILED"}
