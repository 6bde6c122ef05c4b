import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from heart_pipeline.config import load_config
from tasks.evaluate import corrected_confidence_interval, evaluate_model, held_out_metrics
from tasks.train import build_model, hyperparameters, train_model

SETTINGS = load_config()


@pytest.fixture(scope="module")
def split_files(tmp_path_factory: pytest.TempPathFactory, clean_frame: pd.DataFrame) -> tuple[str, str]:
    directory = tmp_path_factory.mktemp("split")
    train, test = clean_frame.iloc[:220], clean_frame.iloc[220:]
    train.to_csv(directory / "train.csv", index=False)
    test.to_csv(directory / "test.csv", index=False)
    return str(directory / "train.csv"), str(directory / "test.csv")


def test_seed_hyperparameters_build_without_deprecation_warnings(clean_frame: pd.DataFrame) -> None:
    x, y = clean_frame.drop(columns="target"), clean_frame["target"]
    for name in ("logistic_regression", "random_forest"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model = build_model(name, hyperparameters(name, SETTINGS.models), SETTINGS.features).fit(x, y)
        assert model.predict_proba(x.head(3)).shape == (3, 2)
    lr = build_model(
        "logistic_regression", hyperparameters("logistic_regression", SETTINGS.models), SETTINGS.features
    ).fit(x, y)
    assert (lr.named_steps["classifier"].coef_ == 0).any(), "L1 should zero out some coefficients"


def test_train_and_evaluate_write_model_metrics_and_plots(tmp_path: Path, split_files: tuple[str, str]) -> None:
    train_path, test_path = split_files
    trained = train_model(
        "random_forest",
        hyperparameters("random_forest", SETTINGS.models),
        SETTINGS.features,
        train_path,
        "target",
        tmp_path / "models",
        seed=3,
        threshold_strategy="youden",
        n_splits=3,
    )
    assert trained.params["random_state"] == 3
    assert 0 < trained.threshold < 1
    assert "out-of-fold" in trained.threshold_note and "test set was not used" in trained.threshold_note
    evaluation = evaluate_model(trained, train_path, test_path, "target", 3, 2, 42, tmp_path / "eval")
    assert evaluation.threshold == trained.threshold
    m = evaluation.metrics
    for key in (
        "test_accuracy",
        "test_f1",
        "test_precision",
        "test_recall",
        "test_roc_auc",
        "test_log_loss",
        "cv_roc_auc_mean",
        "cv_roc_auc_std",
        "cv_roc_auc_ci95_low",
        "cv_roc_auc_ci95_high",
    ):
        assert np.isfinite(m[key]), key
    assert m["cv_roc_auc_ci95_low"] <= m["cv_roc_auc_mean"] <= m["cv_roc_auc_ci95_high"]
    assert len(evaluation.cv_scores["roc_auc"]) == 6
    assert 0.5 < m["test_roc_auc"] <= 1
    for path in evaluation.plots.values():
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(evaluation.plots) == {"roc_curve", "confusion_matrix", "precision_recall_curve", "calibration_curve"}
    assert pd.read_csv(evaluation.metrics_csv).loc[0, "test_roc_auc"] == pytest.approx(m["test_roc_auc"])


def test_metrics_at_threshold() -> None:
    y = np.array([0, 0, 1, 1])
    proba = np.array([0.1, 0.6, 0.4, 0.9])
    m = held_out_metrics(y, proba, 0.5)
    assert m["test_accuracy"] == 0.5
    assert m["test_recall"] == 0.5
    assert m["test_roc_auc"] == 0.75


def test_corrected_interval_is_wider_than_naive() -> None:
    scores = np.array([0.8, 0.85, 0.9, 0.82, 0.88])
    low, high = corrected_confidence_interval(scores, 200, 50, 5)
    naive_half = 2.776 * scores.std(ddof=1) / np.sqrt(5)
    assert (high - low) / 2 > naive_half


def test_fixed_threshold_labels_like_predict(split_files: tuple[str, str], tmp_path: Path) -> None:
    from tasks.train import load_trained

    train_path, test_path = split_files
    params = hyperparameters("logistic_regression", SETTINGS.models)
    trained = train_model(
        "logistic_regression",
        params,
        SETTINGS.features,
        train_path,
        "target",
        tmp_path,
        seed=1,
        threshold_strategy="fixed",
        threshold_value=0.3,
    )
    model = load_trained(trained)
    x_test = pd.read_csv(test_path).drop(columns="target")
    proba = model.predict_proba(x_test)[:, 1]
    np.testing.assert_array_equal(model.predict(x_test), (proba >= 0.3).astype(int))
