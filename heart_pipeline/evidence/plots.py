"""Clinical plots of a model on the held-out test set: pure functions from numbers to figures.

Each plot is drawn for a reader who decides about patients: the operating point the model really
uses (its threshold) is marked, rates sit next to counts, axes say "disease" rather than
"Positive label: 1", and small samples show their uncertainty instead of hiding it. File names are
the same in every run (``PLOT_FILES``) so MLflow can compare runs image by image.

matplotlib is imported inside the functions: importing it costs about a second, and only the
evaluate step draws.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from heart_pipeline.evidence.effects import OddsRatio, odds_ratios

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from heart_pipeline.data_contract.codebook import Codebook

CLASS_NAMES = ("no disease", "disease")
PLOT_FILES = {
    "roc_curve": "roc_curve.png",
    "precision_recall_curve": "precision_recall_curve.png",
    "confusion_matrix": "confusion_matrix.png",
    "calibration": "calibration.png",
    "permutation_importance": "permutation_importance.png",
    "odds_ratios": "odds_ratios.png",
}
# External validation draws the same ROC and calibration plots and a decision curve.
EXTERNAL_PLOT_FILES = {
    "roc_curve": PLOT_FILES["roc_curve"],
    "calibration": PLOT_FILES["calibration"],
    "decision_curve": "decision_curve.png",
}
FONT_SIZE = 11
DPI = 110
POINT_STYLE = {"marker": "o", "markersize": 9, "color": "#c62828", "zorder": 5}


@dataclass(frozen=True)
class OperatingPoint:
    """What the model does at its decision threshold, as counts and rates."""

    threshold: float
    tn: int
    fp: int
    fn: int
    tp: int

    @property
    def sensitivity(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def specificity(self) -> float:
        return self.tn / (self.tn + self.fp) if self.tn + self.fp else 0.0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def negative_predictive_value(self) -> float:
        return self.tn / (self.tn + self.fn) if self.tn + self.fn else 0.0


def operating_point(y_true: np.ndarray, proba: np.ndarray, threshold: float) -> OperatingPoint:
    predicted = np.asarray(proba) >= threshold
    actual = np.asarray(y_true) == 1
    return OperatingPoint(
        threshold,
        tn=int(np.sum(~predicted & ~actual)),
        fp=int(np.sum(predicted & ~actual)),
        fn=int(np.sum(~predicted & actual)),
        tp=int(np.sum(predicted & actual)),
    )


def _interval(intervals: Mapping[str, float], metric: str) -> str:
    low, high = intervals.get(f"test_{metric}_ci95_low"), intervals.get(f"test_{metric}_ci95_high")
    return f" [95% CI {low:.2f}-{high:.2f}]" if low is not None and high is not None else ""


def _new_figure(width: float = 6.4, height: float = 5.2, rows: int = 1, **grid: Any) -> tuple[Figure, Any]:
    from matplotlib.figure import Figure

    # A bare Figure (not pyplot): no global state, safe in threads, nothing to close.
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    axes = figure.subplots(rows, 1, **grid)
    return figure, axes


def _style(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=FONT_SIZE + 1)
    ax.set_xlabel(xlabel, fontsize=FONT_SIZE)
    ax.set_ylabel(ylabel, fontsize=FONT_SIZE)
    ax.tick_params(labelsize=FONT_SIZE - 1)
    ax.grid(alpha=0.3)


def roc_figure(
    y_true: np.ndarray,
    proba: np.ndarray,
    threshold: float,
    model: str,
    intervals: Mapping[str, float],
    where: str = "test set",
) -> Figure:
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(y_true, proba)
    point = operating_point(y_true, proba, threshold)
    figure, ax = _new_figure()
    auc = roc_auc_score(y_true, proba)
    ax.plot(fpr, tpr, lw=2, label=f"{model}: ROC-AUC {auc:.2f}{_interval(intervals, 'roc_auc')}")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="chance (AUC 0.50)")
    ax.plot(
        1 - point.specificity,
        point.sensitivity,
        **POINT_STYLE,
        label=f"threshold {threshold:.2f}: sensitivity {point.sensitivity:.2f}, specificity {point.specificity:.2f}",
    )
    _style(
        ax,
        f"ROC curve, {where} ({len(y_true)} patients)",
        "1 - specificity (share of no-disease patients flagged)",
        "sensitivity (share of disease patients found)",
    )
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), aspect="equal")
    ax.legend(loc="lower right", fontsize=FONT_SIZE - 2)
    return figure


def precision_recall_figure(
    y_true: np.ndarray, proba: np.ndarray, threshold: float, model: str, intervals: Mapping[str, float]
) -> Figure:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    precision, recall, _ = precision_recall_curve(y_true, proba)
    point = operating_point(y_true, proba, threshold)
    prevalence = float(np.mean(np.asarray(y_true) == 1))
    figure, ax = _new_figure()
    ap = average_precision_score(y_true, proba)
    ax.plot(recall, precision, lw=2, drawstyle="steps-post", label=f"{model}: average precision {ap:.2f}")
    ax.axhline(prevalence, ls="--", color="grey", label=f"prevalence {prevalence:.2f} (a model that guesses)")
    ax.plot(
        point.sensitivity,
        point.precision,
        **POINT_STYLE,
        label=f"threshold {threshold:.2f}: recall {point.sensitivity:.2f}{_interval(intervals, 'recall')},\n"
        f"precision {point.precision:.2f}{_interval(intervals, 'precision')}",
    )
    _style(
        ax,
        f"Precision-recall curve, test set ({len(y_true)} patients)",
        "recall = sensitivity (share of disease patients found)",
        "precision (share of flagged patients with disease)",
    )
    ax.set(xlim=(-0.02, 1.02), ylim=(0, 1.05))
    ax.legend(loc="lower left", fontsize=FONT_SIZE - 2)
    return figure


def confusion_figure(y_true: np.ndarray, proba: np.ndarray, threshold: float, model: str) -> Figure:
    point = operating_point(y_true, proba, threshold)
    counts = np.array([[point.tn, point.fp], [point.fn, point.tp]])
    row_totals = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, row_totals, out=np.zeros_like(counts, dtype=float), where=row_totals > 0)
    figure, ax = _new_figure(6.4, 5.4)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    names = [["true negative", "false positive"], ["false negative", "true positive"]]
    for row in range(2):
        for col in range(2):
            ax.text(
                col,
                row,
                f"{names[row][col]}\n{counts[row, col]}\n{rates[row, col]:.0%} of {CLASS_NAMES[row]}",
                ha="center",
                va="center",
                fontsize=FONT_SIZE,
                color="white" if rates[row, col] > 0.6 else "black",
            )
    ax.set_xticks([0, 1], [f"predicted {c}" for c in CLASS_NAMES], fontsize=FONT_SIZE)
    ax.set_yticks(
        [0, 1],
        [f"actual {c}\n({n} patients)" for c, n in zip(CLASS_NAMES, row_totals[:, 0], strict=True)],
        fontsize=FONT_SIZE,
    )
    ax.set_title(
        f"{model} at threshold {threshold:.2f}, test set\n"
        f"sensitivity {point.sensitivity:.2f}, specificity {point.specificity:.2f}, "
        f"PPV {point.precision:.2f}, NPV {point.negative_predictive_value:.2f}",
        fontsize=FONT_SIZE + 1,
    )
    return figure


def quantile_bins(proba: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index per prediction, with (about) the same number of patients in each bin."""
    edges = np.unique(np.quantile(proba, np.linspace(0, 1, n_bins + 1)))
    return np.clip(np.searchsorted(edges, proba, side="right") - 1, 0, max(len(edges) - 2, 0))


def _wilson(successes: np.ndarray, totals: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a proportion: honest for small bins, unlike the normal approximation."""
    share = successes / totals
    centre = (share + z**2 / (2 * totals)) / (1 + z**2 / totals)
    half = z * np.sqrt(share * (1 - share) / totals + z**2 / (4 * totals**2)) / (1 + z**2 / totals)
    # The interval always holds the share; at a share of 0 or 1 rounding can put a bound 1e-16 past it,
    # which matplotlib refuses as a negative error bar (seen on a 10k-row run with an all-disease bin).
    return np.clip(np.minimum(centre - half, share), 0, 1), np.clip(np.maximum(centre + half, share), 0, 1)


def calibration_figure(
    y_true: np.ndarray, proba: np.ndarray, threshold: float, model: str, brier: float, where: str = "test set"
) -> Figure:
    """Observed disease rate per quantile bin (with counts and 95% intervals) over a histogram of
    predictions. About 15 patients per bin: ten bins on 61 patients would be mostly noise."""
    y_true = np.asarray(y_true).astype(int)
    proba = np.asarray(proba, dtype=float)
    n_bins = int(np.clip(len(proba) // 15, 2, 10))
    bins = quantile_bins(proba, n_bins)
    used = np.unique(bins)
    mean_predicted = np.array([proba[bins == b].mean() for b in used])
    observed = np.array([y_true[bins == b].mean() for b in used])
    totals = np.array([np.sum(bins == b) for b in used], dtype=float)
    low, high = _wilson(observed * totals, totals)
    figure, (ax, hist) = _new_figure(6.4, 6.6, rows=2, sharex=True, gridspec_kw={"height_ratios": [3, 1.2]})
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="perfectly calibrated")
    ax.errorbar(
        mean_predicted,
        observed,
        yerr=[observed - low, high - observed],
        fmt="o-",
        lw=2,
        capsize=4,
        label=f"{model}: {len(used)} bins of equal size, 95% intervals",
    )
    for i, (x, y, n) in enumerate(zip(mean_predicted, observed, totals, strict=True)):
        ax.annotate(
            f"n={int(n)}",
            (x, y),
            textcoords="offset points",
            xytext=(0, 12 if i % 2 else -20),
            ha="center",
            fontsize=FONT_SIZE - 2,
        )
    _style(
        ax,
        f"Calibration, {where} ({len(proba)} patients): Brier score {brier:.3f}",
        "",
        "observed share with disease",
    )
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
    ax.legend(loc="lower right", fontsize=FONT_SIZE - 2)
    edges = np.linspace(0, 1, 21)
    hist.hist(
        [proba[y_true == 0], proba[y_true == 1]],
        bins=edges,
        stacked=True,
        color=["#7aa6d6", "#c62828"],
        label=list(CLASS_NAMES),
    )
    hist.axvline(threshold, color="black", ls=":", label=f"threshold {threshold:.2f}")
    _style(hist, "", "predicted probability of disease", "patients")
    hist.legend(fontsize=FONT_SIZE - 2, loc="upper center", ncols=3)
    return figure


def _horizontal_effects(
    labels: Sequence[str], values: np.ndarray, errors: np.ndarray | None, title: str, xlabel: str, reference: float
) -> Figure:
    order = np.argsort(np.abs(np.log(values)) if reference == 1 else np.abs(values))
    figure, ax = _new_figure(10, max(3.5, 0.34 * len(labels) + 1.6))
    positions = np.arange(len(order))
    ax.barh(
        positions,
        values[order] - reference,
        left=reference,
        xerr=None if errors is None else (errors[:, order] if errors.ndim == 2 else errors[order]),
        color=["#c62828" if v > reference else "#2f6db3" for v in values[order]],
        capsize=3,
    )
    ax.axvline(reference, color="black", lw=1)
    ax.set_yticks(positions, [labels[i] for i in order], fontsize=FONT_SIZE - 1)
    _style(ax, title, xlabel, "")
    return figure


def odds_ratio_figure(effects: Sequence[OddsRatio], model: str, left_out: int = 0) -> Figure:
    """Odds ratios of disease on a log axis (1 = no effect), each with its 95% bootstrap interval."""
    values = np.array([e.odds_ratio for e in effects], dtype=float)
    errors = None
    if effects and all(e.low is not None and e.high is not None for e in effects):
        lows = np.array([e.low for e in effects], dtype=float)
        highs = np.array([e.high for e in effects], dtype=float)
        errors = np.vstack([np.clip(values - lows, 0, None), np.clip(highs - values, 0, None)])
    note = f"\n({left_out} features set to 0 by L1, not drawn)" if left_out else ""
    figure = _horizontal_effects(
        [e.label for e in effects],
        values,
        errors,
        f"{model}: odds ratio of disease (95% bootstrap interval){note}",
        "odds ratio, log scale: > 1 raises the odds of disease, < 1 lowers them\n"
        "coded columns: each code against the most common one; measured columns: per 1 SD of the training rows",
        reference=1.0,
    )
    from matplotlib.ticker import FixedLocator, NullLocator

    ax = figure.axes[0]
    ax.set_xscale("log")
    ticks = [t for t in (0.1, 0.2, 0.33, 0.5, 0.67, 1, 1.5, 2, 3, 5, 10) if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    return figure


def permutation_figure(column_labels: Sequence[str], means: np.ndarray, stds: np.ndarray, model: str) -> Figure:
    return _horizontal_effects(
        column_labels,
        np.asarray(means, dtype=float),
        np.asarray(stds, dtype=float),
        f"{model}: permutation importance of each column, test set",
        "drop in ROC-AUC when the column is shuffled (whiskers: 1 SD over shuffles)",
        reference=0.0,
    )


def decision_curve_figure(curve: Sequence[Mapping[str, float]], threshold: float, model: str, where: str) -> Figure:
    """Net benefit of the model against treating everyone and no one, per threshold probability
    (Vickers & Elkin 2006); the model's own threshold is marked."""
    t = np.array([point["threshold"] for point in curve])
    figure, ax = _new_figure(6.4, 4.8)
    ax.plot(t, [point["model"] for point in curve], lw=2, label=model)
    ax.plot(t, [point["treat_all"] for point in curve], ls="--", color="#c62828", label="treat all")
    ax.axhline(0.0, color="grey", ls=":", label="treat none")
    ax.axvline(threshold, color="black", ls=":", lw=1, label=f"model threshold {threshold:.2f}")
    top = max([point["model"] for point in curve] + [point["treat_all"] for point in curve] + [0.05])
    ax.set(ylim=(-0.05, top + 0.05))
    _style(ax, f"Decision curve, {where}", "threshold probability of disease", "net benefit")
    ax.legend(fontsize=FONT_SIZE - 2, loc="upper right")
    return figure


def png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    # "tight": long clinical labels push the axes right; the title and axis notes must not be cut off.
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.15)
    return buffer.getvalue()


def feature_label(
    feature: str, descriptions: Mapping[str, str], codes: Mapping[str, Mapping[Any, str]], column: str | None = None
) -> str:
    """A transformed feature name in words: ``categorical__cp_0`` -> 'Chest pain type: asymptomatic'.

    Without a codebook entry the column name stays, so a new column still gets a label.
    """
    group, _, rest = feature.partition("__")
    if not rest:
        group, rest = "", feature
    if group == "categorical" and column is None:
        column = next((c for c in codes if rest.startswith(f"{c}_")), rest.rsplit("_", 1)[0])
    column = column or rest
    text = descriptions.get(column, column)
    if group == "categorical":
        code = rest[len(column) + 1 :]
        meanings = codes.get(column, {})
        meaning = next((m for k, m in meanings.items() if str(k) == code or f"{k}.0" == code), code)
        return f"{text}: {meaning}"
    if group == "binary" and column in codes:
        return f"{text}: {codes[column].get(1, '1')} vs {codes[column].get(0, '0')}"
    if group == "ordinal":
        return f"{text} (per step)"
    return f"{text} (per 1 SD)" if group == "numeric" else text


PERMUTATION_REPEATS = 10
PERMUTATION_MAX_ROWS = 5000


def permutation_importance(model: Any, x_test: Any, y_test: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and SD over shuffles of the drop in ROC-AUC when one raw column is shuffled.

    The same quantity as ``sklearn.inspection.permutation_importance(scoring="roc_auc")``, but every
    shuffled copy is scored in ONE ``predict_proba`` call: sklearn calls the whole Pipeline once per
    column and shuffle (130 calls here), which costs 10 to 20 s on a busy laptop for 61 rows. Raw
    columns go in, so importances are per clinical column and comparable across algorithms. At most
    ``PERMUTATION_MAX_ROWS`` rows, so a large test set stays cheap.
    """
    import pandas as pd

    from heart_pipeline.evidence.stats import fast_metrics

    rng = np.random.default_rng(seed)
    rows = min(len(x_test), PERMUTATION_MAX_ROWS)
    x = x_test.iloc[:rows].reset_index(drop=True)
    y = np.asarray(y_test)[:rows]
    copies = []
    for column in x.columns:
        for _ in range(PERMUTATION_REPEATS):
            shuffled = x.copy()
            shuffled[column] = rng.permutation(shuffled[column].to_numpy())
            copies.append(shuffled)
    proba = model.predict_proba(pd.concat([x, *copies], ignore_index=True))[:, 1].reshape(-1, rows)
    baseline = fast_metrics(y, proba[0], 0.5)["test_roc_auc"]
    drops = np.array([baseline - fast_metrics(y, p, 0.5)["test_roc_auc"] for p in proba[1:]])
    drops = drops.reshape(len(x.columns), PERMUTATION_REPEATS)
    return drops.mean(axis=1), drops.std(axis=1)


def model_figures(  # noqa: PLR0913 - the model, its test rows, its metrics, the codebook, the seed, the training rows
    model: Any,
    x_test: Any,
    y_test: np.ndarray,
    name: str,
    metrics: Mapping[str, float],
    codebook: Codebook,
    seed: int,
    training: tuple[Any, np.ndarray] | None = None,
) -> dict[str, Figure]:
    """Every plot of one model, keyed as in ``PLOT_FILES``. ``model`` is the fitted
    FixedThresholdClassifier around the Pipeline: raw patient rows in, its own threshold inside."""
    threshold = float(model.threshold)
    descriptions = {column: codebook.describe(column) for column in x_test.columns}
    codes = {column: coded.codes for column, coded in codebook.columns.items()}
    y_test = np.asarray(y_test).astype(int)
    proba = model.predict_proba(x_test)[:, 1]
    brier = float(np.mean((proba - y_test) ** 2))
    figures = {
        "roc_curve": roc_figure(y_test, proba, threshold, name, metrics),
        "precision_recall_curve": precision_recall_figure(y_test, proba, threshold, name, metrics),
        "confusion_matrix": confusion_figure(y_test, proba, threshold, name),
        "calibration": calibration_figure(y_test, proba, threshold, name, brier),
    }
    importance_mean, importance_std = permutation_importance(model, x_test, y_test, seed)
    columns = [str(c) for c in x_test.columns]
    figures["permutation_importance"] = permutation_figure(
        [feature_label(c, descriptions, codes, column=c) for c in columns],
        importance_mean,
        importance_std,
        name,
    )
    pipeline = getattr(model, "estimator_", model)
    if hasattr(pipeline.named_steps["classifier"], "coef_") and training is not None:
        effects, zeroed = odds_ratios(pipeline, training[0], training[1], codebook, seed)
        figures["odds_ratios"] = odds_ratio_figure(effects, name, left_out=zeroed)
    return figures
