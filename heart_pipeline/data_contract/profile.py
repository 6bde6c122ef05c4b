"""What a file holds, column by column: observed range or codes with counts, missing share, against the
contract's bounds and code sets and the reference profile. The validation report leads with it, so a
reader sees the data before the rules.

Pure: a frame and the contract in, records out; no statistics beyond counts and quantiles.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from heart_pipeline.data_contract.contract import Contract
from heart_pipeline.results import ColumnProfile

MAX_CODES_SHOWN = 12  # a column with more distinct values than this is shown as a range


def _number(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e6 else f"{value:.3e}"


def _code_counts(values: pd.Series) -> dict[str, int]:
    counts = values.value_counts(dropna=True)
    ordered = sorted(counts.items(), key=lambda item: (str(type(item[0])), item[0]))
    return {_number(float(k)) if isinstance(k, int | float) else str(k)[:40]: int(v) for k, v in ordered}


def _observed(values: pd.Series) -> tuple[str, dict[str, int]]:
    """Codes with counts for a coded column, else the range and median of the recorded values."""
    recorded = values.dropna()
    if recorded.empty:
        return "nothing recorded", {}
    numeric = pd.to_numeric(recorded, errors="coerce")
    if recorded.nunique() <= MAX_CODES_SHOWN or numeric.isna().any():
        codes = _code_counts(recorded)
        shown = dict(list(codes.items())[:MAX_CODES_SHOWN])
        more = len(codes) - len(shown)
        return ", ".join(f"{k}: {v}" for k, v in shown.items()) + (f" (+{more} more values)" if more else ""), codes
    return f"{_number(numeric.min())} to {_number(numeric.max())} (median {_number(float(numeric.median()))})", {}


def _outside(values: pd.Series, contract: Contract, column: str) -> tuple[str, int]:
    """What the contract allows for ``column`` and how many recorded values break it."""
    recorded = values.dropna()
    value_set = contract.value_set(column)
    if value_set is not None:
        allowed = {float(v) for v in value_set if isinstance(v, int | float)} | {str(v) for v in value_set}
        numeric = pd.to_numeric(recorded, errors="coerce")
        inside = numeric.isin(allowed) | recorded.astype(str).isin(allowed)
        return "one of " + ", ".join(str(v) for v in value_set), int((~inside).sum())
    bounds = contract.bounds(column)
    if bounds is None:
        return "", 0
    low, high = bounds
    numeric = pd.to_numeric(recorded, errors="coerce")
    below = numeric < low if low is not None else pd.Series(False, index=numeric.index)
    above = numeric > high if high is not None else pd.Series(False, index=numeric.index)
    if low is not None and high is not None:
        words = f"between {low} and {high}"
    else:
        words = f"at least {low}" if low is not None else f"at most {high}"
    return words, int((below | above).sum())


def _reference(reference: dict[str, Any], column: str) -> str:
    entry = (reference.get("columns") or {}).get(column)
    if not entry or not entry.get("shares"):
        return ""
    return ", ".join(f"{k}: {float(v):.0%}" for k, v in entry["shares"].items())


def column_profiles(frame: pd.DataFrame, contract: Contract, reference: dict[str, Any]) -> list[ColumnProfile]:
    """Every contract column the file has, in the contract's order."""
    profiles = []
    for column in contract.columns:
        if column not in frame.columns:
            continue
        values = frame[column]
        observed, codes = _observed(values)
        allowed, outside = _outside(values, contract, column)
        profiles.append(
            ColumnProfile(
                column=column,
                rows=len(values),
                missing=int(values.isna().sum()),
                observed=observed,
                allowed=allowed,
                outside=outside,
                reference=_reference(reference, column),
                codes=codes,
            )
        )
    return profiles
