"""Checks of meaning: pure statistics that say whether a file means what the contract says.

Form checks (types, bounds, code sets) cannot see a file whose label is inverted, whose codes are
another coding's, or whose missing values were written as 0: every cell is valid. These functions
compare the file with clinical knowledge (disease markers) and with a reference profile (the
bundled data's code and value shares, great_expectations/reference_profile.json). They take
frames and plain dicts and return plain results; the contract's custom Great Expectations
expectations (heart_pipeline/data_contract/expectations.py) call them, and so can anything else.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from heart_pipeline.data_contract.codebook import Codebook

MISSING = "missing"
# Bigger files are judged on a fixed random subsample: at this size every real effect is already
# overwhelmingly significant, and ranking a million rows per marker buys nothing.
MAX_ROWS_FOR_TESTS = 50_000
# A code that a hypothesis says cannot occur still gets this probability, so one typo costs a
# fixed amount of evidence (log(1e-3) = -6.9 nats) instead of ruling the hypothesis out.
UNSEEN_CODE_PROBABILITY = 1e-3


def _subsample(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sample(MAX_ROWS_FOR_TESTS, random_state=0) if len(frame) > MAX_ROWS_FOR_TESTS else frame


def _number(value: float) -> str:
    return f"{value:.4g}" if abs(value) >= 100 else f"{value:.3g}"


# --- label direction -------------------------------------------------------------------------


@dataclass(frozen=True)
class MarkerEffect:
    """How one disease marker differs between target = 1 rows and the others."""

    marker: str  # "exang", or "cp = 0" for one code of a coded column
    expected: str  # rises | falls: its clinical direction with disease
    binary: bool
    disease_value: float  # share (binary) or mean among target = 1 rows
    other_value: float
    auc: float  # P(marker of a target = 1 row > marker of another row), ties counted half
    p_reversed: float  # one-sided p-value for the direction opposite to the expected one

    def describe(self) -> str:
        """``exang 14% with target=1 vs 55% without (AUC 0.30)``."""
        if self.binary:
            values = f"{self.disease_value:.0%} with target=1 vs {self.other_value:.0%} without"
        else:
            values = f"mean {_number(self.disease_value)} with target=1 vs {_number(self.other_value)} without"
        return f"{self.marker} {values} (AUC {self.auc:.2f}, expected {'>' if self.expected == 'rises' else '<'} 0.5)"


def marker_effects(frame: pd.DataFrame, target: str, markers: list[dict[str, Any]]) -> list[MarkerEffect]:
    """Each marker's effect: a Mann-Whitney AUC and the one-sided p-value of its reversal.

    ``markers`` entries: ``{"column": "oldpeak", "direction": "rises"}``, or with ``"code": 0`` to
    test one code (asymptomatic chest pain is cp = 0). Markers absent from the frame are skipped.
    """
    from scipy.stats import mannwhitneyu

    frame = _subsample(frame)
    labels = pd.to_numeric(frame[target], errors="coerce") if target in frame.columns else None
    effects: list[MarkerEffect] = []
    for spec in markers:
        column, code = spec["column"], spec.get("code")
        if labels is None or column not in frame.columns:
            continue
        values = pd.to_numeric(frame[column], errors="coerce")
        usable = values.notna() & labels.isin([0, 1])
        x = values[usable]
        if code is not None:
            x = (x == code).astype("float64")
        disease = x[labels[usable] == 1].to_numpy(dtype="float64")
        other = x[labels[usable] == 0].to_numpy(dtype="float64")
        if len(disease) < 2 or len(other) < 2 or np.ptp(x.to_numpy(dtype="float64")) == 0:
            continue
        rises = spec["direction"] == "rises"
        test = mannwhitneyu(disease, other, alternative="less" if rises else "greater", method="asymptotic")
        effects.append(
            MarkerEffect(
                marker=f"{column} = {code}" if code is not None else column,
                expected=spec["direction"],
                binary=code is not None or set(np.unique(x)) <= {0.0, 1.0},
                disease_value=float(disease.mean()),
                other_value=float(other.mean()),
                auc=float(test.statistic / (len(disease) * len(other))),
                p_reversed=float(test.pvalue),
            )
        )
    return effects


# The markers the Kaggle importer reads to tell whether a file's target already means disease.
KAGGLE_CHECK_MARKERS: list[dict[str, Any]] = [
    {"column": "exang", "direction": "rises"},
    {"column": "oldpeak", "direction": "rises"},
    {"column": "ca", "direction": "rises"},
    {"column": "cp", "code": 0, "direction": "rises"},
    {"column": "thalach", "direction": "falls"},
]


def reversed_markers(effects: list[MarkerEffect], max_p_value: float) -> list[MarkerEffect]:
    return [e for e in effects if e.p_reversed < max_p_value]


def label_inversion_reason(effects: list[MarkerEffect], min_reversed: int, max_p_value: float) -> str | None:
    """The one-line reason when at least ``min_reversed`` markers point significantly the wrong way."""
    backwards = reversed_markers(effects, max_p_value)
    if len(backwards) < min_reversed:
        return None
    shown = "; ".join(e.describe() for e in backwards)
    # The remedy comes before the evidence, so it survives when a long line is cut for the terminal.
    return (
        f"target looks inverted: {len(backwards)} of {len(effects)} disease markers point the other way; "
        "if this file codes disease as 0, declare it with --disease-label 0 (or data.disease_label: 0 in "
        f"config), otherwise check how target was derived (one-sided p < {max_p_value:g} each): {shown}"
    )


# --- reference profile -----------------------------------------------------------------------


def _share_key(value: Any) -> str:
    if pd.isna(value):
        return MISSING
    number = float(value)
    return str(int(number)) if number.is_integer() else str(number)


def column_profile(values: pd.Series, coded: bool, n_bins: int = 5) -> dict[str, Any]:
    """A column's shares: per code for coded columns; for measurements, the share of exact 0 (the
    usual placeholder) and of quantile bins of the other values. Missing values are a share too."""
    numbers = pd.to_numeric(values, errors="coerce")
    if coded:
        return {"kind": "codes", "shares": value_shares(numbers, None)}
    nonzero = numbers[(numbers != 0) & numbers.notna()]
    quantiles = np.linspace(0, 1, n_bins + 1)[1:-1]
    edges = sorted({float(q) for q in nonzero.quantile(quantiles).round(3)}) if len(nonzero) else []
    return {"kind": "bins", "edges": edges, "shares": value_shares(numbers, edges)}


def _bin_labels(numbers: pd.Series, edges: list[float]) -> pd.Series:
    """``0``, ``< 211``, ``211 to 241``, ``>= 275`` or ``missing`` for each value."""
    bounds = [-np.inf, *edges, np.inf]
    names = [
        f"< {_number(hi)}"
        if lo == -np.inf
        else f">= {_number(lo)}"
        if hi == np.inf
        else f"{_number(lo)} to {_number(hi)}"
        for lo, hi in itertools.pairwise(bounds)
    ]
    binned = pd.cut(numbers, bounds, right=False, labels=names).astype(object)
    binned = binned.where(numbers != 0, "0")
    return binned.where(numbers.notna(), MISSING)


def value_shares(numbers: pd.Series, edges: list[float] | None) -> dict[str, float]:
    """Shares of each code (``edges`` None) or bin; keys are text so the profile is plain JSON."""
    if not len(numbers):
        return {}
    counts = code_counts(numbers) if edges is None else _bin_labels(numbers, edges).value_counts()
    return {str(k): round(float(v) / len(numbers), 6) for k, v in counts.items()}


def code_counts(numbers: pd.Series) -> pd.Series:
    """Rows per code, keyed by the code as text (``missing`` for missing): counted first, so only
    the distinct values are turned into text."""
    counts = pd.to_numeric(numbers, errors="coerce").astype("float64").value_counts(dropna=False)
    return counts.groupby([_share_key(v) for v in counts.index]).sum()


def observed_shares(values: pd.Series, reference: dict[str, Any]) -> dict[str, float]:
    numbers = pd.to_numeric(values, errors="coerce")
    return value_shares(numbers, None if reference["kind"] == "codes" else list(reference["edges"]))


def build_reference_profile(frame: pd.DataFrame, coded_columns: list[str], source: str) -> dict[str, Any]:
    """The reference profile of a frame in the project's coding (the bundled data's is committed;
    the champion's training rows can serve as well)."""
    return {
        "source": source,
        "rows": len(frame),
        "columns": {str(c): column_profile(frame[c], str(c) in coded_columns) for c in frame.columns},
    }


# --- placeholders and shift ------------------------------------------------------------------


@dataclass(frozen=True)
class Shift:
    column: str
    value: str  # the code or bin whose share moved most
    observed: float
    reference: float
    p_value: float  # two-sample chi-square of the file's counts against the reference's

    @property
    def size(self) -> float:
        return abs(self.observed - self.reference)

    def describe(self, source: str) -> str:
        if self.value == MISSING:
            where = f"{self.column} missing"
        elif " to " in self.value:
            where = f"{self.column} in [{self.value.replace(' to ', ', ')})"
        elif self.value[:1] in "<>":
            where = f"{self.column} {self.value}"
        else:
            where = f"{self.column} = {self.value}"
        return (
            f"{where} in {self.observed:.0%} of rows against {self.reference:.0%} in the reference ({source}): "
            f"a placeholder for missing values, another coding or another population; check the export"
        )


def homogeneity_p_value(reference_counts: np.ndarray, batch_counts: np.ndarray) -> float:
    """Pearson's chi-square test that two samples (a reference's rows and a file's or batch's) come from
    one distribution over the same keys: scipy's ``chi2_contingency(correction=False)`` on the 2 x k table.

    Two samples, not a goodness of fit against the reference's shares: those shares were measured on a
    few hundred rows, and treating them as exact made a large file "significantly" different from the
    reference's own sampling noise. A key neither sample has drops out; the reference's counts may be
    fractional (its shares times its rows)."""
    # The p-value from the statistic with scipy.special, without chi2_contingency's argument handling
    # (a monitor run tests every column of every bootstrap batch; a test checks that the two agree).
    from scipy.special import chdtrc

    table = np.vstack([reference_counts, batch_counts]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    return float(chdtrc(table.shape[1] - 1, statistic))


def largest_shift(values: pd.Series, column: str, reference: dict[str, Any]) -> Shift | None:
    """The code or bin whose share differs most from the reference, with the two-sample chi-square
    p-value of the file's counts against the reference's (its shares times its ``rows``): the
    reference's shares were measured on a few hundred rows, not known exactly."""
    observed = observed_shares(values, reference)
    expected = reference["shares"]
    keys = sorted(set(observed) | set(expected))
    if not keys or not len(values):
        return None
    obs = np.array([observed.get(k, 0.0) for k in keys])
    exp = np.array([expected.get(k, 0.0) for k in keys])
    p_value = homogeneity_p_value(exp * float(reference["rows"]), obs * len(values))
    worst = int(np.argmax(np.abs(obs - exp)))
    return Shift(column, keys[worst], float(obs[worst]), float(exp[worst]), p_value)


def shift_reason(shift: Shift | None, max_difference: float, max_p_value: float, source: str) -> str | None:
    if shift is None or shift.size <= max_difference or shift.p_value >= max_p_value:
        return None
    return shift.describe(source)


# --- coding scheme ---------------------------------------------------------------------------


def coding_evidence(values: pd.Series, reference_shares: dict[str, float], their_to_ours: dict[str, Any]) -> float:
    """Log-likelihood ratio (nats) that ``values`` are written in a foreign coding rather than ours.

    Under "ours" a code has its reference share; under the foreign coding a code is first mapped
    to ours (``their_to_ours``, None = a missing-value marker) and then gets that share. Codes a
    hypothesis cannot produce get UNSEEN_CODE_PROBABILITY. Positive: the foreign coding fits better.
    """
    counts = code_counts(values)

    def probability(key: str | None) -> float:
        return max(reference_shares.get(key, 0.0), UNSEEN_CODE_PROBABILITY) if key else UNSEEN_CODE_PROBABILITY

    evidence = 0.0
    for key, count in counts.items():
        if key == MISSING:
            continue  # a missing value is missing in both codings
        theirs = their_to_ours.get(str(key), "unknown")
        foreign_key = MISSING if theirs is None else None if theirs == "unknown" else _share_key(theirs)
        evidence += int(count) * (math.log(probability(foreign_key)) - math.log(probability(str(key))))
    return evidence


def only_marks_missing(their_to_ours: dict[str, Any]) -> bool:
    """True when a foreign coding keeps every code of this column and only adds missing-value markers."""
    return all(ours is None or str(ours) == str(theirs) for theirs, ours in their_to_ours.items())


def foreign_coding_fits(
    frame: pd.DataFrame,
    columns: list[str],
    codings: dict[str, dict[str, dict[str, Any]]],
    reference: dict[str, Any],
    min_evidence: float,
) -> dict[str, dict[str, float]]:
    """Per foreign coding, the columns whose codes fit it better than ours by ``min_evidence`` nats.

    ``codings``: ``{"uci": {"cp": {"1": 3, "2": 1, ...}, ...}}`` (their code -> our code).
    """
    found: dict[str, dict[str, float]] = {}
    for name, recodes in codings.items():
        for column in columns:
            if column not in frame.columns or column not in recodes or column not in reference["columns"]:
                continue
            if only_marks_missing(recodes[column]):
                # Kaggle's ca 4 and thal 0 are its missing-value markers: every other code means what ours
                # means, so the column is not foreign; those cells fail the code set and are quarantined.
                continue
            shares = reference["columns"][column]["shares"]
            evidence = coding_evidence(frame[column], shares, recodes[column])
            if evidence >= min_evidence:
                found.setdefault(name, {})[column] = round(evidence, 1)
    return found


def coding_reason(fits: dict[str, dict[str, float]], titles: dict[str, str]) -> str | None:
    """One line naming the coding that fits best, its columns, and the command that converts it."""
    if not fits:
        return None
    name, columns = max(fits.items(), key=lambda item: sum(item[1].values()))
    shown = ", ".join(f"{c} (log-likelihood ratio {v:.0f})" for c, v in sorted(columns.items(), key=lambda i: -i[1]))
    return (
        f"codes fit {titles.get(name, name)} better than this project's coding: {shown}; the same code "
        f"means another thing there, so convert the source file: heart-pipeline convert --from {name} FILE --out OUT"
    )


# --- filling the contract's run-time inputs ----------------------------------------------------

SHIFT_RULE = "expect_column_value_shares_to_match_reference"
CODING_RULE = "expect_coded_columns_to_fit_the_project_coding"


def codings_from_codebook(book: Codebook) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, str]]:
    """Each foreign coding as {coding: {our column: {their code: our code or None}}}, label excluded
    (its direction is the label check's business), plus each coding's title."""
    codings = {
        name: {
            recode.column: {str(theirs): ours for theirs, ours in recode.codes.items()}
            for recode in coding.to_ours.values()
            if recode.column != book.label_column
        }
        for name, coding in book.foreign.items()
    }
    return codings, {name: coding.title for name, coding in book.foreign.items()}


def resolve_expectations(
    expectations: list[dict[str, Any]], reference: dict[str, Any], book: Codebook
) -> list[dict[str, Any]]:
    """The contract's expectations with their run-time inputs filled in: the reference profile for
    shift and coding checks, the codebook's foreign codings for the coding check. A shift check
    for a column the reference does not profile is left out (there is nothing to compare with)."""
    codings, titles = codings_from_codebook(book)
    resolved = []
    for exp in expectations:
        kwargs = exp["kwargs"]
        if exp["type"] == SHIFT_RULE:
            profile = reference["columns"].get(kwargs["column"])
            if profile is None:
                continue
            # the reference's size travels with its shares: the shift test is two-sample
            column_reference = {**profile, "rows": reference["rows"]}
            kwargs = {**kwargs, "reference": column_reference, "reference_source": reference["source"]}
        elif exp["type"] == CODING_RULE:
            kwargs = {**kwargs, "reference": reference, "codings": codings, "coding_titles": titles}
        resolved.append({**exp, "kwargs": kwargs})
    return resolved
