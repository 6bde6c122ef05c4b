"""The Prefect events monitoring emits, and the resource they are about.

A verdict of drift or performance drop is an event about one model version
(``heart.model.<registered model>.v<version>``). prefect.yaml's deployment trigger on heart-training
listens for both names; Prefect's automation starts the retraining, and its reactive window (the
trigger's ``within``) is the cooldown: one retraining per model version per window, however many
batches drift. Emitted inside the monitoring flow run, the event also carries that run as a related
resource (Prefect adds it), so the Event Feed links the two.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DRIFT_EVENT = "heart.model.drift-detected"
PERFORMANCE_EVENT = "heart.model.performance-dropped"
EVENT_FOR_VERDICT = {"drift": DRIFT_EVENT, "performance drop": PERFORMANCE_EVENT}


def model_resource(registered_model: str, version: str) -> dict[str, str]:
    return {
        "prefect.resource.id": f"heart.model.{registered_model}.v{version}",
        "prefect.resource.name": f"{registered_model} v{version}",
        "heart.registered_model": registered_model,
        "heart.model_version": str(version),
    }


def emit_verdict_event(verdict: str, registered_model: str, version: str, payload: Mapping[str, Any]) -> str | None:
    """The event for a verdict of drift or performance drop (None for ok, or when no Prefect API
    takes events); returns the event's id."""
    from prefect.events import emit_event

    name = EVENT_FOR_VERDICT.get(verdict)
    if name is None:
        return None
    event = emit_event(event=name, resource=model_resource(registered_model, version), payload=dict(payload))
    return str(event.id) if event is not None else None
