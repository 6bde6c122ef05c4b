"""Realistic synthetic heart data at any size, grown from the bundled file.

Rows are bootstrapped from the bundled rows that pass every contract rule, so codes stay valid and
each row keeps its own label (the label relationship is the real one). Continuous columns get a
little Gaussian jitter (a tenth of the column's spread), rounded to the column's own precision
and clipped to the contract's bounds, which also makes rows distinct: exact duplicates are dropped
and replaced until the frame has the requested size.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from heart_pipeline.data_contract.contract import Contract

JITTER_FRACTION_OF_STD = 0.1


def valid_rows(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """The rows that pass the contract's bound, value-set and not-null rules."""
    keep = frame[contract.columns].notna().all(axis=1)
    for column in contract.columns:
        bounds = contract.bounds(column)
        if bounds is not None:
            low, high = bounds
            keep &= frame[column].between(-np.inf if low is None else low, np.inf if high is None else high)
        allowed = contract.value_set(column)
        if allowed is not None:
            keep &= frame[column].isin(allowed)
    return frame.loc[keep, contract.columns].reset_index(drop=True)


def _decimals(values: pd.Series) -> int:
    """How many decimals the column is recorded with (0 for whole numbers, at most 3)."""
    for decimals in range(4):
        if np.allclose(values, values.round(decimals)):
            return decimals
    return 3


def synthesize(
    base: pd.DataFrame, n_rows: int, contract: Contract, continuous: list[str], seed: int = 0
) -> pd.DataFrame:
    """``n_rows`` distinct rows bootstrapped from ``base`` with jitter on ``continuous`` columns."""
    source = valid_rows(base, contract)
    rng = np.random.default_rng(seed)
    spreads = {c: float(source[c].std()) * JITTER_FRACTION_OF_STD for c in continuous}
    decimals = {c: _decimals(source[c]) for c in continuous}
    parts: list[pd.DataFrame] = []
    have = 0
    while have < n_rows:
        draw = source.iloc[rng.integers(0, len(source), size=int((n_rows - have) * 1.05) + 10)].reset_index(drop=True)
        for column in continuous:
            low, high = contract.bounds(column) or (None, None)
            jittered = (draw[column] + rng.normal(0.0, spreads[column], len(draw))).round(decimals[column])
            draw[column] = jittered.clip(low, high)
            if decimals[column] == 0:
                draw[column] = draw[column].astype("int64")
        parts.append(draw)
        combined = pd.concat(parts, ignore_index=True).drop_duplicates(ignore_index=True)
        parts = [combined]
        have = len(combined)
    return parts[0].iloc[:n_rows].reset_index(drop=True)
