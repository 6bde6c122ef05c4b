from pathlib import Path

import pandas as pd
import pytest

from heart_pipeline.caching import fingerprint_bytes
from heart_pipeline.errors import DataError
from heart_pipeline.tasks.load import load_dataset, read_heart_csv, translate_sklego_hearts


def test_translation_to_project_codes() -> None:
    sklego = pd.DataFrame({"cp": [1, 2, 3, 4], "slope": [1, 2, 3, 3], "thal": ["fixed", "normal", "reversible", "1"]})
    out = translate_sklego_hearts(sklego)
    assert out["cp"].tolist() == [3, 1, 2, 0]
    assert out["slope"].tolist() == [2, 1, 0, 0]
    assert out["thal"].tolist()[:3] == [1, 2, 3]
    assert pd.isna(out["thal"].iloc[3]), "malformed thal must stay visibly bad, not become a valid code"


def test_bundled_data_has_project_codes(bundled_csv: Path) -> None:
    frame = pd.read_csv(bundled_csv)
    assert list(frame.columns) == [
        "age",
        "sex",
        "cp",
        "trestbps",
        "chol",
        "fbs",
        "restecg",
        "thalach",
        "exang",
        "oldpeak",
        "slope",
        "ca",
        "thal",
        "target",
    ]
    assert len(frame) == 303
    assert set(frame["cp"]) <= {0, 1, 2, 3}
    assert set(frame["slope"]) <= {0, 1, 2}
    assert set(frame["thal"].dropna()) == {1, 2, 3}
    assert frame["thal"].isna().sum() == 2
    assert set(frame["target"]) == {0, 1}


def test_reads_a_byte_order_mark_and_maps_rows_to_lines(tmp_path: Path, clean_frame: pd.DataFrame) -> None:
    path = tmp_path / "bom.csv"
    text = clean_frame.head(3).to_csv(index=False)
    lines = text.splitlines()
    path.write_bytes(("\ufeff" + lines[0] + "\n" + lines[1] + "\n\n" + lines[2] + "\n" + lines[3] + "\n").encode())
    raw = read_heart_csv(path, ["?"], 50)
    assert raw.frame.columns[0] == "age"
    assert raw.source_lines == [2, 4, 5]  # the blank line 3 is skipped but not miscounted
    assert raw.fingerprint == fingerprint_bytes(path.read_bytes())


def test_question_mark_and_blank_read_as_missing(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text("a,b\n1,?\n,2\n")
    frame = read_heart_csv(path, ["?"], 50).frame
    assert frame.isna().sum().sum() == 2


def test_default_file_is_written_only_for_the_default_path(tmp_path: Path) -> None:
    default = tmp_path / "data" / "heart.csv"
    dataset = load_dataset(default, ["?"], 50, default)
    assert default.exists() and dataset.summary.n_rows == 303
    assert "scikit-lego" in dataset.provenance
    with pytest.raises(DataError, match="file not found"):
        load_dataset(tmp_path / "other.csv", ["?"], 50, default)
