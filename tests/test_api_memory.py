"""A real `heart-pipeline serve` process refuses a huge streamed /ingest body without growing.

By default 256 MB are offered; the figure in the README (1 GB) comes from running it by hand:
``HEART_API_PROBE_MB=1024 .venv/bin/python -m pytest tests/test_api_memory.py -s``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest

from heart_pipeline.serving.app import TOKEN_ENV
from tests.helpers import BIN, write_test_config

pytestmark = pytest.mark.e2e

TOKEN = "memory-probe-token-0123456789"
OFFERED_MB = int(os.environ.get("HEART_API_PROBE_MB", "256"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[psutil.Process, str]]:
    directory = tmp_path_factory.mktemp("api-memory")
    config = write_test_config(directory)
    port = free_port()
    env = {**os.environ, TOKEN_ENV: TOKEN}
    command = [str(BIN / "heart-pipeline"), "serve", "--port", str(port), "--config", str(config)]
    with (directory / "server.log").open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise AssertionError((directory / "server.log").read_text()[-2000:])
        yield psutil.Process(process.pid), url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_huge_streamed_ingest_is_refused_without_memory_growth(server: tuple[psutil.Process, str]) -> None:
    process, url = server
    before = process.memory_info().rss
    peak = before
    sampling = True

    def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    megabyte = b"1," * 2**19

    def body() -> Iterator[bytes]:
        for _ in range(OFFERED_MB):
            yield megabyte

    headers = {"authorization": f"Bearer {TOKEN}", "content-type": "text/csv"}
    try:
        response = httpx.post(f"{url}/ingest", content=body(), headers=headers, timeout=300)
    finally:
        sampling = False
        sampler.join()
    grown_mb = (peak - before) / 2**20
    print(f"offered {OFFERED_MB} MB: {response.status_code}; RSS {before / 2**20:.0f} -> peak {peak / 2**20:.0f} MB")
    assert response.status_code == 413
    assert grown_mb < 30, f"RSS grew {grown_mb:.0f} MB"
