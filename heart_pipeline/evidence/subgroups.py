"""Subgroup figures: the external-validation metrics per sex, per age band and per site.

Pure: frames and arrays in, ``SubgroupResult`` records out. The internal test evaluation
(tasks/evaluate.py) and external validation (tasks/external.py) call the same function, so a
group means the same thing in both. A group too small to estimate (fewer than ``min_rows`` rows,
or one class only) says so instead of printing a number; a group whose sensitivity falls below
the promotion floor carries a warning.

Grouping is written here over the project's own bootstrap (``evidence.external``) rather than with
fairlearn's ``MetricFrame``: the metrics need bootstrap intervals and a "too small" verdict per
group, which MetricFrame does not give, and it would be one more dependency for a groupby.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from heart_pipeline.evidence.external import metrics_with_intervals
from heart_pipeline.results import SubgroupResult

SUBGROUP_METRICS = ("roc_auc", "sensitivity", "specificity", "ppv", "npv", "mean_predicted", "observed_rate", "brier")


def age_band_labels(age: pd.Series, edges: Sequence[float]) -> pd.Series:
    """``<50``, ``50-59``, ``>=60`` for edges [50, 60] (whole years; missing ages stay missing)."""
    bounds = [-np.inf, *edges, np.inf]
    names = []
    for low, high in itertools.pairwise(bounds):
        if low == -np.inf:
            names.append(f"<{high:g}")
        elif high == np.inf:
            names.append(f">={low:g}")
        else:
            names.append(f"{low:g}-{high - 1:g}")
    return pd.cut(pd.to_numeric(age, errors="coerce"), bounds, right=False, labels=names)


def group_labels(
    frame: pd.DataFrame, age_edges: Sequence[float], sex_names: Mapping[int, str], site_column: str | None
) -> dict[str, pd.Series]:
    """Each attribute's group per row: sex (named from the codebook), age band, and site when the
    frame has a site column."""
    labels = {
        "sex": pd.to_numeric(frame["sex"], errors="coerce").map(lambda v: sex_names.get(int(v)) if v == v else None),
        "age_band": age_band_labels(frame["age"], age_edges),
    }
    if site_column and site_column in frame.columns:
        labels["site"] = frame[site_column].astype(object).where(frame[site_column].notna(), None)
    return labels


def _unlike(value: float, floor: float) -> str:
    """``value`` with two decimals, or as many more as it takes not to print the floor itself
    ("0.696 is below the floor 0.70", never "0.70 is below the floor 0.70")."""
    for decimals in (2, 3, 4):
        if f"{value:.{decimals}f}" != f"{floor:.{decimals}f}":
            return f"{value:.{decimals}f}"
    return f"{value:g}"


def _one_group(
    attribute: str, group: str, y: np.ndarray, proba: np.ndarray, threshold: float, settings: SubgroupSettings
) -> SubgroupResult:
    n, positives = len(y), int(y.sum())
    if n < settings.min_rows:
        note = f"too small to estimate: {n} rows (at least {settings.min_rows} needed)"
        return SubgroupResult(attribute, group, n, positives, False, note)
    if positives in (0, n):
        note = f"one class only: {positives} of {n} with disease; discrimination and rates cannot be estimated"
        return SubgroupResult(attribute, group, n, positives, False, note)
    full = metrics_with_intervals(y, proba, threshold, settings.seed, settings.n_resamples)
    metrics = {k: v for k, v in full.items() if k.split("_ci95_")[0] in SUBGROUP_METRICS}
    warning = None
    if metrics["sensitivity"] < settings.recall_floor:
        found = round(metrics["sensitivity"] * positives)
        warning = (
            f"{attribute} {group}: sensitivity {_unlike(metrics['sensitivity'], settings.recall_floor)} "
            f"[{metrics['sensitivity_ci95_low']:.2f}, {metrics['sensitivity_ci95_high']:.2f}] is below the "
            f"promotion floor {settings.recall_floor:.2f} (promotion.floors.test_recall): "
            f"{found} of {positives} with disease flagged"
        )
    return SubgroupResult(attribute, group, n, positives, True, "", metrics, warning)


@dataclass(frozen=True)
class SubgroupSettings:
    """What a subgroup table needs from the config: the smallest estimable group, the sensitivity
    floor, the bootstrap seed and size."""

    min_rows: int
    recall_floor: float
    seed: int
    n_resamples: int


def subgroup_table(
    labels: Mapping[str, pd.Series],
    y_true: np.ndarray,
    proba: np.ndarray,
    threshold: float,
    settings: SubgroupSettings,
) -> list[SubgroupResult]:
    """One row per (attribute, group), groups in their own order (age bands youngest first) or sorted;
    rows whose group is unknown are left out of that attribute only."""
    y = np.asarray(y_true).astype(int)
    p = np.asarray(proba, dtype="float64")
    rows = []
    for attribute, series in labels.items():
        values = series.to_numpy(dtype=object)
        present = pd.notna(values)
        seen = {str(v) for v in values[present]}
        ordered = [str(c) for c in series.cat.categories] if isinstance(series.dtype, pd.CategoricalDtype) else []
        for group in [g for g in ordered if g in seen] or sorted(seen):
            mask = present & (values.astype(str) == group)
            rows.append(_one_group(attribute, group, y[mask], p[mask], threshold, settings))
    return rows


def subgroup_warnings(rows: Sequence[SubgroupResult]) -> list[str]:
    return [row.warning for row in rows if row.warning]


def subgroup_frame(rows: Sequence[SubgroupResult]) -> pd.DataFrame:
    """The table as one row per group (CSV and markdown): counts, each metric as ``value [low, high]``."""
    records = []
    for row in rows:
        record: dict[str, object] = {"attribute": row.attribute, "group": row.group, "n": row.n}
        record["with disease"] = row.positives
        for name in SUBGROUP_METRICS:
            if row.estimable and name in row.metrics:
                low, high = row.metrics[f"{name}_ci95_low"], row.metrics[f"{name}_ci95_high"]
                record[name] = f"{row.metrics[name]:.3f} [{low:.3f}, {high:.3f}]"
            else:
                record[name] = "-"
        record["note"] = row.warning or row.note
        records.append(record)
    return pd.DataFrame(records)
