"""Model cards from the registry: gather one version's facts and evidence from MLflow, render the card
(evidence/model_card.py) and keep it with the version, regenerated whenever new evidence arrives (the
promotion decision, an external validation).

The card lives as artifacts of the version's own run (``model_card/model_card.html`` and ``.md``), and
the version's ``model_card.updated`` tag says when it was last written.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from typing import Any

from heart_pipeline.config import Settings, load_codebook_for
from heart_pipeline.errors import PipelineError
from heart_pipeline.evidence.model_card import ModelCard, render_html, render_markdown
from heart_pipeline.tracking.registry import (
    CODEBOOK_TAG,
    DECISION_TAG,
    current_champion,
    run_artifact_text,
    tracking_store,
)

CARD_DIR = "model_card"
CARD_UPDATED_TAG = "model_card.updated"
EXCLUDED_COLUMNS_TAG = "training.excluded_columns"
SUBGROUPS_ARTIFACT = "subgroups/subgroups.json"
METRICS_ARTIFACT = "metrics/metrics.csv"
VALIDATION_TAG_PREFIX = "validation."  # validation.<site>.<metric> on the version: its external validations


def full_metrics(client: Any, run: Any) -> dict[str, float]:
    """Every metric of the version's evaluation, intervals included (metrics.csv), else the run's metrics."""
    text = run_artifact_text(client, run.info.run_id, METRICS_ARTIFACT)
    metrics = dict(run.data.metrics)
    if text:
        row = next(csv.DictReader(io.StringIO(text)), {})
        for key, value in row.items():
            try:
                metrics[key] = float(value)
            except (TypeError, ValueError):
                continue
    return metrics


def external_validations(client: Any, tags: dict[str, str]) -> list[dict[str, Any]]:
    """Every site the version was validated on: its ``validation.<site>.run_id`` tags point at the
    evaluation runs, whose metrics hold every figure with its interval."""
    sites = []
    for key, run_id in sorted(tags.items()):
        if not (key.startswith(VALIDATION_TAG_PREFIX) and key.endswith(".run_id")):
            continue
        try:
            run = client.get_run(run_id)
        except Exception:  # noqa: BLE001 - a deleted evaluation run leaves its site out, not the card
            continue
        prefix = key.removesuffix(".run_id")
        sites.append(
            {
                "site": run.data.tags.get("validation.site", prefix[len(VALIDATION_TAG_PREFIX) :]),
                "n": int(float(tags.get(f"{prefix}.n", run.data.params.get("rows_scored", 0)))),
                "prevalence": run.data.metrics.get("observed_rate"),
                "metrics": dict(run.data.metrics),
            }
        )
    return sites


def excluded_columns(tag: str) -> list[str]:
    """The columns a version was trained without, from its tag: registration writes "none" when there are none."""
    return [c for c in tag.split(",") if c and c != "none"]


def gather_card(client: Any, settings: Settings, version: str) -> ModelCard:
    """One version's card facts: its tags, its run's parameters and metrics, its subgroup table and the
    external validations recorded on it."""
    name = settings.mlflow.registered_model
    entry = client.get_model_version(name, version)
    run = client.get_run(entry.run_id)
    params, tags = run.data.params, dict(entry.tags)
    subgroups = json.loads(run_artifact_text(client, entry.run_id, SUBGROUPS_ARTIFACT) or "[]")
    n_train, n_test = params.get("split.n_train"), params.get("split.n_test")
    training = {
        "source": params.get("data.path", "-"),
        "fingerprint": run.data.tags.get("data.fingerprint", "-"),
        "rows": int(n_train) + int(n_test) if n_train and n_test else params.get("data.rows_kept"),
        "rows_train": n_train,
        "rows_test": n_test,
        "prevalence": params.get("data.disease_share", "not recorded"),
        "sites": [s for s in (params.get("data.sites") or "").split(",") if s],
        "provenance": run.data.tags.get("data.provenance", ""),
        "dates": run.data.tags.get("data.dates", ""),
    }
    codebook = load_codebook_for(settings)
    return ModelCard(
        registered_model=name,
        version=str(version),
        algorithm=tags.get("algorithm", params.get("algorithm", "-")),
        created=datetime.fromtimestamp(entry.creation_timestamp / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC"),
        decision=tags.get(DECISION_TAG, ""),
        is_champion=current_champion(client, name) == str(version),
        threshold=float(params["threshold"]) if "threshold" in params else None,
        label_definition=codebook.label_definition,
        codebook_version=tags.get(CODEBOOK_TAG, str(codebook.version)),
        training=training,
        metrics=full_metrics(client, run),
        excluded_columns=excluded_columns(tags.get(EXCLUDED_COLUMNS_TAG, "")),
        subgroups=subgroups if isinstance(subgroups, list) else [],
        external=external_validations(client, tags),
        floors=dict(settings.promotion.floors),
    )


def publish_card(settings: Settings, version: str) -> ModelCard:
    """Render the version's card and keep it with the version (artifacts of its run, and a tag)."""
    import mlflow

    with tracking_store(settings.tracking_uri):
        client = mlflow.MlflowClient(settings.tracking_uri)
        card = gather_card(client, settings, version)
        run_id = str(client.get_model_version(card.registered_model, version).run_id)
        client.log_text(run_id, render_html(card), f"{CARD_DIR}/model_card.html")
        client.log_text(run_id, render_markdown(card), f"{CARD_DIR}/model_card.md")
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        client.set_model_version_tag(card.registered_model, version, CARD_UPDATED_TAG, stamp)
    return card


def card_for(settings: Settings, version: str | None) -> ModelCard:
    """The card of ``version``, or of the champion when none is given (read only; nothing is written)."""
    import mlflow

    with tracking_store(settings.tracking_uri):
        client = mlflow.MlflowClient(settings.tracking_uri)
        name = settings.mlflow.registered_model
        chosen = version or current_champion(client, name)
        if chosen is None:
            raise PipelineError(f"{name}: no @champion yet and no --version given; train first (make run)")
        return gather_card(client, settings, str(chosen))
