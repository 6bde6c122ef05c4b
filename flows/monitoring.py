"""heart-monitoring: the champion's reference -> the batches scored since the last run -> a verdict
(ok | drift | performance drop) -> the offline report, a trend step in MLflow -> a Prefect event,
which prefect.yaml's trigger on heart-training turns into a retraining."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from heart_pipeline.config import load_config
from heart_pipeline.monitoring.report import verdict_markdown
from heart_pipeline.operations.preflight import check_tracking_store
from heart_pipeline.operations.runs import FAILURE_HOOKS, create_run_folder, monitoring_run_name
from heart_pipeline.operations.runtime import flow_run_id, flow_run_ui_url, tag_flow_run
from heart_pipeline.tasks.monitor import (
    champion_reference_task,
    emit_verdict_event_task,
    gather_batches_task,
    judge_window,
    report_verdict_task,
)


@flow(name="heart-monitoring", flow_run_name=monitoring_run_name, **FAILURE_HOOKS)
def heart_monitoring(config_path: str | None = None, since_ms: int | None = None) -> dict[str, Any]:
    """Judge the batches scored since the last monitoring run (or since ``since_ms``, ms since the epoch)
    against the champion's training rows: drift per column, and performance where batches had labels."""
    settings = load_config(config_path)
    check_tracking_store(settings.tracking_uri)  # fail in seconds, before any work
    run_dir = create_run_folder(settings.resolve(settings.outputs.runs_dir), "heart-monitoring", flow_run_id())
    reference = champion_reference_task(settings)
    tag_flow_run(f"model:v{reference.version}")
    window = gather_batches_task(settings, reference.version, since_ms)
    verdict, merged = judge_window(window, reference, settings)
    report, trend_url = report_verdict_task(verdict, reference, merged, window, settings, run_dir)
    links = {"monitoring_flow_run_id": flow_run_id() or "", "monitoring_flow_run_url": flow_run_ui_url() or ""}
    event_id = emit_verdict_event_task(
        verdict, settings, {**links, "report": str(report), "mlflow_trend_url": trend_url}
    )
    tag_flow_run(f"verdict:{verdict.verdict.replace(' ', '-')}")
    create_markdown_artifact(
        key="heart-monitoring-verdict",
        markdown=verdict_markdown(verdict, str(report)),
        description=f"{verdict.headline()} ({settings.mlflow.registered_model} v{reference.version})",
    )
    for line in [verdict.headline(), *verdict.details()]:  # details end with the notes
        get_run_logger().info("%s", line)
    return {
        "verdict": verdict.verdict,
        "headline": verdict.headline(),
        "details": verdict.details(),
        "notes": list(verdict.notes),
        "registered_model": settings.mlflow.registered_model,
        "model_version": reference.version,
        "rows": verdict.rows,
        "batches": verdict.batches,
        "report": str(report),
        "mlflow_trend_url": trend_url,
        "event_id": event_id,
        "payload": verdict.payload(),
        "run_dir": str(run_dir),
    }
