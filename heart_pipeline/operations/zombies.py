"""Flow runs whose process died are marked Crashed, with Prefect's own mechanism.

Prefect's flow engine emits a ``prefect.flow-run.heartbeat`` event every
PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds (30 is its minimum). A proactive automation expects, after
each heartbeat, another event of the same flow run within ``ZOMBIE_AFTER_SECONDS``; when none comes
(the process was killed, the machine died) it sets the run to Crashed. A self-hosted server has no
such automation built in: `make up` creates this one (Prefect's documented recipe, "Detect zombie
flows"). Without it a killed run stays Running forever.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

HEARTBEAT_SECONDS = 30  # Prefect's minimum; the flow-run processes started by the stack's worker use it
ZOMBIE_AFTER_SECONDS = 90  # three missed heartbeats
AUTOMATION_NAME = "heart-pipeline: crash zombie flow runs"


def heartbeat_env() -> dict[str, str]:
    """The environment that makes flow-run processes send heartbeats often enough for the automation."""
    return {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS)}


def heartbeat_settings() -> dict[str, int]:
    """The same for a flow called in this process (the CLI): Prefect's setting, for ``temporary_settings``.
    A heartbeat frequency the user set (PREFECT_FLOWS_HEARTBEAT_FREQUENCY) is kept."""
    if os.environ.get("PREFECT_FLOWS_HEARTBEAT_FREQUENCY"):
        return {}
    return {"flows.heartbeat_frequency": HEARTBEAT_SECONDS}


def zombie_automation() -> object:
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return Automation(
        name=AUTOMATION_NAME,
        description="Marks a flow run Crashed when its heartbeats stop (its process died).",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            # Any later event of the run (heartbeat or any state, custom names included) disarms it.
            expect={"prefect.flow-run.*"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=ZOMBIE_AFTER_SECONDS),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                name=None,
                force=False,
                message=f"No heartbeat for {ZOMBIE_AFTER_SECONDS}s: the flow-run process died.",
            )
        ],
    )


def ensure_zombie_automation(api_url: str) -> str:
    """Create the automation on the server at ``api_url`` unless it exists; returns its id."""
    from prefect.automations import Automation
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        try:
            # Prefect's sync_compatible methods are typed as coroutines; called from sync code they return the value.
            found: Any = Automation.read(name=AUTOMATION_NAME)
            return str(found.id)
        except ValueError:
            pass  # not there yet
        automation = zombie_automation()
        return str(automation.create().id)  # type: ignore[attr-defined]
