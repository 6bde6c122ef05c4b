"""Retraining against an existing, different champion on a real SQLite MLflow store: another seed,
another file (Kaggle-coded, disease label 0), an older champion with another metric set, a CV tie, and
the real flow on the Prefect harness. Each completes, or leaves @champion where it was; and every
version's description says, in its first line, what it is, its own decision and its own numbers."""

from __future__ import annotations

import shutil
from dataclasses import asdict, replace
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from heart_pipeline.config import Settings, default_codebook, load_settings_and_contract
from heart_pipeline.data_contract.importers import from_ours
from heart_pipeline.evidence.render import training_summary_markdown, training_terminal_summary
from heart_pipeline.tasks.promote import LabelAlarm, promote_and_plan
from heart_pipeline.tracking.policy import PROMOTED
from heart_pipeline.tracking.registry import CHAMPION, CODEBOOK_TAG, DECISION_TAG, LABEL_TAG
from tests.helpers import build_candidates, with_changes, write_test_config

pytestmark = pytest.mark.e2e
NAME = "heart-disease"
VERDICTS = {"promoted": "PROMOTED", "not selected": "NOT SELECTED", "rejected": "REJECTED"}


def champion(client: mlflow.MlflowClient) -> str:
    return str(client.get_model_version_by_alias(NAME, CHAMPION).version)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, clean_csv: Path) -> dict:
    """A store whose champion was trained with seed 42, and seed-24 candidates registered, not yet decided."""
    directory = tmp_path_factory.mktemp("retrain")
    settings, _ = load_settings_and_contract(write_test_config(directory, split__seed=42))
    first = build_candidates(settings, clean_csv, "seed-42")
    first_plan = promote_and_plan(*first, settings)
    second = build_candidates(with_changes(settings, split={"seed": 24}), clean_csv, "seed-24")
    return {"directory": directory, "settings": settings, "first": first, "first_plan": first_plan, "second": second}


@pytest.fixture
def store(template: dict, tmp_path: Path) -> dict:
    """A private copy of the template's registry (artifacts shared, only read)."""
    shutil.copyfile(template["directory"] / "mlflow.db", tmp_path / "mlflow.db")
    config = write_test_config(
        tmp_path, mlflow__artifact_root=str(template["directory"] / "mlartifacts"), outputs__runs_dir=str(tmp_path)
    )
    settings, _ = load_settings_and_contract(config)
    return {**template, "config": config, "settings": settings, "client": mlflow.MlflowClient(settings.tracking_uri)}


def completes_or_leaves_the_alias(store: dict, candidates: tuple, settings: Settings) -> object:
    """Promote ``candidates``; a refusal must leave @champion where it was. Returns the plan (or None)."""
    before = champion(store["client"])
    try:
        plan = promote_and_plan(*candidates, settings)
    except LabelAlarm:
        assert champion(store["client"]) == before
        return None
    decision = plan.decision
    assert champion(store["client"]) == (decision.challenger_version if decision.promoted else before)
    assert plan.markdown.startswith("# Promotion:") and not plan.after_commit
    models = [
        {"name": t.name, "version": t.version, "metrics": e.metrics, "threshold": e.threshold, "run_url": ""}
        for t, e in zip(candidates[0], candidates[1], strict=True)
    ]
    training_summary_markdown(models, asdict(decision), {})
    assert f"v{decision.challenger_version}" in training_terminal_summary({"promotion": asdict(decision)})
    return plan


def test_every_version_says_its_own_decision_and_numbers(template: dict) -> None:
    client = mlflow.MlflowClient(template["settings"].tracking_uri)
    first_versions = {t.version for t in template["first"][0]}
    for version in client.search_model_versions(f"name='{NAME}'"):
        if version.version not in first_versions:
            continue  # the seed-24 candidates are not decided yet
        first_line = version.description.splitlines()[0]
        metrics = client.get_run(version.run_id).data.metrics
        decision = version.tags[DECISION_TAG]
        assert first_line.startswith(f"{version.tags['algorithm']} v{version.version}: {VERDICTS[decision]}")
        assert f"test ROC-AUC {metrics['test_roc_auc']:.3f}, sensitivity {metrics['test_recall']:.3f}" in first_line
        assert f"CV ROC-AUC {metrics['cv_roc_auc_mean']:.3f}" in first_line
    decided = template["first_plan"].decision
    assert champion(client) == decided.challenger_version and decided.outcome == PROMOTED


def test_retrain_with_another_seed(store: dict) -> None:
    plan = completes_or_leaves_the_alias(store, store["second"], with_changes(store["settings"], split={"seed": 24}))
    assert plan is not None and plan.decision.champion_metrics is not None
    # The crash of issue 17: interval bounds on the challenger's side only are shown as "-" for the champion.
    assert "| test\\_accuracy\\_ci95\\_low |" in plan.markdown
    row = next(line for line in plan.markdown.splitlines() if line.startswith("| test\\_accuracy\\_ci95\\_low |"))
    assert row.endswith("| - | - |")
    first_line = store["client"].get_model_version(NAME, plan.decision.challenger_version).description.splitlines()[0]
    assert first_line.startswith(f"{plan.decision.challenger} v{plan.decision.challenger_version}: ")


def test_retrain_from_a_kaggle_coded_file_with_disease_label_0(
    store: dict, clean_frame: pd.DataFrame, tmp_path: Path
) -> None:
    kaggle = from_ours(clean_frame, default_codebook().foreign_coding("kaggle"))
    path = tmp_path / "kaggle-heart.csv"
    kaggle.astype("Int64", errors="ignore").to_csv(path, index=False)
    settings = store["settings"].with_disease_label(0)
    candidates = build_candidates(with_changes(settings, split={"seed": 24}), path, "kaggle")
    completes_or_leaves_the_alias(store, candidates, settings)


def test_retrain_against_an_older_champion_with_another_metric_set(store: dict) -> None:
    """A champion registered by an older pipeline: no metric or label tags, a description with other keys."""
    client, current = store["client"], champion(store["client"])
    for tag in ("test_roc_auc", "cv_roc_auc_mean", CODEBOOK_TAG, LABEL_TAG):
        client.delete_model_version_tag(NAME, current, tag)
    old = '## Model\nOld model.\n```json\n{"roc_auc": 0.9, "accuracy": 0.8}\n```\n\n## Promotion\nPromoted to @champion'
    client.update_model_version(NAME, current, description=old)
    plan = completes_or_leaves_the_alias(store, store["second"], with_changes(store["settings"], split={"seed": 24}))
    assert plan is not None
    assert any(f"not compared with champion v{current}" in r for r in plan.decision.reasons)
    assert client.get_model_version(NAME, current).description == old, "the old champion's record is its own"


def test_a_cv_tie_is_stated_in_the_artifact_and_the_version_description(store: dict) -> None:
    tracked, evaluations, prepared = store["second"]
    same = evaluations[0].cv_scores["roc_auc"]
    tied = [
        replace(e, cv_scores={**e.cv_scores, "roc_auc": same}, metrics={**e.metrics, "cv_roc_auc_mean": 0.9})
        for e in evaluations
    ]
    settings = with_changes(store["settings"], split={"seed": 24}, promotion={"tie_rule": "higher_sensitivity"})
    plan = completes_or_leaves_the_alias(store, (tracked, tied, prepared), settings)
    assert plan is not None and plan.decision.tie is not None
    assert "**Tie:** CV tie" in plan.markdown and "tie rule higher\\_sensitivity puts" in plan.markdown
    recall = {e.name: e.metrics["test_recall"] for e in tied}
    assert recall[plan.decision.challenger] == max(recall.values())
    client = store["client"]
    first_line = client.get_model_version(NAME, plan.decision.challenger_version).description.splitlines()[0]
    assert "after a CV tie broken by higher_sensitivity" in first_line
    other = next(t for t in tracked if t.version != plan.decision.challenger_version)
    other_line = client.get_model_version(NAME, other.version).description.splitlines()[0]
    assert other_line.startswith(f"{other.name} v{other.version}: ")
    assert "the tie rule higher_sensitivity put" in other_line or "REJECTED, failed a floor" in other_line


def test_the_training_flow_retrains_against_another_seeds_champion(
    store: dict, prefect_server: str, bundled_csv: Path
) -> None:
    """The real flow on the Prefect harness, against the seed-42 champion, with seed 24 and another file."""
    from heart_pipeline.flows.training import heart_training

    before = champion(store["client"])
    state = heart_training(data_path=str(bundled_csv), config_path=str(store["config"]), seed=24, return_state=True)
    assert state.is_completed(), state.message
    promotion = state.result()["promotion"]
    assert champion(store["client"]) == (promotion["challenger_version"] if promotion["promoted"] else before)
