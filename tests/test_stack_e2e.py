"""The whole Prefect path against real servers: make-up's stack on free ports, prefect.yaml
deployments on a process work pool, `prefect deployment run --watch`, then a clean tear-down."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import httpx
import mlflow
import psutil
import pytest
import yaml

from heart_pipeline.config import PROJECT_ROOT, load_config
from heart_pipeline.operations import stack
from tests.helpers import BIN, write_test_config
from tests.hostile import CASES


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


pytestmark = pytest.mark.stack


def test_prefect_yaml_deploys_both_flows_to_the_configured_pool() -> None:
    spec = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert {"heart-training", "heart-training-dask", "heart-data-quality", "heart-batch-scoring"} <= set(deployments)
    assert deployments["heart-training"]["schedules"][0]["cron"]
    assert deployments["heart-data-quality"]["schedules"][0]["cron"]
    for deployment in deployments.values():
        assert deployment["work_pool"]["name"] == load_config().prefect.work_pool
        (step,) = deployment["pull"]
        assert "prefect.deployments.steps.set_working_directory" in step


# Paths and ports that are not the stack's: `status` must take the real ones from stack.json.
FAR_AWAY = (Path("/nonexistent/home"), Path("/nonexistent/db"), Path("/nonexistent/art"), 1, 2)


@pytest.fixture(scope="module")
def live_stack(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("stack")
    layout = stack.StackLayout(
        state_dir=root / "state",
        prefect_home=root / "prefect-home",
        mlflow_db=root / "mlflow.db",
        mlflow_artifacts=root / "artifacts",
        prefect_port=free_port(),
        mlflow_port=free_port(),
    )
    os.environ["PREFECT_WORKER_QUERY_SECONDS"] = "2"  # the worker polls often, so the test is quick
    try:
        info = stack.up(layout, timeout=120)
        assert stack.status_ok(stack.status(stack.recorded_layout(stack.StackLayout(layout.state_dir, *FAR_AWAY))))
        yield {"layout": layout, "info": info, "root": root}
    finally:
        os.environ.pop("PREFECT_WORKER_QUERY_SECONDS", None)
        started = [stack._process(stack._recorded_pid(layout, s), layout) for s in stack.SERVICES]
        tree = [p for service in started if service for p in (service, *service.children(recursive=True))]
        stack.down(layout)
        # nothing of the stack (children included) may survive
        _, alive = psutil.wait_procs(tree, timeout=1)
        assert alive == [], f"processes left: {alive}"
        assert not stack.status_ok(stack.status(layout))


def deployment_run(layout: stack.StackLayout, name: str, **params: str) -> tuple[int, str, str]:
    env = {**os.environ, "PREFECT_API_URL": layout.prefect_api_url, "PREFECT_HOME": str(layout.prefect_home)}
    command = [str(BIN / "prefect"), "deployment", "run", name, "--watch", "--watch-timeout", "400"]
    for key, value in params.items():
        command += ["--param", f"{key}={value}"]
    result = subprocess.run(command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    match = re.search(r"UUID:\s*([0-9a-f-]{36})", result.stdout)
    assert match, result.stdout[-2000:]
    return result.returncode, match.group(1), result.stdout


def api(layout: stack.StackLayout, method: str, path: str, **body: object) -> object:
    response = httpx.request(method, f"{layout.prefect_api_url}{path}", json=body or None, timeout=30)
    response.raise_for_status()
    return response.json()


def task_states(layout: stack.StackLayout, flow_run_id: str) -> dict[str, str]:
    runs = api(layout, "POST", "/task_runs/filter", flow_runs={"id": {"any_": [flow_run_id]}})
    return {run["task_key"].split("-")[0] + ":" + run["name"]: run["state"]["name"] for run in runs}


def test_deployment_run_end_to_end(live_stack: dict, clean_csv: Path, tmp_path_factory, clean_frame) -> None:
    layout: stack.StackLayout = live_stack["layout"]
    directory = tmp_path_factory.mktemp("deployed")
    config = write_test_config(directory)

    # 1. A deployment run on the worker completes.
    code, flow_run_id, output = deployment_run(
        layout, "heart-training/heart-training", data_path=str(clean_csv), config_path=str(config)
    )
    assert code == 0, output[-3000:]
    flow_run = api(layout, "GET", f"/flow_runs/{flow_run_id}")
    assert flow_run["state"]["type"] == "COMPLETED"
    assert flow_run["name"].startswith("train-")

    # 2. The worker logged to the MLflow server, not to the config's local SQLite store.
    assert not (directory / "mlflow.db").exists(), "the worker must log to the MLflow server"
    client = mlflow.MlflowClient(layout.mlflow_url)
    experiment = client.get_experiment_by_name("heart-disease")
    runs = client.search_runs([experiment.experiment_id])
    assert {r.data.tags["algorithm"] for r in runs} == {"logistic_regression", "random_forest"}
    for run in runs:
        assert run.data.tags["prefect.flow_run_id"] == flow_run_id
        assert "test_roc_auc" in run.data.metrics
        plots = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"roc_curve.png", "confusion_matrix.png"} <= plots
    versions = client.search_model_versions()
    assert {v.name for v in versions} == {load_config().mlflow.registered_model}
    champion = client.get_model_version_by_alias("heart-disease", "champion").version

    # 3. The same data again: the validation verdict is served from cache, visibly.
    code, second_id, output = deployment_run(
        layout, "heart-training/heart-training", data_path=str(clean_csv), config_path=str(config)
    )
    assert code == 0, output[-3000:]
    states = task_states(layout, second_id)
    assert [s for k, s in states.items() if k.startswith("validate")] == ["Cached"], states
    run_folders = sorted((directory / "runs" / "heart-training").iterdir())
    assert len(run_folders) == 2
    for relative in ("data/X_train_clean.csv", "validation/validation_report.json"):
        assert (run_folders[1] / relative).exists(), f"every run folder is complete: {relative}"

    # No churn: the same data, config and code register nothing new and leave @champion where it was.
    assert len(client.search_model_versions()) == len(versions) == 2
    assert client.get_model_version_by_alias("heart-disease", "champion").version == champion

    # 4. A file that fails the gate: the run ends Failed, with the reason on the run and an artifact.
    case = next(c for c in CASES if c.name == "target-value-2")
    bad = case.build(directory, clean_frame)
    code, failed_id, output = deployment_run(
        layout, "heart-training/heart-training", data_path=str(bad), config_path=str(config)
    )
    failed = api(layout, "GET", f"/flow_runs/{failed_id}")
    assert failed["state"]["type"] == "FAILED"
    assert case.expected in failed["state"]["message"]
    artifacts = api(layout, "POST", "/artifacts/filter", artifacts={"flow_run_id": {"any_": [failed_id]}})
    failure_notes = [a for a in artifacts if a["key"] == "heart-training-failure"]
    # the note escapes file-derived text for markdown (a cell cannot inject a link): compare escaped
    from heart_pipeline.evidence.render import markdown_text

    assert failure_notes and markdown_text(case.expected) in failure_notes[0]["data"]
    assert len(client.search_model_versions()) == len(versions), "a failed run registers nothing"


def test_data_quality_deployment_and_schedules(live_stack: dict, clean_csv: Path, tmp_path: Path) -> None:
    layout: stack.StackLayout = live_stack["layout"]
    config = write_test_config(tmp_path)
    before = clean_csv.read_bytes()
    code, flow_run_id, output = deployment_run(
        layout, "heart-data-quality/heart-data-quality", data_path=str(clean_csv), config_path=str(config)
    )
    assert code == 0, output[-3000:]
    deployments = api(layout, "POST", "/deployments/filter")
    schedules = {d["name"]: [s["schedule"]["cron"] for s in d["schedules"]] for d in deployments}
    assert schedules["heart-training"] == ["0 3 * * 1"]
    assert schedules["heart-data-quality"] == ["0 2 * * *"]
    assert api(layout, "GET", f"/flow_runs/{flow_run_id}")["state"]["type"] == "COMPLETED"
    (run_dir,) = (tmp_path / "runs" / "heart-data-quality").iterdir()
    assert (run_dir / "validation" / "validated.csv").exists()
    assert clean_csv.read_bytes() == before, "the input is never modified"
