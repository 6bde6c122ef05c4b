"""External validation statistics: how a fixed model does on another site's labelled patients.

Pure functions from labels and predicted probabilities to numbers (TRIPOD+AI items for external
validation): discrimination (ROC-AUC), overall accuracy (Brier), calibration-in-the-large (mean
predicted against observed), logistic recalibration (slope and intercept of ``y ~ logit(p)``), the
operating point at the model's own threshold (sensitivity, specificity, PPV, NPV) and net benefit
(decision curve). Every figure has a percentile bootstrap 95% interval, drawn the way
``evidence.stats.bootstrap_intervals`` draws them (stratified by class, the same seed gives the
same interval), and each resample is scored from its draw counts over the once-sorted rows.

Names: ``<metric>`` is the point estimate, ``<metric>_ci95_low`` / ``<metric>_ci95_high`` its interval.
``calibration_in_the_large`` is mean predicted minus observed (negative: the model under-predicts).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePath

import numpy as np

from heart_pipeline.evidence.stats import BOOTSTRAP_LEVEL, BOOTSTRAP_RESAMPLES

EXTERNAL_METRICS = (
    "roc_auc",
    "brier",
    "mean_predicted",
    "observed_rate",
    "calibration_in_the_large",
    "calibration_slope",
    "calibration_intercept",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "net_benefit",
    "net_benefit_treat_all",
)
# The headline a summary line and the model version's tags carry (every figure is in --json).
HEADLINE_METRICS = ("roc_auc", "calibration_slope", "calibration_in_the_large", "sensitivity", "specificity")
LOGIT_CLIP = 1e-6  # a probability of exactly 0 or 1 has no logit; the recalibration fit uses [1e-6, 1 - 1e-6]
NEWTON_STEPS = 50


def site_slug(site: str) -> str:
    """A site name as a tag-key and folder segment: ``VA Long Beach`` -> ``va_long_beach``."""
    return re.sub(r"[^a-z0-9]+", "_", site.lower()).strip("_") or "site"


def site_name(data_path: str, given: str | None) -> str:
    return given or PurePath(data_path).stem


def site_names(data_paths: Sequence[str], sites: Sequence[str] | None) -> list[str]:
    """Each file's site name (``sites`` in order, else the file name). Raises ValueError when the counts
    differ or two names share a slug: one rule for the flow and for the API, which refuses such a launch."""
    if sites and len(sites) != len(data_paths):
        raise ValueError(f"give one site name per data file: {len(sites)} names for {len(data_paths)} files")
    names = [site_name(path, sites[i] if sites else None) for i, path in enumerate(data_paths)]
    if len({site_slug(n) for n in names}) != len(names):
        raise ValueError(f"two files have the same site name {names}: name them with --site")
    return names


def logit(proba: np.ndarray) -> np.ndarray:
    clipped = np.clip(np.asarray(proba, dtype="float64"), LOGIT_CLIP, 1 - LOGIT_CLIP)
    return np.log(clipped / (1 - clipped))


def logistic_recalibration(
    x: np.ndarray, y: np.ndarray, weights: np.ndarray, start: tuple[float, float] | None = None
) -> tuple[float, float]:
    """(intercept, slope) of the weighted maximum-likelihood fit ``P(y=1) = expit(a + b x)``.

    Newton-Raphson on two parameters, from ``start`` if given (a bootstrap resample starts from the
    rows' own fit, which is close: fewer steps; it falls back to zero if that start fails). NaN when
    the fit does not exist (one class, perfect separation, or a singular information matrix), never
    a number that looks real."""
    if start is not None and np.all(np.isfinite(start)):
        fitted = _newton_logistic(x, y, weights, np.asarray(start, dtype="float64"))
        if np.isfinite(fitted[0]):
            return fitted
    return _newton_logistic(x, y, weights, np.zeros(2))


def _newton_logistic(x: np.ndarray, y: np.ndarray, weights: np.ndarray, beta: np.ndarray) -> tuple[float, float]:
    # Two parameters: the gradient and the 2 x 2 information matrix as weighted sums, solved in closed
    # form (a bootstrap runs this thousands of times; no n x 2 design matrix is built per step).
    # Rows a resample left out (weight 0) contribute nothing and are dropped once.
    kept = weights > 0
    x, y, w = x[kept], y[kept], weights[kept]
    wx, wxx = w * x, w * x * x
    a, b = float(beta[0]), float(beta[1])
    for _ in range(NEWTON_STEPS):
        mu = 0.5 * (1 + np.tanh((a + b * x) / 2))  # the logistic function, without overflow
        residual, spread = y - mu, mu * (1 - mu)
        g0, g1 = float(w @ residual), float(wx @ residual)
        i00, i01, i11 = float(w @ spread), float(wx @ spread), float(wxx @ spread)
        determinant = i00 * i11 - i01 * i01
        if not np.isfinite(determinant) or determinant <= 1e-12 * max(i00 * i11, np.finfo(float).tiny):
            return float("nan"), float("nan")  # singular information: the fit does not exist
        step_a, step_b = (i11 * g0 - i01 * g1) / determinant, (i00 * g1 - i01 * g0) / determinant
        a, b = a + step_a, b + step_b
        if not (np.isfinite(a) and np.isfinite(b)) or max(abs(a), abs(b)) > 1e6:
            return float("nan"), float("nan")
        if max(abs(step_a), abs(step_b)) < 1e-10:
            return a, b
    return float("nan"), float("nan")


def net_benefit(tp: float, fp: float, n: float, threshold: float) -> float:
    """Vickers & Elkin: true positives minus false positives weighted by the odds of the threshold
    (undefined, NaN, at a threshold of 0 or 1, where those odds are 0 or infinite)."""
    if not n or not 0 < threshold < 1:
        return float("nan")
    return (tp - fp * threshold / (1 - threshold)) / n


class _SortedRows:
    """Labels and probabilities sorted once; ``metrics(weights)`` scores the resample that repeats
    row i ``weights[i]`` times (weights of 1: the rows themselves)."""

    def __init__(self, y_true: np.ndarray, proba: np.ndarray, threshold: float) -> None:
        order = np.argsort(proba, kind="stable")
        self.proba = np.asarray(proba, dtype="float64")[order]
        self.positive = np.asarray(y_true)[order] == 1
        self.y = self.positive.astype("float64")
        self.logit = logit(self.proba)
        self.flagged = self.proba >= threshold
        self.threshold = threshold
        self.group = np.concatenate([[0], np.cumsum(self.proba[1:] != self.proba[:-1])])[: len(self.proba)]
        self.n_groups = int(self.group[-1]) + 1 if len(self.proba) else 0

    def _auc(self, positive_w: np.ndarray, negative_w: np.ndarray) -> float:
        positives, negatives = float(positive_w.sum()), float(negative_w.sum())
        if not positives or not negatives:
            return float("nan")
        pos = np.bincount(self.group, weights=positive_w, minlength=self.n_groups)
        neg = np.bincount(self.group, weights=negative_w, minlength=self.n_groups)
        return float(pos @ (np.cumsum(neg) - neg / 2)) / (positives * negatives)

    def metrics(self, weights: np.ndarray, recalibration_start: tuple[float, float] | None = None) -> dict[str, float]:
        """Every figure on the resample ``weights``; a resample's recalibration fit may start from the
        rows' own (``recalibration_start``), which is close."""
        w = weights.astype("float64")
        positive_w = np.where(self.positive, w, 0.0)
        negative_w = w - positive_w
        n, positives = float(w.sum()), float(positive_w.sum())
        negatives = n - positives
        tp, fp = float(positive_w[self.flagged].sum()), float(negative_w[self.flagged].sum())
        fn, tn = positives - tp, negatives - fp
        mean_predicted, observed = float(w @ self.proba) / n, positives / n
        intercept, slope = (
            logistic_recalibration(self.logit, self.y, w, recalibration_start)
            if positives and negatives
            else (np.nan,) * 2
        )
        nan = float("nan")
        return {
            "roc_auc": self._auc(positive_w, negative_w),
            "brier": float(w @ (self.proba - self.y) ** 2) / n,
            "mean_predicted": mean_predicted,
            "observed_rate": observed,
            "calibration_in_the_large": mean_predicted - observed,
            "calibration_slope": float(slope),
            "calibration_intercept": float(intercept),
            "sensitivity": tp / positives if positives else nan,
            "specificity": tn / negatives if negatives else nan,
            "ppv": tp / (tp + fp) if tp + fp else nan,
            "npv": tn / (tn + fn) if tn + fn else nan,
            "net_benefit": net_benefit(tp, fp, n, self.threshold),
            "net_benefit_treat_all": net_benefit(positives, negatives, n, self.threshold),
        }


def point_metrics(y_true: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    """Every external-validation figure on the rows as they are (no interval)."""
    rows = _SortedRows(np.asarray(y_true).astype(int), np.asarray(proba, dtype="float64"), threshold)
    return rows.metrics(np.ones(len(rows.proba)))


def metrics_with_intervals(
    y_true: np.ndarray,
    proba: np.ndarray,
    threshold: float,
    seed: int,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = BOOTSTRAP_LEVEL,
) -> dict[str, float]:
    """Every figure with its percentile bootstrap interval (stratified resamples: each keeps the
    site's prevalence, so ROC-AUC and the recalibration fit stay defined)."""
    y_true = np.asarray(y_true).astype(int)
    rows = _SortedRows(y_true, np.asarray(proba, dtype="float64"), threshold)
    out = rows.metrics(np.ones(len(rows.proba)))
    own_fit = (out["calibration_intercept"], out["calibration_slope"])
    rng = np.random.default_rng(seed)
    positive_idx, negative_idx = np.flatnonzero(rows.positive), np.flatnonzero(~rows.positive)
    draws: dict[str, list[float]] = {name: [] for name in out}
    for _ in range(n_resamples):
        counts = np.bincount(rng.choice(positive_idx, size=len(positive_idx)), minlength=len(rows.proba))
        counts += np.bincount(rng.choice(negative_idx, size=len(negative_idx)), minlength=len(rows.proba))
        for name, value in rows.metrics(counts, own_fit).items():
            draws[name].append(value)
    tail = (1 - level) / 2 * 100
    suffix = f"ci{round(level * 100)}"
    for name, values in draws.items():
        finite = np.asarray(values)[np.isfinite(values)]
        low, high = np.percentile(finite, [tail, 100 - tail]) if len(finite) else (np.nan, np.nan)
        out[f"{name}_{suffix}_low"], out[f"{name}_{suffix}_high"] = float(low), float(high)
    return out


def decision_curve(y_true: np.ndarray, proba: np.ndarray, thresholds: np.ndarray) -> list[dict[str, float]]:
    """Net benefit of the model, of treating everyone and of treating no one, per threshold probability."""
    y = np.asarray(y_true).astype(int) == 1
    p = np.asarray(proba, dtype="float64")
    n, positives = len(y), float(y.sum())
    curve = []
    for t in np.asarray(thresholds, dtype="float64"):
        flagged = p >= t
        tp, fp = float(np.sum(flagged & y)), float(np.sum(flagged & ~y))
        curve.append(
            {
                "threshold": round(float(t), 6),
                "model": net_benefit(tp, fp, n, float(t)),
                "treat_all": net_benefit(positives, n - positives, n, float(t)),
                "treat_none": 0.0,
            }
        )
    return curve


def threshold_grid(low: float, high: float, step: float) -> np.ndarray:
    """The decision curve's threshold probabilities, ``low`` to ``high`` inclusive."""
    return np.round(np.arange(low, high + step / 2, step), 6)
