"""Monitor steps: judge the batches recorded since the last monitoring run (monitoring/record.py records
them as they are scored) against the champion's training profile.

Judging is pure (monitoring/drift.py); these wrappers read MLflow, write the report, add the trend step
and emit the event.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prefect import task

from heart_pipeline.config import Settings, load_codebook_for
from heart_pipeline.monitoring.drift import Verdict, judge, merge_summaries
from heart_pipeline.monitoring.events import emit_verdict_event
from heart_pipeline.monitoring.record import ChampionReference, verdict_metrics, version_reference
from heart_pipeline.monitoring.report import render_monitoring_html
from heart_pipeline.monitoring.store import RecordedBatch, batches_between, covered_until, record_trend
from heart_pipeline.tracking.registry import champion_version


@dataclass(frozen=True)
class MonitoringWindow:
    after_ms: int
    until_ms: int
    judged: list[RecordedBatch]
    other_versions: dict[str, int]  # batches scored by another version than the champion: not judged


@task(name="gather-batches", retries=2, retry_delay_seconds=5)
def gather_batches_task(settings: Settings, version: str, since_ms: int | None = None) -> MonitoringWindow:
    """The batches recorded since the last monitoring run (or ``since_ms``), split by scoring version."""
    after = covered_until(settings) if since_ms is None else since_ms
    until = int(time.time() * 1000)
    batches = batches_between(settings, after, until)
    judged = [b for b in batches if str(b.summary.get("model_version")) == version]
    others: dict[str, int] = {}
    for batch in batches:
        other = str(batch.summary.get("model_version"))
        if other != version:
            others[other] = others.get(other, 0) + 1
    return MonitoringWindow(after, until, judged, others)


@task(name="champion-reference", retries=2, retry_delay_seconds=5)
def champion_reference_task(settings: Settings) -> ChampionReference:
    return version_reference(settings, champion_version(settings.tracking_uri, settings.mlflow.registered_model))


def judge_window(window: MonitoringWindow, reference: ChampionReference, settings: Settings) -> tuple[Verdict, dict]:
    """The verdict on the window's batches (merged), with a note for batches of other versions."""
    merged = merge_summaries([b.summary for b in window.judged])
    verdict = judge(
        merged,
        reference.profile,
        reference.metrics,
        settings.monitoring,
        reference.version,
        load_codebook_for(settings).code_meanings(),
    )
    if reference.note:
        verdict.notes.append(reference.note)
    if window.other_versions:
        listed = ", ".join(f"{n} by v{v}" for v, n in sorted(window.other_versions.items()))
        verdict.notes.append(f"batches scored by another version than the champion were not judged: {listed}")
    return verdict, merged


@task(name="report-verdict", retries=1, retry_delay_seconds=5)
def report_verdict_task(
    verdict: Verdict,
    reference: ChampionReference,
    merged: dict,
    window: MonitoringWindow,
    settings: Settings,
    run_dir: Path,
) -> tuple[Path, str]:
    """The HTML report in the run folder, written whole or not at all, and the trend step in MLflow."""
    html = render_monitoring_html(
        verdict,
        reference.profile,
        merged,
        datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        load_codebook_for(settings).code_meanings(),
    )
    path = (
        run_dir / f"monitoring-v{verdict.model_version}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.html"
    )  # one per run in MLflow
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(html, encoding="utf-8")
    partial.replace(path)
    url = record_trend(
        settings,
        reference.version,
        verdict_metrics(verdict),
        {"heart.monitoring.last_verdict": verdict.verdict},
        path,
        window.until_ms,
    )
    return path, url


@task(name="emit-event", retries=1, retry_delay_seconds=2)
def emit_verdict_event_task(verdict: Verdict, settings: Settings, links: dict[str, str]) -> str | None:
    payload = {**verdict.payload(), **links}
    return emit_verdict_event(verdict.verdict, settings.mlflow.registered_model, verdict.model_version, payload)
