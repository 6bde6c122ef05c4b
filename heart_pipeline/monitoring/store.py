"""Where monitoring keeps what it saw: the MLflow tracking store (monitoring.experiment), so batches
scored by a Prefect worker, the API and a notebook all reach the same monitor, local or remote.

- A scored batch is one run (tag ``heart.monitoring.kind = batch``) holding its summary
  (``batch_summary.json``: counts per code or bin, risk histogram, no patient rows) and its row count
  and mean risk as metrics. Scored rows are kept only when ``monitoring.keep_rows`` says so.
- A model version's trend is one run per version (``kind = trend``). Each monitoring run adds one
  step to its metrics (PSI per column, rows, ROC-AUC when labelled), so MLflow's charts draw the trend,
  and its HTML report as an artifact. Its ``covered_until`` tag is where the next monitoring run starts.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from heart_pipeline.config import Settings
from heart_pipeline.data_contract.files import write_csv_for_people
from heart_pipeline.tracking.registry import ensure_experiment, run_artifact_text, run_ui_url, tracking_store

KIND_TAG = "heart.monitoring.kind"  # batch | trend
MODEL_TAG = "heart.monitoring.registered_model"
VERSION_TAG = "heart.monitoring.model_version"
SOURCE_TAG = "heart.monitoring.source"  # batch-scoring | api | external-validation | notebook ...
COVERED_TAG = "heart.monitoring.covered_until_ms"  # trend runs: batches recorded up to this time were judged
STEPS_TAG = "heart.monitoring.steps"
BATCH_VERDICT_TAG = "heart.monitoring.batch_verdict"  # the batch judged alone (the monitor judges a window)
SUMMARY_ARTIFACT = "batch_summary.json"
SEARCH_PAGE = 500


@dataclass(frozen=True)
class RecordedBatch:
    run_id: str
    recorded_ms: int  # when its run ended: its summary had landed by then
    summary: dict[str, Any]


def monitoring_experiment(settings: Settings) -> str:
    return ensure_experiment(
        settings.tracking_uri, settings.monitoring.experiment, settings.resolve(settings.mlflow.artifact_root)
    )


def _client(settings: Settings) -> Any:
    import mlflow

    return mlflow.MlflowClient(settings.tracking_uri)


def record_batch(
    settings: Settings,
    summary: Mapping[str, Any],
    rows: pd.DataFrame | None = None,
    metrics: Mapping[str, float] | None = None,
    verdict: str = "",
) -> str:
    """One finished MLflow run per scored batch (its summary, its own metrics and verdict when judged
    alone); returns its run id. ``rows`` are stored only when ``monitoring.keep_rows`` is true."""
    from mlflow.entities import Metric

    with tracking_store(settings.tracking_uri):
        client = _client(settings)
        experiment_id = monitoring_experiment(settings)
        source, version = str(summary["source"]), str(summary["model_version"])
        run = client.create_run(
            experiment_id,
            run_name=f"batch {source} v{version}: {summary['rows']} rows",
            tags={
                KIND_TAG: "batch",
                MODEL_TAG: settings.mlflow.registered_model,
                VERSION_TAG: version,
                SOURCE_TAG: source,
                BATCH_VERDICT_TAG: verdict,
            },
        )
        run_id = run.info.run_id
        client.log_dict(run_id, dict(summary), SUMMARY_ARTIFACT)
        now = int(time.time() * 1000)
        rows_scored = int(summary["rows"])
        figures = {**(metrics or {}), "rows": rows_scored}
        if rows_scored:
            figures["mean_risk"] = float(summary["risk"]["sum"]) / rows_scored
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in figures.items()])
        if rows is not None and settings.monitoring.keep_rows:
            with tempfile.TemporaryDirectory(prefix="heart-batch-") as directory:
                path = Path(directory) / "scored_rows.csv"
                write_csv_for_people(rows, path)
                client.log_artifact(run_id, str(path), "rows")
        client.set_terminated(run_id)
    return str(run_id)


def _search(client: Any, experiment_id: str, filter_string: str, order: str) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string, max_results=SEARCH_PAGE, order_by=[order], page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def batches_between(settings: Settings, after_ms: int, until_ms: int) -> list[RecordedBatch]:
    """The batches recorded for the registered model whose recording ended in (after_ms, until_ms], oldest
    first. By end time, not start time: a batch still being written when a monitoring run looks has no end
    time yet, so the next monitoring run judges it instead of stepping past it."""
    with tracking_store(settings.tracking_uri):
        client = _client(settings)
        experiment_id = monitoring_experiment(settings)
        found = _search(
            client,
            experiment_id,
            f"tags.`{KIND_TAG}` = 'batch' and tags.`{MODEL_TAG}` = '{settings.mlflow.registered_model}' "
            f"and attributes.end_time > {after_ms} and attributes.end_time <= {until_ms}",
            "attributes.end_time ASC",
        )
        batches = []
        for run in found:
            text = run_artifact_text(client, run.info.run_id, SUMMARY_ARTIFACT)
            if text:  # a batch whose writer died before its summary landed holds nothing to judge
                batches.append(RecordedBatch(run.info.run_id, int(run.info.end_time), json.loads(text)))
        return batches


def _trend_runs(client: Any, experiment_id: str, name: str) -> list[Any]:
    return _search(
        client,
        experiment_id,
        f"tags.`{KIND_TAG}` = 'trend' and tags.`{MODEL_TAG}` = '{name}'",
        "attributes.start_time ASC",
    )


def covered_until(settings: Settings) -> int:
    """Where the previous monitoring run stopped (ms since the epoch; 0 before the first)."""
    with tracking_store(settings.tracking_uri):
        client = _client(settings)
        runs = _trend_runs(client, monitoring_experiment(settings), settings.mlflow.registered_model)
        return max((int(r.data.tags.get(COVERED_TAG, "0")) for r in runs), default=0)


def trend_run(client: Any, experiment_id: str, name: str, version: str) -> Any:
    """The version's trend run, made on its first monitoring run (the oldest if two raced)."""
    for run in _trend_runs(client, experiment_id, name):
        if run.data.tags.get(VERSION_TAG) == version:
            return run
    return client.create_run(
        experiment_id,
        run_name=f"monitoring {name} v{version}",
        tags={KIND_TAG: "trend", MODEL_TAG: name, VERSION_TAG: version, STEPS_TAG: "0"},
    )


def record_trend(
    settings: Settings,
    version: str,
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    report: Path,
    covered_until_ms: int,
) -> str:
    """One step on the version's trend run: its metrics, tags (the last verdict), the report; returns
    the run's MLflow UI link to the report."""
    from mlflow.entities import Metric, RunTag

    with tracking_store(settings.tracking_uri):
        client = _client(settings)
        experiment_id = monitoring_experiment(settings)
        run = trend_run(client, experiment_id, settings.mlflow.registered_model, version)
        run_id = run.info.run_id
        step = int(run.data.tags.get(STEPS_TAG, "0"))
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()],
            tags=[RunTag(k, v) for k, v in tags.items()]
            + [RunTag(STEPS_TAG, str(step + 1)), RunTag(COVERED_TAG, str(covered_until_ms))],
        )
        client.log_artifact(run_id, str(report), "reports")
        client.set_terminated(run_id)
        return run_ui_url(settings.mlflow_ui_url, experiment_id, run_id, f"reports/{report.name}")
