"""What a site records: per column, the share of scored rows whose value is missing (so the model's
imputer fills it), and a warning by name for a column that is mostly imputed.

A column a site never measures (ca at three of UCI's four hospitals, chol in Switzerland) is a fact
about the site, not a broken file: its rows are scored, and every run says which predictions rest
on an imputed value instead of a measurement. Pure: frames in, plain numbers and lines out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd


def imputed_shares(frame: pd.DataFrame, columns: Sequence[str]) -> dict[str, float]:
    """Share of rows missing per column (every listed column, 0.0 included), rounded to 4 places."""
    if not len(frame):
        return {column: 0.0 for column in columns}
    return {column: round(float(frame[column].isna().mean()), 4) for column in columns if column in frame.columns}


def _percent(share: float) -> str:
    text = f"{share:.0%}"
    return f"{share:.1%}" if text in ("0%", "100%") and 0 < share < 1 else text


def imputation_warnings(shares: Mapping[str, float], mostly: float, imputed_with: Mapping[str, str]) -> list[str]:
    """``ca imputed for 99% of rows: predictions rest on the training's most frequent value``, for every
    column imputed in more than ``mostly`` of the rows, the most imputed first."""
    heavy = sorted(((share, column) for column, share in shares.items() if share > mostly), reverse=True)
    return [
        f"{column} imputed for {_percent(share)} of rows: predictions rest on "
        f"{imputed_with.get(column, 'the imputed value')} instead of a measurement"
        for share, column in heavy
    ]


def not_recorded_summary(shares: Mapping[str, float], mostly: float) -> str:
    """``3 columns not recorded: ca 99%, thal 90%, slope 65% missing`` (empty when none)."""
    heavy = sorted(((share, column) for column, share in shares.items() if share > mostly), reverse=True)
    if not heavy:
        return ""
    listed = ", ".join(f"{column} {_percent(share)}" for share, column in heavy)
    return f"{len(heavy)} column{'s' if len(heavy) > 1 else ''} not recorded: {listed} missing"
