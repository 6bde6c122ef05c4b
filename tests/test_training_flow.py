"""End-to-end: the real flow on a real Prefect server (test harness), a real MLflow store, real GE."""

from __future__ import annotations

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import pytest

from tests.helpers import BIN, cli_env, write_test_config

EXPECTED_OUTPUTS = [
    "data/processed_heart.csv",
    "data/X_train_clean.csv",
    "data/X_test_clean.csv",
    "data/y_train.csv",
    "data/y_test.csv",
    "validation/validation_report.json",
    "validation/report.html",
    "evaluation/logistic_regression/roc_curve.png",
    "evaluation/logistic_regression/odds_ratios.png",
    "evaluation/random_forest/confusion_matrix.png",
    "evaluation/random_forest/permutation_importance.png",
    "evaluation/logistic_regression/metrics.csv",
]

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def trained(prefect_server: str, tmp_path_factory: pytest.TempPathFactory, bundled_csv: Path) -> dict:
    from heart_pipeline.flows.training import heart_training

    directory = tmp_path_factory.mktemp("e2e")
    config = write_test_config(directory)
    state = heart_training(data_path=str(bundled_csv), config_path=str(config), return_state=True)
    assert state.is_completed(), state.message
    return {"result": state.result(), "directory": directory, "state": state}


def test_flow_completes_and_writes_run_folder(trained: dict) -> None:
    result = trained["result"]
    run_dir = Path(result["run_dir"])
    for relative in EXPECTED_OUTPUTS:
        assert (run_dir / relative).exists(), relative
    # UCI's Cleveland file leaves ca missing in 4 rows and thal in 2: quarantined, the rest trained.
    assert result["validation"]["rows_quarantined"] == 6
    assert result["validation"]["rows_kept"] == 297


def test_mlflow_store_holds_both_models(trained: dict) -> None:
    tracking_uri = f"sqlite:///{trained['directory'] / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("heart-disease")
    runs = client.search_runs([experiment.experiment_id])
    assert {r.data.tags["algorithm"] for r in runs} == {"logistic_regression", "random_forest"}
    flow_run_id = str(trained["state"].state_details.flow_run_id)
    for run in runs:
        assert run.data.tags["prefect.flow_run_id"] == flow_run_id
        assert len(run.data.tags["data.fingerprint"]) == 64
        assert len(run.data.tags["mlflow.source.git.commit"]) == 40
        for metric in (
            "test_accuracy",
            "test_f1",
            "test_precision",
            "test_recall",
            "test_roc_auc",
            "test_log_loss",
            "cv_roc_auc_mean",
        ):
            assert metric in run.data.metrics, metric
        assert 0.6 < run.data.metrics["test_roc_auc"] <= 1.0
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        # The same file names in every run, at the root, so MLflow's comparison shows them image to image.
        assert {"roc_curve.png", "confusion_matrix.png", "calibration.png"} <= artifacts
        assert "metrics/metrics_with_intervals.json" in {
            a.path for a in client.list_artifacts(run.info.run_id, "metrics")
        }
        # The runs table shows the headline numbers; interval bounds live in the table artifact.
        assert not [k for k in run.data.metrics if k.endswith(("_ci95_low", "_ci95_high", "_std"))]
        # The validation report is in the flow run's one data-quality run (see the next test), not per model.
        assert "data_quality/report.html" not in {
            a.path for a in client.list_artifacts(run.info.run_id, "data_quality")
        }
        assert run.inputs.dataset_inputs, "the training data is logged as an MLflow input"
    versions = client.search_model_versions("name='heart-disease'")
    assert sorted(v.tags["algorithm"] for v in versions) == ["logistic_regression", "random_forest"]
    champion = client.get_model_version_by_alias("heart-disease", "champion")
    assert champion.tags["promotion.decision"] == "promoted"
    assert 0 < float(champion.tags["decision_threshold"]) < 1


def test_mlflow_experiment_reads_as_model_training(trained: dict) -> None:
    """Opens on its runs (not the GenAI view); unique readable run names; MLflow's own source fields;
    a description with the headline numbers; the validation report once per flow run."""
    client = mlflow.MlflowClient(f"sqlite:///{trained['directory'] / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("heart-disease")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id])
    fingerprint = trained["result"]["data_fingerprint"]
    names = [r.info.run_name for r in runs]
    assert len(set(names)) == len(names) == 2
    for run in runs:
        algorithm = run.data.tags["algorithm"]
        assert re.fullmatch(rf"{algorithm}-{fingerprint[:8]}-\d{{8}}-\d{{6}}", run.info.run_name)
        assert run.data.tags["mlflow.source.name"] == "prefect flow heart-training"
        assert run.data.tags["mlflow.source.type"] == "LOCAL"
        note = run.data.tags["mlflow.note.content"]
        assert "test ROC-AUC" in note and "CV ROC-AUC" in note
        assert f"/runs/flow-run/{trained['state'].state_details.flow_run_id}" in note, "a clickable Prefect link"
        (dataset_input,) = run.inputs.dataset_inputs
        assert dataset_input.dataset.digest == fingerprint[:36]
        assert not client.list_artifacts(run.info.run_id, "data_quality/validation_report.json")
    logged_models = client.search_logged_models(experiment_ids=[experiment.experiment_id])
    assert {m.name for m in logged_models} == {"logistic_regression", "random_forest"}, "named after the algorithm"
    quality = client.get_experiment_by_name("heart-disease-data-quality")
    (evidence,) = client.search_runs([quality.experiment_id])
    assert {a.path for a in client.list_artifacts(evidence.info.run_id, "data_quality")} >= {
        "data_quality/validation_report.json",
        "data_quality/report.html",
    }
    for run in runs:
        link = run.data.tags["data_quality.run_url"]
        # every link opens MLflow's classic view, not its GenAI one
        assert link.endswith(f"{evidence.info.run_id}?workflowType=machine_learning"), link
    result = trained["result"]
    assert result["mlflow_experiment_url"].endswith("/runs?workflowType=machine_learning")
    assert "compare-runs?runs=" in result["mlflow_compare_url"]
    assert all(m["version_url"].endswith("?workflowType=machine_learning") for m in result["models"].values())


def test_registered_model_scores_raw_rows(trained: dict, bundled_csv: Path) -> None:
    import pandas as pd

    from heart_pipeline.tracking.registry import tracking_store

    with tracking_store(f"sqlite:///{trained['directory'] / 'mlflow.db'}"):
        model = mlflow.pyfunc.load_model("models:/heart-disease@champion")
    frame = pd.read_csv(bundled_csv).dropna()
    rows, labels = frame.drop(columns="target").head(60), frame["target"].head(60)
    predictions = model.predict(rows.astype("float64"))
    # Labels are 0/1 and agree with the truth far better than chance (an all-zero model would fail here).
    assert set(predictions.tolist()) == {0, 1}
    assert (predictions == labels.to_numpy()).mean() > 0.7


def test_two_concurrent_runs_keep_separate_complete_outputs(
    prefect_server: str, tmp_path: Path, clean_csv: Path, session_dir: Path
) -> None:
    config = write_test_config(tmp_path)
    env = cli_env(prefect_server, session_dir / "prefect-home")
    command = [str(BIN / "heart-pipeline"), "train", "--data", str(clean_csv), "--config", str(config)]

    def run(_: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, range(2)))
    for result in results:
        assert result.returncode == 0, result.stderr[-2000:]
    run_dirs = sorted((tmp_path / "runs" / "heart-training").iterdir())
    assert len(run_dirs) == 2
    for run_dir in run_dirs:
        for relative in EXPECTED_OUTPUTS:
            assert (run_dir / relative).exists(), f"{run_dir.name}/{relative}"
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    versions = client.search_model_versions("name='heart-disease'")
    # The same data, settings and code: each algorithm is registered once, by whichever run got there
    # first (the registry lease serialises the look-up), though both runs logged their own MLflow runs.
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert sorted(v.tags["algorithm"] for v in versions) == ["logistic_regression", "random_forest"]
    experiment = client.get_experiment_by_name("heart-disease")
    assert len(client.search_runs([experiment.experiment_id])) == 4


def test_training_runs_on_a_local_dask_cluster(prefect_server: str, tmp_path: Path, clean_csv: Path) -> None:
    """CV folds and forest trees run on local Dask worker processes; the run completes and registers both."""
    from heart_pipeline.flows.training_dask import heart_training_dask

    config = write_test_config(tmp_path)
    state = heart_training_dask(data_path=str(clean_csv), config_path=str(config), return_state=True)
    assert state.is_completed(), state.message
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert len(client.search_model_versions("name='heart-disease'")) == 2


def test_a_cached_validation_still_writes_a_complete_run_folder(
    prefect_server: str, tmp_path: Path, clean_csv: Path
) -> None:
    import shutil

    from heart_pipeline.flows.training import heart_training

    config = write_test_config(tmp_path)
    first = heart_training(data_path=str(clean_csv), config_path=str(config), models=["logistic_regression"])
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    versions_before = sorted(v.version for v in client.search_model_versions("name='heart-disease'"))
    champion_before = client.get_model_version_by_alias("heart-disease", "champion").version
    shutil.rmtree(tmp_path / "runs")  # a cached verdict must not depend on an earlier run's files
    state = heart_training(
        data_path=str(clean_csv), config_path=str(config), models=["logistic_regression"], return_state=True
    )
    assert state.is_completed(), state.message
    second = state.result()
    for relative in ("validation/validation_report.json", "data/processed_heart.csv", "data/y_test.csv"):
        assert Path(second["run_dir"], relative).exists(), relative
    assert first["data_fingerprint"] == second["data_fingerprint"]
    assert task_states(state.state_details.flow_run_id)["validate"] == "Cached"
    # No churn: the same data, config and code register no new version and leave @champion where it was.
    assert sorted(v.version for v in client.search_model_versions("name='heart-disease'")) == versions_before
    assert client.get_model_version_by_alias("heart-disease", "champion").version == champion_before


def task_states(flow_run_id: object) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    # Prefect names a task run "<task name>-<3 hex characters>" unless the task has a fixed run name.
    return {re.sub(r"-[0-9a-f]{3}$", "", run.name): run.state.name for run in runs}


def test_every_registered_version_has_a_model_card_that_opens_offline(trained: dict, tmp_path: Path) -> None:
    from html.parser import HTMLParser

    client = mlflow.MlflowClient(f"sqlite:///{trained['directory'] / 'mlflow.db'}")
    for model in trained["result"]["models"].values():
        version = client.get_model_version(model["registered_model"], model["version"])
        assert version.tags.get("model_card.updated"), version.version
        local = Path(client.download_artifacts(version.run_id, "model_card", str(tmp_path / str(version.version))))
        page = (local / "model_card.html").read_text()
        assert f"v{version.version}" in page and "Intended use" in page and "Not for" in page
        assert "Known limitations" in page and "Training data" in page and "[" in page  # intervals

        class Urls(HTMLParser):
            found: list[str] = []

            def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
                self.found += [v or "" for k, v in attrs if k in ("src", "href")]

        parser = Urls()
        parser.feed(page)
        assert parser.found == [], parser.found
        assert "ROC-AUC" in (local / "model_card.md").read_text()
