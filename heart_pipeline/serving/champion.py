"""The model the API serves: the last champion that loaded and scored the probe patient."""

import math
import threading
import time
from typing import Any

import pandas as pd
from fastapi import HTTPException

from heart_pipeline.config import Settings
from heart_pipeline.tracking.registry import champion_version, load_model_version, predict_with_threshold


def probe(model: Any, probe_row: pd.DataFrame) -> float:
    """Score the probe patient; a model that cannot is not fit to serve."""
    probability = float(predict_with_threshold(model, probe_row)[0][0])
    if not (math.isfinite(probability) and 0 <= probability <= 1):
        raise ValueError(f"the probe patient scored {probability!r}, not a probability")
    return probability


class ChampionCache:
    """Serves the last champion that loaded and scored the probe row.

    The alias is checked at most every ``api.reload_interval_seconds``. A new champion that cannot
    be loaded (refused as untrusted, corrupt, unreachable) or cannot score the probe row is not
    served: the previous good model keeps answering, and /health reports why.
    """

    def __init__(self, settings: Settings, probe_row: pd.DataFrame) -> None:
        self.settings = settings
        self.probe_row = probe_row
        self.model: Any = None
        self.version: str | None = None
        self.champion: str | None = None
        self.refused: str | None = None
        self.problem: str | None = None
        self.checked_at = -math.inf
        self.lock = threading.Lock()

    def refresh(self) -> None:
        with self.lock:
            now = time.monotonic()
            if now - self.checked_at < self.settings.api.reload_interval_seconds:
                return
            self.checked_at = now
            name, uri = self.settings.mlflow.registered_model, self.settings.tracking_uri
            try:
                self.champion = champion_version(uri, name)
            except Exception as exc:  # noqa: BLE001 - any store failure: keep serving, report it
                self.problem = f"cannot read {name}@champion: {exc}"
                return
            if self.champion in (self.version, self.refused):
                self.problem = None if self.champion == self.version else self.problem
                return
            try:
                model = load_model_version(uri, name, self.champion)
                probe(model, self.probe_row)
            except Exception as exc:  # noqa: BLE001 - untrusted, corrupt or broken: never serve it
                self.refused = self.champion
                self.problem = f"champion {name} v{self.champion} refused: {type(exc).__name__}: {exc}"
                return
            self.model, self.version, self.refused, self.problem = model, self.champion, None, None

    def serving(self) -> tuple[Any, str]:
        self.refresh()
        if self.model is None or self.version is None:
            raise HTTPException(status_code=503, detail=self.problem or "no champion model loaded")
        return self.model, self.version
