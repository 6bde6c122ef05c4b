"""Logistic regression's coefficients as odds ratios a clinician can read, with bootstrap intervals.

- a measured column: per 1 SD of the training rows, with the SD in its unit ("per 1 SD = 9.1 years");
- a coded column (one indicator per code): each code against a reference code, the most common one in
  the training rows, since with every code encoded only the differences between codes have a meaning;
- a yes/no column: yes against no; an ordinal column: per step.

Intervals: the classifier refitted on bootstrap resamples of the training rows (at most
``MAX_BOOTSTRAP_ROWS`` of them, so a large file stays cheap; fewer rows give wider, never narrower,
intervals), as the fitted preprocessing encodes them. Keeping that encoding fixed keeps each odds
ratio's unit the one its label prints ("per 1 SD = 9.1 years": each resample's own SD would mix
units), and a resample costs one logistic fit rather than a whole pipeline's. Pure: fitted pipeline
and rows in, labelled effects out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

N_BOOTSTRAP = 100  # percentile intervals; each refit is one logistic fit on the encoded rows
MAX_BOOTSTRAP_ROWS = 5000


@dataclass(frozen=True)
class OddsRatio:
    label: str
    odds_ratio: float
    low: float | None = None  # 95% bootstrap interval
    high: float | None = None


@dataclass(frozen=True)
class Contrast:
    """One odds ratio as a difference of coefficients: ``plus`` minus ``minus`` (None = 0)."""

    label: str
    plus: int
    minus: int | None = None


def _code_of(feature: str, column: str) -> str:
    return feature.split("__", 1)[1][len(column) + 1 :]


def _meaning(codes: Mapping[Any, str], code: str) -> str:
    return next((m for k, m in codes.items() if str(k) == code or f"{k}.0" == code), code)


def contrasts(features: list[str], x_train: pd.DataFrame, scales: Mapping[str, float], codebook: Any) -> list[Contrast]:
    """What each odds ratio compares, in the codebook's words and the measurements' units."""
    found: list[Contrast] = []
    by_column: dict[str, list[int]] = {}
    for i, feature in enumerate(features):
        group, _, rest = feature.partition("__") if "__" in feature else ("", "", feature)
        if group == "categorical":
            column = next((c for c in codebook.columns if rest.startswith(f"{c}_")), rest.rsplit("_", 1)[0])
            by_column.setdefault(column, []).append(i)
        elif group == "numeric":
            measurement = codebook.measurements.get(rest)
            unit = f" {measurement.unit}" if measurement else ""
            name = measurement.description if measurement else rest
            found.append(Contrast(f"{name} (per 1 SD = {scales.get(rest, float('nan')):.3g}{unit})", i))
        elif group == "binary" and rest in codebook.columns:
            codes = codebook.columns[rest].codes
            found.append(Contrast(f"{codebook.describe(rest)}: {codes.get(1, '1')} vs {codes.get(0, '0')}", i))
        else:
            found.append(Contrast(f"{codebook.describe(rest)} ({'per step' if group == 'ordinal' else 'per unit'})", i))
    for column, indices in by_column.items():
        reference = str(x_train[column].mode().iloc[0]) if column in x_train else None
        ref_index = next((i for i in indices if _code_of(features[i], column) in (reference, f"{reference}.0")), None)
        if reference is not None and reference.endswith(".0"):
            reference = reference[:-2]
        codes = codebook.columns[column].codes if column in codebook.columns else {}
        ref_name = _meaning(codes, _code_of(features[ref_index], column)) if ref_index is not None else "reference"
        for i in indices:
            if i != ref_index:
                label = f"{codebook.describe(column)}: {_meaning(codes, _code_of(features[i], column))} vs {ref_name}"
                found.append(Contrast(label, i, ref_index))
    return found


def log_odds(coefficients: np.ndarray, wanted: list[Contrast]) -> np.ndarray:
    return np.array([coefficients[c.plus] - (coefficients[c.minus] if c.minus is not None else 0.0) for c in wanted])


def numeric_scales(pipeline: Any, numeric_columns: list[str]) -> dict[str, float]:
    """The training SD of each measured column, from the fitted scaler (what '1 SD' means)."""
    transformer: Any = getattr(pipeline.named_steps["preprocess"], "named_transformers_", {}).get("numeric")
    scaler = transformer.named_steps.get("scale") if hasattr(transformer, "named_steps") else None
    if scaler is None or getattr(scaler, "scale_", None) is None:
        return {}
    return {c: float(s) for c, s in zip(numeric_columns, scaler.scale_, strict=False)}


def odds_ratios(
    pipeline: Any, x_train: pd.DataFrame, y_train: np.ndarray, codebook: Any, seed: int
) -> tuple[list[OddsRatio], int]:
    """Every non-zero effect of a fitted LR pipeline as an odds ratio with its 95% bootstrap interval
    and how many effects L1 set to exactly zero (left out)."""
    from sklearn.base import clone

    features = list(pipeline.named_steps["preprocess"].get_feature_names_out())
    numeric = [f.split("__", 1)[1] for f in features if f.startswith("numeric__")]
    wanted = contrasts(features, x_train, numeric_scales(pipeline, numeric), codebook)
    point = log_odds(pipeline.named_steps["classifier"].coef_[0], wanted)
    rng = np.random.default_rng(seed)
    rows = min(len(x_train), MAX_BOOTSTRAP_ROWS)
    encoded = np.asarray(pipeline.named_steps["preprocess"].transform(x_train), dtype=float)
    classifier = pipeline.named_steps["classifier"]
    varies = (encoded != encoded[:1]).any(axis=0)
    y = np.asarray(y_train)
    draws = []
    for _ in range(N_BOOTSTRAP):
        pick = rng.choice(len(x_train), size=rows, replace=True)
        sample = encoded[pick]
        # A resample without both classes cannot be fitted; one where a column that varies in the
        # training rows is constant (a rare code left out) would report regularisation's zero as
        # that code's effect, so it is skipped, as a refit whose encoder lost the code was before.
        if len(np.unique(y[pick])) < 2 or not (sample != sample[:1]).any(axis=0)[varies].all():
            continue
        draws.append(log_odds(clone(classifier).fit(sample, y[pick]).coef_[0], wanted))
    low, high = np.percentile(draws, [2.5, 97.5], axis=0) if draws else (None, None)
    kept = [
        OddsRatio(
            c.label,
            float(np.exp(point[i])),
            None if low is None else float(np.exp(low[i])),
            None if high is None else float(np.exp(high[i])),
        )
        for i, c in enumerate(wanted)
        if point[i] != 0  # L1 set it to exactly zero: the plot says how many, and does not draw them
    ]
    return kept, int(np.sum(point == 0))
