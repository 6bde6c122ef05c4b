"""Drift and performance of scored batches against the champion's training rows (issue 20). Pure.

Every scored batch becomes a summary: per column the count of rows in each of the training
profile's bins or codes, missing values and range, the share the model imputes, the count of rows
per band of predicted risk and, where labels came with the batch, two histograms of predicted risk
(one per class). Counts only, never a patient's row: summaries add up (``merge_summaries``), so
the monitor judges every batch since its last run as one sample.

A column drifts when BOTH hold: its population stability index against the training shares
reaches ``monitoring.psi_threshold`` (an effect size: how far the distribution moved) and a
two-sample chi-square test (training rows against the batch's) gives p < ``monitoring.alpha`` /
columns compared (Bonferroni: the shift is not sampling noise, of the batch or of the training
rows, in any of the columns looked at). PSI alone fires on small batches' noise; a p-value alone
fires on a trivial shift in a large batch.

Why PSI + scipy's chi-square and not Evidently or NannyML: both tests fit in a few lines over
counts that the summaries already hold (so merged batches are tested exactly, without rows),
while Evidently pulls in a heavy dependency tree and its HTML report loads scripts and fonts
from outside hosts, which breaks this project's reports that open offline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd

from heart_pipeline.config import MonitoringConfig
from heart_pipeline.data_contract.meaning import (
    MISSING,
    _bin_labels,
    _share_key,
    build_reference_profile,
    homogeneity_p_value,
    value_shares,
)
from heart_pipeline.data_contract.recorded import imputed_shares

RISK_EDGES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
AUC_BINS = 100  # predicted risk in 100 equal bins: ROC-AUC from the histograms within 0.01 of the exact one
RISK_COLUMN = "predicted risk"
Z95 = 1.959964  # the normal quantile of a two-sided 95% interval (Hanley-McNeil)
# Calibration-in-the-large drops when the observed disease rate is off the mean predicted risk by more
# than this, and significantly so (two-sided z-test, p < monitoring.alpha): a large batch otherwise
# flags a 2-point miscalibration nobody would act on.
CALIBRATION_GAP = 0.1
Kind = Literal["ok", "drift", "performance drop"]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _counts(numbers: np.ndarray, column_profile: Mapping[str, Any]) -> dict[str, int]:
    """Rows per profile key. Each distinct value is keyed once by meaning.py's own coding or binning
    (one home for the keys), then its rows are added: a batch costs its distinct values, not its rows."""
    values, counts = np.unique(numbers, return_counts=True)  # every NaN falls into one entry
    if column_profile["kind"] == "codes":
        keys = [_share_key(v) for v in values]
    else:
        keys = list(_bin_labels(pd.Series(values, dtype="float64"), list(column_profile["edges"])))
    total: dict[str, int] = {}
    for key, count in zip(keys, counts, strict=True):
        total[str(key)] = total.get(str(key), 0) + int(count)
    return total


def _range(numbers: np.ndarray) -> list[float] | None:
    recorded = numbers[~np.isnan(numbers)]
    return [float(recorded.min()), float(recorded.max())] if len(recorded) else None


def training_profile(
    features: pd.DataFrame, coded_columns: Sequence[str], risk: np.ndarray, source: str
) -> dict[str, Any]:
    """The champion's training rows as plain JSON: meaning.py's reference profile, plus each column's
    missing share and range, plus the shares of the model's (out-of-fold) predicted risk."""
    profile = build_reference_profile(features, list(coded_columns), source)
    for column, entry in profile["columns"].items():
        numbers = pd.to_numeric(features[column], errors="coerce").to_numpy(dtype="float64")
        entry["missing"] = round(float(np.isnan(numbers).mean()), 6) if len(numbers) else 0.0
        entry["range"] = _range(numbers)
    risk_series = pd.Series(np.asarray(risk, dtype="float64"))
    profile["risk"] = {"kind": "bins", "edges": list(RISK_EDGES), "shares": value_shares(risk_series, RISK_EDGES)}
    return profile


def _column_summary(values: pd.Series, column_profile: Mapping[str, Any]) -> dict[str, Any]:
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64")
    extent = _range(numbers)
    return {
        "counts": _counts(numbers, column_profile),
        "missing": int(np.isnan(numbers).sum()),
        "min": extent[0] if extent else None,
        "max": extent[1] if extent else None,
    }


def _labelled_summary(risk: np.ndarray, labels: np.ndarray | None) -> dict[str, Any] | None:
    """Histograms of predicted risk per class for the rows whose label is 0 or 1 (1 = disease)."""
    if labels is None:
        return None
    y = pd.to_numeric(pd.Series(np.asarray(labels)), errors="coerce").to_numpy(dtype="float64")
    usable = np.isin(y, (0.0, 1.0)) & np.isfinite(risk)
    if not usable.any():
        return None
    p, positive = risk[usable], y[usable] == 1.0
    pos_hist = np.histogram(p[positive], bins=AUC_BINS, range=(0.0, 1.0))[0]
    neg_hist = np.histogram(p[~positive], bins=AUC_BINS, range=(0.0, 1.0))[0]
    return {
        "rows": int(usable.sum()),
        "positives": int(positive.sum()),
        "negatives": int((~positive).sum()),
        "pos_hist": [int(v) for v in pos_hist],
        "neg_hist": [int(v) for v in neg_hist],
        "sum_risk": float(p.sum()),
        "sum_risk_var": float((p * (1 - p)).sum()),
    }


def summarize_batch(  # noqa: PLR0913 - the shape the monitoring flow, the API window and the CLI share
    features: pd.DataFrame,
    profile: dict[str, Any],
    risk: np.ndarray,
    labels: np.ndarray | None,
    *,
    source: str,
    model_version: str,
    imputed: Mapping[str, float] | None = None,
    when: str | None = None,
) -> dict[str, Any]:
    """One scored batch as counts against ``profile``'s keys: JSON-able, no patient row in it.

    ``labels`` are in disease coding (1 = disease), NaN where unknown. A column the profile lacks is
    skipped. ``imputed`` defaults to each profiled column's missing share (what the imputer fills)."""
    columns = [c for c in features.columns if c in profile["columns"]]
    risk = np.asarray(risk, dtype="float64")
    shares = imputed if imputed is not None else imputed_shares(features, columns)
    risk_counts = _counts(risk, profile.get("risk", {"kind": "bins", "edges": RISK_EDGES}))
    return {
        "source": source,
        "model_version": str(model_version),
        "when": when or _now(),
        "rows": len(features),
        "columns": {str(c): _column_summary(features[c], profile["columns"][c]) for c in columns},
        "imputed": {str(c): round(float(v), 6) for c, v in shares.items()},
        "risk": {"counts": risk_counts, "sum": float(np.nansum(risk))},
        "labelled": _labelled_summary(risk, labels),
    }


# --- merging batches -----------------------------------------------------------------------------


def _add_counts(total: dict[str, int], counts: Mapping[str, int]) -> None:
    for key, count in counts.items():
        total[key] = total.get(key, 0) + int(count)


def _extreme(values: list[float | None], pick: Any) -> float | None:
    known = [v for v in values if v is not None]
    return pick(known) if known else None


def _merge_columns(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for column in sorted({c for s in summaries for c in s["columns"]}):
        parts = [s["columns"][column] for s in summaries if column in s["columns"]]
        counts: dict[str, int] = {}
        for part in parts:
            _add_counts(counts, part["counts"])
        merged[column] = {
            "counts": counts,
            "missing": sum(int(p["missing"]) for p in parts),
            "min": _extreme([p["min"] for p in parts], min),
            "max": _extreme([p["max"] for p in parts], max),
        }
    return merged


def _merge_imputed(summaries: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Row-weighted shares: a column a batch does not report counts as not imputed in that batch."""
    rows = sum(int(s["rows"]) for s in summaries)
    columns = sorted({c for s in summaries for c in s["imputed"]})
    if not rows:
        return {c: 0.0 for c in columns}
    return {c: round(sum(s["imputed"].get(c, 0.0) * int(s["rows"]) for s in summaries) / rows, 6) for c in columns}


def _merge_labelled(parts: list[Mapping[str, Any]]) -> dict[str, Any] | None:
    if not parts:
        return None
    merged: dict[str, Any] = {key: sum(p[key] for p in parts) for key in ("rows", "positives", "negatives")}
    for key in ("pos_hist", "neg_hist"):
        merged[key] = [int(v) for v in np.sum([p[key] for p in parts], axis=0)]
    for key in ("sum_risk", "sum_risk_var"):
        merged[key] = float(sum(p[key] for p in parts))
    return merged


def _when_key(when: str) -> tuple[int, float, str]:
    """Times in time order whatever their ISO spelling (``Z`` or ``+00:00``); unreadable ones last."""
    try:
        moment = datetime.fromisoformat(when)
    except ValueError:
        return (1, 0.0, when)
    return (0, (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp(), when)


def merge_summaries(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batches as one summary (counts summed, min of mins, max of maxes, imputed shares row-weighted),
    plus ``batches``, ``first_when``/``last_when``, ``sources`` and ``model_versions``. A merged summary
    can be merged again; no batches give an empty summary of 0 rows."""
    whens = sorted(
        (w for s in summaries for w in (s.get("first_when", s["when"]), s.get("last_when", s["when"]))), key=_when_key
    )
    sources = sorted({src for s in summaries for src in s.get("sources", [s["source"]])})
    versions = sorted({v for s in summaries for v in s.get("model_versions", [s["model_version"]])})
    risk_counts: dict[str, int] = {}
    for s in summaries:
        _add_counts(risk_counts, s["risk"]["counts"])
    return {
        "source": ", ".join(sources),
        "model_version": summaries[-1]["model_version"] if summaries else "",
        "when": whens[-1] if whens else "",
        "rows": sum(int(s["rows"]) for s in summaries),
        "columns": _merge_columns(summaries),
        "imputed": _merge_imputed(summaries),
        "risk": {"counts": risk_counts, "sum": float(sum(s["risk"]["sum"] for s in summaries))},
        "labelled": _merge_labelled([s["labelled"] for s in summaries if s.get("labelled")]),
        "batches": sum(int(s.get("batches", 1)) for s in summaries),
        "first_when": whens[0] if whens else "",
        "last_when": whens[-1] if whens else "",
        "sources": sources,
        "model_versions": versions,
    }


# --- drift per column ----------------------------------------------------------------------------


def share_floor(reference_rows: int, batch_rows: int) -> float:
    """The share given to a key one side never saw: half a row of the smaller sample.

    A zero share only says the key is rarer than about one row in that sample, so half a row is the
    comparison's resolution. A fixed 1e-4 would make one new code in a 50-row batch worth ln(200) and
    fire PSI on noise; half a row keeps a key neither sample can resolve from dominating the sum."""
    smaller = max(1, min(reference_rows, batch_rows))
    return 0.5 / smaller


def population_stability_index(observed: Mapping[str, float], expected: Mapping[str, float], floor: float) -> float:
    """PSI = sum over keys of (observed - expected) * ln(observed / expected), shares floored at ``floor``."""
    keys = sorted(set(observed) | set(expected))
    if not keys:
        return 0.0
    obs = np.maximum([float(observed.get(k, 0.0)) for k in keys], floor)
    exp = np.maximum([float(expected.get(k, 0.0)) for k in keys], floor)
    return float(np.sum((obs - exp) * np.log(obs / exp)))


def _percent(share: float) -> str:
    text = f"{share:.0%}"
    return f"{share:.1%}" if text in ("0%", "100%") and 0 < share < 1 else text


@dataclass(frozen=True)
class ColumnDrift:
    """One column's recent shares against its training shares."""

    column: str
    psi: float
    p_value: float  # chi-square test that the recent rows and the training rows share one distribution
    moved: str  # the key (bin, code or "missing") whose share moved most
    observed_share: float
    reference_share: float
    drifted: bool
    meaning: str = ""  # the codebook's meaning of ``moved`` when it is a code (``judge`` fills it in)

    def where(self) -> str:
        """``ca missing``, ``cp = 0 (asymptomatic)``, or a bin label as it stands (``>= 62``, ``211 to 241``)."""
        if self.moved == MISSING:
            return f"{self.column} missing"
        if self.moved[:1] in "<>" or " to " in self.moved:
            return self.moved
        return f"{self.column} = {self.moved}" + (f" ({self.meaning})" if self.meaning else "")

    def describe(self) -> str:
        """``age: PSI 1.32; >= 62 in 71% of rows against 23% at training``."""
        return (
            f"{self.column}: PSI {self.psi:.2f}; {self.where()} in {_percent(self.observed_share)} of rows "
            f"against {_percent(self.reference_share)} at training"
        )


def column_drift(
    column: str,
    counts: Mapping[str, int],
    reference_shares: Mapping[str, float],
    *,
    psi_threshold: float,
    p_threshold: float,
    reference_rows: int,
) -> ColumnDrift:
    """PSI and chi-square p of ``counts`` against ``reference_shares``; drifted when both pass their bar."""
    keys = sorted(set(counts) | set(reference_shares))
    observed = np.array([float(counts.get(k, 0)) for k in keys])
    rows = float(observed.sum())
    if not keys or rows == 0:
        return ColumnDrift(column, 0.0, 1.0, "", 0.0, 0.0, False)
    floor = share_floor(reference_rows, int(rows))
    shares = observed / rows
    reference = np.array([float(reference_shares.get(k, 0.0)) for k in keys])
    psi = population_stability_index(
        dict(zip(keys, shares, strict=True)), dict(zip(keys, reference, strict=True)), floor
    )
    p_value = homogeneity_p_value(reference * reference_rows, observed)
    worst = int(np.argmax(np.abs(shares - reference)))
    drifted = psi >= psi_threshold and p_value < p_threshold
    return ColumnDrift(column, psi, p_value, keys[worst], float(shares[worst]), float(reference[worst]), drifted)


# --- performance on labelled rows ----------------------------------------------------------------


def auc_from_histograms(pos_hist: Sequence[int], neg_hist: Sequence[int]) -> float:
    """Mann-Whitney ROC-AUC from per-class histograms over the same bins: P(a diseased row's risk is
    above another's), a tie (same bin) counted 1/2. NaN when a class is empty."""
    pos = np.asarray(pos_hist, dtype="float64")
    neg = np.asarray(neg_hist, dtype="float64")
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    below = np.cumsum(neg) - neg  # negatives in lower bins
    return float(np.sum(pos * (below + 0.5 * neg)) / (n_pos * n_neg))


def hanley_mcneil_interval(auc: float, positives: int, negatives: int) -> tuple[float, float]:
    """The 95% interval of an ROC-AUC from its standard error (Hanley & McNeil 1982), clipped to [0, 1]."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = (auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)) / (
        positives * negatives
    )
    half = Z95 * math.sqrt(max(variance, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)


def calibration_p_value(events: float, expected: float, variance: float) -> float:
    """Two-sided z-test of observed events against the sum of predicted risks (variance sum p(1 - p))."""
    from scipy.stats import norm

    if variance <= 0:
        return 1.0 if math.isclose(events, expected) else 0.0
    return float(2 * norm.sf(abs(events - expected) / math.sqrt(variance)))


@dataclass(frozen=True)
class PerformanceCheck:
    """Discrimination and calibration on a batch's labelled rows, against the champion's own figures."""

    rows: int
    positives: int
    negatives: int
    roc_auc: float
    roc_auc_ci95: tuple[float, float]
    champion_roc_auc: float | None
    champion_ci_low: float | None
    observed_rate: float
    mean_predicted: float
    calibration_p: float
    dropped: bool
    reasons: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """``ROC-AUC 0.52 (95% CI 0.45 to 0.58) on 303 labelled rows against the champion's 0.90 ...``."""
        low, high = self.roc_auc_ci95
        champion = (
            f" against the champion's {self.champion_roc_auc:.2f} (interval low {self.champion_ci_low:.2f})"
            if self.champion_roc_auc is not None and self.champion_ci_low is not None
            else ""
        )
        auc = (
            f"ROC-AUC {self.roc_auc:.2f} (95% CI {low:.2f} to {high:.2f})"
            if math.isfinite(self.roc_auc)
            else f"ROC-AUC not estimated ({self.positives} with disease, {self.negatives} without)"
        )
        return (
            f"{auc} on {self.rows} labelled rows{champion}; "
            f"disease in {_percent(self.observed_rate)} of rows against a mean predicted risk of "
            f"{_percent(self.mean_predicted)} (calibration p = {self.calibration_p:.2g})"
        )


def _auc_reasons(auc: float, ci: tuple[float, float], champion: Mapping[str, float]) -> tuple[bool, str]:
    point, low = champion.get("test_roc_auc"), champion.get("test_roc_auc_ci95_low")
    if point is None or low is None or not (math.isfinite(point) and math.isfinite(low)):
        return False, "no ROC-AUC rule: the champion has no test_roc_auc with its ci95 interval"
    # Below the champion's interval alone fires on a small batch's noise: the batch's own upper bound
    # must sit below the champion's estimate too.
    if auc < low and ci[1] < point:
        return True, (
            f"ROC-AUC dropped: {auc:.2f} (95% CI up to {ci[1]:.2f}) is below the champion's interval "
            f"(low {low:.2f}) and its upper bound below the champion's {point:.2f}"
        )
    return False, ""


def performance_check(
    labelled: Mapping[str, Any] | None, champion_metrics: Mapping[str, float], policy: MonitoringConfig
) -> PerformanceCheck | None:
    """The labelled rows' ROC-AUC and calibration-in-the-large; None below min_labelled_rows. Dropped on
    the ROC-AUC rule or the calibration rule. With fewer than min_class_rows of either class the ROC-AUC
    is not estimated (NaN, and said), but calibration still is: a site where nearly every patient has
    disease is exactly where a model trained at 46% under-predicts."""
    if not labelled or labelled["rows"] < policy.min_labelled_rows:
        return None
    positives, negatives = int(labelled["positives"]), int(labelled["negatives"])
    rows = int(labelled["rows"])
    observed, predicted = positives / rows, float(labelled["sum_risk"]) / rows
    p_cal = calibration_p_value(positives, float(labelled["sum_risk"]), float(labelled["sum_risk_var"]))
    if min(positives, negatives) < policy.min_class_rows:
        auc, ci = math.nan, (math.nan, math.nan)
        auc_dropped, auc_reason = (
            False,
            (
                f"no ROC-AUC rule: {min(positives, negatives)} labelled rows "
                f"{'with' if positives < negatives else 'without'} disease, fewer than monitoring.min_class_rows="
                f"{policy.min_class_rows}"
            ),
        )
    else:
        auc = auc_from_histograms(labelled["pos_hist"], labelled["neg_hist"])
        ci = hanley_mcneil_interval(auc, positives, negatives)
        auc_dropped, auc_reason = _auc_reasons(auc, ci, champion_metrics)
    # Calibration drops when the observed rate is off the mean predicted risk by more than CALIBRATION_GAP
    # and the z-test gives p < alpha: both the size and the certainty of the miss.
    cal_dropped = p_cal < policy.alpha and abs(observed - predicted) > CALIBRATION_GAP
    reasons = [auc_reason] if auc_dropped else []  # what decided first, then why a rule did not apply
    if cal_dropped:
        reasons.append(
            f"calibration dropped: disease in {_percent(observed)} of rows against a mean predicted risk of "
            f"{_percent(predicted)} (gap above {CALIBRATION_GAP:g}, z-test p = {p_cal:.2g} < alpha {policy.alpha:g})"
        )
    if auc_reason and not auc_dropped:
        reasons.append(auc_reason)
    return PerformanceCheck(
        rows=rows,
        positives=positives,
        negatives=negatives,
        roc_auc=auc,
        roc_auc_ci95=ci,
        champion_roc_auc=champion_metrics.get("test_roc_auc"),
        champion_ci_low=champion_metrics.get("test_roc_auc_ci95_low"),
        observed_rate=observed,
        mean_predicted=predicted,
        calibration_p=p_cal,
        dropped=auc_dropped or cal_dropped,
        reasons=reasons,
    )


# --- the verdict ---------------------------------------------------------------------------------


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


@dataclass(frozen=True)
class Verdict:
    """What the monitor decided over the batches since its last run, and why."""

    verdict: Kind
    rows: int
    batches: int
    columns: list[ColumnDrift]  # every compared column, most drifted first
    # Reported, never deciding: the training reference is out-of-fold risk, while a batch may hold training rows.
    risk: ColumnDrift | None
    performance: PerformanceCheck | None
    notes: list[str]
    model_version: str

    @property
    def drifted(self) -> list[ColumnDrift]:
        return [c for c in self.columns if c.drifted]

    def headline(self) -> str:
        return f"verdict: {self.verdict}"

    def details(self) -> list[str]:
        """What moved and by how much, deciding facts first, then the reported ones and the notes."""
        lines = list(self.performance.reasons) if self.performance and self.performance.dropped else []
        lines += [c.describe() for c in self.drifted]
        if self.columns and not self.drifted:
            top = self.columns[0]
            lines.append(f"no column drifted (largest PSI: {top.column} {top.psi:.2f}, p = {top.p_value:.2g})")
        if self.performance:
            lines.append(self.performance.describe())
            if not self.performance.dropped:
                lines += self.performance.reasons  # e.g. no ROC-AUC rule without the champion's interval
        if self.risk:
            lines.append(f"{self.risk.describe()} (reported, not deciding)")
        return [*lines, *self.notes]

    def payload(self) -> dict[str, Any]:
        """A small JSON-able summary for a Prefect event (well under 4 KB)."""
        performance = self.performance
        return {
            "verdict": self.verdict,
            "model_version": self.model_version,
            "rows": self.rows,
            "batches": self.batches,
            "drifted": [
                {
                    "column": c.column,
                    "psi": _rounded(c.psi, 3),
                    "p_value": float(f"{c.p_value:.3g}"),
                    "moved": c.moved,
                    "meaning": c.meaning or None,
                    "observed_share": _rounded(c.observed_share, 3),
                    "reference_share": _rounded(c.reference_share, 3),
                }
                for c in self.drifted
            ],
            "risk_psi": _rounded(self.risk.psi, 3) if self.risk else None,
            "performance": None
            if performance is None
            else {
                "rows": performance.rows,
                "roc_auc": _rounded(performance.roc_auc, 3),
                "roc_auc_ci95": [_rounded(v, 3) for v in performance.roc_auc_ci95],
                "champion_roc_auc": _rounded(performance.champion_roc_auc, 3),
                "observed_rate": _rounded(performance.observed_rate, 3),
                "mean_predicted": _rounded(performance.mean_predicted, 3),
                "calibration_p": float(f"{performance.calibration_p:.3g}"),
                "dropped": performance.dropped,
            },
        }

    def as_dict(self) -> dict[str, Any]:
        """Everything, JSON-able (``monitor --json``)."""
        return {**asdict(self), "headline": self.headline(), "details": self.details()}


def _compare_columns(
    merged: Mapping[str, Any], profile: Mapping[str, Any], policy: MonitoringConfig
) -> list[ColumnDrift]:
    compared = [c for c in merged["columns"] if c in profile["columns"] and merged["columns"][c]["counts"]]
    p_threshold = policy.alpha / max(1, len(compared))
    drifts = [
        column_drift(
            column,
            merged["columns"][column]["counts"],
            profile["columns"][column]["shares"],
            psi_threshold=policy.psi_threshold,
            p_threshold=p_threshold,
            reference_rows=int(profile["rows"]),
        )
        for column in compared
    ]
    return sorted(drifts, key=lambda d: (not d.drifted, -d.psi))


def _labelled_note(labelled: Mapping[str, Any] | None, policy: MonitoringConfig) -> str:
    if not labelled:
        return "no labelled rows: no performance verdict"
    return (
        f"{labelled['rows']} labelled rows ({labelled['positives']} with disease, {labelled['negatives']} without), "
        f"fewer than monitoring.min_labelled_rows={policy.min_labelled_rows}: no performance verdict"
    )


def _short_meaning(text: str, longest: int = 30) -> str:
    """A meaning short enough for a verdict line: a long one loses its trailing parenthesis ("ST-T wave
    abnormality (T wave inversion and/or ...)" -> "ST-T wave abnormality"); a short one keeps it ("no (<= 120
    mg/dL)"), as its parenthesis is what it says. The report shows every meaning whole."""
    if len(text) > longest and text.endswith(")") and " (" in text:
        return text[: text.index(" (")]
    return text


def judge(
    merged: dict[str, Any],
    profile: dict[str, Any],
    champion_metrics: Mapping[str, float],
    policy: MonitoringConfig,
    model_version: str,
    meanings: Mapping[str, Mapping[str, str]] | None = None,
) -> Verdict:
    """ok, drift or performance drop for the merged batches; a performance drop beats drift beats ok.
    ``meanings`` (``Codebook.code_meanings()``) names what a moved code means: the project's codes are
    not UCI's (restecg 0 is hypertrophy here, normal there), so a bare code would mislead."""
    rows, notes = int(merged["rows"]), []
    columns: list[ColumnDrift] = []
    risk = None
    if rows < policy.min_rows:
        notes.append(
            f"{rows} rows since the last run, fewer than monitoring.min_rows={policy.min_rows}: no drift verdict"
        )
    else:
        columns = [
            replace(c, meaning=_short_meaning(meanings.get(c.column, {}).get(c.moved, ""))) if meanings else c
            for c in _compare_columns(merged, profile, policy)
        ]
        notes.append(
            f"{len(columns)} columns compared with {profile['source']}: a column drifts at "
            f"PSI >= {policy.psi_threshold:g} and chi-square p < {policy.alpha:g}/{len(columns)}"
        )
        if "risk" in profile and merged["risk"]["counts"]:
            risk = column_drift(
                RISK_COLUMN,
                merged["risk"]["counts"],
                profile["risk"]["shares"],
                psi_threshold=policy.psi_threshold,
                p_threshold=policy.alpha,
                reference_rows=int(profile["rows"]),
            )
    performance = performance_check(merged.get("labelled"), champion_metrics, policy)
    if performance is None:
        notes.append(_labelled_note(merged.get("labelled"), policy))
    others = sorted(set(merged.get("model_versions", [])) - {str(model_version)})
    if others:
        notes.append(f"some batches were scored by other model versions ({', '.join(others)}) than {model_version}")
    kind: Kind = (
        "performance drop"
        if performance and performance.dropped
        else "drift"
        if any(c.drifted for c in columns)
        else "ok"
    )
    return Verdict(kind, rows, int(merged.get("batches", 1)), columns, risk, performance, notes, str(model_version))
