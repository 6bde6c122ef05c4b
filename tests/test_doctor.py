"""What a dead process leaves in MLflow (runs stuck in RUNNING, versions without a decision) is found
and closed, on a real SQLite MLflow store."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from heart_pipeline.operations import doctor
from heart_pipeline.operations.doctor import UNDECIDED, close_flow_run_records, diagnose, summary
from heart_pipeline.tracking.registry import DECISION_TAG, FLOW_RUN_TAG, ensure_experiment

pytestmark = pytest.mark.e2e  # a real SQLite MLflow store

MODEL = "heart-disease"


@pytest.fixture
def store_with_leftovers(tmp_path: Path) -> str:
    """One flow run's leftovers: an unfinished run and its version with no decision, next to a finished,
    decided pair from another flow run."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = ensure_experiment(uri, "heart-disease", tmp_path / "artifacts")
    assert client.get_experiment(experiment).tags["mlflow.experimentKind"] == "custom_model_development"
    client.create_registered_model(MODEL)
    for flow_run, finished in (("dead-flow-run", False), ("good-flow-run", True)):
        run = client.create_run(experiment, tags={FLOW_RUN_TAG: flow_run}, run_name=flow_run)
        version = client.create_model_version(MODEL, f"runs:/{run.info.run_id}/m", run_id=run.info.run_id)
        client.set_model_version_tag(MODEL, version.version, FLOW_RUN_TAG, flow_run)
        if finished:
            client.set_terminated(run.info.run_id)
            client.set_model_version_tag(MODEL, version.version, DECISION_TAG, "promoted")
    return uri


def test_doctor_lists_then_fixes(store_with_leftovers: str) -> None:
    found = diagnose(store_with_leftovers, MODEL, min_age_minutes=0)
    assert [r["flow_run_id"] for r in found["runs_stuck_in_running"]] == ["dead-flow-run"]
    assert [v["version"] for v in found["versions_without_decision"]] == ["1"]
    assert found["next"] and "--fix" in found["next"]
    assert diagnose(store_with_leftovers, MODEL)["runs_stuck_in_running"] == [], "young records are left alone"

    diagnose(store_with_leftovers, MODEL, fix=True, min_age_minutes=0)
    client = mlflow.MlflowClient(store_with_leftovers)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("heart-disease").experiment_id], f"tags.`{FLOW_RUN_TAG}` = 'dead-flow-run'"
    )
    assert run.info.status == "KILLED"
    assert client.get_model_version(MODEL, "1").tags[DECISION_TAG] == UNDECIDED
    again = diagnose(store_with_leftovers, MODEL, min_age_minutes=0)
    assert again["runs_stuck_in_running"] == again["versions_without_decision"] == []


def test_a_failed_flow_run_closes_only_its_own_records(store_with_leftovers: str) -> None:
    ended, registered = close_flow_run_records(store_with_leftovers, MODEL, "dead-flow-run", "FAILED")
    assert [r.flow_run_id for r in ended] == ["dead-flow-run"]
    assert [str(v.version) for v in registered] == ["1"], "the report can say what this run registered"
    client = mlflow.MlflowClient(store_with_leftovers)
    assert client.get_run(ended[0].run_id).info.status == "FAILED"
    assert close_flow_run_records(store_with_leftovers, MODEL, "dead-flow-run", "FAILED")[0] == []


def test_doctor_lists_a_fresh_failure_and_speaks_to_people(store_with_leftovers: str) -> None:
    """The 30-minute guard applies to RUNNING runs only: a run that failed just now is listed."""
    client = mlflow.MlflowClient(store_with_leftovers)
    experiment = client.get_experiment_by_name("heart-disease").experiment_id
    failed = client.create_run(experiment, tags={FLOW_RUN_TAG: "failed-flow-run"}, run_name="just-failed")
    client.set_terminated(failed.info.run_id, status="FAILED")
    found = diagnose(store_with_leftovers, MODEL)
    assert found["runs_stuck_in_running"] == [], "the RUNNING one is young: guarded"
    assert [r["name"] for r in found["recently_failed_runs"]] == ["just-failed"]
    text = summary(found)
    assert "runs stuck in RUNNING (started over 30 min ago): none" in text
    assert "latest failed or killed runs: 1" in text and "just-failed" in text and "failed-flow-run" in text
    fixed = summary(diagnose(store_with_leftovers, MODEL, fix=True, min_age_minutes=0))
    assert "runs ended as KILLED (started over 0 min ago): 1" in fixed and "nothing to fix" in fixed


def test_the_next_run_closes_mlflow_runs_of_flow_runs_that_ended(
    store_with_leftovers: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A RUNNING MLflow run whose flow run Prefect shows Crashed is ended; one whose flow run still runs,
    or that this server does not know, is left alone."""
    client = mlflow.MlflowClient(store_with_leftovers)
    experiment = client.get_experiment_by_name("heart-disease").experiment_id
    client.create_run(experiment, tags={FLOW_RUN_TAG: "still-running-flow-run"}, run_name="busy")
    client.create_run(experiment, tags={FLOW_RUN_TAG: "unknown-flow-run"}, run_name="elsewhere")
    states = {"dead-flow-run": "CRASHED", "still-running-flow-run": "RUNNING"}
    monkeypatch.setattr(doctor, "flow_run_state", lambda _api, flow_run_id: states.get(flow_run_id))
    closed = doctor.close_runs_of_ended_flow_runs(store_with_leftovers, "http://prefect.invalid/api")
    assert [run.flow_run_id for run in closed] == ["dead-flow-run"]
    assert client.get_run(closed[0].run_id).info.status == "KILLED"
    left = {r["flow_run_id"] for r in diagnose(store_with_leftovers, MODEL, min_age_minutes=0)["runs_stuck_in_running"]}
    assert left == {"still-running-flow-run", "unknown-flow-run"}
