"""Importers: real heart-disease files in foreign codings -> a frame in the project's codebook.

Pure functions: bytes in, a frame and a provenance record out; the CLI (`heart-pipeline convert`)
does the reading and the atomic writing. Every code and missing-value marker is translated with
the mapping in the codebook (great_expectations/codebook.yaml), nothing else: values that are
implausible but valid in the source coding are kept as they are, so the data gate reports them
instead of the importer hiding them; only the codebook's "not measured" placeholders (``not_measured``:
Switzerland's chol 0) become missing, counted in the provenance record. A code that
the source coding does not have stops the conversion, naming the column, code and lines: guessing
its meaning could turn a wrong code into a valid-looking one.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from heart_pipeline.caching import fingerprint_bytes
from heart_pipeline.data_contract.codebook import Codebook, ForeignCoding, placeholders_to_missing
from heart_pipeline.data_contract.files import read_input_bytes, write_atomic
from heart_pipeline.data_contract.reading import is_number
from heart_pipeline.errors import DataError, cell

MAX_LINES_LISTED = 5


@dataclass(frozen=True)
class Converted:
    frame: pd.DataFrame
    provenance: dict[str, Any]


@dataclass(frozen=True)
class _Table:
    """A parsed file: text cells by the source's column names, and each row's line in the file."""

    cells: pd.DataFrame
    lines: np.ndarray
    variant: str
    missing_markers: list[str]


def _lines_text(lines: np.ndarray) -> str:
    shown = ", ".join(str(n) for n in lines[:MAX_LINES_LISTED])
    more = f" and {len(lines) - MAX_LINES_LISTED} more" if len(lines) > MAX_LINES_LISTED else ""
    return f"line{'s' if len(lines) > 1 else ''} {shown}{more}"


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{source}: not UTF-8 text (byte 0x{data[exc.start]:02x})") from None


def _records(text: str, whitespace: bool) -> tuple[list[list[str]], list[int]]:
    """Non-blank records and the line each starts on (the CSV reader's own count)."""
    if whitespace:
        pairs = [(line.split(), n) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    else:
        reader = csv.reader(io.StringIO(text, newline=""))
        pairs = []
        start = 1
        for record in reader:
            if any(field.strip() for field in record):
                pairs.append(([field.strip() for field in record], start))
            start = reader.line_num + 1
    return [r for r, _ in pairs], [n for _, n in pairs]


def _table(
    records: list[list[str]], lines: list[int], columns: list[str], source: str, what: str, header: bool = False
) -> pd.DataFrame:
    widths = np.fromiter((len(r) for r in records), dtype=np.int64, count=len(records))
    wrong = np.flatnonzero(widths != len(columns))
    if len(wrong):
        first = int(wrong[0])
        against = "the header" if header else what
        remedy = (
            "re-export with '.' as the decimal mark or ';' between fields (a decimal comma splits a value in two): "
            if widths[first] > len(columns)
            else "fill in or remove the short row(s): "
        )
        raise DataError(
            f"{source}: {remedy}line {lines[first]} has {widths[first]} fields where {against} has {len(columns)} "
            f"({len(wrong)} of {len(records)} rows differ; expected {','.join(columns)})"
        )
    return pd.DataFrame(records, columns=columns, dtype=object)


def _numbers(table: _Table, source: str) -> pd.DataFrame:
    """Every cell as a number; missing markers and blanks become missing, anything else stops."""
    out = {}
    for column in table.cells.columns:
        text = table.cells[column].astype(str).str.strip()
        missing = text.isin([*table.missing_markers, ""]).to_numpy()
        values = pd.to_numeric(text.where(~missing), errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy() & ~missing)
        if len(bad):
            raise DataError(
                f"{source}: column {column} is not a number: {cell(text.iloc[bad[0]])} at "
                f"{_lines_text(table.lines[bad])}"
            )
        out[column] = values.astype("float64")
    return pd.DataFrame(out)


def _recode(frame: pd.DataFrame, coding: ForeignCoding, lines: np.ndarray, source: str) -> pd.DataFrame:
    """Apply the codebook's mapping column by column; a code outside it stops the conversion."""
    out = {}
    for column in frame.columns:
        values = frame[column]
        recode = coding.to_ours.get(column)
        if recode is None:
            out[column] = values
            continue
        known = values.isin(list(recode.codes)) | values.isna()
        if not known.all():
            bad = np.flatnonzero(~known.to_numpy())
            codes = sorted({float(v) for v in values.iloc[bad]})
            shown = ", ".join(f"{v:g}" for v in codes[:MAX_LINES_LISTED])
            raise DataError(
                f"{source}: {column} has code(s) {shown} that {coding.name}'s coding does not have "
                f"(known: {sorted(recode.codes)}) at {_lines_text(lines[bad])}; fix or remove those rows"
            )
        mapped = values.map({float(k): (np.nan if v is None else float(v)) for k, v in recode.codes.items()})
        out[recode.column] = mapped
    return pd.DataFrame(out)


def _integers_where_whole(frame: pd.DataFrame) -> pd.DataFrame:
    """Whole-number columns as nullable integers (UCI writes 63 as 63.0); others stay float."""
    out = frame.copy()
    for column in out.columns:
        present = out[column].dropna()
        if (present == present.round()).all():
            out[column] = out[column].astype("Int64")
    return out


def _missing_counts(frame: pd.DataFrame) -> dict[str, int]:
    counts = frame.isna().sum()
    return {str(c): int(n) for c, n in counts.items() if n}


def _finish(table: _Table, coding: ForeignCoding, data: bytes, source: str, book: Codebook, fmt: str) -> Converted:
    numbers = _numbers(table, source)
    recoded, placeholders = placeholders_to_missing(_recode(numbers, coding, table.lines, source), book.not_measured)
    frame = _integers_where_whole(recoded)
    target = coding.target_column(book.label_column)
    provenance = {
        "source_file": source,
        "source_sha256": fingerprint_bytes(data),
        "source_bytes": len(data),
        "format": fmt,
        "variant": table.variant,
        "format_title": coding.title,
        "missing_markers": table.missing_markers,
        "mapping": coding.mapping_description(),
        "label_source": f"{coding.name} {target}",
        "codebook_version": book.version,
        "codebook_label": book.label_tag,
        "label_definition": book.label_definition,
        "rows": len(frame),
        "placeholders_read_as_missing": placeholders,
        "missing_cells_after_conversion": _missing_counts(frame),
        "not_changed": "values are converted, never corrected: the data gate judges them",
    }
    return Converted(frame=frame, provenance=provenance)


def _separator(first_line: str) -> str | None:
    """``;`` or ``,`` when the first line uses it, else None (whitespace-separated)."""
    return ";" if ";" in first_line else "," if "," in first_line else None


def _split_records(text: str, separator: str | None) -> tuple[list[list[str]], list[int]]:
    if separator is None:
        return _records(text, whitespace=True)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator)
    pairs, start = [], 1
    for record in reader:
        if any(field.strip() for field in record):
            pairs.append(([field.strip() for field in record], start))
        start = reader.line_num + 1
    return [r for r, _ in pairs], [n for _, n in pairs]


def _is_header(record: list[str], markers: list[str]) -> bool:
    """A header is mostly names: at least half of its filled fields are neither numbers nor missing
    markers (a data row with one bad cell is still a data row, reported as such)."""
    filled = [f for f in record if f and f not in markers]
    names = sum(not is_number(f) for f in filled)
    return bool(filled) and names * 2 >= len(filled)


def different_dataset(source: str, header: list[str], expected: list[str]) -> DataError | None:
    """The refusal for a file sharing less than half of ``expected``'s columns: another dataset (or, when
    the first line is all numbers, UCI's headerless file)."""
    if not _is_header(header, ["?", "-9", "-9.0", ""]):
        return DataError(
            f"{source}: use --from uci: the first line is all numbers (no header line), as in UCI's "
            f"processed.*.data: {cell(','.join(header), 60)}"
        )
    shared = [c for c in expected if c.lower() in {h.lower() for h in header}]
    if len(shared) * 2 >= len(expected):
        return None
    matching = ", ".join(shared) if shared else "none"
    return DataError(
        f"{source}: a different dataset, not a heart-disease file this project reads: it shares "
        f"{len(shared)} of {len(expected)} columns ({matching}); header {cell(','.join(header), 80)}"
    )


def _check_uci_header(header: list[str], source: str, book: Codebook, coding: ForeignCoding) -> None:
    """UCI's files with a header line: any names, but 14 of them with the label (num or target) last."""
    other = different_dataset(source, header, coding.columns)
    lowered = [h.lower() for h in header]
    if "dataset" in lowered or "thalch" in lowered:
        raise DataError(
            f"{source}: use --from uci-text: this is UCI's text-coded copy (heart_disease_uci.csv, "
            f"columns dataset and thalch), not the numeric processed.*.data"
        )
    if len(header) != len(coding.columns) or lowered[-1] not in {"num", book.label_column}:
        raise other or DataError(
            f"{source}: the header {cell(','.join(header), 100)} is not UCI's 14 columns with the label "
            f"(num or {book.label_column}) last: {','.join(coding.columns)}"
        )


def _refuse_other_codings(frame: pd.DataFrame, source: str, lines: np.ndarray) -> None:
    """A header-ed file in the project's or Kaggle's codes (cp 0-3) is not UCI's (cp 1-4): name the way out."""
    cp = pd.to_numeric(frame["cp"], errors="coerce")
    if not (cp == 0).any():
        return
    first = lines[np.flatnonzero((cp == 0).to_numpy())[:MAX_LINES_LISTED]]
    raise DataError(
        f"{source}: use --from kaggle if this is Kaggle's heart.csv (target 1 = no disease), or no conversion "
        f"if it is already in this project's coding: cp has code 0 (UCI's cp is 1-4) at {_lines_text(first)}"
    )


def convert_uci(data: bytes, source: str, book: Codebook) -> Converted:
    """UCI's processed.*.data (comma-separated, '?' missing) or the whitespace-separated
    reprocessed variant (-9 missing), any of the four sites: num 0-4. A header line (any names, the
    label ``num`` or ``target`` last) and ``;`` or whitespace separation are accepted."""
    coding = book.foreign_coding("uci")
    text = _decode(data, source)
    first = next((line for line in text.splitlines() if line.strip()), "")
    separator = _separator(first)
    records, lines = _split_records(text, separator)
    if not records:
        raise DataError(f"{source}: file has no data rows")
    markers = [*coding.missing_markers, *(coding.whitespace_missing_markers if separator is None else [])]
    header = _is_header(records[0], markers)
    if header:
        _check_uci_header(records[0], source, book, coding)
        records, lines = records[1:], lines[1:]
        if not records:
            raise DataError(f"{source}: file has a header but no data rows")
    shown = {",": "comma", ";": "semicolon", None: "whitespace"}[separator]
    variant = f"{'reprocessed' if separator is None else 'processed'} ({shown}-separated"
    variant += f"{', header line' if header else ''}{', -9 missing' if separator is None else ''})"
    cells = _table(records, lines, coding.columns, source, f"UCI's {variant} format", header)
    if header:
        _refuse_other_codings(
            _numbers(_Table(cells, np.asarray(lines), variant, markers), source), source, np.asarray(lines)
        )
    table = _Table(cells=cells, lines=np.asarray(lines), variant=variant, missing_markers=markers)
    return _finish(table, coding, data, source, book, "uci")


def _refuse_label_already_ours(frame: pd.DataFrame, source: str, book: Codebook) -> None:
    """Kaggle's target runs backwards (1 = no disease); a file whose target already agrees with the disease
    markers was converted before: inverting it again would make every label wrong."""
    from heart_pipeline.data_contract.meaning import KAGGLE_CHECK_MARKERS, marker_effects

    effects = marker_effects(frame, book.label_column, KAGGLE_CHECK_MARKERS)
    agreeing = [e for e in effects if (e.auc > 0.5) == (e.expected == "rises") and min(e.auc, 1 - e.auc) < 0.4]
    if len(effects) >= 3 and len(agreeing) * 2 > len(effects):
        raise DataError(
            f"{source}: use the file as it is, no conversion: its {book.label_column} already means disease "
            f"({len(agreeing)} of {len(effects)} disease markers agree), and --from kaggle would invert every label"
        )


def _kaggle_header_hint(header: list[str], source: str, coding: ForeignCoding) -> DataError:
    lowered = [h.lower() for h in header]
    if "dataset" in lowered or "thalch" in lowered:
        return DataError(f"{source}: use --from uci-text: this is UCI's text-coded copy (heart_disease_uci.csv)")
    if lowered and lowered[-1] == "num" and len(header) == len(coding.columns):
        return DataError(f"{source}: use --from uci: the header ends in num, UCI's label (0-4)")
    return different_dataset(source, header, coding.columns) or DataError(
        f"{source}: header {cell(','.join(header), 120)} is not Kaggle's {','.join(coding.columns)}; "
        "UCI's files (with or without a header, label num last) convert with --from uci"
    )


def convert_kaggle(data: bytes, source: str, book: Codebook) -> Converted:
    """The Kaggle heart.csv (303 or 1,025 rows): our codes, but target 1 = no disease, thal 0 and
    ca 4 = missing. A file whose target already means disease is refused (converted before)."""
    coding = book.foreign_coding("kaggle")
    records, lines = _records(_decode(data, source), whitespace=False)
    if not records:
        raise DataError(f"{source}: file is empty")
    header, *rows = records
    if header != coding.columns:
        raise _kaggle_header_hint(header, source, coding)
    if not rows:
        raise DataError(f"{source}: file has a header but no data rows")
    cells = _table(rows, lines[1:], coding.columns, source, "the Kaggle format", True)
    table = _Table(cells=cells, lines=np.asarray(lines[1:]), variant="csv with header", missing_markers=["", "NA"])
    numbers = _numbers(table, source)
    thal, cp = numbers["thal"], numbers["cp"]
    if thal.isin([6, 7]).any() or (cp == 4).any():
        raise DataError(f"{source}: use --from uci: thal 6/7 or cp 4 are UCI's codes, not Kaggle's")
    _refuse_label_already_ours(numbers, source, book)
    return _finish(table, coding, data, source, book, "kaggle")


def _translate_words(cells: pd.DataFrame, coding: ForeignCoding, lines: np.ndarray, source: str) -> pd.DataFrame:
    """Each text-coded column's words as the ``via`` coding's numeric codes (text); an unknown word stops."""
    out = cells.copy()
    for column, words in coding.text_codes.items():
        text = cells[column].astype(str).str.strip().str.lower()
        blank = text.isin(["", "nan", "na", "none"]).to_numpy()
        codes = text.map(words)
        unknown = np.flatnonzero(codes.isna().to_numpy() & ~blank)
        if len(unknown):
            seen = sorted(set(text.iloc[unknown]))[:MAX_LINES_LISTED]
            raise DataError(
                f"{source}: {column} has word(s) {', '.join(map(repr, seen))} that the codebook's uci-text coding "
                f"does not list (known: {', '.join(sorted(words))}) at {_lines_text(lines[unknown])}"
            )
        out[column] = codes.map(lambda v: "" if pd.isna(v) else str(int(v))).where(~blank, "")
    return out


def convert_uci_text(data: bytes, source: str, book: Codebook) -> Converted:
    """UCI's 920-row text-coded copy (heart_disease_uci.csv): four sites in one file, words for codes
    ("typical angina", TRUE/FALSE, "fixed defect"), thalch for thalach, num 0-4. The ``dataset``
    column (the site) is kept as ``site``; ``id`` is dropped."""
    coding = book.foreign_coding("uci-text")
    via = book.foreign_coding(coding.via or "uci")
    records, lines = _records(_decode(data, source), whitespace=False)
    if not records:
        raise DataError(f"{source}: file is empty")
    header = [h.lower() for h in records[0]]
    missing = [c for c in coding.columns if c not in header]
    if missing:
        raise different_dataset(source, records[0], coding.columns) or DataError(
            f"{source}: not UCI's text-coded file: columns {', '.join(missing)} are absent "
            f"(expected {','.join(coding.columns)}); numeric UCI files convert with --from uci"
        )
    if len(records) < 2:
        raise DataError(f"{source}: file has a header but no data rows")
    cells = _table(records[1:], lines[1:], header, source, "UCI's text-coded format", True)
    row_lines = np.asarray(lines[1:])
    words = _translate_words(cells, coding, row_lines, source).rename(columns=coding.renames)
    site_column = coding.renames.get("dataset", "site")
    table = _Table(words[via.columns], row_lines, "text-coded csv with header", coding.missing_markers)
    converted = _finish(table, via, data, source, book, "uci-text")
    frame = converted.frame.assign(**{site_column: words[site_column].replace("", None).to_numpy()})
    sites = frame[site_column].value_counts().to_dict()
    return Converted(frame, {**converted.provenance, "sites": {str(k): int(v) for k, v in sites.items()}})


IMPORTERS: dict[str, Callable[[bytes, str, Codebook], Converted]] = {
    "uci": convert_uci,
    "kaggle": convert_kaggle,
    "uci-text": convert_uci_text,
}


def convert(fmt: str, data: bytes, source: str, book: Codebook) -> Converted:
    try:
        importer = IMPORTERS[fmt]
    except KeyError:
        raise DataError(f"unknown format {fmt!r}; known: {sorted(IMPORTERS)}") from None
    return importer(data, source, book)


def to_csv_bytes(frame: pd.DataFrame) -> bytes:
    """The converted frame as the project's CSV: a header, blanks for missing values."""
    return frame.to_csv(index=False).encode("utf-8")


def provenance_path(out: Path) -> Path:
    return out.with_name(out.name + ".provenance.json")


def convert_file(fmt: str, data: bytes, source: Path, out: Path, book: Codebook) -> dict[str, Any]:
    """Convert ``data`` (read from ``source``) and write ``out`` plus its provenance sidecar, each
    atomically; the sidecar goes last, so it only ever describes a CSV that is complete."""
    converted = convert(fmt, data, str(source), book)
    csv_bytes = to_csv_bytes(converted.frame)
    provenance = {
        **converted.provenance,
        "output_file": str(out),
        "output_sha256": fingerprint_bytes(csv_bytes),
        "converted_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_atomic(out, csv_bytes)
    write_atomic(provenance_path(out), json.dumps(provenance, indent=2).encode("utf-8"))
    return {**provenance, "provenance_file": str(provenance_path(out))}


def _provenance_line(record: dict[str, Any]) -> str:
    return (
        f"converted from {Path(record['source_file']).name} (sha256 {record['source_sha256'][:12]}) by the "
        f"{record['format']} importer ({record['codebook_label']})"
    )


def convert_bundled_default(source: Path, fmt: str, out: Path, book: Codebook, max_bytes: int) -> str:
    """Write the bundled default data (``source``, in format ``fmt``) to ``out`` in our codebook;
    returns a one-line provenance (the full record is in the sidecar)."""
    record = convert_file(fmt, read_input_bytes(source, max_bytes, "data.max_memory_mb"), source, out, book)
    return _provenance_line(record)


def describe_provenance(path: Path, fingerprint: str) -> str:
    """One line on where ``path`` came from: its converter's record when one sits beside it and
    describes exactly these bytes (``fingerprint``), otherwise just the file."""
    sidecar = provenance_path(path)
    if not sidecar.is_file():
        return f"file {path}"
    try:
        record = json.loads(read_input_bytes(sidecar, 2**20, "provenance record size"))
        line = _provenance_line(record)
    except (DataError, ValueError, KeyError, TypeError):
        return f"file {path} ({sidecar.name} unreadable, ignored)"
    if record.get("output_sha256") != fingerprint:
        return f"file {path} ({sidecar.name} describes other content, ignored)"
    return f"file {path}, {line}"


def converted_with(path: Path, fingerprint: str) -> str | None:
    """The importer that wrote exactly these bytes (``fingerprint``) at ``path``, per its provenance
    sidecar; None when there is no sidecar, it is unreadable, or it describes other content. Such a
    file is in the project's coding by construction, so the coding check has nothing to find in it."""
    sidecar = provenance_path(path)
    if not sidecar.is_file():
        return None
    try:
        record = json.loads(read_input_bytes(sidecar, 2**20, "provenance record size"))
    except (DataError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("output_sha256") != fingerprint:
        return None
    return str(record.get("format") or "") or None


def from_ours(frame: pd.DataFrame, coding: ForeignCoding) -> pd.DataFrame:
    """The inverse mapping: a frame in our codes rewritten in ``coding`` (its column names too).

    Where several of its codes map to one of ours (UCI num 1-4 -> target 1) the first is used, and
    a missing value becomes the coding's missing-value code if it has one. Used to generate files
    in a foreign coding from the bundled data (tests, coding checks), never to guess meanings.
    """
    out = {}
    for source in coding.columns:
        recode = coding.to_ours.get(source)
        ours = recode.column if recode else source
        values = frame[ours]
        if recode is not None:
            inverse: dict[float, float] = {}
            missing_code = np.nan
            for theirs, our_code in recode.codes.items():
                if our_code is None:
                    missing_code = float(theirs)
                else:
                    inverse.setdefault(float(our_code), float(theirs))
            mapped = values.astype("float64").map(inverse)
            values = mapped.where(values.notna(), missing_code)
        out[source] = values
    return pd.DataFrame(out)
