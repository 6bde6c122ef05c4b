"""Safe file input and atomic output, shared by the load step and `heart-pipeline convert`.

Input is read once into memory (the same bytes are parsed and fingerprinted), and only from a
regular file: a FIFO would block, /dev/zero never ends, and /proc or /sys files (such as
/proc/self/environ) hold process secrets that must never reach an error message or an artifact.
Output is written to a temporary file in the same folder and renamed over the target, so a
reader never sees half a file and a killed process leaves the old file intact. CSVs written for people
(quarantine, duplicates, predictions, metrics) go through ``write_csv_for_people``, which neutralises
cells a spreadsheet would run as formulas.
"""

from __future__ import annotations

import csv
import errno
import math
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import pandas as pd

from heart_pipeline.errors import DataError

# Pseudo file systems: their "regular" files are views of kernel or process state, not data.
SPECIAL_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))


def _is_under_special_root(path: Path) -> bool:
    return any(path == root or root in path.parents for root in SPECIAL_ROOTS)


def _refuse_unless_regular(path: Path, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise DataError(f"{path}: is a directory, not a data file")
    if not stat.S_ISREG(mode):
        raise DataError(f"{path}: not a regular file (a device, FIFO or socket); refusing to read it")


@contextmanager
def _open_checked(path: Path, max_bytes: int, budget_key: str) -> Iterator[BinaryIO]:
    """``path`` opened for reading after every check that needs no reading: exists, not a
    pseudo-file, regular, readable, within ``max_bytes``."""
    try:
        resolved = path.resolve()
        mode = os.stat(resolved).st_mode
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read file: {exc.strerror or type(exc).__name__}") from None
    if _is_under_special_root(resolved):
        raise DataError(f"{path}: a system pseudo-file ({resolved.parts[1]}), not a data file; refusing to read it")
    _refuse_unless_regular(path, mode)
    try:
        # O_NONBLOCK: if the path was swapped for a FIFO after the check, open does not hang.
        fd = os.open(resolved, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise DataError(f"{path}: cannot read file: {exc.strerror or type(exc).__name__}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        _refuse_unless_regular(path, info.st_mode)
        if info.st_size > max_bytes:
            size_mb, budget_mb = info.st_size / 2**20, max_bytes / 2**20
            raise DataError(f"{path}: file is {size_mb:.1f} MB, above the {budget_mb:g} MB budget ({budget_key})")
        yield handle


def _read_or_refuse(path: Path, handle: BinaryIO, size: int) -> bytes:
    try:
        return handle.read(size)
    except OSError as exc:
        raise DataError(f"{path}: cannot read file: {exc.strerror or type(exc).__name__}") from None


def check_input_file(path: Path, max_bytes: int, budget_key: str) -> None:
    """The checks of ``read_input_bytes`` without reading the file: the CLI runs them before any
    server starts, so a wrong path is reported in well under a second."""
    with _open_checked(path, max_bytes, budget_key) as handle:
        if not _read_or_refuse(path, handle, 1):
            raise DataError(f"{path}: file is empty")


def read_input_bytes(path: Path, max_bytes: int, budget_key: str) -> bytes:
    """The whole file, refused with one DataError line (naming ``path``, never its content) if it
    is missing, special, unreadable, empty or above ``max_bytes``."""
    with _open_checked(path, max_bytes, budget_key) as handle:
        data = _read_or_refuse(path, handle, max_bytes + 1)  # never more than the budget, whatever st_size claimed
    if len(data) > max_bytes:
        raise DataError(f"{path}: file grew above the {max_bytes / 2**20:g} MB budget ({budget_key}) while reading")
    if not data.strip():
        raise DataError(f"{path}: file is empty")
    return data


def write_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename; errors name the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_name = None
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as tmp:
            tmp_name = tmp.name
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except OSError as exc:
        if tmp_name:
            Path(tmp_name).unlink(missing_ok=True)
        reason = "disk full (no space left on device)" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)
        raise DataError(f"{path}: cannot write: {reason}") from None
    return path


# OWASP's CSV injection rule: a cell that starts with one of these is a formula (or smuggles one in) to
# a spreadsheet. Such a text cell is written with a leading single quote, which spreadsheets show as text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _is_number_text(text: str) -> bool:
    """'-1.5' or '+3': text a spreadsheet reads as a number, not as a formula (so it stays as it is)."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def neutralise_cell(value: object) -> object:
    """A text cell that a spreadsheet would run, prefixed with a single quote; anything else unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _is_number_text(value.strip()):
        return "'" + value
    return value


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every text cell neutralised (``neutralise_cell``); numeric columns are untouched,
    so -1.5 stays the number -1.5. Column names are neutralised too."""
    text_columns = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    safe = frame.copy() if text_columns else frame
    for column in text_columns:
        safe[column] = frame[column].map(neutralise_cell, na_action="ignore")
    return safe.rename(columns=lambda c: neutralise_cell(c) if isinstance(c, str) else c)


def write_csv_for_people(frame: pd.DataFrame, path: Path) -> Path:
    """The one way the project writes a CSV that people open in a spreadsheet: neutralised cells, no index.
    A frame with text columns has every text cell quoted: pandas leaves a carriage return inside a cell
    unquoted, which would split the row in two for a CSV reader."""
    safe = spreadsheet_safe(frame)
    has_text = any(not pd.api.types.is_numeric_dtype(safe[c]) for c in safe.columns)
    safe.to_csv(path, index=False, quoting=csv.QUOTE_NONNUMERIC if has_text else csv.QUOTE_MINIMAL)
    return path
