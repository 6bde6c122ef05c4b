"""Recording scored batches: each batch summarised against the training profile of the version that
scored it, and kept in the monitoring store. Batch scoring, external validation and the API's /predict
window all record through here.

Recording is a side effect after the predictions are made: a batch that cannot be recorded (the store
is down, a version registered before profiles were kept) is said, never a failed scoring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from heart_pipeline.config import Settings, load_reference_profile_for
from heart_pipeline.monitoring.drift import Verdict, judge, summarize_batch
from heart_pipeline.monitoring.store import record_batch
from heart_pipeline.tracking.model_cards import full_metrics
from heart_pipeline.tracking.registry import tracking_store, training_profile


@dataclass(frozen=True)
class ChampionReference:
    """What a batch is judged against: the version, its training profile and its own test metrics."""

    version: str
    profile: dict[str, Any]  # the version's own training profile, or the bundled reference (see note)
    metrics: dict[str, float]
    note: str = ""  # set when the profile is not the version's own


def bundled_reference(settings: Settings, version: str) -> tuple[dict[str, Any], str]:
    """The bundled data's reference profile, for a version registered before training profiles were kept:
    the same shares per column (no predicted risk), of the file such a version was most likely trained on."""
    profile = load_reference_profile_for(settings)
    return profile, (
        f"v{version} was registered before training profiles were kept: compared with the bundled data's reference "
        f"profile ({profile.get('source', 'reference_profile.json')}) instead; retrain to compare with its own rows"
    )


def version_reference(settings: Settings, version: str) -> ChampionReference:
    """A registered version's training profile (the bundled reference before profiles were kept) and its
    every metric."""
    import mlflow

    with tracking_store(settings.tracking_uri):
        client = mlflow.MlflowClient(settings.tracking_uri)
        run_id = client.get_model_version(settings.mlflow.registered_model, version).run_id
        own = training_profile(client, run_id) if run_id else None
        metrics = full_metrics(client, client.get_run(run_id)) if run_id else {}
    if own is not None:
        return ChampionReference(version, own, metrics)
    profile, note = bundled_reference(settings, version)
    return ChampionReference(version, profile, metrics, note)


def record_scored_batch(
    settings: Settings,
    version: str,
    features: pd.DataFrame,
    risk: np.ndarray,
    labels: np.ndarray | None,
    source: str,
    imputed: dict[str, float] | None = None,
) -> str:
    """Summarise one scored batch against its version's training profile and record it; returns a line
    for the run's log (recorded, or why not)."""
    reference = version_reference(settings, version)
    summary = summarize_batch(
        features, reference.profile, np.asarray(risk), labels, source=source, model_version=version, imputed=imputed
    )
    # The batch judged alone too: its run in MLflow shows its own PSI per column (the monitor judges the merged window).
    alone = judge(summary, reference.profile, reference.metrics, settings.monitoring, version)
    run_id = record_batch(
        settings, summary, features if settings.monitoring.keep_rows else None, verdict_metrics(alone), alone.verdict
    )
    return f"batch of {len(features)} rows recorded for monitoring (MLflow run {run_id})"


def record_scored_batch_safely(settings: Settings, version: str, *args: Any, **kwargs: Any) -> str:
    """``record_scored_batch`` whose failure is said, not raised: the predictions are already written."""
    try:
        return record_scored_batch(settings, version, *args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - monitoring must never fail a scoring run that succeeded
        return f"batch not recorded for monitoring: {type(exc).__name__}: {str(exc)[:200]}"


def verdict_metrics(verdict: Verdict) -> dict[str, float]:
    """A verdict as MLflow metrics (a batch run's, or one step of a version's trend): rows, PSI per column,
    and the labelled figures when present."""
    metrics: dict[str, float] = {
        "rows": verdict.rows,
        "batches": verdict.batches,
        "drifted_columns": len(verdict.drifted),
    }
    metrics["verdict_code"] = {"ok": 0, "drift": 1, "performance drop": 2}[verdict.verdict]
    for column in verdict.columns:
        metrics[f"psi.{column.column}"] = column.psi
    if verdict.risk is not None:
        metrics["psi.predicted_risk"] = verdict.risk.psi
    if verdict.performance is not None:
        metrics["roc_auc"] = verdict.performance.roc_auc
        metrics["observed_rate"] = verdict.performance.observed_rate
        metrics["mean_predicted"] = verdict.performance.mean_predicted
    return {k: float(v) for k, v in metrics.items() if v == v}  # NaN has no place on a chart
