"""Monitoring's store on a real MLflow SQLite store: batches in order, summaries only unless asked, and
per-version trend runs whose steps MLflow can chart."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from heart_pipeline.monitoring.store import (
    KIND_TAG,
    batches_between,
    covered_until,
    monitoring_experiment,
    record_batch,
    record_trend,
)
from tests.helpers import make_settings

pytestmark = pytest.mark.e2e  # a real MLflow store


def summary(rows: int, version: str = "1") -> dict:
    return {"source": "test", "model_version": version, "rows": rows, "risk": {"sum": rows * 0.4}, "columns": {}}


def artifact_paths(client: mlflow.MlflowClient, run_id: str, folder: str | None = None) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, folder)}


def test_batches_come_back_in_order_with_summaries_only(tmp_path: Path) -> None:
    _, settings, _ = make_settings(tmp_path)
    first = record_batch(settings, summary(10))
    second = record_batch(settings, summary(20), rows=pd.DataFrame({"age": [63.0] * 20}))
    found = batches_between(settings, 0, int(time.time() * 1000) + 1)
    assert [b.run_id for b in found] == [first, second]
    assert [b.summary["rows"] for b in found] == [10, 20]
    client = mlflow.MlflowClient(settings.tracking_uri)
    assert artifact_paths(client, second) == {"batch_summary.json"}  # keep_rows is false: no patient rows
    run = client.get_run(second)
    assert run.data.tags[KIND_TAG] == "batch" and run.data.metrics["mean_risk"] == pytest.approx(0.4)
    assert run.info.status == "FINISHED"


def test_scored_rows_are_kept_only_when_the_config_asks(tmp_path: Path) -> None:
    _, settings, _ = make_settings(tmp_path, monitoring__keep_rows=True)
    run_id = record_batch(settings, summary(3), rows=pd.DataFrame({"age": [63.0, 50.0, 41.0]}))
    client = mlflow.MlflowClient(settings.tracking_uri)
    assert artifact_paths(client, run_id, "rows") == {"rows/scored_rows.csv"}


def test_each_monitoring_run_is_one_step_of_its_versions_trend(tmp_path: Path) -> None:
    _, settings, _ = make_settings(tmp_path)
    assert covered_until(settings) == 0
    report = tmp_path / "monitoring-v1.html"
    report.write_text("<html></html>")
    record_trend(settings, "1", {"psi.age": 0.1, "rows": 100}, {"heart.monitoring.last_verdict": "ok"}, report, 1000)
    url = record_trend(
        settings, "1", {"psi.age": 0.9, "rows": 80}, {"heart.monitoring.last_verdict": "drift"}, report, 2000
    )
    assert covered_until(settings) == 2000
    client = mlflow.MlflowClient(settings.tracking_uri)
    trend = client.search_runs([monitoring_experiment(settings)], f"tags.`{KIND_TAG}` = 'trend'")
    assert len(trend) == 1
    history = client.get_metric_history(trend[0].info.run_id, "psi.age")
    assert [(m.step, m.value) for m in history] == [(0, 0.1), (1, 0.9)]
    assert trend[0].data.tags["heart.monitoring.last_verdict"] == "drift"
    assert url.endswith("reports/monitoring-v1.html") or "reports" in url


def test_a_version_without_a_training_profile_is_judged_against_the_bundled_reference(tmp_path: Path) -> None:
    from heart_pipeline.config import load_reference_profile_for
    from heart_pipeline.monitoring.record import version_reference

    _, settings, _ = make_settings(tmp_path)
    client = mlflow.MlflowClient(settings.tracking_uri)
    run = client.create_run(monitoring_experiment(settings))  # a run logged before profiles were kept
    client.log_metric(run.info.run_id, "test_roc_auc", 0.9)
    client.set_terminated(run.info.run_id)
    name = settings.mlflow.registered_model
    client.create_registered_model(name)
    client.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    reference = version_reference(settings, "1")
    assert reference.profile == load_reference_profile_for(settings)
    assert reference.metrics["test_roc_auc"] == pytest.approx(0.9), "its own metrics, whatever the profile"
    assert reference.note.startswith("v1 was registered before training profiles were kept")
    assert "retrain to compare with its own rows" in reference.note


def test_a_batch_still_being_written_is_left_for_the_next_monitoring_run(tmp_path: Path) -> None:
    from heart_pipeline.monitoring.store import MODEL_TAG, SOURCE_TAG, SUMMARY_ARTIFACT, VERSION_TAG

    _, settings, _ = make_settings(tmp_path)
    client = mlflow.MlflowClient(settings.tracking_uri)
    tags = {KIND_TAG: "batch", MODEL_TAG: settings.mlflow.registered_model, VERSION_TAG: "1", SOURCE_TAG: "test"}
    writing = client.create_run(monitoring_experiment(settings), tags=tags)  # started, summary not yet in
    first_look = int(time.time() * 1000) + 1
    assert batches_between(settings, 0, first_look) == []
    client.log_dict(writing.info.run_id, summary(7), "batch_summary.json")
    client.set_terminated(writing.info.run_id)
    later = batches_between(settings, first_look, int(time.time() * 1000) + 1)  # the next run's window
    assert [b.run_id for b in later] == [writing.info.run_id]
    assert SUMMARY_ARTIFACT == "batch_summary.json"
