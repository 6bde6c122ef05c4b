"""Clinical plots and bootstrap intervals: pure functions on a small fitted model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, log_loss, precision_score, recall_score, roc_auc_score
from sklearn.model_selection import FixedThresholdClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from heart_pipeline.config import default_codebook
from heart_pipeline.evidence.plots import (
    PLOT_FILES,
    _wilson,
    calibration_figure,
    feature_label,
    model_figures,
    operating_point,
    permutation_importance,
    png_bytes,
    quantile_bins,
)
from heart_pipeline.evidence.stats import _SortedScores, bootstrap_intervals, fast_metrics

CODES = {"cp": {0: "asymptomatic", 1: "atypical angina"}, "sex": {0: "female", 1: "male"}}
DESCRIPTIONS = {"cp": "Chest pain type", "sex": "Sex"}


@pytest.fixture(scope="module")
def scored() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    proba = np.clip(0.35 * y + rng.uniform(0, 0.65, 200), 0, 1)
    return y, proba


def test_fast_metrics_agree_with_sklearn(scored):
    y, proba = scored
    predicted = (proba >= 0.4).astype(int)
    expected = {
        "test_accuracy": accuracy_score(y, predicted),
        "test_f1": f1_score(y, predicted),
        "test_precision": precision_score(y, predicted),
        "test_recall": recall_score(y, predicted),
        "test_roc_auc": roc_auc_score(y, proba),
        "test_log_loss": log_loss(y, proba),
    }
    assert fast_metrics(y, proba, 0.4) == pytest.approx(expected)


def test_bootstrap_interval_brackets_every_metric_and_narrows_with_more_rows(scored):
    y, proba = scored
    point = fast_metrics(y, proba, 0.4)
    intervals = bootstrap_intervals(y, proba, 0.4, seed=1, n_resamples=300)
    for name, value in point.items():
        assert intervals[f"{name}_ci95_low"] <= value <= intervals[f"{name}_ci95_high"], name
    few = bootstrap_intervals(y[:40], proba[:40], 0.4, seed=1, n_resamples=300)
    width = intervals["test_roc_auc_ci95_high"] - intervals["test_roc_auc_ci95_low"]
    assert few["test_roc_auc_ci95_high"] - few["test_roc_auc_ci95_low"] > width
    assert bootstrap_intervals(y, proba, 0.4, seed=1, n_resamples=50) == bootstrap_intervals(
        y, proba, 0.4, seed=1, n_resamples=50
    )


def test_operating_point_counts_and_quantile_bins(scored):
    y, proba = scored
    point = operating_point(y, proba, 0.4)
    assert point.tp + point.fn == y.sum() and point.tn + point.fp == len(y) - y.sum()
    assert point.sensitivity == pytest.approx(recall_score(y, proba >= 0.4))
    sizes = np.bincount(quantile_bins(proba, 4))
    assert len(sizes) == 4 and sizes.max() - sizes.min() <= 2


def test_feature_labels_in_words():
    assert feature_label("categorical__cp_0", DESCRIPTIONS, CODES) == "Chest pain type: asymptomatic"
    assert feature_label("binary__sex", DESCRIPTIONS, CODES) == "Sex: male vs female"
    assert feature_label("numeric__chol", DESCRIPTIONS, CODES) == "chol (per 1 SD)"
    assert feature_label("cp", DESCRIPTIONS, CODES, column="cp") == "Chest pain type"


def test_every_plot_is_drawn_with_the_same_file_names_and_shuffling_noise_is_unimportant():
    rng = np.random.default_rng(3)
    x = pd.DataFrame({"signal": rng.normal(size=120), "noise": rng.normal(size=120)})
    y = (x["signal"] + rng.normal(scale=0.5, size=120) > 0).astype(int).to_numpy()
    pipeline = Pipeline([("preprocess", StandardScaler()), ("classifier", LogisticRegression())])
    model = FixedThresholdClassifier(pipeline, threshold=0.5, response_method="predict_proba").fit(x, y)
    mean, _ = permutation_importance(model, x, y, seed=0)
    assert mean[0] > 0.1 > abs(mean[1])
    figures = model_figures(model, x, y, "logistic_regression", {}, default_codebook(), seed=0)
    assert set(figures) == set(PLOT_FILES)
    for figure in figures.values():
        assert png_bytes(figure)[:8] == b"\x89PNG\r\n\x1a\n"
    title = figures["confusion_matrix"].axes[0].get_title()
    assert "threshold 0.50" in title and "sensitivity" in title
    labels = [t.get_text() for t in figures["confusion_matrix"].axes[0].get_xticklabels()]
    assert labels == ["predicted no disease", "predicted disease"]


@pytest.mark.parametrize("totals", [15, 100, 201, 1000])
def test_wilson_interval_holds_a_share_of_none_or_all_exactly(totals: int) -> None:
    """At a share of 0 or 1 the bound must not pass the share by rounding: matplotlib refuses negative error bars."""
    n = np.array([float(totals)] * 2)
    low, high = _wilson(np.array([0.0, float(totals)]), n)
    assert low[0] == 0.0 and high[1] == 1.0
    assert (high > low).all() and ((0 <= low) & (high <= 1)).all()


def test_calibration_figure_draws_bins_where_everyone_or_nobody_has_disease() -> None:
    """A separating model on 2,000 test patients: top and bottom bins are all or none (a 10k-row run failed here)."""
    rng = np.random.default_rng(0)
    proba = np.sort(rng.random(2000))
    y_true = (proba > 0.5).astype(int)
    figure = calibration_figure(y_true, proba, 0.5, "model", 0.1)
    assert png_bytes(figure).startswith(b"\x89PNG")


@pytest.mark.parametrize("decimals", [None, 1])  # 1 decimal: many tied scores
def test_a_resample_scored_from_counts_equals_the_repeated_rows(decimals: int | None) -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 400)
    proba = np.clip(y * 0.3 + rng.random(400) * 0.7, 0, 1)
    proba = np.round(proba, decimals) if decimals else proba
    scores = _SortedScores(y, proba, 0.4)
    for _ in range(5):
        counts = rng.multinomial(400, np.ones(400) / 400)
        sorted_y, sorted_p = y[scores.order], proba[scores.order]
        repeated = fast_metrics(np.repeat(sorted_y, counts), np.repeat(sorted_p, counts), 0.4)
        assert scores.metrics(counts) == pytest.approx(repeated, rel=1e-12, abs=1e-12)
