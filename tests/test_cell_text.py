"""Cell text cannot attack its reader: formulas are neutralised in the CSVs people open (OWASP's CSV
injection rule), numbers stay numbers."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from heart_pipeline.config import load_settings_and_contract
from heart_pipeline.data_contract.files import spreadsheet_safe, write_csv_for_people
from tests.helpers import run_gate

FORMULAS = ["=cmd|' /C calc'!A0", '=HYPERLINK("http://evil.example","x")', "+1+cmd", "-2+3", "@SUM(1)", "\tx", "\rx"]


def test_every_formula_start_is_neutralised_and_numbers_are_not(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "text": [*FORMULAS, "-1.5", "+3", "plain"],
            "number": [-1.5] * (len(FORMULAS) + 3),
        }
    )
    safe = spreadsheet_safe(frame)
    assert safe["text"].tolist() == [*(f"'{f}" for f in FORMULAS), "-1.5", "+3", "plain"]
    assert safe["number"].tolist() == frame["number"].tolist() and safe["number"].dtype == "float64"
    assert frame["text"].iloc[0] == FORMULAS[0], "the caller's frame is not changed"
    with write_csv_for_people(frame, tmp_path / "out.csv").open(newline="") as handle:
        cells = [row for row in csv.reader(handle)][1:]
    assert all(not row[0].startswith(("=", "+", "@", "\t", "\r")) or row[0] == "+3" for row in cells)
    assert {row[1] for row in cells} == {"-1.5"}


def test_a_formula_cell_comes_out_neutralised_in_quarantine_csv(tmp_path: Path, clean_frame: pd.DataFrame) -> None:
    _, contract = load_settings_and_contract()
    frame = clean_frame.astype({"thal": object, "age": "float64"})
    frame.loc[3, "thal"] = '=HYPERLINK("http://evil.example","open")'  # an unknown code: quarantined
    frame.loc[5, "age"] = -1.5  # out of range: quarantined, and a number
    path = tmp_path / "hostile.csv"
    frame.to_csv(path, index=False)
    report = run_gate(path, contract, tmp_path / "validation")
    assert report.quarantine_path is not None
    text = Path(report.quarantine_path).read_text(encoding="utf-8")
    assert "'=HYPERLINK(" in text and "\n=HYPERLINK" not in text and ",=HYPERLINK" not in text
    quarantine = pd.read_csv(report.quarantine_path)
    assert (quarantine.loc[quarantine["column"] == "age", "age"] == -1.5).all()
