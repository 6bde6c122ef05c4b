"""Promotion gate, rollback, batch scoring and the API against a real MLflow store.

The candidates are built by calling the steps' plain functions directly (no Prefect needed),
which is also the proof that the steps are usable outside the flows.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from heart_pipeline.config import load_settings_and_contract
from heart_pipeline.errors import PipelineError
from heart_pipeline.tasks.promote import promote_best_model
from heart_pipeline.tracking.registry import CHAMPION, rollback_champion
from tests.helpers import BIN, build_candidates, cli_env, with_changes, write_test_config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, clean_csv: Path) -> dict:
    """A store with a good champion, plus a crippled (near-random) pair of candidates registered.

    Built once; tests that move the alias get their own copy (``store``), so no test depends on another's order.
    """
    directory = tmp_path_factory.mktemp("lifecycle")
    config = write_test_config(directory)
    settings, _ = load_settings_and_contract(config)
    good = build_candidates(settings, clean_csv, "good")
    first = promote_best_model(*good, settings)
    crippled_settings = settings.model_copy(
        update={
            "models": settings.models.model_copy(
                update={
                    "logistic_regression": settings.models.logistic_regression.model_copy(update={"C": 1e-4}),
                    "random_forest": settings.models.random_forest.model_copy(
                        update={"n_estimators": 1, "max_depth": 1}
                    ),
                }
            )
        }
    )
    bad = build_candidates(crippled_settings, clean_csv, "bad")
    return {
        "config": config,
        "settings": settings,
        "good": good,
        "bad": bad,
        "first": first,
        "client": mlflow.MlflowClient(settings.tracking_uri),
        "directory": directory,
    }


@pytest.fixture
def store(template: dict, tmp_path: Path) -> dict:
    """A private copy of the template's registry (the artifacts are shared and only read)."""
    import shutil

    shutil.copyfile(template["directory"] / "mlflow.db", tmp_path / "mlflow.db")
    config = write_test_config(
        tmp_path, mlflow__artifact_root=str(template["directory"] / "mlartifacts"), outputs__runs_dir=str(tmp_path)
    )
    settings, _ = load_settings_and_contract(config)
    return {**template, "config": config, "settings": settings, "client": mlflow.MlflowClient(settings.tracking_uri)}


def champion_of(store: dict) -> str:
    return str(store["client"].get_model_version_by_alias("heart-disease", CHAMPION).version)


def test_first_model_is_promoted_when_it_passes_the_floors(store: dict) -> None:
    decision = store["first"]
    assert decision.promoted and decision.champion_version_before is None
    # The higher CV ROC-AUC, unless the difference is not significant: then the tie rule (higher sensitivity).
    key = "test_recall" if decision.tie else "cv_roc_auc_mean"
    assert decision.challenger == max(store["good"][1], key=lambda e: e.metrics[key]).name
    version = store["client"].get_model_version("heart-disease", decision.challenger_version)
    assert version.tags["promotion.decision"] == "promoted"
    assert decision.comparison is not None and 0 <= decision.comparison.p_value <= 1


def test_gate_refuses_a_worse_model_and_keeps_the_champion(store: dict) -> None:
    champion = champion_of(store)
    # Floors off, so only the comparison with today's champion can refuse it.
    settings = with_changes(store["settings"], promotion={"floors": {}})
    decision = promote_best_model(*store["bad"], settings)
    assert not decision.promoted
    assert champion_of(store) == champion
    assert any("worse than margin" in r for r in decision.reasons)
    tags = store["client"].get_model_version("heart-disease", decision.challenger_version).tags
    assert tags["promotion.decision"] == "rejected"
    assert decision.champion_metrics is not None and decision.champion_metrics["test_roc_auc"] > 0.8
    description = store["client"].get_model_version("heart-disease", decision.challenger_version).description
    assert description.splitlines()[0].startswith(f"{decision.challenger} v{decision.challenger_version}: REJECTED")
    assert "## Model" in description and "## Promotion\n" in description and "Champion before: v" in description
    assert "worse than margin" in description


def test_gate_refuses_a_model_below_a_floor(store: dict) -> None:
    champion = champion_of(store)
    settings = with_changes(store["settings"], promotion={"floors": {"test_roc_auc": 0.999}})
    decision = promote_best_model(*store["good"], settings)
    assert not decision.promoted
    assert any("< floor 0.999" in r for r in decision.reasons)
    assert champion_of(store) == champion


def test_gate_promotes_a_better_model_then_rollback_restores(store: dict) -> None:
    client = store["client"]
    bad_version = store["bad"][0][0].version
    client.set_registered_model_alias("heart-disease", CHAMPION, bad_version)  # a weak model serves today
    decision = promote_best_model(*store["good"], store["settings"])
    assert decision.promoted and decision.champion_version_before == bad_version
    assert champion_of(store) == decision.challenger_version
    assert (
        client.get_model_version("heart-disease", decision.challenger_version).tags["promotion.previous_champion"]
        == bad_version
    )

    before, after = rollback_champion(store["settings"].tracking_uri, "heart-disease")
    assert (before, after) == (decision.challenger_version, bad_version)
    assert champion_of(store) == bad_version
    with pytest.raises(PipelineError, match="no previous champion"):
        rollback_champion(store["settings"].tracking_uri, "heart-disease")
    rollback_champion(store["settings"].tracking_uri, "heart-disease", to_version=decision.challenger_version)
    assert champion_of(store) == decision.challenger_version


def test_rollback_cli(store: dict, prefect_server: str, session_dir: Path) -> None:
    env = cli_env(prefect_server, session_dir / "prefect-home")
    current = champion_of(store)
    target = store["good"][0][1].version if store["good"][0][1].version != current else store["good"][0][0].version
    result = subprocess.run(
        [str(BIN / "heart-pipeline"), "rollback", "--json", "--to-version", target, "--config", str(store["config"])],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-1500:]
    assert json.loads(result.stdout)["champion_after"] == target
    assert champion_of(store) == target
    bad = subprocess.run(
        [str(BIN / "heart-pipeline"), "rollback", "--to-version", "999", "--config", str(store["config"])],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1] == "heart-pipeline: error: heart-disease: version 999 does not exist"
    rollback_champion(store["settings"].tracking_uri, "heart-disease", to_version=current)


@pytest.fixture(scope="module")
def patients(template: dict, clean_frame: pd.DataFrame) -> Path:
    frame = clean_frame.drop(columns="target").head(40).copy()
    frame.loc[5, "age"] = 500  # out of range
    frame.loc[9, "ca"] = 7  # unknown code
    frame["site"] = ["north", "south"] * 20  # evaluation.site_column: not a feature, kept beside each prediction
    path = template["directory"] / "patients.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def scored(template: dict, patients: Path, prefect_server: str) -> dict:
    from heart_pipeline.flows.batch_scoring import heart_batch_scoring

    state = heart_batch_scoring(
        data_path=str(patients),
        out_path=str(template["directory"] / "out" / "pred.csv"),
        config_path=str(template["config"]),
        return_state=True,
    )
    assert state.is_completed(), state.message
    return state.result()


def test_batch_scoring_scores_valid_rows_and_quarantines_the_rest(scored: dict, template: dict) -> None:
    predictions = pd.read_csv(scored["predictions_path"])
    assert (scored["rows_in"], scored["rows_scored"], scored["rows_quarantined"]) == (40, 38, 2)
    assert len(predictions) == 38
    assert {"probability", "label", "model_version"} <= set(predictions.columns)
    # Each prediction keeps its row's site (rows 5 and 9 were quarantined: the sites still line up).
    sites = pd.read_csv(template["directory"] / "patients.csv")["site"].drop(index=[5, 9]).tolist()
    assert predictions["site"].tolist() == sites
    assert predictions["model_version"].astype(str).unique().tolist() == [champion_of(template)]
    assert predictions["probability"].between(0, 1).all()
    quarantine = pd.read_csv(scored["quarantine_path"])
    assert sorted(quarantine["column"]) == ["age", "ca"]
    assert pd.read_csv(scored["copied_to"]).equals(predictions)


def test_batch_scoring_without_a_champion_fails_clearly(tmp_path: Path, patients: Path, prefect_server: str) -> None:
    from heart_pipeline.flows.batch_scoring import heart_batch_scoring

    config = write_test_config(tmp_path)
    state = heart_batch_scoring(data_path=str(patients), config_path=str(config), return_state=True)
    assert state.is_failed()
    assert "run `heart-pipeline train` first" in state.message


@pytest.fixture(scope="module")
def api(template: dict):
    from fastapi.testclient import TestClient

    from heart_pipeline.serving.app import create_app

    with TestClient(create_app(str(template["config"])), raise_server_exceptions=False) as client:
        yield client


def test_api_matches_batch_scoring(api, scored: dict) -> None:
    predictions = pd.read_csv(scored["predictions_path"])
    features = predictions.drop(columns=["site", "probability", "label", "model_version"])
    records = json.loads(features.to_json(orient="records"))
    response = api.post("/predict", json=records)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == str(predictions["model_version"].iloc[0])
    got = [p["probability"] for p in body["predictions"]]
    assert got == pytest.approx(predictions["probability"].tolist(), abs=1e-12)
    assert [p["label"] for p in body["predictions"]] == predictions["label"].tolist()
    single = api.post("/predict", json=records[0]).json()
    assert single["predictions"][0]["probability"] == pytest.approx(got[0], abs=1e-12)


def test_api_health_reports_the_champion(api, template: dict) -> None:
    response = api.get("/health")
    assert response.status_code == 200
    assert response.json()["champion_version"] == champion_of(template)
