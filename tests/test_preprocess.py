from pathlib import Path

import numpy as np
import pandas as pd

from heart_pipeline.config import load_config
from heart_pipeline.tasks.preprocess import (
    build_preprocessor,
    prepare_training_data,
    split_train_test,
    write_training_exports,
)

SETTINGS = load_config()


def test_duplicates_are_dropped_before_the_split(tmp_path: Path, clean_frame: pd.DataFrame) -> None:
    with_copies = pd.concat([clean_frame, clean_frame.head(10)], ignore_index=True)
    prepared = prepare_training_data(with_copies, "target", 0.2, 42)
    assert prepared.duplicates_removed == 10
    train = prepared.x_train.assign(target=prepared.y_train)
    test = prepared.x_test.assign(target=prepared.y_test)
    assert len(train) + len(test) == len(clean_frame.drop_duplicates())
    overlap = train.merge(test, how="inner")
    assert overlap.empty, "a row on both sides of the split is leakage"
    written = write_training_exports(prepared, SETTINGS.features, "target", tmp_path)
    assert {p.stem for p in written} == {
        "processed_heart",
        "X_train_clean",
        "X_test_clean",
        "y_train",
        "y_test",
        "duplicates_removed",
    }
    assert len(pd.read_csv(tmp_path / "duplicates_removed.csv")) == 10
    assert len(pd.read_csv(tmp_path / "processed_heart.csv")) == len(train) + len(test)


def test_split_is_stratified_and_seeded(clean_frame: pd.DataFrame) -> None:
    a = split_train_test(clean_frame, "target", 0.2, 7)
    b = split_train_test(clean_frame, "target", 0.2, 7)
    assert a[0].index.equals(b[0].index)
    assert abs(a[2].mean() - a[3].mean()) < 0.03


def test_preprocessor_is_fitted_on_training_rows_only(clean_frame: pd.DataFrame) -> None:
    x_train, _, _, _ = split_train_test(clean_frame, "target", 0.2, 42)
    preprocessor = build_preprocessor(SETTINGS.features).fit(x_train)
    scaler = preprocessor.named_transformers_["numeric"].named_steps["scale"]
    np.testing.assert_allclose(scaler.mean_, x_train[SETTINGS.features.numeric].mean().to_numpy())
    assert not np.allclose(scaler.mean_, clean_frame[SETTINGS.features.numeric].mean().to_numpy())


def test_unknown_category_is_ignored_and_missing_values_imputed(clean_frame: pd.DataFrame) -> None:
    x = clean_frame.drop(columns="target")
    preprocessor = build_preprocessor(SETTINGS.features).fit(x)
    odd = x.head(2).copy().astype("float64")
    odd.loc[odd.index[0], "cp"] = 9
    odd.loc[odd.index[1], "chol"] = np.nan
    out = preprocessor.transform(odd)
    assert np.isfinite(out).all()


def test_parquet_exports_hold_the_same_frames_as_csv(tmp_path: Path, clean_frame: pd.DataFrame) -> None:
    prepared = prepare_training_data(clean_frame, "target", 0.2, 42)
    as_csv = write_training_exports(prepared, SETTINGS.features, "target", tmp_path / "csv")
    as_parquet = write_training_exports(prepared, SETTINGS.features, "target", tmp_path / "pq", "parquet")
    assert [p.stem for p in as_csv] == [p.stem for p in as_parquet]
    assert all(p.suffix == ".parquet" for p in as_parquet)
    for csv_path, parquet_path in zip(as_csv, as_parquet, strict=True):
        pd.testing.assert_frame_equal(pd.read_csv(csv_path), pd.read_parquet(parquet_path), check_dtype=False)
