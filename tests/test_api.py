"""The prediction API: offline docs, bounds, strict fields, auth, background checks, health.

Tests that need no model use an app over an empty MLflow store (every refusal happens before the
model is touched). The rest share one real MLflow sqlite store with a trained champion.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import mlflow
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from heart_pipeline.config import load_config, load_settings_and_contract
from heart_pipeline.errors import ConfigError
from heart_pipeline.monitoring.store import batches_between
from heart_pipeline.serving.app import TOKEN_ENV, create_app
from heart_pipeline.serving.ingest_jobs import STATE_NAME, IngestJobs, Retention
from heart_pipeline.serving.limits import bounded_errors
from tests.helpers import build_candidates, write_test_config
from tests.test_model_lifecycle import champion_of

TOKEN = "a-test-token-of-enough-length"
README_PATIENT = {
    "age": 63,
    "sex": 1,
    "cp": 3,
    "trestbps": 145,
    "chol": 233,
    "fbs": 1,
    "restecg": 0,
    "thalach": 150,
    "exang": 0,
    "oldpeak": 2.3,
    "slope": 0,
    "ca": 0,
    "thal": 1,
}


def client_for(config: Path, monkeypatch: pytest.MonkeyPatch, token: str | None) -> TestClient:
    if token is None:
        monkeypatch.delenv(TOKEN_ENV, raising=False)
    else:
        monkeypatch.setenv(TOKEN_ENV, token)
    return TestClient(create_app(str(config)), raise_server_exceptions=False)


@pytest.fixture
def empty_store_config(tmp_path: Path) -> Path:
    """No model registered; small limits so that refusals are cheap to provoke."""
    return write_test_config(tmp_path, api__max_request_kb=64, data__max_file_mb=0.25, api__max_errors_shown=5)


@pytest.fixture
def bare(empty_store_config: Path, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    return client_for(empty_store_config, monkeypatch, TOKEN)


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


# --- Docs work offline ---


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href", "spec-url") and value]


def page_urls(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.urls


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_reference_no_outside_host_and_their_assets_are_served(bare: TestClient, page: str) -> None:
    response = bare.get(page)
    assert response.status_code == 200
    urls = page_urls(response.text)
    assert len(urls) >= 2  # the script and the favicon at least
    outside = [u for u in urls if urlsplit(u).scheme or urlsplit(u).netloc]
    assert outside == []
    assert "googleapis" not in response.text and "cdn" not in response.text.lower()
    for url in urls:
        asset = bare.get(url)
        assert asset.status_code == 200 and len(asset.content) > 1000, url
        # What the scripts themselves would fetch: ReDoc's bundle hard-codes its logo on a CDN.
        if url.endswith(".js"):
            assert b"https://cdn." not in asset.content, url


def test_openapi_carries_the_readme_patient_and_code_meanings(bare: TestClient) -> None:
    schema = bare.get("/openapi.json").json()
    patient = schema["components"]["schemas"]["Patient"]
    assert patient["examples"] == [README_PATIENT]
    assert "0 asymptomatic" in patient["properties"]["cp"]["description"]
    assert patient["properties"]["chol"]["minimum"] == 100
    assert patient["properties"]["age"]["maximum"] == 120
    assert patient["properties"]["cp"]["enum"] == [0, 1, 2, 3]
    assert set(patient["required"]) == set(README_PATIENT)
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body["examples"]["one patient"]["value"] == README_PATIENT
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            assert operation.get("description"), f"{method.upper()} {path} has no description"


# --- Bounded: body size while streaming, 422 size, records per request, strict fields ---


def run_asgi(app: Any, path: str, headers: list[tuple[bytes, bytes]], chunks: Iterator[bytes]) -> tuple[int, int]:
    """Send a streamed body straight into the ASGI app; returns (status, chunks the app pulled)."""
    pulled = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal pulled
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))
    return next(m["status"] for m in sent if m["type"] == "http.response.start"), pulled


CHUNK = 64 * 1024


def endless(total_bytes: int) -> Iterator[bytes]:
    for _ in range(total_bytes // CHUNK):
        yield b"x" * CHUNK


def test_an_oversized_upload_is_refused_while_streaming(empty_store_config: Path, monkeypatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    app = create_app(str(empty_store_config))
    limit = int(0.25 * 2**20)
    headers = [(b"authorization", f"Bearer {TOKEN}".encode()), (b"content-type", b"text/csv")]
    status, pulled = run_asgi(app, "/ingest", headers, endless(8 * 2**20))  # chunked: no length declared
    assert status == 413
    assert pulled * CHUNK <= limit + CHUNK  # it stopped reading right after the limit, not at 8 MB
    inbox = load_config(empty_store_config).outputs.runs_dir / "ingested"
    assert not any(inbox.glob("*/data.csv"))  # the partial upload was removed
    declared = [*headers, (b"content-length", str(2**30).encode())]
    assert run_asgi(app, "/ingest", declared, endless(8 * 2**20)) == (413, 0)  # refused before reading a byte
    assert run_asgi(app, "/predict", [(b"content-type", b"application/json")], endless(2**20))[0] == 413


def test_a_streamed_generator_body_gets_413_through_http(bare: TestClient) -> None:
    response = bare.post("/ingest", content=endless(4 * 2**20), headers={**auth(), "content-type": "text/csv"})
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]


@pytest.mark.slow  # a 5 MB body through the app
def test_a_huge_invalid_predict_gives_a_small_422(tmp_path: Path, monkeypatch) -> None:
    config = write_test_config(tmp_path, api__max_request_kb=8 * 1024, api__max_errors_shown=5)
    client = client_for(config, monkeypatch, None)
    huge_value = {**README_PATIENT, "age": "9" * (5 * 2**20)}  # one 5 MB string
    many_fields = {**README_PATIENT, **{f"extra_{i}": i for i in range(200_000)}}  # 200,000 unknown fields
    for body in (huge_value, many_fields):
        payload = json.dumps(body)
        assert len(payload) > 2 * 2**20
        response = client.post("/predict", content=payload, headers={"content-type": "application/json"})
        assert response.status_code == 422
        assert len(response.content) < 4096, len(response.content)
        answer = response.json()
        assert answer["errors_shown"] <= 5 <= answer["errors_total"] or answer["errors_total"] <= 5


def test_bounded_errors_cut_values_and_count() -> None:
    errors = [{"loc": ("body", "age"), "type": "float_type", "msg": "m" * 5000, "input": "v" * 10_000}] * 50
    answer = bounded_errors(errors, 3)
    assert (answer["errors_total"], answer["errors_shown"]) == (50, 3)
    assert len(json.dumps(answer)) < 2000
    assert (
        bounded_errors([{"loc": ("body",), "type": "t", "msg": "m", "input": float("nan")}], 3)["detail"][0]["input"]
        == "nan"
    )


def test_too_many_records_is_a_small_422(tmp_path: Path, monkeypatch) -> None:
    config = write_test_config(tmp_path, api__max_records_per_request=3)
    client = client_for(config, monkeypatch, None)
    response = client.post("/predict", json=[README_PATIENT] * 4)
    assert response.status_code == 422
    assert any(e["type"] == "too_long" for e in response.json()["detail"])
    assert client.post("/predict", json=[]).status_code == 422


@pytest.mark.parametrize(
    ("change", "field", "error"),
    [
        ({"sex": True}, "sex", "code_type"),
        ({"ca": False}, "ca", "code_type"),
        ({"sex": "1"}, "sex", "code_type"),
        ({"thal": "normal"}, "thal", "code_type"),
        ({"age": "63"}, "age", "float_type"),
        ({"age": True}, "age", "float_type"),
        ({"age": None}, "age", "float_type"),
        ({"cp": 9}, "cp", "literal_error"),
        ({"age": 500}, "age", "less_than_equal"),
        ({"chol": -1}, "chol", "greater_than_equal"),
        ({"extra_field": 1}, "extra_field", "extra_forbidden"),
    ],
)
def test_fields_are_strict_and_named(bare: TestClient, change: dict, field: str, error: str) -> None:
    response = bare.post("/predict", json={**README_PATIENT, **change})
    assert response.status_code == 422
    errors = [e for e in response.json()["detail"] if e["loc"][-1] == field and "Patient" in e["loc"]]
    assert errors and errors[0]["type"] == error


def test_a_missing_field_is_422(bare: TestClient) -> None:
    record = {k: v for k, v in README_PATIENT.items() if k != "chol"}
    response = bare.post("/predict", json=[record])
    assert response.status_code == 422
    assert any(e["type"] == "missing" and e["loc"][-1] == "chol" for e in response.json()["detail"])


# --- Auth: write and job endpoints need the token, and are off without one ---


def test_ingest_is_off_without_a_configured_token(empty_store_config: Path, monkeypatch) -> None:
    client = client_for(empty_store_config, monkeypatch, None)
    response = client.post("/ingest", content=b"age\n1\n", headers=auth())
    assert response.status_code == 403
    assert TOKEN_ENV in response.json()["detail"]
    assert client.get("/jobs/x", headers=auth()).status_code == 403


def test_ingest_needs_the_right_token(bare: TestClient) -> None:
    assert bare.post("/ingest", content=b"age\n1\n").status_code == 401
    wrong = bare.post("/ingest", content=b"age\n1\n", headers=auth("not-the-token-at-all"))
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    empty = bare.post("/ingest", content=b"", headers=auth())  # past auth, refused for its content
    assert empty.status_code == 422
    assert bare.get("/jobs/20260101T000000000000Z-abcdef").status_code == 401
    assert bare.get("/jobs/20260101T000000000000Z-abcdef", headers=auth()).status_code == 404
    assert bare.get("/jobs/..%2F..%2Fetc", headers=auth()).status_code == 404


def test_token_in_config_works_and_env_wins(tmp_path: Path, monkeypatch) -> None:
    config = write_test_config(tmp_path, api__token="token-from-the-config-file")
    client = client_for(config, monkeypatch, None)
    assert client.post("/ingest", content=b"", headers=auth("token-from-the-config-file")).status_code == 422
    client = client_for(config, monkeypatch, TOKEN)
    assert client.post("/ingest", content=b"", headers=auth("token-from-the-config-file")).status_code == 401


def test_a_short_token_is_refused_at_start(empty_store_config: Path, monkeypatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "short")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        create_app(str(empty_store_config))


def test_a_job_whose_runner_died_is_interrupted_and_kept_out_of_the_latest(tmp_path: Path) -> None:
    settings = load_config(write_test_config(tmp_path))
    jobs = IngestJobs(settings, Retention(keep_last=5, max_age_days=1), max_running=1)
    folder = jobs.inbox / "20260101T000000000000Z-abcdef"
    folder.mkdir(parents=True)
    (folder / STATE_NAME).write_text(json.dumps({"id": folder.name, "state": "running", "pid": 1, "pid_started": 0.0}))
    assert jobs.status(folder.name)["state"] == "interrupted"
    assert jobs.latest_finished() is None
    assert jobs.enforce_retention(time.time() + 2 * 86400) == [folder.name]  # not running: the age rule applies


def test_api_keys_have_no_hidden_defaults(tmp_path: Path) -> None:
    config = write_test_config(tmp_path)
    raw = yaml.safe_load(config.read_text())
    del raw["api"]["max_request_kb"]
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"api\.max_request_kb: Field required"):
        load_config(config)


# --- Retention and paths ---


def test_retention_keeps_the_newest_and_drops_the_old(tmp_path: Path) -> None:
    settings = load_config(write_test_config(tmp_path))
    jobs = IngestJobs(settings, Retention(keep_last=3, max_age_days=1), max_running=1)
    now = time.time()
    for i in range(6):
        folder = jobs.inbox / f"2026010{i}T000000000000Z-aaaaaa"
        folder.mkdir(parents=True)
        (folder / STATE_NAME).write_text(json.dumps({"state": "passed"}))
        os.utime(folder, (now, now - (3 * 86400 if i == 3 else 0)))
    removed = jobs.enforce_retention(now)
    kept = sorted(p.name[:9] for p in jobs.inbox.iterdir())
    assert kept == ["20260104T", "20260105T"]  # the newest three, minus the one older than a day
    assert len(removed) == 4


def test_data_and_quality_checks_show_no_server_paths(bare: TestClient, empty_store_config: Path) -> None:
    assert bare.get("/quality-checks").status_code == 404
    assert bare.get("/data").status_code == 404
    runs = load_config(empty_store_config).outputs.runs_dir
    validated = runs / "heart-data-quality" / "20260101T000000Z-abc" / "validation" / "validated.csv"
    validated.parent.mkdir(parents=True)
    pd.DataFrame([README_PATIENT] * 4).to_csv(validated, index=False)
    response = bare.get("/data", params={"limit": 2})
    assert response.status_code == 200
    body = response.json()
    assert body["source"] == "heart-data-quality/20260101T000000Z-abc/validation/validated.csv"
    assert (body["rows_total"], len(body["rows"])) == (4, 2)
    assert str(runs) not in response.text


# --- With a real champion in a real MLflow store ---


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, clean_csv: Path) -> dict:
    """A real store with a champion (the better of LR and RF) and the other version registered."""
    directory = tmp_path_factory.mktemp("api")
    config = write_test_config(directory, api__reload_interval_seconds=0.01)
    settings, _ = load_settings_and_contract(config)
    from heart_pipeline.tasks.promote import promote_best_model

    tracked, evaluations, prepared = build_candidates(settings, clean_csv, "api")
    decision = promote_best_model(tracked, evaluations, prepared, settings)
    assert decision.promoted
    client = mlflow.MlflowClient(settings.tracking_uri)
    store = {"client": client, "config": config, "directory": directory, "settings": settings}
    other = next(t.version for t in tracked if t.version != decision.challenger_version)
    return {**store, "champion": decision.challenger_version, "other": other}


@pytest.fixture(scope="module")
def api(served: dict) -> Iterator[TestClient]:
    previous = os.environ.pop(TOKEN_ENV, None)
    os.environ[TOKEN_ENV] = TOKEN
    try:
        with TestClient(create_app(str(served["config"])), raise_server_exceptions=False) as client:
            yield client
    finally:
        os.environ.pop(TOKEN_ENV, None)
        if previous is not None:
            os.environ[TOKEN_ENV] = previous


def serving_the_champion(api: TestClient, served: dict) -> str:
    """The champion loaded and serving: each test starts from it, whatever ran before in this app."""
    served["client"].set_registered_model_alias("heart-disease", "champion", served["champion"])
    time.sleep(0.05)  # past api.reload_interval_seconds
    health = api.get("/health")
    assert health.status_code == 200 and health.json()["serving_version"] == served["champion"], health.text
    return served["champion"]


@pytest.mark.e2e
def test_health_scores_the_probe_patient(api: TestClient, served: dict) -> None:
    response = api.get("/health")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert body["champion_version"] == body["serving_version"] == served["champion"] == champion_of(served)
    assert 0 < body["probe_probability"] < 1
    predicted = api.post("/predict", json=README_PATIENT).json()
    assert predicted["predictions"][0]["probability"] == pytest.approx(body["probe_probability"], abs=1e-12)


def model_files(served: dict, version: str) -> list[Path]:
    location = urlsplit(served["client"].get_model_version_download_uri("heart-disease", version)).path
    return [p for p in Path(location).rglob("*") if p.is_file()]


@pytest.mark.e2e
def test_a_champion_that_cannot_load_is_refused_and_the_last_good_one_serves(api: TestClient, served: dict) -> None:
    client, good, broken = served["client"], serving_the_champion(api, served), served["other"]
    weights = [p for p in model_files(served, broken) if p.suffix in (".skops", ".pkl")]
    assert weights, "no model file found for the version to break"
    original = weights[0].read_bytes()
    weights[0].write_bytes(original[: len(original) // 2])  # a truncated (tampered) model file
    client.set_registered_model_alias("heart-disease", "champion", broken)
    try:
        time.sleep(0.05)
        health = api.get("/health")
        assert health.status_code == 503
        body = health.json()
        assert body["status"] == "degraded"
        assert (body["champion_version"], body["serving_version"]) == (broken, good)
        assert f"v{broken} refused" in body["reason"] and f"v{good}" in body["note"]
        predicted = api.post("/predict", json=README_PATIENT)
        assert predicted.status_code == 200 and predicted.json()["model_version"] == good
    finally:
        weights[0].write_bytes(original)
        client.set_registered_model_alias("heart-disease", "champion", good)
    time.sleep(0.05)
    assert api.get("/health").status_code == 200


@pytest.mark.e2e
def test_a_cloudpickle_champion_is_refused_and_the_last_good_one_serves(api: TestClient, served: dict) -> None:
    """A working model in cloudpickle format, carrying the champion's own tags: only the trusted loader stops it."""
    from heart_pipeline.tracking.registry import load_model_version, tracking_store

    client, good, uri = served["client"], serving_the_champion(api, served), served["settings"].tracking_uri
    with tracking_store(uri):
        model = load_model_version(uri, "heart-disease", good)
        with mlflow.start_run() as run:
            info = mlflow.sklearn.log_model(model, name="model", serialization_format="cloudpickle")
        tags = client.get_model_version("heart-disease", good).tags
        pickled = str(
            client.create_model_version("heart-disease", info.model_uri, run_id=run.info.run_id, tags=tags).version
        )
    client.set_registered_model_alias("heart-disease", "champion", pickled)
    try:
        time.sleep(0.05)
        health = api.get("/health")
        assert health.status_code == 503, health.text
        assert health.json()["serving_version"] == good and "cloudpickle" in health.json()["reason"]
        predicted = api.post("/predict", json=README_PATIENT)
        assert predicted.status_code == 200 and predicted.json()["model_version"] == good
    finally:
        client.set_registered_model_alias("heart-disease", "champion", good)


@pytest.mark.e2e
def test_no_champion_at_all_is_503(bare: TestClient) -> None:
    health = bare.get("/health")
    assert health.status_code == 503 and health.json()["status"] == "unavailable"
    assert "champion" in health.json()["reason"]
    assert bare.post("/predict", json=README_PATIENT).status_code == 503


def wait_for_job(api: TestClient, status_url: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = api.get(status_url, headers=auth()).json()
        if status["state"] != "running":
            return status
        time.sleep(1)
    raise AssertionError(f"{status_url} still running after {timeout} s")


@pytest.mark.e2e
def test_ingest_runs_the_check_in_the_background(
    api: TestClient, served: dict, clean_csv: Path, prefect_server: str, monkeypatch
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", prefect_server)  # the child process reports to the test's server
    started = time.monotonic()
    accepted = api.post("/ingest", content=clean_csv.read_bytes(), headers={**auth(), "content-type": "text/csv"})
    assert accepted.status_code == 202, accepted.text
    assert time.monotonic() - started < 5  # the flow is not run inside the request
    assert accepted.json()["mode"] == "embedded"  # no Prefect API given to the app: a background check
    bad = api.post("/ingest", content=b"age,sex\n1,0\n", headers={**auth(), "content-type": "text/csv"})
    assert bad.status_code == 202
    passed = wait_for_job(api, accepted.json()["status_url"])
    assert passed["state"] == "passed", passed
    assert passed["result"]["decision"] == "passed"
    failed = wait_for_job(api, bad.json()["status_url"])
    assert failed["state"] == "failed" and "a different dataset" in failed["reason"]  # 2 of 14 columns (issue 19)
    latest = api.get("/quality-checks")
    assert latest.status_code == 200 and latest.json()["id"] in (accepted.json()["job_id"], bad.json()["job_id"])
    for text in (json.dumps(passed), json.dumps(failed), latest.text):
        assert str(served["directory"]) not in text


@pytest.mark.e2e
def test_preprocess_gives_the_features_the_classifier_sees(api: TestClient) -> None:
    response = api.post("/preprocess", json=[README_PATIENT, README_PATIENT])
    assert response.status_code == 200
    body = response.json()
    assert len(body["rows"]) == 2 and len(body["rows"][0]) == len(body["columns"]) > 13


# --- Fuzzing: property-based, driven by the same contract that builds the schema. ---


_, CONTRACT = load_settings_and_contract()
FEATURES = [c for c in CONTRACT.columns if c != "target"]
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.text(max_size=8),
    st.floats(allow_nan=True, allow_infinity=True),
)
ANY_JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12,
)


def _field(column: str) -> st.SearchStrategy:
    values = CONTRACT.value_set(column)
    if values is not None:
        return st.sampled_from(values)
    low, high = CONTRACT.bounds(column)
    return st.floats(min_value=low, max_value=high, allow_nan=False)


VALID_RECORD = st.fixed_dictionaries({c: _field(c) for c in FEATURES})


@st.composite
def perturbed_record(draw: st.DrawFn) -> dict:
    record = dict(draw(VALID_RECORD))
    for _ in range(draw(st.integers(0, 3))):
        column = draw(st.sampled_from([*FEATURES, "unexpected"]))
        action = draw(st.sampled_from(["replace", "delete"]))
        if action == "delete":
            record.pop(column, None)
        else:
            record[column] = draw(ANY_JSON)
    return record


BODIES = st.one_of(VALID_RECORD, perturbed_record(), st.lists(perturbed_record(), max_size=3), ANY_JSON)


@pytest.mark.e2e
@hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=BODIES, endpoint=st.sampled_from(["/predict", "/preprocess"]))
def test_fuzzed_payloads_never_cause_a_server_error(api: TestClient, body: object, endpoint: str) -> None:
    response = api.post(
        endpoint, content=json.dumps(body, allow_nan=True), headers={"content-type": "application/json"}
    )
    assert response.status_code in (200, 422), (response.status_code, response.text[:300])
    assert len(response.content) < 8192
    if response.status_code == 200 and endpoint == "/predict":
        assert all(0 <= p["probability"] <= 1 for p in response.json()["predictions"])


@pytest.mark.e2e
def test_the_model_card_is_served_offline_for_the_champion_and_any_version(api: TestClient, served: dict) -> None:
    champion = serving_the_champion(api, served)
    page = api.get("/model-card")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert f"v{served['champion']}" in page.text and "Intended use" in page.text and "@champion" in page.text
    assert page_urls(page.text) == []  # nothing to fetch: no script, image, font or stylesheet link
    other = api.get("/model-card", params={"version": served["other"], "format": "markdown"})
    assert other.status_code == 200 and other.text.startswith(f"# Model card: heart-disease v{served['other']}")
    assert api.get("/model-card", params={"version": "9999"}).status_code == 404
    assert api.get("/model-card", params={"version": "../x"}).status_code == 422
    assert champion


def test_ingest_places_are_taken_atomically(tmp_path: Path) -> None:
    """Uploads still streaming hold their place: a limit of two admits two, whatever the interleaving."""
    settings = load_config(write_test_config(tmp_path))
    jobs = IngestJobs(settings, Retention(keep_last=5, max_age_days=1), max_running=2)
    assert [jobs.reserve() for _ in range(4)] == [True, True, False, False]
    jobs.release()
    assert jobs.reserve() and not jobs.reserve()


@pytest.mark.e2e
def test_predictions_are_recorded_for_monitoring_a_window_at_a_time(served: dict, tmp_path: Path) -> None:
    config = yaml.safe_load(Path(served["config"]).read_text())
    config["monitoring"]["api_window_records"] = 3
    windowed = tmp_path / "config.yaml"
    windowed.write_text(yaml.safe_dump(config))
    settings = load_config(windowed)
    before = int(time.time() * 1000)
    with TestClient(create_app(str(windowed)), raise_server_exceptions=False) as client:
        for _ in range(3):  # 2 records each: the window of 3 is recorded after the second request
            assert client.post("/predict", json=[README_PATIENT, README_PATIENT]).status_code == 200
    # leaving the client stops the app, which records the last, partial window
    batches = batches_between(settings, before, int(time.time() * 1000) + 1)
    assert [(b.summary["source"], b.summary["rows"]) for b in batches] == [("api", 4), ("api", 2)]
    assert {b.summary["model_version"] for b in batches} == {served["champion"]}
    assert batches[0].summary["columns"]["age"]["counts"], "the batch is summarised against the training profile"
