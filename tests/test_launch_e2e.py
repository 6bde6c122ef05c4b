"""The API launches flows through Prefect, for real: the session's Prefect test server, a process work
pool, the deployments of prefect.yaml (deployed with `prefect deploy` from the checkout, as `make up`
does) and a worker. The app talks to that server; its runs land in a private MLflow store."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from heart_pipeline.config import load_config
from heart_pipeline.serving.app import TOKEN_ENV, create_app
from heart_pipeline.serving.launches import LAUNCH_TAG
from tests.helpers import prefect_cli, prefect_env, process_worker, write_test_config

pytestmark = pytest.mark.e2e

TOKEN = "a-test-token-of-enough-length"
AUTH = {"authorization": f"Bearer {TOKEN}"}
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@pytest.fixture(scope="module")
def worker(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The work pool, three deployments from prefect.yaml and a process worker on the session's server."""
    env = prefect_env(prefect_server, tmp_path_factory.mktemp("worker-home"))
    pool = load_config().prefect.work_pool
    prefect_cli(env, "work-pool", "create", pool, "--type", "process", "--overwrite")
    names = ("heart-training", "heart-data-quality", "heart-external-validation")
    prefect_cli(env, "--no-prompt", "deploy", *(arg for name in names for arg in ("--name", name)))
    with process_worker(env, pool, tmp_path_factory.mktemp("worker-log") / "worker.log"):
        yield prefect_server


@pytest.fixture(scope="module")
def launcher_app(worker: str, tmp_path_factory: pytest.TempPathFactory, clean_csv: Path) -> Iterator[dict]:
    directory = tmp_path_factory.mktemp("launch")
    data_dir = directory / "data"
    data_dir.mkdir()
    shutil.copy(clean_csv, data_dir / "heart.csv")
    config = write_test_config(directory, data__path=str(data_dir / "heart.csv"), api__max_running_launches=2)
    previous = os.environ.get(TOKEN_ENV)
    os.environ[TOKEN_ENV] = TOKEN
    try:
        client = TestClient(create_app(str(config), prefect_api_url=worker), raise_server_exceptions=False)
        yield {"client": client, "api": worker, "data": data_dir / "heart.csv", "directory": directory}
    finally:
        os.environ.pop(TOKEN_ENV, None)
        if previous is not None:
            os.environ[TOKEN_ENV] = previous


def prefect_get(api: str, path: str) -> dict:
    response = httpx.get(f"{api}{path}", timeout=30)
    response.raise_for_status()
    return response.json()


def launched_count(api: str) -> int:
    body = {"flow_runs": {"tags": {"all_": [LAUNCH_TAG]}}}
    return int(httpx.post(f"{api}/flow_runs/count", json=body, timeout=30).json())


def wait_until_final(client: TestClient, flow_run_id: str, timeout: float = 420) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/runs/{flow_run_id}", headers=AUTH)
        assert status.status_code == 200, status.text
        if status.json()["state"] in FINAL:
            return status.json()
        time.sleep(2)
    raise AssertionError(f"run {flow_run_id} not finished after {timeout} s: {status.json()}")


def test_refused_launches_start_nothing(launcher_app: dict, tmp_path: Path) -> None:
    client, api = launcher_app["client"], launcher_app["api"]
    before = launched_count(api)
    link = launcher_app["data"].parent / "link-out.csv"
    link.unlink(missing_ok=True)
    link.symlink_to("/etc/passwd")
    outside = tmp_path / "heart.csv"
    shutil.copy(launcher_app["data"], outside)
    assert client.post("/runs/training", json={}).status_code == 401
    assert client.post("/ingest", content=outside.read_bytes(), headers={"content-type": "text/csv"}).status_code == 401
    for path in ("/proc/self/environ", str(outside), f"{launcher_app['data'].parent}/../heart.csv", str(link)):
        response = client.post("/runs/training", json={"data_path": path}, headers=AUTH)
        assert response.status_code == 422, (path, response.text)
    assert launched_count(api) == before


def test_training_ingest_and_external_validation_run_as_deployment_runs(launcher_app: dict, clean_csv: Path) -> None:
    client, api = launcher_app["client"], launcher_app["api"]
    started = time.monotonic()
    body = {"data_path": str(launcher_app["data"]), "models": ["logistic_regression"]}
    training = client.post("/runs/training", json=body, headers=AUTH)
    assert training.status_code == 202, training.text
    assert time.monotonic() - started < 30, "the answer comes before the run"
    launched = training.json()
    assert launched["mode"] == "prefect-deployment" and launched["state"] in {"SCHEDULED", "PENDING", "RUNNING"}
    assert launched["ui_url"].endswith(f"/runs/flow-run/{launched['flow_run_id']}")
    assert launched["status_url"] == f"/runs/{launched['flow_run_id']}"

    ingest = client.post("/ingest", content=clean_csv.read_bytes(), headers={**AUTH, "content-type": "text/csv"})
    assert ingest.status_code == 202, ingest.text
    assert ingest.json()["mode"] == "prefect-deployment"
    # Two launched runs are unfinished: api.max_running_launches (2) refuses a third, and starts nothing.
    third = client.post("/runs/data-quality", json={"data_path": str(launcher_app["data"])}, headers=AUTH)
    assert third.status_code == 429, third.text
    assert launched_count(api) == 2

    for flow_run_id, deployment in (
        (launched["flow_run_id"], "heart-training"),
        (ingest.json()["flow_run_id"], "heart-data-quality"),
    ):
        flow_run = prefect_get(api, f"/flow_runs/{flow_run_id}")
        assert prefect_get(api, f"/deployments/{flow_run['deployment_id']}")["name"] == deployment
        assert LAUNCH_TAG in flow_run["tags"]

    done = wait_until_final(client, launched["flow_run_id"])
    assert done["state"] == "COMPLETED", done
    assert done["decision"] == "heart-disease@champion -> logistic_regression v1 (first champion)", done
    assert "promotion-decision" in done["artifacts"]
    checked = wait_until_final(client, ingest.json()["flow_run_id"])
    assert checked["state"] == "COMPLETED", checked
    assert checked["decision"].startswith("Data-quality gate passed"), checked
    job = client.get(ingest.json()["job_url"], headers=AUTH).json()
    assert job["state"] == "launched" and job["flow_run_id"] == ingest.json()["flow_run_id"]

    # The champion just registered, measured on another labelled file of the data folder.
    site = launcher_app["data"].parent / "other-site.csv"
    shutil.copy(clean_csv, site)
    external = client.post("/runs/external-validation", json={"data_paths": [str(site)]}, headers=AUTH)
    assert external.status_code == 202, external.text
    flow_run = prefect_get(api, f"/flow_runs/{external.json()['flow_run_id']}")
    assert prefect_get(api, f"/deployments/{flow_run['deployment_id']}")["name"] == "heart-external-validation"
    measured = wait_until_final(client, external.json()["flow_run_id"])
    assert measured["state"] == "COMPLETED", measured
    assert measured["decision"].startswith("heart-disease v1 on 1 site(s): other-site: n="), measured
    assert "ROC-AUC" in measured["decision"]
