"""Files as other hospitals and other copies write them, generated from the bundled UCI Cleveland rows:
a site that never records some columns, placeholders for "not measured", header lines, ';', UCI's
920-row text-coded copy, an already-converted Kaggle file, a row with an extra field."""

from __future__ import annotations

import numpy as np
import pandas as pd

from heart_pipeline.config import default_codebook
from heart_pipeline.data_contract.importers import from_ours

BOOK = default_codebook()
UCI_TEXT_COLUMNS = ["id", "age", "sex", "dataset", "cp", "trestbps", "chol", "fbs", "restecg", "thalch"]
UCI_TEXT_COLUMNS += ["exang", "oldpeak", "slope", "ca", "thal", "num"]


def uci_lines(frame: pd.DataFrame, sep: str = ",", missing: str = "?", header: list[str] | None = None) -> bytes:
    """``frame`` (our coding) as UCI's processed.*.data: UCI's codes, ``sep`` between fields."""
    foreign = from_ours(frame, BOOK.foreign_coding("uci"))
    rows = [sep.join(missing if pd.isna(v) else f"{float(v):.1f}" for v in row) for row in foreign.to_numpy()]
    head = [sep.join(header)] if header else []
    return ("\n".join(head + rows) + "\n").encode()


def uci_text(frame: pd.DataFrame, sites: list[str]) -> bytes:
    """``frame`` as UCI's 920-row text-coded copy (heart_disease_uci.csv), rows dealt to ``sites`` in turn."""
    coding = BOOK.foreign_coding("uci-text")
    uci = from_ours(frame, BOOK.foreign_coding("uci"))
    out = pd.DataFrame(
        {"id": np.arange(1, len(frame) + 1), "dataset": [sites[i % len(sites)] for i in range(len(frame))]}
    )
    for column in uci.columns:
        values = uci[column]
        words = coding.text_codes.get(column)
        if words is not None:
            inverse: dict[float, str] = {}
            for word, code in words.items():
                inverse.setdefault(float(code), word.upper() if word in ("true", "false") else word)
            values = values.map(inverse)
        out[{"thalach": "thalch"}.get(column, column)] = values
    return out[UCI_TEXT_COLUMNS].to_csv(index=False).encode()


def unrecorded_site(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Another hospital: ca and thal recorded for 3% of patients, slope for 40%, chol written as 0 (not measured)."""
    rng = np.random.default_rng(seed)
    n = len(frame)
    return frame.assign(
        ca=frame["ca"].where(rng.random(n) < 0.03),
        thal=frame["thal"].where(rng.random(n) < 0.03),
        slope=frame["slope"].where(rng.random(n) < 0.4),
        chol=0,
    )


def other_site(frame: pd.DataFrame, seed: int = 1) -> pd.DataFrame:
    """A labelled "other site": the bundled patients resampled, older by five years, ca never recorded."""
    rng = np.random.default_rng(seed)
    rows = frame.iloc[rng.integers(0, len(frame), size=len(frame))].reset_index(drop=True)
    return rows.assign(age=(rows["age"] + 5).clip(upper=99), ca=np.nan).astype({"ca": "float64"})
