"""Parse a heart-data file's bytes (CSV or Parquet) into a frame, with a one-line reason for every
way it can be unusable, and the file line of every row.

Pure: bytes in, frame out. The caller reads the bytes once (heart_pipeline.data_contract.files) and fingerprints
the same bytes, so what is validated is exactly what is hashed.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

import pandas as pd

from heart_pipeline.errors import DataError, cell

PARQUET_MAGIC = b"PAR1"
# No field of a heart-data file is longer than a few characters; a longer cell is kept (the gate
# reports it) but cut to this length, so a 40 MB cell cannot flood reports, artifacts and logs.
MAX_CELL_CHARS_KEPT = 200


@dataclass(frozen=True)
class ParsedTable:
    frame: pd.DataFrame
    source_lines: list[int]  # CSV: the line each row starts on (header is line 1); Parquet: row number
    file_format: str
    cells_truncated: int


def is_number(text: str) -> bool:
    """A field that reads as a number (a header line has fields that do not)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


# The header is read from the start of the text only: copying a million-row file into a second
# buffer just to read its first line costs most of a second.
HEADER_SCAN_CHARS = 2**20


def _first_record(text: str) -> tuple[list[str], str]:
    """The header record as the CSV reader sees it, and the first non-blank line's text."""
    head = text[:HEADER_SCAN_CHARS]
    first_line = next((line.rstrip("\r\n") for line in io.StringIO(head, newline="") if line.strip()), "")
    records = csv.reader(io.StringIO(head, newline=""))
    header = next((r for r in records if any(f.strip() for f in r)), [])
    return [f.strip() for f in header], first_line


def check_header(header: list[str], first_line: str, source: str, expected: list[str], na_values: list[str]) -> None:
    """Refuse headers that are really something else: whitespace-separated, absent, or repeating a name."""
    expected_text = ",".join(expected)
    if len(header) == 1 and len(first_line.split()) >= 3:
        raise DataError(
            f"{source}: the file looks whitespace-separated (first line {cell(first_line, 60)} is one column); "
            f"expected ',' between {expected_text}; convert UCI's reprocessed files with "
            "`heart-pipeline convert --from uci`"
        )
    present = [f for f in header if f and f not in na_values]
    if present and all(is_number(f) for f in present):
        raise DataError(
            f"{source}: no header row (the first line is all numbers: {cell(first_line, 60)}); expected "
            f"{expected_text}; convert UCI files with `heart-pipeline convert --from uci`"
        )
    seen: dict[str, int] = {}
    for position, name in enumerate(header, start=1):
        if name in seen:
            raise DataError(
                f"{source}: column name {cell(name)} appears twice in the header (columns {seen[name]} and "
                f"{position}); expected {expected_text}"
            )
        seen[name] = position


def record_lines(data: bytes, text: str, n_rows: int) -> list[int]:
    """The line each data row starts on, counted as the CSV reader counts (blank lines skipped,
    a quoted newline inside a field does not start a row)."""
    physical_lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    if physical_lines == n_rows + 1:
        # The common case, one record per line after the header: no per-line work at all.
        return list(range(2, n_rows + 2))
    reader = csv.reader(io.StringIO(text, newline=""))
    lines, start = [], 1
    for record in reader:
        if len(record) > 1 or (record and record[0].strip()):  # pandas skips only blank lines
            lines.append(start)
        start = reader.line_num + 1
    lines = lines[1:]
    return lines if len(lines) == n_rows else [i + 2 for i in range(n_rows)]


def _truncate_long_cells(frame: pd.DataFrame) -> int:
    truncated = 0
    for column in frame.columns:
        series = frame[column]
        if series.dtype.kind in "biufcmM":
            continue
        lengths = series.astype("string").str.len()
        long = (lengths > MAX_CELL_CHARS_KEPT).fillna(False).to_numpy()
        if long.any():
            cut = series[long].astype(str).str.slice(0, MAX_CELL_CHARS_KEPT) + "...(truncated)"
            frame[column] = series.astype(object).where(~long, cut)
            truncated += int(long.sum())
    return truncated


def _refuse_rows_above(n_rows: int, source: str, max_rows: int) -> None:
    if n_rows > max_rows:
        raise DataError(f"{source}: more than {max_rows:,} data rows, the budget set by data.max_rows")


def _check_budget(frame: pd.DataFrame, source: str, max_rows: int, max_memory_bytes: int) -> None:
    _refuse_rows_above(len(frame), source, max_rows)
    used = int(frame.memory_usage(deep=True).sum())
    if used > max_memory_bytes:
        raise DataError(
            f"{source}: the table needs {used / 2**20:,.0f} MB in memory, above the "
            f"{max_memory_bytes / 2**20:,.0f} MB budget (data.max_memory_mb)"
        )


# The first this many bytes of a larger CSV are parsed alone to estimate the whole table's memory.
BUDGET_SAMPLE_BYTES = 2**20


def _refuse_estimated_table(data: bytes, source: str, na_values: list[str], max_memory_bytes: int) -> None:
    """Refuse a CSV whose table would exceed the budget, before it is decoded and parsed whole.

    A parsed table takes several times its file's bytes (a two-character code becomes an 8-byte
    integer), so checking the parsed frame let a 2 GB file peak at 8.5 GB first. The estimate scales the
    memory of the first ``BUDGET_SAMPLE_BYTES`` (whole lines) to the file's size; files that small are
    parsed and measured as they are."""
    cut = data.rfind(b"\n", 0, BUDGET_SAMPLE_BYTES) + 1
    if len(data) <= BUDGET_SAMPLE_BYTES or cut <= 0:
        return
    try:
        sample = pd.read_csv(io.BytesIO(data[:cut]), encoding="utf-8-sig", na_values=na_values, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError):
        return  # the full parse names what is wrong with the file
    estimate = int(sample.memory_usage(deep=True).sum() / cut * len(data))
    if estimate > max_memory_bytes:
        raise DataError(
            f"{source}: the table would need about {estimate / 2**20:,.0f} MB in memory (estimated from its "
            f"first {BUDGET_SAMPLE_BYTES / 2**20:g} MB), above the {max_memory_bytes / 2**20:,.0f} MB budget "
            "(data.max_memory_mb)"
        )


def _parse_parquet(data: bytes, source: str, max_rows: int) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        _refuse_rows_above(parquet.metadata.num_rows, source, max_rows)
        return parquet.read().to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"{source}: unreadable Parquet file: {type(exc).__name__}: {exc}") from None


def parser_error_reason(message: str, header_fields: int) -> str:
    """pandas' tokenizer error in words, remedy first: a row with more fields than the header is
    refused with its line number (a decimal comma, or a ',' inside a value), never read shifted."""
    found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", message)
    if not found:
        return f"malformed CSV: {message}"
    expected, line, saw = (int(g) for g in found.groups())
    return (
        f"re-export with '.' as the decimal mark (or quote values holding ','): line {line} has {saw} fields "
        f"where the header has {header_fields or expected}"
    )


def parse_heart_table(
    data: bytes,
    source: str,
    na_values: list[str],
    expected_columns: list[str],
    max_rows: int,
    max_memory_bytes: int,
) -> ParsedTable:
    """The file's table: Parquet when it has Parquet's magic bytes, otherwise CSV (UTF-8, BOM allowed)."""
    if data[:4] == PARQUET_MAGIC and data[-4:] == PARQUET_MAGIC:
        frame = _parse_parquet(data, source, max_rows)
        frame.columns = [str(c).strip() for c in frame.columns]
        _check_budget(frame, source, max_rows, max_memory_bytes)
        truncated = _truncate_long_cells(frame)
        return ParsedTable(frame, list(range(1, len(frame) + 1)), "parquet", truncated)
    _refuse_estimated_table(data, source, na_values, max_memory_bytes)
    try:
        text = data.decode("utf-8-sig")  # the original project's file starts with a BOM
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{source}: not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line})") from None
    header, first_line = _first_record(text)
    check_header(header, first_line, source, expected_columns, na_values)
    try:
        # nrows: past the budget, stop parsing instead of filling memory first.
        frame = pd.read_csv(
            io.BytesIO(data), encoding="utf-8-sig", na_values=na_values, skipinitialspace=True, nrows=max_rows + 1
        )
    except pd.errors.ParserError as exc:
        raise DataError(f"{source}: {parser_error_reason(str(exc), len(header))}") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{source}: file has no header or data") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    _check_budget(frame, source, max_rows, max_memory_bytes)
    truncated = _truncate_long_cells(frame)
    return ParsedTable(frame, record_lines(data, text, len(frame)), "csv", truncated)


def declare_disease_label(frame: pd.DataFrame, target: str, disease_label: int) -> pd.DataFrame:
    """The frame with ``target`` recoded so that 1 means disease, given the file's own code for
    disease (``data.disease_label`` / ``--disease-label``). Values other than 0 and 1 are left as
    they are, for the gate to report."""
    if disease_label == 1 or target not in frame.columns:
        return frame
    values = frame[target]
    flipped = values.map({0: 1, 1: 0})  # 0.0 and 1.0 hash as 0 and 1
    return frame.assign(**{target: flipped.where(values.isin([0, 1]), values)})
