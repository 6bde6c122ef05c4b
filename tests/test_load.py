"""The load step: the bundled default, reading once, and every way a file can be unusable."""

import errno
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from heart_pipeline.caching import fingerprint_bytes
from heart_pipeline.config import load_config, load_settings_and_contract
from heart_pipeline.data_contract import reading
from heart_pipeline.data_contract.files import read_input_bytes, write_atomic
from heart_pipeline.data_contract.importers import provenance_path
from heart_pipeline.data_contract.reading import ParsedTable, declare_disease_label, parse_heart_table
from heart_pipeline.errors import ConfigError, DataError
from heart_pipeline.tasks.load import load_dataset, read_heart_csv
from tests.helpers import make_settings

SETTINGS, CONTRACT = load_settings_and_contract()
COLUMNS = CONTRACT.columns


def test_bundled_data_is_uci_cleveland_in_our_codes(bundled_csv: Path) -> None:
    frame = pd.read_csv(bundled_csv)
    assert list(frame.columns) == COLUMNS
    assert len(frame) == 303
    assert int(frame["target"].sum()) == 139, "the standard label, num > 0"
    assert frame.isna().sum()[lambda s: s > 0].to_dict() == {"ca": 4, "thal": 2}
    provenance = json.loads(provenance_path(bundled_csv).read_text())
    assert provenance["format"] == "uci" and provenance["source_file"].endswith("processed.cleveland.data")


def test_reads_a_byte_order_mark_and_maps_rows_to_lines(tmp_path: Path, clean_frame: pd.DataFrame) -> None:
    path = tmp_path / "bom.csv"
    text = clean_frame.head(3).to_csv(index=False)
    lines = text.splitlines()
    path.write_bytes(("\ufeff" + lines[0] + "\n" + lines[1] + "\n\n" + lines[2] + "\n" + lines[3] + "\n").encode())
    raw = read_heart_csv(path, SETTINGS.data, COLUMNS)
    assert raw.frame.columns[0] == "age"
    assert raw.source_lines == [2, 4, 5]  # the blank line 3 is skipped but not miscounted
    assert raw.fingerprint == fingerprint_bytes(path.read_bytes())


def test_question_mark_and_blank_read_as_missing(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text("a,b\n1,?\n,2\n")
    frame = read_heart_csv(path, SETTINGS.data, COLUMNS).frame
    assert frame.isna().sum().sum() == 2


def test_default_file_is_converted_only_for_the_default_path(tmp_path: Path) -> None:
    default = tmp_path / "data" / "heart.csv"
    _, settings, contract = make_settings(tmp_path, data__path=str(default))
    dataset = load_dataset(default, settings, contract.columns)
    assert default.exists() and dataset.summary.n_rows == 303
    assert "converted from processed.cleveland.data" in dataset.provenance
    assert "uci importer (codebook v1, num>0)" in dataset.provenance
    again = load_dataset(default, settings, contract.columns)
    assert again.provenance == dataset.provenance, "the second run reads the record written by the first"
    with pytest.raises(DataError, match="file not found"):
        load_dataset(tmp_path / "other.csv", settings, contract.columns)


def test_declared_disease_label_is_applied_and_changes_the_identity(tmp_path: Path, clean_frame: pd.DataFrame) -> None:
    path = tmp_path / "kaggle-coded.csv"
    clean_frame.assign(target=1 - clean_frame["target"]).to_csv(path, index=False)
    _, settings, contract = make_settings(tmp_path, data__disease_label=0)
    dataset = load_dataset(path, settings, contract.columns)
    assert dataset.raw.frame["target"].tolist() == clean_frame["target"].tolist()
    assert "the file's 0 means disease" in dataset.provenance
    plain = load_dataset(path, load_config(), contract.columns)
    assert plain.fingerprint == dataset.fingerprint, "the same bytes"
    assert plain.identity != dataset.identity, "but read differently: no cache hit across the two"


# --- reading: headers, delimiters, line numbers, budgets, special files, Parquet ---------------


def _parse(data: bytes, max_rows: int = 10_000, max_memory_bytes: int = 2**30) -> ParsedTable:
    return parse_heart_table(data, "in.csv", ["?"], COLUMNS, max_rows, max_memory_bytes)


def test_headerless_file_is_named_as_such(clean_frame: pd.DataFrame) -> None:
    data = clean_frame.head(5).to_csv(index=False, header=False).encode()
    with pytest.raises(DataError, match=r"no header row .* expected age,sex,.*convert --from uci") as error:
        _parse(data)
    assert "\n" not in str(error.value)


def test_whitespace_separated_file_gets_a_delimiter_hint(clean_frame: pd.DataFrame) -> None:
    data = clean_frame.head(5).to_csv(index=False, sep=" ").encode()
    with pytest.raises(DataError, match="looks whitespace-separated"):
        _parse(data)


def test_duplicate_column_name_is_reported_as_such(clean_frame: pd.DataFrame) -> None:
    frame = clean_frame.head(5)
    data = frame.to_csv(index=False).replace("chol", "age", 1).encode()
    with pytest.raises(DataError, match=r"column name 'age' appears twice in the header \(columns 1 and 5\)"):
        _parse(data)


def test_quoted_newline_does_not_shift_line_numbers(clean_frame: pd.DataFrame) -> None:
    lines = clean_frame.head(4).to_csv(index=False).splitlines()
    first = lines[1].split(",")
    first[0] = '"6\n3"'  # a quoted field spanning lines 2-3
    text = "\n".join([lines[0], ",".join(first), "", lines[2], lines[3], lines[4]]) + "\n"
    parsed = _parse(text.encode())
    assert parsed.source_lines == [2, 5, 6, 7]


def test_forty_megabyte_cell_gives_a_short_message(tmp_path: Path, clean_frame: pd.DataFrame) -> None:
    lines = clean_frame.head(60).to_csv(index=False).splitlines()
    cells = lines[3].split(",")
    cells[4] = "x" * 40_000_000
    lines[3] = ",".join(cells)
    parsed = _parse(("\n".join(lines) + "\n").encode())
    assert parsed.cells_truncated == 1
    assert len(str(parsed.frame["chol"].iloc[2])) < 300


def test_row_and_memory_budgets_name_their_config_keys(clean_frame: pd.DataFrame) -> None:
    data = clean_frame.to_csv(index=False).encode()
    with pytest.raises(DataError, match=r"more than 100 data rows, the budget set by data.max_rows"):
        _parse(data, max_rows=100)
    with pytest.raises(DataError, match=r"MB budget \(data.max_memory_mb\)"):
        _parse(data, max_memory_bytes=1000)


def test_the_memory_budget_is_checked_before_the_whole_table_is_parsed(
    clean_frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file within the budget whose table is not: refused from a sample, the whole file never parsed."""
    data = pd.concat([clean_frame] * 200).to_csv(index=False).encode()
    assert len(data) > 2 * reading.BUDGET_SAMPLE_BYTES
    parsed_sizes: list[int] = []
    real_read_csv = pd.read_csv

    def measured_read_csv(source: object, *args: object, **kwargs: object) -> pd.DataFrame:
        parsed_sizes.append(source.getbuffer().nbytes if hasattr(source, "getbuffer") else -1)  # type: ignore[attr-defined]
        return real_read_csv(source, *args, **kwargs)

    monkeypatch.setattr(pd, "read_csv", measured_read_csv)
    with pytest.raises(
        DataError, match=r"estimated from its first 1 MB\), above the .* MB budget \(data.max_memory_mb\)"
    ):
        _parse(data, max_rows=10**6, max_memory_bytes=int(len(data) * 1.5))
    assert parsed_sizes and max(parsed_sizes) <= reading.BUDGET_SAMPLE_BYTES
    assert len(_parse(data, max_rows=10**6, max_memory_bytes=len(data) * 10).frame) == len(clean_frame) * 200


@pytest.mark.parametrize("special", ["/proc/self/environ", "/dev/zero", "/proc/self/status"])
def test_special_files_are_refused_before_reading(special: str) -> None:
    with pytest.raises(DataError, match="refusing to read it") as error:
        read_input_bytes(Path(special), 2**20, "data.max_memory_mb")
    assert "PATH=" not in str(error.value)


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        read_input_bytes(fifo, 2**20, "data.max_memory_mb")


def test_file_above_the_memory_budget_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_bytes(b"a" * 3000)
    with pytest.raises(DataError, match=r"above the .* MB budget \(data.max_memory_mb\)"):
        read_input_bytes(path, 1000, "data.max_memory_mb")


def test_disk_full_names_the_path_and_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)  # the disk fills while the file is flushed
    target = tmp_path / "out" / "heart.csv"
    with pytest.raises(DataError, match=r"out/heart.csv: cannot write: disk full"):
        write_atomic(target, b"x")
    assert list(target.parent.iterdir()) == []


def test_parquet_is_read_like_csv(tmp_path: Path, clean_frame: pd.DataFrame) -> None:
    path = tmp_path / "heart.parquet"
    clean_frame.to_parquet(path, index=False)
    parsed = _parse(path.read_bytes())
    assert parsed.file_format == "parquet"
    pd.testing.assert_frame_equal(parsed.frame, clean_frame, check_dtype=False)
    with pytest.raises(DataError, match=r"data\.max_rows"):
        _parse(path.read_bytes(), max_rows=10)


def test_declared_disease_label_flips_only_zero_and_one() -> None:
    frame = pd.DataFrame({"target": [0, 1, 1, 2]})
    assert declare_disease_label(frame, "target", 0)["target"].tolist() == [1, 0, 0, 2]
    assert declare_disease_label(frame, "target", 1) is frame


def test_disease_label_flag_is_parsed_and_bounded() -> None:
    from heart_pipeline.cli import build_parser

    assert build_parser().parse_args(["train", "--disease-label", "0"]).disease_label == 0
    assert build_parser().parse_args(["validate"]).disease_label is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--disease-label", "2"])
    with pytest.raises(ConfigError, match="--disease-label must be 0 or 1"):
        SETTINGS.with_disease_label(2)
    assert SETTINGS.with_disease_label(0).data.disease_label == 0
