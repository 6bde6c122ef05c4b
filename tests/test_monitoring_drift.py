"""The monitor's pure core (issue 20): drifted batches built from the bundled data are called drift
with the right columns, a batch whose labels no longer match is a performance drop, and 100 bootstrap
batches of the bundled data itself stay quiet."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict, train_test_split
from sklearn.pipeline import Pipeline

from heart_pipeline.config import MonitoringConfig, Settings, default_codebook, load_config
from heart_pipeline.data_contract.meaning import homogeneity_p_value
from heart_pipeline.evidence.stats import bootstrap_intervals
from heart_pipeline.monitoring.drift import (
    AUC_BINS,
    RISK_EDGES,
    Verdict,
    auc_from_histograms,
    column_drift,
    hanley_mcneil_interval,
    judge,
    merge_summaries,
    performance_check,
    population_stability_index,
    summarize_batch,
    training_profile,
)
from heart_pipeline.monitoring.record import verdict_metrics
from heart_pipeline.monitoring.report import render_monitoring_html, verdict_markdown
from heart_pipeline.tasks.train import build_model

BOOTSTRAP_BATCHES = 100


@dataclass(frozen=True)
class Champion:
    """A quick champion trained on 80% of the bundled rows, with its profile and held-out figures."""

    model: Pipeline
    profile: dict[str, Any]
    metrics: dict[str, float]
    features: list[str]
    policy: MonitoringConfig


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_config()


@pytest.fixture(scope="module")
def champion(clean_frame: pd.DataFrame, settings: Settings) -> Champion:
    groups, target = settings.features, settings.data.target
    x, y = clean_frame[groups.all], clean_frame[target]
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=7)
    model = build_model("logistic_regression", settings.hyperparameters("logistic_regression"), groups, seed=7)
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=7)
    out_of_fold = cross_val_predict(model, x_train, y_train, cv=folds, method="predict_proba")[:, 1]
    model.fit(x_train, y_train)
    coded = [*groups.categorical, *groups.ordinal, *groups.binary]
    profile = training_profile(x_train, coded, out_of_fold, source="bundled training rows (80%)")
    proba = model.predict_proba(x_test)[:, 1]
    metrics = {"test_roc_auc": float(roc_auc_score(y_test, proba))}
    metrics.update(bootstrap_intervals(y_test.to_numpy(), proba, 0.5, seed=7, n_resamples=300))
    return Champion(model, profile, metrics, groups.all, settings.monitoring)


def verdict_on(champion: Champion, batch: pd.DataFrame, labels: np.ndarray | None = None) -> Verdict:
    risk = champion.model.predict_proba(batch[champion.features])[:, 1]
    summary = summarize_batch(
        batch[champion.features], champion.profile, risk, labels, source="test", model_version="1"
    )
    return judge(merge_summaries([summary]), champion.profile, champion.metrics, champion.policy, "1")


# --- drifted batches ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "column"),
    [
        (lambda f: f.assign(age=f["age"] + 15), "age"),
        (lambda f: f.assign(chol=f["chol"] + 80), "chol"),
        (lambda f: f.assign(thalach=f["thalach"] - 30), "thalach"),
        (lambda f: f.assign(ca=np.nan), "ca"),
    ],
    ids=["older patients", "chol + 80", "thalach - 30", "ca never recorded"],
)
def test_a_drifted_batch_is_called_drift_with_its_column(
    champion: Champion, clean_frame: pd.DataFrame, change, column
) -> None:
    verdict = verdict_on(champion, change(clean_frame.copy()))
    assert verdict.verdict == "drift"
    assert verdict.headline() == "verdict: drift"
    assert [c.column for c in verdict.drifted] == [column]
    assert verdict.details()[0].startswith(f"{column}: PSI ")
    assert len(json.dumps(verdict.payload())) < 4096


def test_a_site_without_ca_reads_as_missing(champion: Champion, clean_frame: pd.DataFrame) -> None:
    verdict = verdict_on(champion, clean_frame.assign(ca=np.nan))
    (ca,) = verdict.drifted
    assert ca.moved == "missing"
    assert re.fullmatch(r"ca: PSI \d+\.\d\d; ca missing in 100% of rows against 0% at training", ca.describe())


def test_a_moved_code_is_named_with_its_codebook_meaning(champion: Champion, clean_frame: pd.DataFrame) -> None:
    """The project's codes are not UCI's (restecg 0 is hypertrophy here, normal there): the verdict and the
    report say what a code means, from the codebook."""
    meanings = default_codebook().code_meanings()
    batch = clean_frame.assign(restecg=0)[champion.features]
    summary = summarize_batch(
        batch, champion.profile, champion.model.predict_proba(batch)[:, 1], None, source="t", model_version="1"
    )
    merged = merge_summaries([summary])
    verdict = judge(merged, champion.profile, champion.metrics, champion.policy, "1", meanings)
    (restecg,) = verdict.drifted
    assert restecg.describe().startswith("restecg: PSI ")
    assert "restecg = 0 (left ventricular hypertrophy) in 100% of rows" in restecg.describe()
    assert verdict.payload()["drifted"][0]["meaning"] == "left ventricular hypertrophy"
    page = render_monitoring_html(verdict, champion.profile, merged, meanings=meanings)
    assert '<code>1</code> <span class="muted">normal</span>' in page
    assert "left ventricular hypertrophy (Estes&#x27; criteria)" in page, "the report keeps the whole meaning"
    plain = judge(merged, champion.profile, champion.metrics, champion.policy, "1")
    assert "restecg = 0 in 100% of rows" in plain.drifted[0].describe()


def test_labels_that_no_longer_match_are_a_performance_drop(champion: Champion, clean_frame: pd.DataFrame) -> None:
    labels = clean_frame["target"].to_numpy().copy()
    rng = np.random.default_rng(3)
    flip = rng.choice(len(labels), size=len(labels) // 2, replace=False)
    labels[flip] = 1 - labels[flip]
    verdict = verdict_on(champion, clean_frame, labels)
    assert verdict.verdict == "performance drop"
    assert verdict.performance is not None and verdict.performance.dropped
    assert verdict.performance.roc_auc < champion.metrics["test_roc_auc_ci95_low"]
    assert verdict.details()[0].startswith("ROC-AUC dropped")
    assert verdict.payload()["performance"]["dropped"] is True
    assert json.loads(json.dumps(verdict.as_dict()))["headline"] == "verdict: performance drop"


def test_the_event_payload_stays_small_when_everything_moved(champion: Champion, clean_frame: pd.DataFrame) -> None:
    moved = clean_frame.assign(
        age=clean_frame["age"] + 15, chol=clean_frame["chol"] + 80, thalach=clean_frame["thalach"] - 30, ca=np.nan
    ).assign(thal=np.nan, slope=np.nan, oldpeak=0.0, trestbps=clean_frame["trestbps"] + 30, sex=1, exang=1, fbs=1)
    verdict = verdict_on(champion, moved, 1 - clean_frame["target"].to_numpy())
    assert len(verdict.drifted) >= 10
    assert len(json.dumps(verdict.payload())) < 4096


def test_performance_drop_beats_drift(champion: Champion, clean_frame: pd.DataFrame) -> None:
    labels = np.random.default_rng(4).permutation(clean_frame["target"].to_numpy())
    verdict = verdict_on(champion, clean_frame.assign(age=clean_frame["age"] + 15), labels)
    assert verdict.verdict == "performance drop"
    assert [c.column for c in verdict.drifted] == ["age"]


def test_a_small_batch_gets_no_verdict_and_says_so(champion: Champion, clean_frame: pd.DataFrame) -> None:
    verdict = verdict_on(champion, clean_frame.head(38).assign(age=99), clean_frame["target"].head(38).to_numpy())
    assert verdict.verdict == "ok"
    assert verdict.columns == [] and verdict.performance is None
    assert "38 rows since the last run, fewer than monitoring.min_rows=50: no drift verdict" in verdict.notes
    assert any("fewer than monitoring.min_labelled_rows=60" in note for note in verdict.notes)


# --- undrifted bootstrap batches -------------------------------------------------------------------------


def test_bootstrap_batches_of_the_bundled_data_stay_quiet(champion: Champion, clean_frame: pd.DataFrame) -> None:
    features = clean_frame[champion.features]
    risk = champion.model.predict_proba(features)[:, 1]
    labels = clean_frame["target"].to_numpy()
    rng = np.random.default_rng(11)
    worst_psi, least_p, verdicts, aucs, calibration = 0.0, 1.0, [], [], []
    for _ in range(BOOTSTRAP_BATCHES):
        rows = rng.integers(0, len(features), size=len(features))
        batch = features.iloc[rows].reset_index(drop=True)
        summary = summarize_batch(batch, champion.profile, risk[rows], labels[rows], source="boot", model_version="1")
        verdict = judge(merge_summaries([summary]), champion.profile, champion.metrics, champion.policy, "1")
        verdicts.append(verdict.verdict)
        assert verdict.performance is not None and not verdict.performance.dropped, verdict.details()
        assert not verdict.drifted, verdict.details()
        aucs.append(verdict.performance.roc_auc)
        calibration.append(verdict.performance.calibration_p)
        worst_psi = max(worst_psi, max(c.psi for c in verdict.columns))
        least_p = min(least_p, min(c.p_value for c in verdict.columns))
    assert set(verdicts) == {"ok"}
    print(  # shown with pytest -s
        f"bootstrap: max PSI {worst_psi:.3f}, min p {least_p:.2g}, ROC-AUC {min(aucs):.3f} to {max(aucs):.3f} "
        f"(champion {champion.metrics['test_roc_auc']:.3f}, low {champion.metrics['test_roc_auc_ci95_low']:.3f}), "
        f"min calibration p {min(calibration):.2g}"
    )
    assert worst_psi < champion.policy.psi_threshold


# --- units ---------------------------------------------------------------------------------------------


def test_psi_of_equal_shares_is_zero_and_grows_with_the_shift() -> None:
    shares = {"a": 0.5, "b": 0.3, "c": 0.2}
    assert population_stability_index(shares, shares, 1e-4) == 0.0
    small = population_stability_index({"a": 0.45, "b": 0.35, "c": 0.2}, shares, 1e-4)
    large = population_stability_index({"a": 0.1, "b": 0.3, "c": 0.6}, shares, 1e-4)
    assert 0 < small < 0.1 < 0.25 < large
    expected = (0.1 - 0.5) * np.log(0.1 / 0.5) + (0.6 - 0.2) * np.log(0.6 / 0.2)
    assert large == pytest.approx(expected)
    # a key the reference never saw counts at the floor instead of dividing by zero
    unseen = population_stability_index({"a": 0.9, "new": 0.1}, {"a": 1.0}, 0.01)
    assert unseen == pytest.approx((0.9 - 1) * np.log(0.9) + (0.1 - 0.01) * np.log(10))


def test_column_drift_needs_both_the_size_and_the_significance() -> None:
    reference = {"0": 0.5, "1": 0.5}
    big_but_few = column_drift(
        "sex", {"0": 9, "1": 1}, reference, psi_threshold=0.25, p_threshold=0.001, reference_rows=200
    )
    assert big_but_few.psi >= 0.25 and big_but_few.p_value >= 0.001 and not big_but_few.drifted
    tiny_but_sure = column_drift(
        "sex", {"0": 52_000, "1": 48_000}, reference, psi_threshold=0.25, p_threshold=0.001, reference_rows=200_000
    )
    assert tiny_but_sure.p_value < 1e-10 and tiny_but_sure.psi < 0.01 and not tiny_but_sure.drifted
    both = column_drift("sex", {"0": 90, "1": 10}, reference, psi_threshold=0.25, p_threshold=0.001, reference_rows=200)
    assert both.drifted and both.moved in ("0", "1") and both.describe().startswith("sex: PSI ")


def test_column_drift_p_is_scipys_two_sample_chi_square() -> None:
    from scipy.stats import chi2_contingency

    counts, reference = {"1": 35, "2": 45, "3": 20}, {"1": 0.25, "2": 0.45, "3": 0.25, "4": 0.05}
    drift = column_drift("cp", counts, reference, psi_threshold=0.25, p_threshold=0.01, reference_rows=200)
    table = [[50, 90, 50, 10], [35, 45, 20, 0]]  # the training rows' counts (shares x 200) over the batch's
    assert drift.p_value == pytest.approx(chi2_contingency(table, correction=False).pvalue, rel=1e-9)
    assert drift.moved == "1" and drift.observed_share == 0.35 and drift.reference_share == 0.25
    # a key neither sample has is no category; a key only the batch has is one
    assert homogeneity_p_value(np.array([60.0, 40.0, 0.0]), np.array([30.0, 20.0, 0.0])) == pytest.approx(1.0)
    new_code = homogeneity_p_value(np.array([60.0, 40.0, 0.0]), np.array([20.0, 10.0, 20.0]))
    assert new_code == pytest.approx(chi2_contingency([[60, 40, 0], [20, 10, 20]], correction=False).pvalue)


def test_the_training_rows_own_noise_is_not_drift() -> None:
    """A large batch 10 points off training shares measured on 100 rows: a goodness-of-fit test that took
    those shares as exact would call it certain (p ~ 1e-89); against 100 rows it is within their noise
    (p = 0.04), and against 10,000 it is not."""
    drift = column_drift(
        "sex", {"0": 6_000, "1": 4_000}, {"0": 0.5, "1": 0.5}, psi_threshold=0.0, p_threshold=0.01, reference_rows=100
    )
    assert drift.p_value > 0.01 and not drift.drifted  # p = 0.042
    assert column_drift(
        "sex",
        {"0": 6_000, "1": 4_000},
        {"0": 0.5, "1": 0.5},
        psi_threshold=0.0,
        p_threshold=0.01,
        reference_rows=10_000,
    ).drifted


def test_auc_from_histograms_matches_sklearn() -> None:
    rng = np.random.default_rng(5)
    for shift in (0.0, 0.5, 1.5):
        y = rng.integers(0, 2, size=400)
        p = 1 / (1 + np.exp(-(rng.normal(size=400) + shift * y)))
        pos = np.histogram(p[y == 1], bins=AUC_BINS, range=(0, 1))[0]
        neg = np.histogram(p[y == 0], bins=AUC_BINS, range=(0, 1))[0]
        assert auc_from_histograms(pos, neg) == pytest.approx(roc_auc_score(y, p), abs=0.01)
    assert np.isnan(auc_from_histograms([0] * AUC_BINS, [1] * AUC_BINS))
    assert auc_from_histograms([0, 1], [1, 0]) == 1.0 and auc_from_histograms([1], [1]) == 0.5


def labelled(rows: int, positives: int, sum_risk: float, auc_shift: int = 60) -> dict[str, Any]:
    """A labelled summary whose positives sit ``auc_shift`` bins above its negatives."""
    pos, neg = [0] * AUC_BINS, [0] * AUC_BINS
    pos[min(AUC_BINS - 1, 20 + auc_shift)], neg[20] = positives, rows - positives
    return {
        "rows": rows,
        "positives": positives,
        "negatives": rows - positives,
        "pos_hist": pos,
        "neg_hist": neg,
        "sum_risk": sum_risk,
        "sum_risk_var": sum_risk * 0.6,
    }


def test_calibration_drops_on_a_large_and_certain_miss(settings: Settings) -> None:
    champion = {"test_roc_auc": 0.9, "test_roc_auc_ci95_low": 0.85}
    missed = performance_check(labelled(300, 200, 100.0), champion, settings.monitoring)
    assert missed is not None and missed.dropped and missed.roc_auc == 1.0
    assert missed.reasons[0].startswith(
        "calibration dropped: disease in 67% of rows against a mean predicted risk of 33%"
    )
    close = performance_check(labelled(300, 110, 100.0), champion, settings.monitoring)
    assert close is not None and not close.dropped and close.reasons == []


def test_without_the_champions_interval_there_is_no_roc_auc_rule(settings: Settings) -> None:
    check = performance_check(labelled(300, 150, 150.0, auc_shift=0), {}, settings.monitoring)
    assert check is not None and check.roc_auc == 0.5 and not check.dropped
    assert check.reasons == ["no ROC-AUC rule: the champion has no test_roc_auc with its ci95 interval"]
    assert performance_check(labelled(59, 30, 30.0), {}, settings.monitoring) is None  # min_labelled_rows


def test_a_site_with_too_few_of_a_class_is_still_checked_for_calibration(settings: Settings) -> None:
    """Like UCI's Swiss file (106 of 112 labelled patients with disease): too few without disease for a
    ROC-AUC, but a model trained at 46% disease that predicts 45% there is badly calibrated, and says so."""
    champion = {"test_roc_auc": 0.9, "test_roc_auc_ci95_low": 0.85}
    swiss = performance_check(labelled(112, 106, 50.0), champion, settings.monitoring)
    assert swiss is not None and swiss.dropped and math.isnan(swiss.roc_auc)
    assert (
        swiss.reasons[1] == "no ROC-AUC rule: 6 labelled rows without disease, fewer than monitoring.min_class_rows=10"
    )
    assert swiss.reasons[0].startswith(
        "calibration dropped: disease in 95% of rows against a mean predicted risk of 45%"
    )
    assert swiss.describe().startswith("ROC-AUC not estimated (106 with disease, 6 without) on 112 labelled rows")
    verdict = Verdict("performance drop", 112, 1, [], None, swiss, [], "1")
    assert json.loads(json.dumps(verdict.payload()))["performance"]["roc_auc"] is None
    assert "roc_auc" not in verdict_metrics(verdict) and verdict_metrics(verdict)["observed_rate"] > 0.9
    calibrated = performance_check(labelled(300, 9, 9.0), champion, settings.monitoring)
    assert calibrated is not None and not calibrated.dropped
    assert calibrated.reasons == [
        "no ROC-AUC rule: 9 labelled rows with disease, fewer than monitoring.min_class_rows=10"
    ]


def test_hanley_mcneil_interval_narrows_with_rows() -> None:
    small, large = hanley_mcneil_interval(0.8, 30, 30), hanley_mcneil_interval(0.8, 300, 300)
    assert small[0] < large[0] < 0.8 < large[1] < small[1]
    # Hanley & McNeil's table: AUC 0.8 with 30 + 30 cases has a standard error near 0.056
    assert (small[1] - small[0]) / (2 * 1.96) == pytest.approx(0.056, abs=0.003)


def test_merge_sums_counts_and_keeps_the_extremes(champion: Champion, clean_frame: pd.DataFrame) -> None:
    features = clean_frame[champion.features]
    risk = champion.model.predict_proba(features)[:, 1]
    labels = clean_frame["target"].to_numpy()
    first = summarize_batch(
        features.iloc[:100],
        champion.profile,
        risk[:100],
        labels[:100],
        source="b",
        model_version="1",
        when="2026-12-01",
    )
    second = summarize_batch(
        features.iloc[100:], champion.profile, risk[100:], None, source="a", model_version="2", when="2026-12-02"
    )
    whole = summarize_batch(features, champion.profile, risk, None, source="a", model_version="1")
    merged = merge_summaries([first, second])
    assert merged["rows"] == len(features) and merged["batches"] == 2
    assert merged["first_when"] == "2026-12-01" and merged["last_when"] == "2026-12-02"
    assert merged["sources"] == ["a", "b"] and merged["model_versions"] == ["1", "2"]
    assert merged["columns"]["age"]["counts"] == whole["columns"]["age"]["counts"]
    assert merged["columns"]["chol"]["min"] == features["chol"].min()
    assert merged["columns"]["chol"]["max"] == features["chol"].max()
    assert merged["risk"]["counts"] == whole["risk"]["counts"]
    assert merged["labelled"]["rows"] == 100 and len(merged["labelled"]["pos_hist"]) == AUC_BINS
    assert merge_summaries([merged, first])["batches"] == 3
    empty = merge_summaries([])
    assert empty["rows"] == 0 and empty["batches"] == 0
    nothing = judge(empty, champion.profile, champion.metrics, champion.policy, "1")
    assert nothing.headline() == "verdict: ok" and nothing.notes == [
        "0 rows since the last run, fewer than monitoring.min_rows=50: no drift verdict",
        "no labelled rows: no performance verdict",
    ]
    late = {**second, "when": "2026-12-02T09:00:00Z"}
    early = {**first, "when": "2026-12-02T08:00:00+00:00"}
    assert merge_summaries([late, early])["first_when"] == "2026-12-02T08:00:00+00:00"


def test_a_summary_holds_counts_never_rows(champion: Champion, clean_frame: pd.DataFrame) -> None:
    features = clean_frame[champion.features]
    risk = champion.model.predict_proba(features)[:, 1]
    summary = summarize_batch(
        features.assign(extra=1),
        champion.profile,
        risk,
        clean_frame["target"].to_numpy(),
        source="s",
        model_version="1",
    )
    text = json.dumps(summary)  # JSON-able as it stands
    assert "extra" not in summary["columns"]  # a column the profile lacks is skipped

    def lists(node: Any) -> list[list[Any]]:
        if isinstance(node, dict):
            return [found for value in node.values() for found in lists(value)]
        return [node, *[f for v in node for f in lists(v)]] if isinstance(node, list) else []

    assert all(len(found) < len(features) for found in lists(json.loads(text)))
    assert len(text) < 20_000
    assert set(summary["risk"]["counts"]) <= set(champion.profile["risk"]["shares"]) | {"< 0.1", ">= 0.9"}
    for column, entry in summary["columns"].items():
        assert sum(entry["counts"].values()) == len(features)
        assert set(entry["counts"]) <= set(champion.profile["columns"][column]["shares"]) | {"missing"}


def test_the_profile_is_plain_json(champion: Champion) -> None:
    profile = json.loads(json.dumps(champion.profile))
    assert profile["risk"]["edges"] == RISK_EDGES
    assert sum(profile["risk"]["shares"].values()) == pytest.approx(1.0, abs=1e-4)
    assert profile["columns"]["chol"]["range"][0] > 0 and profile["columns"]["ca"]["missing"] == 0.0


# --- the report ----------------------------------------------------------------------------------------


def test_the_report_opens_offline_and_escapes_file_text(champion: Champion, clean_frame: pd.DataFrame) -> None:
    batch = clean_frame.assign(age=clean_frame["age"] + 15)
    risk = champion.model.predict_proba(batch[champion.features])[:, 1]
    summary = summarize_batch(
        batch[champion.features],
        champion.profile,
        risk,
        batch["target"].to_numpy(),
        source="<script>",
        model_version="1",
    )
    summary["columns"]["cp"]["counts"]["<script>alert(1)</script>"] = 3
    merged = merge_summaries([summary])
    verdict = judge(merged, champion.profile, champion.metrics, champion.policy, "<b>1</b>")
    page = render_monitoring_html(verdict, champion.profile, merged, generated_at="2026-12-03")
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", page, re.IGNORECASE)
    assert page.index("verdict: drift") < page.index("Columns")
    markdown = verdict_markdown(verdict, "runs/monitoring/report.html")
    assert markdown.splitlines()[0].startswith("**verdict: drift**")
    assert "| age |" in markdown and "<b>" not in markdown
