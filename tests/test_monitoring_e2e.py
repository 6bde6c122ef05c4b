"""The loop closed on real parts: the session's Prefect server, prefect.yaml's heart-training and
heart-monitoring deployments with their trigger (deployed with `prefect deploy`), a process worker and
a private MLflow store. A champion scores a drifted batch, the monitor calls drift and emits its event,
and the automation the trigger made starts a heart-training run that completes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

from heart_pipeline.config import PROJECT_ROOT, load_config
from heart_pipeline.monitoring.events import DRIFT_EVENT
from tests.helpers import cli_env, prefect_cli, prefect_env, process_worker, run_cli, write_test_config

pytestmark = pytest.mark.e2e

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def deployments_for_test(config: Path) -> dict[str, Any]:
    """prefect.yaml as `make up` deploys it, with its runs pointed at the test's private config (and
    one model, for time). The trigger itself (match, expect, cooldown) is the file's, unchanged."""
    spec = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    spec["deployments"] = [d for d in spec["deployments"] if d["name"] in {"heart-training", "heart-monitoring"}]
    for deployment in spec["deployments"]:
        deployment.pop("schedules", None)
        deployment["parameters"] = {"config_path": str(config)}
        for trigger in deployment.get("triggers", []):
            trigger["parameters"] = {
                **trigger["parameters"],
                "config_path": str(config),
                "models": ["logistic_regression"],
            }
    return spec


@pytest.fixture(scope="module")
def deployed(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("monitoring-e2e")
    config = write_test_config(directory)
    prefect_file = directory / "prefect.yaml"
    prefect_file.write_text(yaml.safe_dump(deployments_for_test(config), sort_keys=False))
    env = prefect_env(prefect_server, directory / "worker-home")
    pool = load_config().prefect.work_pool
    prefect_cli(env, "work-pool", "create", pool, "--type", "process", "--overwrite")
    prefect_cli(env, "--no-prompt", "deploy", "--all", "--prefect-file", str(prefect_file))
    with process_worker(env, pool, directory / "worker.log"):
        yield {"api": prefect_server, "config": config, "directory": directory, "log": directory / "worker.log"}


def prefect_post(api: str, path: str, body: dict[str, Any]) -> Any:
    response = httpx.post(f"{api}{path}", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def training_runs_started_by_automation(api: str) -> list[dict[str, Any]]:
    deployments = prefect_post(api, "/deployments/filter", {"deployments": {"name": {"any_": ["heart-training"]}}})
    runs = prefect_post(
        api, "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [d["id"] for d in deployments]}}}
    )
    return [r for r in runs if (r.get("created_by") or {}).get("type") == "AUTOMATION"]


def older_site_without_ca(clean_csv: Path, target: str, out: Path) -> Path:
    """The bundled patients 15 years older, at a site that never records ca; no labels (a scoring batch)."""
    frame = pd.read_csv(clean_csv)
    frame = frame.drop(columns=[target]).assign(age=lambda f: f["age"] + 15, ca=float("nan"))
    frame.to_csv(out, index=False)
    return out


def test_a_drifted_batch_starts_a_retraining_through_the_deployed_trigger(
    deployed: dict[str, Any], clean_csv: Path
) -> None:
    from heart_pipeline.flows.batch_scoring import heart_batch_scoring
    from heart_pipeline.flows.monitoring import heart_monitoring
    from heart_pipeline.flows.training import heart_training

    api, config = deployed["api"], str(deployed["config"])
    trained = heart_training(data_path=str(clean_csv), models=["logistic_regression"], config_path=config)
    assert trained["promotion"]["promoted"], trained["promotion"]
    batch = older_site_without_ca(clean_csv, load_config(config).data.target, deployed["directory"] / "older.csv")
    scored = heart_batch_scoring(data_path=str(batch), config_path=config)
    assert "recorded for monitoring" in scored["monitoring"], scored["monitoring"]

    verdict = heart_monitoring(config_path=config)
    assert verdict["verdict"] == "drift", verdict
    drifted = {c["column"] for c in verdict["payload"]["drifted"]}
    assert {"age", "ca"} <= drifted, verdict["payload"]
    assert verdict["event_id"], "the drift event was not emitted"
    assert Path(verdict["report"]).is_file()

    deadline = time.monotonic() + 180
    while not (started := training_runs_started_by_automation(api)) and time.monotonic() < deadline:
        time.sleep(2)
    assert len(started) == 1, f"no heart-training run from the automation; worker log: {deployed['log']}"
    run = started[0]
    assert run["parameters"]["triggered_by"].startswith(DRIFT_EVENT), run["parameters"]
    assert verdict["event_id"] in run["parameters"]["triggered_by"]

    deadline = time.monotonic() + 420
    while run["state_type"] not in FINAL and time.monotonic() < deadline:
        time.sleep(3)
        run = httpx.get(f"{api}/flow_runs/{run['id']}", timeout=30).json()
    assert run["state_type"] == "COMPLETED", (run["state"], deployed["log"].read_text()[-3000:])

    # The CLI as a person runs it: the verdict line first, the report's path last; --json is pure JSON.
    env = cli_env(api, deployed["directory"] / "cli-home")
    batch_again = run_cli("score", "--data", str(batch), "--config", config, env=env)
    assert batch_again.returncode == 0, batch_again.stderr[-2000:]
    said = run_cli("monitor", "--config", config, env=env)
    assert said.returncode == 0, said.stderr[-2000:]
    lines = said.stdout.strip().splitlines()
    assert lines[0] == "verdict: drift" and lines[-1].startswith("report: "), said.stdout
    assert any(line.startswith("age: PSI") for line in lines), said.stdout
    quiet = run_cli("monitor", "--json", "--config", config, env=env)
    assert json.loads(quiet.stdout)["verdict"] == "ok", quiet.stdout[-2000:]  # nothing scored since the last run
