from pathlib import Path

import numpy as np
import pandas as pd

from heart_pipeline.config import load_config
from tasks.preprocess import build_preprocessor, preprocess_dataset, split_train_test

SETTINGS = load_config()


def test_duplicates_are_dropped_before_the_split(tmp_path: Path, clean_frame: pd.DataFrame) -> None:
    with_copies = pd.concat([clean_frame, clean_frame.head(10)], ignore_index=True)
    path = tmp_path / "validated.csv"
    with_copies.to_csv(path, index=False)
    prepared = preprocess_dataset(path, "target", SETTINGS.features, 0.2, 42, tmp_path / "out")
    assert prepared.duplicates_removed == 10
    train = pd.read_csv(prepared.train_path)
    test = pd.read_csv(prepared.test_path)
    assert len(train) + len(test) == len(clean_frame.drop_duplicates())
    overlap = train.merge(test, how="inner")
    assert overlap.empty, "a row on both sides of the split is leakage"
    assert len(pd.read_csv(prepared.duplicates_path)) == 10
    for name in ("processed_heart", "X_train_clean", "X_test_clean", "y_train", "y_test"):
        assert (tmp_path / "out" / f"{name}.csv").exists()


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
