"""The API's /predict window: records become monitoring batches by count, by age, by version and at
shutdown, never one request at a time."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from heart_pipeline.config import Settings
from heart_pipeline.serving.window import PredictionWindow
from tests.helpers import make_settings


class Recorded:
    """Collects what the window hands over (in place of the MLflow recording, which has its own tests)."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, int]] = []
        self.done = threading.Event()

    def __call__(self, _settings: Settings, version: str, features: pd.DataFrame, risk: np.ndarray) -> str:
        assert len(features) == len(risk)
        self.batches.append((version, len(features)))
        self.done.set()
        return f"recorded {len(features)}"


def window_of(tmp_path: Path, records: int = 10, seconds: float = 600) -> tuple[PredictionWindow, Recorded]:
    _, settings, _ = make_settings(
        tmp_path, monitoring__api_window_records=records, monitoring__api_window_seconds=seconds
    )
    recorded = Recorded()
    return PredictionWindow(settings, recorder=recorded), recorded


def rows(n: int) -> tuple[pd.DataFrame, np.ndarray]:
    return pd.DataFrame({"age": np.arange(n, dtype=float)}), np.linspace(0, 1, n)


def test_a_window_is_recorded_when_full_and_not_before(tmp_path: Path) -> None:
    window, recorded = window_of(tmp_path, records=10)
    for _ in range(4):
        window.add("3", *rows(2))
    assert recorded.batches == []
    window.add("3", *rows(3))
    window.close()
    assert recorded.batches == [("3", 11)]


def test_a_new_champion_closes_the_window_of_the_old_one(tmp_path: Path) -> None:
    window, recorded = window_of(tmp_path, records=100)
    window.add("3", *rows(5))
    window.add("4", *rows(2))
    window.close()
    assert recorded.batches == [("3", 5), ("4", 2)]


def test_an_idle_window_is_recorded_once_it_is_old_enough(tmp_path: Path) -> None:
    window, recorded = window_of(tmp_path, records=100, seconds=0.5)
    window.add("3", *rows(4))
    started = time.monotonic()
    assert recorded.done.wait(10), "the window's timer never recorded it"
    assert time.monotonic() - started >= 0.4
    window.close()
    assert recorded.batches == [("3", 4)]


def test_nothing_is_recorded_for_an_empty_window(tmp_path: Path) -> None:
    window, recorded = window_of(tmp_path)
    window.close()
    assert recorded.batches == []


def test_windows_are_recorded_in_the_order_they_closed_even_when_a_recording_is_slow(tmp_path: Path) -> None:
    # Monitoring reads batches by the time their recording ended: a slow first recording must not let
    # the next window's recording finish first (as a thread per window did in CI).
    window, recorded = window_of(tmp_path, records=3)
    slow = Recorded()

    def first_one_slow(settings: Settings, version: str, features: pd.DataFrame, risk: np.ndarray) -> str:
        if not slow.batches:
            slow.batches.append((version, len(features)))
            time.sleep(0.5)
        return recorded(settings, version, features, risk)

    window.recorder = first_one_slow
    window.add("3", *rows(4))  # full: recorded (slowly)
    window.add("3", *rows(2))  # partial: recorded at close
    window.close()
    assert recorded.batches == [("3", 4), ("3", 2)]


def test_a_window_closed_once_still_records_when_the_app_starts_again(tmp_path: Path) -> None:
    window, recorded = window_of(tmp_path, records=2)
    window.add("3", *rows(1))
    window.close()
    window.add("3", *rows(2))  # a second lifespan of the same app
    window.close()
    assert recorded.batches == [("3", 1), ("3", 2)]
