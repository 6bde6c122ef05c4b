"""The API's launch endpoints without a Prefect server: parameter checks, auth and the embedded mode.

Every refusal here happens before Prefect is asked anything; the runs themselves are in
tests/test_launch_e2e.py (a real Prefect server, deployments from prefect.yaml and a worker)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from uuid import uuid4

import pytest
from fastapi.testclient import TestClient

from heart_pipeline.config import load_config
from heart_pipeline.serving.app import TOKEN_ENV, create_app
from heart_pipeline.serving.launches import LAUNCHABLE, PrefectLauncher, allowed_data_roots, checked_data_path
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
        ("external-validation", {}, "data_paths"),
        ("external-validation", {"data_paths": []}, "data_paths"),
        ("external-validation", {"data_paths": ["/proc/self/environ"]}, "data_paths"),
        ("external-validation", {"data_paths": ["../../etc/passwd"]}, "data_paths"),
        ("external-validation", {"data_paths": "data/heart.csv"}, "data_paths"),
        ("external-validation", {"data_path": "data/heart.csv"}, "data_path"),
        ("external-validation", {"data_paths": ["x.csv"], "version": "1 or 2"}, "version"),
        ("external-validation", {"data_paths": ["x.csv"], "alias": "../champion"}, "alias"),
        ("external-validation", {"data_paths": ["x.csv"], "config_path": "/tmp/evil.yaml"}, "config_path"),
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


def test_every_external_validation_file_must_be_inside_the_data_folder(embedded: TestClient, data_dir: Path) -> None:
    inside = str(data_dir / "heart.csv")
    for outside in ("/proc/self/environ", str(data_dir / ".." / "outside.csv"), str(data_dir / "escape.csv")):
        body = {"data_paths": [inside, outside], "sites": ["a", "b"]}
        response = embedded.post("/runs/external-validation", json=body, headers=AUTH)
        assert response.status_code == 422, response.text
        assert "data_paths[1]" in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"sites": ["a"], "version": "1", "alias": "champion"}, "version or alias, not both"),
        ({"sites": ["a", "b"]}, "one site name per data file"),
        ({"sites": None, "twice": True}, "same site name"),
        ({"sites": ["North clinic", "north-clinic"], "twice": True}, "same site name"),
    ],
)
def test_an_external_validation_the_flow_would_refuse_is_422(
    embedded: TestClient, data_dir: Path, body: dict, reason: str
) -> None:
    paths = [str(data_dir / "heart.csv")] * (2 if body.pop("twice", False) else 1)
    response = embedded.post("/runs/external-validation", json={"data_paths": paths, **body}, headers=AUTH)
    assert response.status_code == 422, response.text
    assert reason in response.json()["detail"][0]["msg"]


def test_a_valid_external_validation_is_checked_before_the_mode(embedded: TestClient, data_dir: Path) -> None:
    body = {"data_paths": [str(data_dir / "inside-link.csv")], "sites": ["Cleveland"], "version": "2"}
    response = embedded.post("/runs/external-validation", json=body, headers=AUTH)
    assert response.status_code == 503 and response.json()["detail"]["mode"] == "embedded"


class FakePrefect:
    """Stands in for the Prefect API: records run_deployment's call, serves one finished run back."""

    def __init__(self, deployment_name: str, artifacts: dict[str, str]) -> None:
        self.calls: list[dict] = []
        self.deployment_name = deployment_name
        completed = SimpleNamespace(
            type=SimpleNamespace(value="COMPLETED"), name="Completed", message=None, is_final=lambda: True
        )
        self.run = SimpleNamespace(id=uuid4(), name="quiet-heron", state=completed, deployment_id=uuid4())
        self.artifacts = [SimpleNamespace(key=k, description=v) for k, v in artifacts.items()]

    def run_deployment(self, name: str, **kwargs) -> SimpleNamespace:
        self.calls.append({"name": name, **kwargs})
        return self.run

    def read_flow_run(self, flow_run_id) -> SimpleNamespace:
        return self.run

    def read_deployment(self, deployment_id) -> SimpleNamespace:
        return SimpleNamespace(name=self.deployment_name)

    def read_artifacts(self, **kwargs) -> list[SimpleNamespace]:
        return self.artifacts


@pytest.fixture
def fake_prefect(config: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, FakePrefect]]:
    import prefect.deployments

    headline = "heart-disease v1 on 1 site(s): older: n=160/160, ROC-AUC 0.89 [0.84, 0.93]"
    fake = FakePrefect("heart-external-validation", {"heart-external-validation": headline})

    @contextmanager
    def client(self: PrefectLauncher) -> Iterator[FakePrefect]:
        yield fake

    monkeypatch.setattr(PrefectLauncher, "client", client)
    monkeypatch.setattr(PrefectLauncher, "active_launches", lambda self, client: 0)
    monkeypatch.setattr(prefect.deployments, "run_deployment", fake.run_deployment)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    app = create_app(str(config), prefect_api_url="http://127.0.0.1:9/api")
    yield TestClient(app, raise_server_exceptions=False), fake


def test_external_validation_launches_its_deployment_and_reports_the_sites(
    fake_prefect: tuple[TestClient, FakePrefect], data_dir: Path, config: Path
) -> None:
    client, fake = fake_prefect
    body = {"data_paths": [str(data_dir / "inside-link.csv")], "sites": ["older"], "disease_label": 1}
    response = client.post("/runs/external-validation", json=body, headers=AUTH)
    assert response.status_code == 202, response.text
    (call,) = fake.calls
    assert call["name"] == "heart-external-validation/heart-external-validation"
    assert call["timeout"] == 0 and call["as_subflow"] is False
    # The worker is handed the checked, resolved path and the API's config, nothing the caller did not give.
    assert call["parameters"] == {
        "data_paths": [str(data_dir / "heart.csv")],
        "sites": ["older"],
        "disease_label": 1,
        "config_path": str(config),
    }
    launched = response.json()
    assert launched["deployment"] == call["name"] and launched["status_url"] == f"/runs/{fake.run.id}"
    status = client.get(launched["status_url"], headers=AUTH).json()
    assert status["flow"] == "external-validation" and status["state"] == "COMPLETED"
    assert status["decision"].startswith("heart-disease v1 on 1 site(s): older: n=160/160, ROC-AUC")


def test_the_external_validation_summary_names_each_site_s_headline() -> None:
    from heart_pipeline.evidence.render import external_validation_headline

    def site(name: str, auc: float) -> dict:
        metrics = {"roc_auc": auc, "roc_auc_ci95_low": auc - 0.05, "roc_auc_ci95_high": auc + 0.04}
        metrics |= {"sensitivity": 0.8, "specificity": 0.7, "calibration_slope": float("nan")}
        return {"site": name, "n": 150, "rows_in": 152, "metrics": metrics}

    result = {"registered_model": "heart-disease", "model_version": "3", "sites": [site("A", 0.9), site("B", 0.7)]}
    assert external_validation_headline(result) == (
        "heart-disease v3 on 2 site(s): "
        "A: n=150/152, ROC-AUC 0.90 [0.85, 0.94], sensitivity 0.80, specificity 0.70, calibration slope -; "
        "B: n=150/152, ROC-AUC 0.70 [0.65, 0.74], sensitivity 0.80, specificity 0.70, calibration slope -"
    )
