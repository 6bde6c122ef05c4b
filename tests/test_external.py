"""External validation, subgroups and columns a site does not record.

Pure statistics are checked against scikit-learn; the flow runs against a real MLflow store with a
champion trained on the bundled Cleveland rows and a generated "other site", and its reported
figures are recomputed independently from its own predictions.csv.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, confusion_matrix, roc_auc_score

from heart_pipeline.config import load_settings_and_contract
from heart_pipeline.data_contract.contract import tolerating_unrecorded
from heart_pipeline.data_contract.recorded import imputation_warnings, imputed_shares
from heart_pipeline.evidence.external import (
    EXTERNAL_METRICS,
    decision_curve,
    logistic_recalibration,
    logit,
    metrics_with_intervals,
    point_metrics,
)
from heart_pipeline.evidence.subgroups import SubgroupSettings, age_band_labels, subgroup_table
from heart_pipeline.tasks.promote import promote_best_model
from heart_pipeline.tracking.registry import CHAMPION
from tests.helpers import build_candidates, run_gate, write_test_config
from tests.hostile import inverted
from tests.sites import other_site, unrecorded_site


def sklearn_figures(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """The same figures computed independently with scikit-learn (unpenalised logistic recalibration)."""
    tn, fp, fn, tp = confusion_matrix(y, (p >= threshold).astype(int), labels=[0, 1]).ravel()
    fit = LogisticRegression(C=1e12, solver="lbfgs", max_iter=10_000, tol=1e-12).fit(logit(p).reshape(-1, 1), y)
    n = len(y)
    return {
        "roc_auc": roc_auc_score(y, p),
        "brier": brier_score_loss(y, p),
        "mean_predicted": p.mean(),
        "observed_rate": y.mean(),
        "calibration_slope": fit.coef_[0][0],
        "calibration_intercept": fit.intercept_[0],
        "sensitivity": tp / (tp + fn),
        "specificity": tn / (tn + fp),
        "ppv": tp / (tp + fp),
        "npv": tn / (tn + fn),
        "net_benefit": (tp - fp * threshold / (1 - threshold)) / n,
    }


def test_recalibration_fit_on_resample_counts_matches_scikit_learns_weighted_fit() -> None:
    """A bootstrap resample is rows with counts: the fit must equal scikit-learn's unpenalised fit with
    those counts as sample weights, from a cold start and from the rows' own fit alike."""
    rng = np.random.default_rng(11)
    p = rng.uniform(0.03, 0.97, 400)
    y = (rng.uniform(size=400) < p**1.3).astype(float)
    counts = np.bincount(rng.integers(0, 400, 400), minlength=400).astype(float)
    reference = LogisticRegression(C=1e12, solver="lbfgs", max_iter=10_000, tol=1e-12)
    reference.fit(logit(p).reshape(-1, 1), y, sample_weight=counts)
    expected = (reference.intercept_[0], reference.coef_[0][0])
    own = logistic_recalibration(logit(p), y, np.ones(400))
    for start in (None, own):
        assert logistic_recalibration(logit(p), y, counts, start) == pytest.approx(expected, abs=1e-5)


def test_recalibration_is_nan_where_no_fit_exists() -> None:
    x = np.array([-2.0, -1.0, 1.0, 2.0])
    separated, weights = np.array([0.0, 0.0, 1.0, 1.0]), np.ones(4)
    assert np.isnan(logistic_recalibration(x, separated, weights)).all()
    assert np.isnan(logistic_recalibration(x, separated, weights, (0.1, 2.0))).all()
    assert np.isnan(logistic_recalibration(np.zeros(4), np.array([0.0, 1.0, 0.0, 1.0]), weights)).all()


@pytest.fixture(scope="module")
def scores() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, size=300)
    p = 1 / (1 + np.exp(-(1.5 * (y - 0.5) + rng.normal(size=300))))
    return y, np.round(p, 2)  # rounded: ties, as a forest's probabilities have


def test_point_figures_equal_scikit_learn(scores: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = scores
    ours = point_metrics(y, p, 0.45)
    for name, value in sklearn_figures(y, p, 0.45).items():
        assert ours[name] == pytest.approx(value, abs=1e-6), name
    assert ours["calibration_in_the_large"] == pytest.approx(p.mean() - y.mean())


def test_every_figure_has_an_interval_that_holds_it(scores: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = scores
    m = metrics_with_intervals(y, p, 0.45, seed=3, n_resamples=200)
    for name in EXTERNAL_METRICS:
        assert m[f"{name}_ci95_low"] <= m[name] + 1e-9 and m[name] <= m[f"{name}_ci95_high"] + 1e-9, name
    assert m == metrics_with_intervals(y, p, 0.45, seed=3, n_resamples=200), "one seed, one interval"
    assert m["observed_rate_ci95_low"] == m["observed_rate_ci95_high"], "stratified: prevalence is fixed"


def test_decision_curve_against_treat_all_and_none() -> None:
    y = np.array([1, 1, 0, 0, 1, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.1, 0.3, 0.05])
    point = decision_curve(y, p, np.array([0.5]))[0]
    assert point["model"] == pytest.approx((3 - 1 * 1.0) / 8)  # tp 3, fp 1 at odds 1
    assert point["treat_all"] == pytest.approx((3 - 5) / 8) and point["treat_none"] == 0.0


def test_a_threshold_of_one_gives_no_net_benefit_but_every_other_figure() -> None:
    """Youden's threshold is clipped to [0, 1]: a useless model can get 1.0, where net benefit is undefined."""
    y = np.array([0, 1] * 30)
    m = point_metrics(y, np.full(60, 0.5), 1.0)
    assert np.isnan(m["net_benefit"]) and m["sensitivity"] == 0.0 and m["roc_auc"] == 0.5


def test_subgroups_say_too_small_and_warn_below_the_floor() -> None:
    rng = np.random.default_rng(0)
    n = 200
    frame = pd.DataFrame({"sex": [0] * 15 + [1] * (n - 15), "age": rng.integers(30, 80, size=n)})
    y = rng.integers(0, 2, size=n)
    y[:15] = 1  # the 15 women: too few, and one class
    p = np.where(y == 1, 0.4, 0.2) + rng.normal(scale=0.05, size=n)
    labels = {"sex": frame["sex"].map({0: "female", 1: "male"}), "age_band": age_band_labels(frame["age"], [50, 60])}
    rows = subgroup_table(labels, y, p, 0.5, SubgroupSettings(20, 0.7, 0, 100))
    by_group = {(r.attribute, r.group): r for r in rows}
    female = by_group[("sex", "female")]
    assert not female.estimable and "too small to estimate: 15 rows" in female.note and female.metrics == {}
    male = by_group[("sex", "male")]
    assert male.estimable and male.metrics["sensitivity"] < 0.7 and "below the promotion floor 0.70" in male.warning
    assert [r.group for r in rows if r.attribute == "age_band"] == ["<50", "50-59", ">=60"]


def test_a_sensitivity_just_under_the_floor_is_not_printed_as_the_floor() -> None:
    """16 of 23 found is 0.696: two decimals would say "0.70 is below the floor 0.70"."""
    y = np.array([1] * 23 + [0] * 40)
    p = np.array([0.9] * 16 + [0.1] * 7 + [0.2] * 40)
    (row,) = subgroup_table({"sex": pd.Series(["male"] * 63)}, y, p, 0.5, SubgroupSettings(20, 0.7, 0, 50))
    assert row.warning is not None
    assert "sensitivity 0.696 [" in row.warning and "floor 0.70 " in row.warning, row.warning
    assert row.warning.endswith("16 of 23 with disease flagged"), row.warning


def test_imputed_shares_name_mostly_imputed_columns() -> None:
    frame = pd.DataFrame({"ca": [np.nan] * 99 + [1.0], "chol": [200.0] * 100})
    shares = imputed_shares(frame, ["ca", "chol"])
    assert shares == {"ca": 0.99, "chol": 0.0}
    assert imputation_warnings(shares, 0.5, {"ca": "the training's most frequent value"}) == [
        "ca imputed for 99% of rows: predictions rest on the training's most frequent value instead of a measurement"
    ]


def test_a_site_that_does_not_record_columns_is_scored_not_refused(clean_frame: pd.DataFrame, tmp_path: Path) -> None:
    """ca/thal mostly missing, slope 60% missing, chol 0 everywhere: training refuses with the remedy first;
    the scoring gate keeps every row with valid recorded values (chol 0 is the codebook's 'not measured')."""
    settings, contract = load_settings_and_contract(write_test_config(tmp_path))
    site = unrecorded_site(clean_frame)
    path = tmp_path / "site.csv"
    site.to_csv(path, index=False)
    training = run_gate(path, contract)
    assert training.decision == "failed"
    reason = training.critical_failures[0]
    assert reason.startswith("train without them (--without "), "the remedy comes first"
    assert all(f"--without {c}" in reason for c in ("ca", "thal", "slope"))
    assert "or score or evaluate this file, which impute them: 3 columns not recorded: " in reason
    site.assign(chol=np.nan).to_csv(path, index=False)  # what reading chol 0 as 'not measured' gives
    scoring = run_gate(path, tolerating_unrecorded(contract, settings.data.target))
    assert scoring.decision == "passed" and scoring.rows_kept == len(site)
    assert any("column 'ca' is" in w for w in scoring.warning_failures)


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory, clean_csv: Path) -> dict:
    directory = tmp_path_factory.mktemp("external")
    config = write_test_config(directory)
    settings, _ = load_settings_and_contract(config)
    decision = promote_best_model(*build_candidates(settings, clean_csv, "external"), settings)
    assert decision.promoted
    return {"directory": directory, "config": config, "settings": settings, "version": decision.challenger_version}


@pytest.fixture(scope="module")
def evaluated(champion: dict, clean_frame: pd.DataFrame, prefect_server: str) -> dict:
    from heart_pipeline.flows.external_validation import heart_external_validation

    path = champion["directory"] / "other-site.csv"
    other_site(clean_frame).assign(chol=0).to_csv(path, index=False)
    state = heart_external_validation(
        data_paths=[str(path)], sites=["Other Site"], config_path=str(champion["config"]), return_state=True
    )
    assert state.is_completed(), state.message
    return state.result()


@pytest.mark.e2e
class TestExternalValidationFlow:
    def test_reported_figures_equal_those_recomputed_from_predictions_csv(self, evaluated: dict) -> None:
        site = evaluated["sites"][0]
        predictions = pd.read_csv(site["predictions_path"])
        assert len(predictions) == site["n"] == site["rows_in"], "every row with valid recorded values is scored"
        y, p = predictions["target"].to_numpy(), predictions["probability"].to_numpy()
        assert ((p >= site["threshold"]).astype(int) == predictions["label"]).all()
        for name, value in sklearn_figures(y, p, site["threshold"]).items():
            assert site["metrics"][name] == pytest.approx(value, abs=1e-6), name
        assert site["placeholders_read_as_missing"] == {"chol": site["rows_in"]}
        assert site["imputed_shares"]["ca"] == 1.0 and site["imputed_shares"]["chol"] == 1.0
        assert any(w.startswith("ca imputed for 100% of rows") for w in site["warnings"])
        assert {r["attribute"] for r in site["subgroups"]} == {"sex", "age_band"}

    def test_the_version_and_an_evaluation_run_record_it(self, evaluated: dict, champion: dict) -> None:
        client = mlflow.MlflowClient(champion["settings"].tracking_uri)
        version = client.get_model_version("heart-disease", evaluated["model_version"])
        assert evaluated["model_version"] == champion["version"]
        assert version.tags["validation.sites"] == "other_site"
        run_id = version.tags["validation.other_site.run_id"]
        assert version.tags["validation.other_site.roc_auc"].startswith(
            f"{evaluated['sites'][0]['metrics']['roc_auc']:.3f} ["
        )
        run = client.get_run(run_id)
        assert (
            run.data.tags["model.version"] == champion["version"] and run.data.tags["run_kind"] == "external_validation"
        )
        artifacts = {a.path for a in client.list_artifacts(run_id, "evaluation")}
        assert {"evaluation/subgroups.json", "evaluation/subgroups.md"} <= artifacts

    def test_an_inverted_label_is_stopped_and_nothing_is_recorded(
        self, champion: dict, clean_frame: pd.DataFrame, prefect_server: str, evaluated: dict
    ) -> None:
        from heart_pipeline.flows.external_validation import heart_external_validation

        client = mlflow.MlflowClient(champion["settings"].tracking_uri)
        before = client.get_model_version("heart-disease", champion["version"]).tags
        runs_before = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
        path = champion["directory"] / "inverted-site.csv"
        inverted(other_site(clean_frame, seed=2)).to_csv(path, index=False)
        state = heart_external_validation(
            data_paths=[str(path)], config_path=str(champion["config"]), return_state=True
        )
        assert state.is_failed() and "target looks inverted" in state.message
        assert client.get_model_version("heart-disease", champion["version"]).tags == before
        assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == runs_before
        assert str(client.get_model_version_by_alias("heart-disease", CHAMPION).version) == champion["version"]


def test_training_without_a_column_leaves_it_out_of_model_gate_and_key(
    clean_frame: pd.DataFrame, tmp_path: Path
) -> None:
    """`train --without ca`: the pipeline never reads ca, the gate no longer judges it, the version says so."""
    from heart_pipeline.data_contract.contract import without_columns
    from heart_pipeline.errors import ConfigError
    from heart_pipeline.tasks.preprocess import prepare_training_data
    from heart_pipeline.tasks.register import training_settings
    from heart_pipeline.tasks.score import columns_used
    from heart_pipeline.tasks.train import train_model

    settings, contract = load_settings_and_contract(write_test_config(tmp_path))
    without_ca = settings.without_columns(["ca"])
    assert without_ca.training.exclude_columns == ["ca"]
    with pytest.raises(ConfigError, match="not features"):
        settings.without_columns(["cholesterol"])
    prepared = prepare_training_data(clean_frame, "target", 0.2, 0)
    model = train_model("logistic_regression", prepared, without_ca, 0).model
    assert "ca" not in columns_used(model) and "thal" in columns_used(model)
    assert training_settings(without_ca, "logistic_regression") != training_settings(settings, "logistic_regression")
    site = unrecorded_site(clean_frame).assign(chol=clean_frame["chol"], thal=clean_frame["thal"])
    path = tmp_path / "no-ca.csv"
    site.to_csv(path, index=False)
    trimmed = without_columns(contract, ["ca", "slope"])
    assert not any(rule.column in ("ca", "slope") for rule in trimmed.rules)
    assert run_gate(path, trimmed).decision != "failed"
