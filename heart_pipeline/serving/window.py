"""The API's /predict traffic as monitoring batches: records are gathered into a window and recorded as
one batch (monitoring/record.py) every ``monitoring.api_window_records`` records or
``monitoring.api_window_seconds`` after the window's first record, whichever comes first, and when the
app stops. One request is never judged alone: a single patient says nothing about a population.

Recording runs on one background thread, so a request never waits for the tracking store, and windows
are recorded one after another in the order they closed (a monitoring run reads batches by the time
their recording ended, so two recordings racing would swap them). The rows of a window live only in
memory until it is summarised (summaries only are stored, unless ``monitoring.keep_rows``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from heart_pipeline.config import Settings
from heart_pipeline.monitoring.record import record_scored_batch_safely

API_SOURCE = "api"

Recorder = Callable[[Settings, str, pd.DataFrame, np.ndarray], str]


def record_window(settings: Settings, version: str, features: pd.DataFrame, risk: np.ndarray) -> str:
    return record_scored_batch_safely(settings, version, features, risk, None, API_SOURCE)


def _one_recorder_thread() -> ThreadPoolExecutor:
    # One worker: windows are recorded one at a time, in the order they closed. Its thread starts on
    # the first recording, not before.
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="heart-window-recorder")


@dataclass
class PredictionWindow:
    settings: Settings
    recorder: Recorder = record_window
    version: str | None = None
    frames: list[pd.DataFrame] = field(default_factory=list)
    risks: list[np.ndarray] = field(default_factory=list)
    opened_at: float = 0.0
    last_outcome: str = ""  # the last recording's line, for /health-style inspection and tests
    lock: threading.Lock = field(default_factory=threading.Lock)
    recorder_thread: ThreadPoolExecutor = field(default_factory=_one_recorder_thread)
    pending: list[Future[None]] = field(default_factory=list)
    timer: threading.Timer | None = None

    @property
    def rows(self) -> int:
        return sum(len(f) for f in self.frames)

    def add(self, version: str, features: pd.DataFrame, risk: np.ndarray) -> None:
        """Add one request's scored records; a full or old window (or a new champion) is recorded."""
        policy = self.settings.monitoring
        with self.lock:
            if self.version is not None and version != self.version:
                self._flush_locked()  # a window holds one version: its batches are judged against its profile
            if not self.frames:
                self.version, self.opened_at = version, time.monotonic()
                self._start_timer(policy.api_window_seconds)
            self.frames.append(features.reset_index(drop=True))
            self.risks.append(np.asarray(risk, dtype="float64"))
            if self.rows >= policy.api_window_records or time.monotonic() - self.opened_at >= policy.api_window_seconds:
                self._flush_locked()

    def _start_timer(self, seconds: float) -> None:
        # A window that stops filling is still recorded once it is old enough.
        self.timer = threading.Timer(seconds, self.flush)
        self.timer.daemon = True
        self.timer.start()

    def flush(self) -> None:
        with self.lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.frames or self.version is None:
            return
        features, risk = pd.concat(self.frames, ignore_index=True), np.concatenate(self.risks)
        version = self.version
        self.frames, self.risks, self.version = [], [], None
        recording = self.recorder_thread.submit(self._record, version, features, risk)
        self.pending = [f for f in self.pending if not f.done()] + [recording]

    def _record(self, version: str, features: pd.DataFrame, risk: np.ndarray) -> None:
        self.last_outcome = self.recorder(self.settings, version, features, risk)

    def close(self, timeout: float = 30.0) -> None:
        """Record what is left and wait for the recordings under way (the app is stopping)."""
        self.flush()
        wait(list(self.pending), timeout)
        # The thread ends; an app started again (a second lifespan) records on a new one.
        finished, self.recorder_thread = self.recorder_thread, _one_recorder_thread()
        finished.shutdown(wait=False)
