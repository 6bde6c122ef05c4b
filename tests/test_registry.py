"""The registry against a real SQLite MLflow store: trusted loading, retry-safe and churn-free
registration, and promotions that commit only against the champion they compared with.

Every test that moves an alias or registers gets its own store.
"""

from __future__ import annotations

import threading
import zipfile
from pathlib import Path

import mlflow
import mlflow.sklearn
import pytest

from heart_pipeline.config import Settings, load_settings_and_contract
from heart_pipeline.tasks.promote import LabelAlarm, promote_best_model
from heart_pipeline.tracking import registry
from heart_pipeline.tracking.registry import (
    CHAMPION,
    DECISION_TAG,
    LABEL_TAG,
    PREVIOUS_CHAMPION_TAG,
    load_model_version,
)
from heart_pipeline.tracking.trust import SHA256_TAG, UntrustedModelError, row_hashes
from tests.helpers import MarkerWritingModel, build_candidates, with_changes, write_test_config

pytestmark = pytest.mark.e2e
NAME = "heart-disease"


def fresh_settings(directory: Path, **overrides: object) -> Settings:
    settings, _ = load_settings_and_contract(write_test_config(directory, **overrides))
    return settings


def lr_only(settings: Settings, c: float = 0.48) -> Settings:
    models = settings.models.model_copy(
        update={"logistic_regression": settings.models.logistic_regression.model_copy(update={"C": c})}
    )
    return settings.model_copy(
        update={"models": models, "training": settings.training.model_copy(update={"models": ["logistic_regression"]})}
    )


def versions(client: mlflow.MlflowClient) -> list:
    return client.search_model_versions(f"name='{NAME}'")


def champion(client: mlflow.MlflowClient) -> str:
    return str(client.get_model_version_by_alias(NAME, CHAMPION).version)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, clean_csv: Path) -> dict:
    """One store with an LR champion; tests that write get a private copy of its registry."""
    directory = tmp_path_factory.mktemp("registry")
    settings = lr_only(fresh_settings(directory))
    first = build_candidates(settings, clean_csv, "first")
    promote_best_model(*first, settings)
    # Registered, not yet decided: the same data split with another seed, so its test rows overlap
    # the champion's training rows.
    reshuffled = build_candidates(with_changes(settings, split={"seed": 7}), clean_csv, "reshuffled")
    return {"directory": directory, "settings": settings, "first": first, "reshuffled": reshuffled}


@pytest.fixture
def store(template: dict, tmp_path: Path) -> dict:
    """A private copy of the template's registry (its artifacts are shared and only read)."""
    import shutil

    shutil.copyfile(template["directory"] / "mlflow.db", tmp_path / "mlflow.db")
    settings = lr_only(
        fresh_settings(
            tmp_path,
            mlflow__artifact_root=str(template["directory"] / "mlartifacts"),
            outputs__runs_dir=str(tmp_path),
        )
    )
    return {**template, "settings": settings, "client": mlflow.MlflowClient(settings.tracking_uri)}


def register_foreign_model(settings: Settings, model: object, serialization: str, tags: dict[str, str]) -> str:
    """A version registered by someone other than the pipeline, straight through MLflow's API."""
    client = mlflow.MlflowClient(settings.tracking_uri)
    with registry.tracking_store(settings.tracking_uri):  # MLflow resolves the logged model through it
        experiment = client.get_experiment_by_name(settings.mlflow.experiment).experiment_id
        with mlflow.start_run(experiment_id=experiment) as run:
            info = mlflow.sklearn.log_model(
                model, name="model", serialization_format=serialization, pip_requirements=[]
            )
        return str(client.create_model_version(NAME, info.model_uri, run_id=run.info.run_id, tags=tags).version)


def test_a_cloudpickle_champion_is_refused_and_never_runs(store: dict, tmp_path: Path) -> None:
    settings, client = store["settings"], store["client"]
    good = store["first"][0][0].version
    marker = tmp_path / "marker"
    # It even claims the champion's label definition and a digest, so only the format check stops it.
    claimed = {
        k: v for k, v in client.get_model_version(NAME, good).tags.items() if k.startswith(("codebook", "label"))
    }
    evil = register_foreign_model(
        settings, MarkerWritingModel(marker), "cloudpickle", {**claimed, SHA256_TAG: "0" * 64}
    )
    client.set_registered_model_alias(NAME, CHAMPION, evil)

    with pytest.raises(
        UntrustedModelError, match=rf"{NAME} v{evil}: refused to load: serialization format 'cloudpickle'"
    ):
        load_model_version(settings.tracking_uri, NAME, evil)
    assert not marker.exists()
    # Batch scoring and the API load through the same function; the promotion gate re-scores the
    # champion through it too: refused, so today's model replaces it, and the payload never ran.
    decision = promote_best_model(*store["first"], settings)
    assert decision.promoted and champion(client) == good
    assert any(f"v{evil}: refused to load" in r for r in decision.reasons)
    assert not marker.exists()
    # The fault is real: MLflow's own loader runs the payload.
    with registry.tracking_store(settings.tracking_uri):
        mlflow.sklearn.load_model(f"models:/{NAME}/{evil}")
    assert marker.read_text() == "pwned"


def test_a_tampered_skops_champion_is_refused(tmp_path: Path, clean_csv: Path) -> None:
    """Its own store: the test rewrites the champion's artifact."""
    settings = lr_only(fresh_settings(tmp_path))
    promote_best_model(*build_candidates(settings, clean_csv, "t"), settings)
    client = mlflow.MlflowClient(settings.tracking_uri)
    version = champion(client)
    model_file = Path(client.get_model_version_download_uri(NAME, version).removeprefix("file://")) / "model.skops"
    load_model_version(settings.tracking_uri, NAME, version)  # loads before the change
    with zipfile.ZipFile(model_file, "a") as archive:  # still a valid skops file, other bytes
        archive.writestr("extra.bin", b"x")
    with pytest.raises(
        UntrustedModelError, match=rf"v{version}: refused to load: model file changed after registration"
    ):
        load_model_version(settings.tracking_uri, NAME, version)
    with registry.tracking_store(settings.tracking_uri):  # MLflow's own loader does not notice
        assert mlflow.sklearn.load_model(f"models:/{NAME}/{version}") is not None


def test_registration_is_not_repeated_by_a_retry(store: dict, monkeypatch: pytest.MonkeyPatch, clean_csv: Path) -> None:
    """The first attempt dies right after the store created the version (the response is lost)."""
    settings = lr_only(store["settings"], 0.3)  # another model: a new version is due
    before = len(versions(store["client"]))
    create = mlflow.MlflowClient.create_model_version
    calls = []

    def create_then_fail(self: mlflow.MlflowClient, *args: object, **kwargs: object) -> object:
        created = create(self, *args, **kwargs)
        calls.append(created.version)
        if len(calls) == 1:
            raise ConnectionError("connection lost after the version was created")
        return created

    monkeypatch.setattr(mlflow.MlflowClient, "create_model_version", create_then_fail)
    with pytest.raises(ConnectionError):
        build_candidates(settings, clean_csv, "retry")
    monkeypatch.undo()
    # The retry registers the same MLflow run again: it finds the version the first attempt made.
    made = store["client"].get_model_version(NAME, calls[0])
    retried = registry.register_model_version(
        settings.tracking_uri, NAME, made.run_id, made.source, dict(made.tags), "retry"
    )
    assert (retried.version, retried.created) == (str(calls[0]), False)
    assert len(versions(store["client"])) == before + 1 and len(calls) == 1


def test_a_rerun_registers_nothing_and_keeps_the_champion(store: dict, clean_csv: Path) -> None:
    settings, client = store["settings"], store["client"]
    before = {v.version: (v.tags, v.description) for v in versions(client)}
    current = champion(client)
    tracked, evaluations, prepared = build_candidates(settings, clean_csv, "rerun")
    assert [t.version for t in tracked] == [current] and not tracked[0].created
    decision = promote_best_model(tracked, evaluations, prepared, settings)
    assert not decision.promoted and decision.reasons[-1] == f"champion is already this model (v{current})"
    assert champion(client) == current
    assert {v.version: (v.tags, v.description) for v in versions(client)} == before


def test_concurrent_promotions_leave_one_chain(store: dict, clean_csv: Path) -> None:
    """Four promotions at once, each of a different model that passes (margin 1: any passing model
    may replace the champion), against one SQLite store."""
    client, base = store["client"], store["settings"]
    start = champion(client)
    # Fewer fits per candidate (a fixed threshold, 2 CV folds): the test is about the registry.
    settings = with_changes(
        base, promotion={"margin": 1.0, "floors": {}}, threshold={"strategy": "fixed"}, cross_validation={"n_splits": 2}
    )
    candidates = [build_candidates(lr_only(settings, c), clean_csv, f"c{c}") for c in (0.05, 0.1, 1.0, 5.0)]
    decisions: list = []
    errors: list = []

    def promote(candidate: tuple) -> None:
        try:
            decisions.append(promote_best_model(*candidate, settings))
        except Exception as exc:  # noqa: BLE001 (reported below, with the thread's reason)
            errors.append(exc)

    threads = [threading.Thread(target=promote, args=(c,)) for c in candidates]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    promoted = {d.challenger_version for d in decisions if d.promoted}
    assert len(promoted) == 4
    # Walk back from today's champion: every promotion appears once, each replaced the one before it.
    chain, version = [], champion(client)
    while version != start:
        tags = client.get_model_version(NAME, version).tags
        assert tags[DECISION_TAG] == "promoted"
        chain.append(version)
        version = tags[PREVIOUS_CHAMPION_TAG]
    assert sorted(chain) == sorted(promoted)
    for decision in decisions:
        assert client.get_model_version(NAME, decision.challenger_version).tags[PREVIOUS_CHAMPION_TAG] == (
            decision.champion_version_before
        )


def test_a_backwards_champion_stops_the_run_and_nothing_moves(store: dict, clean_csv: Path) -> None:
    """A champion trained on inverted labels meets today's correctly labelled rows."""
    client, settings = store["client"], store["settings"]
    target = settings.data.target
    inverted = build_candidates(
        lr_only(settings, 0.2), clean_csv, "inverted", relabel=lambda f: f.assign(**{target: 1 - f[target]})
    )[0][0].version
    client.set_registered_model_alias(NAME, CHAMPION, inverted)
    before = {str(v.version): v.tags for v in versions(client)}
    with pytest.raises(
        LabelAlarm, match=rf"labels of today's data and of champion v{inverted} disagree: it scores ROC-AUC 0\.[0-4]"
    ):
        promote_best_model(*store["first"], settings)
    assert champion(client) == inverted
    decided = store["first"][0][0].version
    after = {str(v.version): v.tags for v in versions(client)}
    assert after[decided][DECISION_TAG] == "label alarm"
    assert {v: t for v, t in after.items() if v != decided} == {v: t for v, t in before.items() if v != decided}


def test_rows_the_champion_trained_on_are_left_out(store: dict) -> None:
    client = store["client"]
    settings = with_changes(store["settings"], split={"seed": 7}, promotion={"margin": 1.0})
    current = champion(client)
    tracked, evaluations, prepared = store["reshuffled"]
    decision = promote_best_model(tracked, evaluations, prepared, settings)
    seen = int(row_hashes(prepared.x_test).isin(set(row_hashes(store["first"][2].x_train))).sum())
    assert seen > 0
    assert (decision.rows_left_out, decision.rows_compared) == (seen, prepared.n_test - seen)
    assert f"{seen} of today's {prepared.n_test} held-out rows were in v{current}'s training data: left out" in (
        decision.reasons
    )


def test_a_champion_of_another_label_definition_is_not_compared(store: dict) -> None:
    client = store["client"]
    current = champion(client)
    client.set_model_version_tag(NAME, current, LABEL_TAG, "num>=2")
    settings = with_changes(store["settings"], split={"seed": 7})
    decision = promote_best_model(*store["reshuffled"], settings)
    assert any(f"not compared with champion v{current}" in r and "'num>=2'" in r for r in decision.reasons)
    assert decision.promoted and decision.champion_metrics is None
