"""The API's launch endpoints without a Prefect server: parameter checks, auth and the embedded mode.

Every refusal here happens before Prefect is asked anything; the runs themselves are in
tests/test_launch_e2e.py (a real Prefect server, deployments from prefect.yaml and a worker)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from heart_pipeline.config import load_config
from heart_pipeline.serving.app import TOKEN_ENV, create_app
from heart_pipeline.serving.launches import LAUNCHABLE, allowed_data_roots, checked_data_path
from tests.helpers import write_test_config

TOKEN = "a-test-token-of-enough-length"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "heart.csv").write_text("age\n1\n")
    (tmp_path / "outside.csv").write_text("age\n1\n")
    (folder / "escape.csv").symlink_to(tmp_path / "outside.csv")
    (folder / "inside-link.csv").symlink_to(folder / "heart.csv")
    return folder


@pytest.fixture
def config(tmp_path: Path, data_dir: Path) -> Path:
    return write_test_config(tmp_path, data__path=str(data_dir / "heart.csv"))


@pytest.fixture
def embedded(config: Path, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    return TestClient(create_app(str(config)), raise_server_exceptions=False)


def test_every_launchable_deployment_is_in_prefect_yaml() -> None:
    import yaml

    from heart_pipeline.config import PROJECT_ROOT

    spec = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    deployed = {d["name"]: d["entrypoint"].rsplit(":", 1)[1].replace("_", "-") for d in spec["deployments"]}
    for launchable in LAUNCHABLE.values():
        flow, deployment = launchable.deployment.split("/")
        assert deployed.get(deployment) == flow, launchable.deployment


def test_data_paths_must_stay_inside_the_data_folders(tmp_path: Path, data_dir: Path, config: Path) -> None:
    settings = load_config(config)
    roots = allowed_data_roots(settings)
    assert checked_data_path(str(data_dir / "heart.csv"), roots, settings) == str(data_dir / "heart.csv")
    assert checked_data_path(str(data_dir / "inside-link.csv"), roots, settings) == str(data_dir / "heart.csv")
    refused = {
        "/proc/self/environ": "inside the data folder",
        "/etc/passwd": "inside the data folder",
        str(data_dir / ".." / "outside.csv"): "'..'",
        str(data_dir / "escape.csv"): "inside the data folder",
        str(data_dir / "missing.csv"): "no such file",
        str(data_dir): "no such file",
        "data/\x00.csv": "not a file path",
    }
    for value, reason in refused.items():
        with pytest.raises(ValueError, match=reason):
            checked_data_path(value, roots, settings)


@pytest.mark.parametrize(
    ("flow", "body", "field"),
    [
        ("training", {"data_path": "/proc/self/environ"}, "data_path"),
        ("training", {"data_path": "../../etc/passwd"}, "data_path"),
        ("training", {"models": ["xgboost"]}, "models"),
        ("training", {"seed": -1}, "seed"),
        ("training", {"config_path": "/tmp/evil.yaml"}, "config_path"),
        ("training", {"dask_address": "tcp://elsewhere:8786"}, "dask_address"),
        ("data-quality", {"disease_label": 2}, "disease_label"),
        ("batch-scoring", {}, "data_path"),
        ("batch-scoring", {"data_path": "x.csv", "out_path": "/etc/cron.d/x"}, "out_path"),
    ],
)
def test_invalid_parameters_are_422_naming_the_field(embedded: TestClient, flow: str, body: dict, field: str) -> None:
    response = embedded.post(f"/runs/{flow}", json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    assert field in [e["loc"][-1] for e in response.json()["detail"]]


def test_a_symlink_out_of_the_data_folder_is_422(embedded: TestClient, data_dir: Path) -> None:
    response = embedded.post("/runs/data-quality", json={"data_path": str(data_dir / "escape.csv")}, headers=AUTH)
    assert response.status_code == 422
    assert "inside the data folder" in response.json()["detail"][0]["msg"]


def test_an_unknown_flow_is_422_and_launching_needs_the_token(embedded: TestClient) -> None:
    assert embedded.post("/runs/no-such-flow", json={}, headers=AUTH).status_code == 422
    assert embedded.post("/runs/training", json={}).status_code == 401
    wrong = embedded.post("/runs/training", json={}, headers={"authorization": "Bearer not-the-token-at-all"})
    assert wrong.status_code == 401
    assert embedded.get("/runs/00000000-0000-0000-0000-000000000000").status_code == 401


def test_launching_is_off_without_a_configured_token(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    client = TestClient(create_app(str(config)), raise_server_exceptions=False)
    assert client.post("/runs/training", json={}, headers=AUTH).status_code == 403


def test_embedded_mode_launches_nothing_and_says_so(embedded: TestClient, data_dir: Path) -> None:
    valid = embedded.post("/runs/data-quality", json={"data_path": str(data_dir / "heart.csv")}, headers=AUTH)
    assert valid.status_code == 503
    assert valid.json()["detail"]["mode"] == "embedded"
    assert "PREFECT_API_URL" in valid.json()["detail"]["reason"]
    assert embedded.get("/runs/00000000-0000-0000-0000-000000000000", headers=AUTH).status_code == 503


def test_the_launch_bound_is_a_config_key_without_default(tmp_path: Path) -> None:
    import yaml

    from heart_pipeline.errors import ConfigError

    config = write_test_config(tmp_path)
    raw = yaml.safe_load(config.read_text())
    assert raw["api"]["max_running_launches"] >= 1
    del raw["api"]["max_running_launches"]
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"api\.max_running_launches: Field required"):
        load_config(config)
