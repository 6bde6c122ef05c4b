"""Importers: files in UCI's and Kaggle's codings, generated from the bundled UCI file."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from heart_pipeline.cli import main
from heart_pipeline.config import PROJECT_ROOT, default_codebook
from heart_pipeline.data_contract.importers import convert, convert_bundled_default, from_ours, provenance_path
from heart_pipeline.errors import DataError
from tests.sites import uci_lines, uci_text

BUNDLED = PROJECT_ROOT / "data" / "processed.cleveland.data"
BOOK = default_codebook()


@pytest.fixture(scope="module")
def ours() -> pd.DataFrame:
    return convert("uci", BUNDLED.read_bytes(), str(BUNDLED), BOOK).frame


def _uci_text(frame: pd.DataFrame, sep: str, missing: str) -> bytes:
    foreign = from_ours(frame, BOOK.foreign_coding("uci"))
    rows = [sep.join(missing if pd.isna(v) else f"{float(v):.1f}" for v in row) for row in foreign.to_numpy()]
    return ("\n".join(rows) + "\n").encode()


def test_bundled_file_converts_to_our_codes(ours: pd.DataFrame) -> None:
    assert list(ours.columns) == list(BOOK.foreign_coding("kaggle").columns)
    assert len(ours) == 303
    assert int(ours["target"].sum()) == 139, "the standard label: num > 0"
    assert ours.isna().sum()[lambda s: s > 0].to_dict() == {"ca": 4, "thal": 2}
    for column, coded in BOOK.columns.items():
        assert set(ours[column].dropna()) <= set(coded.codes), column
    # the first Cleveland patient: 63, male, typical angina (UCI 1), LVH (UCI 2), downsloping (UCI 3), fixed (UCI 6)
    first = ours.iloc[0]
    assert (first["cp"], first["restecg"], first["slope"], first["thal"], first["target"]) == (3, 0, 0, 1, 0)


def test_generated_uci_file_round_trips(ours: pd.DataFrame) -> None:
    converted = convert("uci", _uci_text(ours, ",", "?"), "generated.data", BOOK)
    pd.testing.assert_frame_equal(converted.frame, ours)
    assert converted.provenance["variant"].startswith("processed")


def test_reprocessed_whitespace_variant_with_minus_nine(ours: pd.DataFrame) -> None:
    converted = convert("uci", _uci_text(ours, " ", "-9"), "reprocessed.data", BOOK)
    pd.testing.assert_frame_equal(converted.frame, ours)
    assert converted.provenance["variant"].startswith("reprocessed")
    assert converted.provenance["missing_cells_after_conversion"] == {"ca": 4, "thal": 2}


def test_not_measured_placeholders_become_missing_and_are_counted(ours: pd.DataFrame) -> None:
    """Switzerland's chol 0 means 'not measured' (the codebook's not_measured): missing, and said so."""
    swiss = ours.assign(chol=0, trestbps=ours["trestbps"].where(ours.index % 10 != 0, 0))
    converted = convert("uci", _uci_text(swiss, ",", "?"), "switzerland.data", BOOK)
    assert converted.frame["chol"].isna().all()
    assert int(converted.frame["trestbps"].isna().sum()) == 31
    assert converted.provenance["placeholders_read_as_missing"] == {"chol": 303, "trestbps": 31}


def test_implausible_values_are_kept_for_the_gate(ours: pd.DataFrame) -> None:
    """A value that is not a declared placeholder (chol 50) is kept: the gate judges it."""
    odd = ours.assign(chol=ours["chol"].where(ours.index != 5, 50))
    converted = convert("uci", _uci_text(odd, ",", "?"), "odd.data", BOOK)
    assert int(converted.frame["chol"].iloc[5]) == 50


def test_kaggle_target_is_inverted_and_placeholders_become_missing(ours: pd.DataFrame) -> None:
    kaggle = from_ours(ours, BOOK.foreign_coding("kaggle"))
    assert kaggle["thal"].isna().sum() == 0 and (kaggle["thal"] == 0).sum() == 2
    assert (kaggle["ca"] == 4).sum() == 4
    text = "\ufeff" + kaggle.astype("Int64", errors="ignore").to_csv(index=False)
    converted = convert("kaggle", text.encode(), "heart.csv", BOOK)
    pd.testing.assert_frame_equal(converted.frame, ours)
    assert (converted.frame["target"] == 1 - kaggle["target"]).all()


def test_unknown_code_stops_naming_column_code_and_line(ours: pd.DataFrame) -> None:
    text = _uci_text(ours, ",", "?").decode().splitlines()
    fields = text[4].split(",")
    fields[2] = "5.0"  # cp 5 does not exist in UCI's coding
    text[4] = ",".join(fields)
    with pytest.raises(DataError, match=r"cp has code\(s\) 5 .* at line 5;"):
        convert("uci", "\n".join(text).encode(), "bad.data", BOOK)


@pytest.mark.parametrize(
    ("fmt", "content", "message"),
    [
        ("uci", b"age,sex,cp\n1,2,3\n", "a different dataset, .* shares 3 of 14 columns \\(age, sex, cp\\)"),
        ("uci", b"63.0,1.0,1.0\n", "line 1 has 3 fields where UCI's .* has 14"),
        ("uci", b"63.0,1.0,x" + b"y" * 5000 + b",1,1,1,1,1,1,1,1,1,1,1\n", "column cp is not a number"),
        ("kaggle", b"63,1,1\n", "use --from uci: the first line is all numbers"),
        ("kaggle", b"name,price\nx,1\n", "a different dataset"),
        ("kaggle", b"age,sex,cp,trestbps,chol,fbs,restecg,thalach,exang,oldpeak,slope,ca,thal,target\n", "no data"),
    ],
)
def test_wrong_files_give_one_bounded_line(fmt: str, content: bytes, message: str) -> None:
    with pytest.raises(DataError, match=message) as error:
        convert(fmt, content, "in.data", BOOK)
    assert len(str(error.value)) < 400 and "\n" not in str(error.value)


def test_convert_command_writes_csv_and_provenance(tmp_path: Path, ours: pd.DataFrame) -> None:
    out = tmp_path / "out" / "heart.csv"
    assert main(["convert", "--from", "uci", str(BUNDLED), "--out", str(out)]) == 0
    written = pd.read_csv(out)
    assert list(written.columns) == list(ours.columns) and len(written) == 303
    assert np.allclose(written.fillna(-1).to_numpy(), ours.astype("float64").fillna(-1).to_numpy())
    provenance = json.loads(provenance_path(out).read_text())
    assert provenance["source_sha256"] == __import__("hashlib").sha256(BUNDLED.read_bytes()).hexdigest()
    assert provenance["format"] == "uci" and provenance["codebook_version"] == BOOK.version
    assert provenance["label_definition"] == BOOK.label_definition
    assert provenance["mapping"]["restecg->restecg"] == "0->1, 1->2, 2->0"
    assert not list(out.parent.glob("*.tmp")), "no temporary file is left behind"


def test_convert_command_refuses_special_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", "--from", "uci", "/proc/self/environ", "--out", str(tmp_path / "x.csv")]) == 1
    assert not (tmp_path / "x.csv").exists()


def test_each_in_process_call_prints_its_error_once(tmp_path: Path) -> None:
    """main() queues its last line for exit (after Prefect's own exit lines); two calls in one process
    (a test, a notebook) print two lines, not one per call per line."""
    call = ["convert", "--from", "uci", "/proc/self/environ", "--out", str(tmp_path / "x.csv")]
    code = f"from heart_pipeline.cli import main\nfor _ in range(2): main({call!r})"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    errors = [line for line in result.stderr.splitlines() if line.startswith("heart-pipeline: error:")]
    assert len(errors) == 2, result.stderr[-2000:]


def test_bundled_default_is_converted_with_provenance(tmp_path: Path, ours: pd.DataFrame) -> None:
    out = tmp_path / "data" / "heart.csv"
    line = convert_bundled_default(BUNDLED, "uci", out, BOOK, 2**20)
    assert "processed.cleveland.data" in line and "num>0" in line
    assert len(pd.read_csv(out)) == 303
    assert json.loads(provenance_path(out).read_text())["rows"] == 303


UCI_HEADER = ["age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang", "oldpeak"]
UCI_HEADER += ["slope", "ca", "thal", "num"]


@pytest.mark.parametrize(
    ("sep", "missing", "header"),
    [
        (",", "?", UCI_HEADER),
        (";", "?", None),
        (";", "?", [f"col{i}" for i in range(13)] + ["target"]),
        (" ", "-9", UCI_HEADER),
    ],
)
def test_uci_reads_header_lines_and_separators(ours: pd.DataFrame, sep: str, missing: str, header: list | None) -> None:
    converted = convert("uci", uci_lines(ours, sep, missing, header), "copy.data", BOOK)
    pd.testing.assert_frame_equal(converted.frame, ours)
    assert ("header line" in converted.provenance["variant"]) == (header is not None)


def test_uci_text_reads_words_and_keeps_the_site(ours: pd.DataFrame) -> None:
    converted = convert("uci-text", uci_text(ours, ["Cleveland", "Hungary", "VA Long Beach"]), "uci.csv", BOOK)
    pd.testing.assert_frame_equal(converted.frame.drop(columns="site"), ours)
    assert converted.frame["site"].tolist()[:3] == ["Cleveland", "Hungary", "VA Long Beach"]
    assert converted.provenance["sites"] == {"Cleveland": 101, "Hungary": 101, "VA Long Beach": 101}


def test_uci_text_unknown_word_names_column_word_and_line(ours: pd.DataFrame) -> None:
    text = uci_text(ours, ["Cleveland"]).decode().replace("typical angina", "typical-ish", 1).encode()
    with pytest.raises(DataError, match=r"cp has word\(s\) 'typical-ish' .* at line 2"):
        convert("uci-text", text, "uci.csv", BOOK)


def _kaggle_bytes(ours: pd.DataFrame) -> bytes:
    return from_ours(ours, BOOK.foreign_coding("kaggle")).astype("Int64", errors="ignore").to_csv(index=False).encode()


@pytest.mark.parametrize(
    ("fmt", "build", "expected"),
    [
        # each message names the importer that can read the file, or says none is needed: never a circle
        ("kaggle", lambda o: o.to_csv(index=False).encode(), "use the file as it is, no conversion: its target"),
        ("uci", _kaggle_bytes, "use --from kaggle if this is Kaggle's heart.csv"),
        ("kaggle", lambda o: uci_lines(o, ",", "?", UCI_HEADER), "use --from uci: the header ends in num"),
        ("kaggle", lambda o: uci_lines(o), "use --from uci: the first line is all numbers"),
        ("uci", lambda o: uci_text(o, ["A"]), "use --from uci-text"),
        ("kaggle", lambda o: uci_text(o, ["A"]), "use --from uci-text"),
        ("uci-text", lambda o: uci_lines(o), "use --from uci: the first line is all numbers"),
        ("uci", lambda o: b"name;price;qty\nx;1;2\n", "a different dataset, not a heart-disease file"),
        (
            "uci",
            lambda o: uci_lines(o).replace(b"\n", b"\n1,5,", 1),
            "re-export with '.' as the decimal mark or ';' between fields (a decimal comma splits a value in two): "
            "line 2 has 16 fields",
        ),
    ],
)
def test_convert_refuses_with_one_line_naming_the_way_out(
    ours: pd.DataFrame, tmp_path: Path, fmt: str, build, expected: str
) -> None:
    source, out = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_bytes(build(ours))
    from heart_pipeline import cli

    assert main(["convert", "--from", fmt, str(source), "--out", str(out)]) == 1
    last, _ = cli._last_words.pop()  # printed last, at exit (after Prefect's own lines)
    assert last.startswith(f"heart-pipeline: error: {source}: ") and expected in last, last
    assert len(last) < 600
    assert not out.exists() and not provenance_path(out).exists(), "nothing is written"
