"""Model-card step: regenerate the card of each version this run registered, once its decision is known.

The versions are registered and the alias decided before this runs: a card that cannot be written is a
warning with the reason, never a failed run (promotion is all or nothing, and it is done).
"""

from __future__ import annotations

from prefect import task

from heart_pipeline.config import Settings
from heart_pipeline.errors import shorten
from heart_pipeline.tracking.model_cards import publish_card


def publish_model_cards(versions: list[str], settings: Settings) -> dict[str, str]:
    """Each version's card written with it; the value says 'written' or why not."""
    outcome = {}
    for version in versions:
        try:
            publish_card(settings, version)
            outcome[version] = "written"
        except Exception as exc:  # noqa: BLE001 - the decision is committed: say what failed, undo nothing
            outcome[version] = f"not written: {shorten(f'{type(exc).__name__}: {exc}', 200)}"
    return outcome


@task(name="model-cards")
def publish_model_cards_task(versions: list[str], settings: Settings) -> dict[str, str]:
    from prefect import get_run_logger

    outcome = publish_model_cards(versions, settings)
    logger = get_run_logger()
    for version, what in outcome.items():
        (logger.info if what == "written" else logger.warning)("model card of v%s %s", version, what)
    return outcome
