"""The registry's write lease over a real SQLite MLflow store, through a client that adds random latency
to every call (as a remote tracking server does): concurrent holders never overlap, a dead holder's
lease is broken by exactly one contender, and a holder that stalled past its lease stops before writing."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import pytest

from heart_pipeline.errors import PipelineError
from heart_pipeline.tracking.registry import LeaseLost, lease_epochs, lease_model_name, registry_lease

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
NAME = "heart-disease"
# Seconds. Short, so the tests that wait a lease out stay quick; its margin (25%) must still exceed the
# slowest store call, which on a loaded 2-core CI box (SQLite writers queueing behind each other) has
# reached 1.5 s: a 2 s lease there made a healthy holder give up (safely, but the test failed).
LEASE = 4.0
# The race test never waits a lease out (its dead holders expired in the past), so it can afford a long
# one: a holder that loses it there would be a scheduling accident, not the race under test.
CONTENDED_LEASE = 12.0
# The renewal test holds its lease for 12 s of work. A heartbeat renews every sixth of the lease and a
# holder stops at a quarter left, so a heartbeat starved for more than ~58% of the lease loses it: with a
# 4 s lease that was 2.3 s, and a loaded CI box starved one that long. With 8 s it is 4.7 s, and 12 s of
# work (1.5 leases; without renewal the holder would stop after 6 s) still proves that renewal keeps it.
RENEWED_LEASE = 8.0
WORK_SECONDS = 12.0
MAX_LATENCY = 0.05
TRIALS = 36


class LatencyClient:
    """An MlflowClient whose every call waits 0..MAX_LATENCY s before and after reaching the store."""

    def __init__(self, uri: str, rng: random.Random) -> None:
        self._client, self._rng = mlflow.MlflowClient(uri), rng

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def delayed(*args: Any, **kwargs: Any) -> Any:
            time.sleep(self._rng.uniform(0, MAX_LATENCY / 2))
            try:
                return attribute(*args, **kwargs)
            finally:
                time.sleep(self._rng.uniform(0, MAX_LATENCY / 2))

        return delayed


@pytest.fixture
def uri(tmp_path: Path) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.MlflowClient(uri).search_registered_models()  # create the schema once, before the threads
    return uri


class CriticalSection:
    """Counts holders inside; records the most seen at once."""

    def __init__(self) -> None:
        self.lock, self.inside, self.most, self.entries = threading.Lock(), 0, 0, 0

    def run(self, check: Callable[[], None], seconds: float) -> None:
        check()  # as a holder does right before writing
        with self.lock:
            self.inside += 1
            self.entries += 1
            self.most = max(self.most, self.inside)
        time.sleep(seconds)
        with self.lock:
            self.inside -= 1


def leave_a_dead_holder(uri: str, number: int) -> None:
    """An epoch whose holder died: never released, its expiry in the past."""
    mlflow.MlflowClient(uri).create_registered_model(
        lease_model_name(NAME, number), tags={"holder": "dead", "expires": f"{time.time() - 1:.3f}"}
    )


def test_concurrent_holders_never_overlap_with_injected_latency(uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from heart_pipeline.tracking import registry

    monkeypatch.setattr(registry, "LEASE_POLL_SECONDS", 0.05)  # contenders retry as often as with a short lease
    section, errors = CriticalSection(), []

    def hold(seed: int) -> None:
        client = LatencyClient(uri, random.Random(seed))
        try:
            with registry_lease(client, NAME, "test", wait_seconds=60, lease_seconds=CONTENDED_LEASE) as lease:
                section.run(lease.check, random.Random(seed).uniform(0.005, 0.03))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    for trial in range(TRIALS):
        if trial % 2 == 0:  # every other trial starts from a dead holder's stale lease, which all race to break
            leave_a_dead_holder(uri, max(lease_epochs(mlflow.MlflowClient(uri), NAME), default=0) + 1)
        threads = [threading.Thread(target=hold, args=(trial * 10 + i,)) for i in range(2 + trial % 2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors
    assert section.most == 1, f"{section.most} holders were inside at once"
    assert section.entries == sum(2 + t % 2 for t in range(TRIALS))
    assert len(lease_epochs(mlflow.MlflowClient(uri), NAME)) <= 2, "earlier epochs are collected"


def test_a_holder_that_stalled_past_its_lease_stops_before_writing(uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from heart_pipeline.tracking import registry

    stalled = LatencyClient(uri, random.Random(1))
    with registry_lease(stalled, NAME, "stalls", lease_seconds=LEASE) as lease:
        monkeypatch.setattr(registry.Lease, "renew", lambda self: True)  # its heartbeat stops (a long pause)
        time.sleep(LEASE * 1.1)
        # Another holder breaks the stale lease and works; the stalled one must not write.
        with registry_lease(LatencyClient(uri, random.Random(2)), NAME, "breaks", lease_seconds=LEASE) as other:
            other.check()
            with pytest.raises(LeaseLost, match="lost the registry write lease"):
                lease.check()
    monkeypatch.undo()


def test_a_live_holder_keeps_its_lease_by_renewing(uri: str) -> None:
    """Working for 1.5 lease lengths: the heartbeat keeps it, and a contender waits instead of breaking it."""
    client = LatencyClient(uri, random.Random(3))
    with registry_lease(client, NAME, "long work", lease_seconds=RENEWED_LEASE) as lease:
        for _ in range(6):
            time.sleep(WORK_SECONDS / 6)
            lease.check()
        with pytest.raises(PipelineError, match="stayed busy"):
            with registry_lease(mlflow.MlflowClient(uri), NAME, "waits", wait_seconds=0.5, lease_seconds=LEASE):
                pass
        lease.check()
