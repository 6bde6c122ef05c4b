"""A generated corpus of hostile inputs: each builder writes one bad file and says what the error must say.

Built from the bundled UCI Cleveland rows at test time; no other data is committed. ``CASES`` break the
file's form; ``MEANING_CASES`` keep every cell valid-looking and break its meaning (the label's
direction, the coding, placeholders), as real files from other sources do.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from heart_pipeline.config import default_codebook


@dataclass(frozen=True)
class HostileCase:
    name: str
    build: Callable[[Path, pd.DataFrame], Path]
    expected: str  # a fragment the one-line error must contain (besides the file name)


def _csv(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


def _missing(d: Path, f: pd.DataFrame) -> Path:
    return d / "does-not-exist.csv"


def _directory(d: Path, f: pd.DataFrame) -> Path:
    (d / "a-directory.csv").mkdir()
    return d / "a-directory.csv"


def _fifo(d: Path, f: pd.DataFrame) -> Path:
    os.mkfifo(d / "pipe.csv")
    return d / "pipe.csv"


def _no_permission(d: Path, f: pd.DataFrame) -> Path:
    path = _csv(d / "locked.csv", f)
    path.chmod(0)
    return path


def _empty(d: Path, f: pd.DataFrame) -> Path:
    (d / "empty.csv").write_bytes(b"")
    return d / "empty.csv"


def _header_only(d: Path, f: pd.DataFrame) -> Path:
    (d / "header.csv").write_text(",".join(f.columns) + "\n")
    return d / "header.csv"


def _semicolon(d: Path, f: pd.DataFrame) -> Path:
    path = d / "semicolon.csv"
    f.to_csv(path, index=False, sep=";")
    return path


def _latin1(d: Path, f: pd.DataFrame) -> Path:
    path = _csv(d / "latin1.csv", f)
    lines = path.read_bytes().split(b"\n")
    lines[4] = lines[4] + b",caf\xe9"  # a latin-1 byte on line 5
    path.write_bytes(b"\n".join(lines))
    return path


def _missing_target(d: Path, f: pd.DataFrame) -> Path:
    return _csv(d / "no-target.csv", f.drop(columns="target"))


def _renamed(d: Path, f: pd.DataFrame) -> Path:
    return _csv(d / "renamed.csv", f.rename(columns={"chol": "cholesterol"}))


def _extra(d: Path, f: pd.DataFrame) -> Path:
    return _csv(d / "extra.csv", f.assign(notes="x"))


def _text_in_numeric(d: Path, f: pd.DataFrame) -> Path:
    g = f.astype({"chol": "object"})
    g.loc[2, "chol"] = "high"
    return _csv(d / "text.csv", g)


def _nan_and_inf(d: Path, f: pd.DataFrame) -> Path:
    g = f.astype({"chol": "float64", "age": "float64"})
    g.loc[3, "chol"] = np.inf
    g.loc[5, "age"] = np.nan
    return _csv(d / "nan-inf.csv", g)


def _one_class(d: Path, f: pd.DataFrame) -> Path:
    return _csv(d / "one-class.csv", f.assign(target=1))


def _target_two(d: Path, f: pd.DataFrame) -> Path:
    g = f.copy()
    g.loc[7, "target"] = 2
    return _csv(d / "target-two.csv", g)


def _one_row(d: Path, f: pd.DataFrame) -> Path:
    return _csv(d / "one-row.csv", f.head(1))


def _all_invalid(d: Path, f: pd.DataFrame) -> Path:
    # Varying values: one value in every row would be a constant column, which stops earlier.
    return _csv(d / "all-invalid.csv", f.assign(age=f["age"] + 500))


def _above_row_budget(d: Path, f: pd.DataFrame) -> Path:
    """More rows than the tests' data.max_rows (tests.helpers.TEST_MAX_ROWS), all of them valid."""
    from tests.helpers import TEST_MAX_ROWS

    return _csv(d / "big.csv", pd.concat([f] * (TEST_MAX_ROWS // len(f) + 1), ignore_index=True))


def _no_header(d: Path, f: pd.DataFrame) -> Path:
    path = d / "no-header.csv"
    f.to_csv(path, index=False, header=False)
    return path


def _whitespace(d: Path, f: pd.DataFrame) -> Path:
    path = d / "whitespace.csv"
    f.to_csv(path, index=False, sep=" ")
    return path


def _duplicate_header(d: Path, f: pd.DataFrame) -> Path:
    path = d / "duplicate-header.csv"
    path.write_text(f.to_csv(index=False).replace("chol", "age", 1))
    return path


def _device(d: Path, f: pd.DataFrame) -> Path:
    return Path("/dev/zero")


def _forty_mb_cell(d: Path, f: pd.DataFrame) -> Path:
    g = f.astype({"chol": "object"})
    g.loc[2, "chol"] = "x" * 40_000_000
    return _csv(d / "huge-cell.csv", g)


def _extra_field(d: Path, f: pd.DataFrame) -> Path:
    """A decimal comma in one row (oldpeak 2,3): 15 fields under a 14-column header."""
    path = _csv(d / "decimal-comma.csv", f.astype({"oldpeak": "float64"}))
    lines = path.read_text().splitlines()
    fields = lines[6].split(",")
    fields[9] = fields[9].replace(".", ",")
    lines[6] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    return path


def _different_dataset(d: Path, f: pd.DataFrame) -> Path:
    frame = pd.DataFrame({"age": f["age"], "sex": f["sex"], "income": 1000, "city": "x", "score": 1, "group": 2})
    return _csv(d / "different.csv", frame)


CASES = [
    HostileCase("missing-file", _missing, "file not found"),
    HostileCase("directory", _directory, "is a directory"),
    HostileCase("unreadable-fifo", _fifo, "not a regular file"),
    HostileCase("unreadable-permissions", _no_permission, "cannot read file"),
    HostileCase("empty-file", _empty, "file is empty"),
    HostileCase("header-only", _header_only, "has 0 data rows; at least 50 are needed"),
    HostileCase("semicolon-delimiter", _semicolon, "looks ';'-delimited"),
    HostileCase("not-utf8", _latin1, "not UTF-8 text (byte 0xe9 at line 5)"),
    HostileCase("missing-target", _missing_target, "columns do not match the contract: missing ['target']"),
    HostileCase("renamed-column", _renamed, "missing ['chol'], unexpected ['cholesterol']"),
    HostileCase("extra-column", _extra, "columns do not match the contract: unexpected ['notes']"),
    HostileCase("text-in-numeric", _text_in_numeric, "column 'chol' is not numeric: 'high' at line 4"),
    HostileCase("nan-and-inf", _nan_and_inf, "column 'chol' has non-finite values (inf) at line 5"),
    HostileCase("one-class-target", _one_class, "column 'target' holds only [1]"),
    HostileCase("target-value-2", _target_two, "column 'target' not in [0, 1]: [2] at line 9"),
    HostileCase("one-data-row", _one_row, "has 1 data rows; at least 50 are needed"),
    HostileCase(
        "every-row-invalid",
        _all_invalid,
        "above validation.max_invalid_fraction=0.2; most by expect_column_values_to_be_between(age)",
    ),
    HostileCase("rows-above-budget", _above_row_budget, "data rows, the budget set by data.max_rows"),
    HostileCase("no-header", _no_header, "no header row"),
    HostileCase("whitespace-delimiter", _whitespace, "looks whitespace-separated"),
    HostileCase("duplicate-header", _duplicate_header, "column name 'age' appears twice in the header"),
    HostileCase("device-file", _device, "refusing to read it"),
    HostileCase("forty-mb-cell", _forty_mb_cell, "column 'chol' is not numeric"),
    HostileCase("row-with-extra-field", _extra_field, "re-export with '.' as the decimal mark"),
    HostileCase("different-dataset", _different_dataset, "a different dataset, not a heart-disease file"),
]


def inverted(frame: pd.DataFrame) -> pd.DataFrame:
    """Kaggle's heart.csv: target 1 means no disease."""
    return frame.assign(target=1 - frame["target"])


def in_foreign_coding(frame: pd.DataFrame, columns: list[str], coding: str = "uci") -> pd.DataFrame:
    """``columns`` rewritten in a foreign coding's codes (the codebook's mapping, inverted), under our header."""
    out = frame.copy()
    for recode in default_codebook().foreign_coding(coding).to_ours.values():
        if recode.column in columns:
            inverse = {ours: theirs for theirs, ours in reversed(recode.codes.items()) if ours is not None}
            out[recode.column] = frame[recode.column].map(inverse)
    return out


def _zeros_for_missing(frame: pd.DataFrame) -> pd.DataFrame:
    """A site that never measured ca and rarely slope or thal, exported with 0 for every '?'."""
    slope = frame["slope"].where(frame.index % 3 == 0, 0)
    return frame.assign(ca=0, slope=slope, thal=frame["thal"].where(frame.index < 200, 0))


def _meaning(name: str, change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path, pd.DataFrame], Path]:
    return lambda d, f: _csv(d / f"{name}.csv", change(f.reset_index(drop=True)))


MEANING_CASES = [
    HostileCase(
        "inverted-target",
        _meaning("inverted", inverted),
        "target looks inverted: 5 of 5 disease markers point the other",
    ),
    HostileCase(
        "uci-codes-under-our-header",
        _meaning("uci", lambda f: in_foreign_coding(f, ["cp", "restecg", "slope", "thal"])),
        "codes fit UCI Machine Learning Repository",
    ),
    HostileCase(
        "uci-restecg-under-our-header",
        _meaning("uci-restecg", lambda f: in_foreign_coding(f, ["restecg"])),
        "better than this project's coding: restecg (log-likelihood ratio",
    ),
    HostileCase(
        "near-empty-column",
        _meaning("near-empty", lambda f: f.assign(ca=f["ca"].where(f.index < 3))),
        "train without them (--without ca), or score or evaluate this file, which impute them: "
        "1 column not recorded: ca 99% missing",
    ),
    HostileCase(
        "constant-column",
        _meaning("constant", lambda f: f.assign(chol=0)),
        "column 'chol' holds the single value 0 in every row",
    ),
    HostileCase(
        "question-marks-written-as-0",
        _meaning("zeros", _zeros_for_missing),
        "column 'ca' holds the single value 0 in every row",
    ),
]
