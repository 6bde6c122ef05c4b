"""Preprocess step: deduplicate, split (seeded, stratified), and build the ColumnTransformer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from prefect import task
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from heart_pipeline.config import FeatureGroups, Settings
from heart_pipeline.data_contract.files import write_csv_for_people


@dataclass(frozen=True)
class PreparedData:
    """The split rows every model trains and is tested on (raw features: each model pipeline
    fits its own preprocessor on the training rows)."""

    x_train: pd.DataFrame
    x_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series
    duplicates: pd.DataFrame  # the extra copies dropped before the split
    rows_in: int

    @property
    def n_train(self) -> int:
        return len(self.x_train)

    @property
    def n_test(self) -> int:
        return len(self.x_test)

    @property
    def duplicates_removed(self) -> int:
        return len(self.duplicates)


def drop_exact_duplicates(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep the first copy of each row; return (deduplicated, removed copies)."""
    mask = frame.duplicated(keep="first")
    return frame.loc[~mask], frame.loc[mask]


def split_train_test(
    frame: pd.DataFrame, target: str, test_size: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    features = frame.drop(columns=[target])
    labels = frame[target].astype(int)
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=test_size, random_state=seed, stratify=labels
    )
    return x_train, x_test, y_train, y_test


# What each group's imputer fills a missing value with (build_preprocessor), in words for warnings.
IMPUTED_WITH = {
    "numeric": "the training median",
    "categorical": "the training's most frequent code",
    "ordinal": "the training's most frequent value",
    "binary": "the training's most frequent value",
}


def imputed_with(groups: FeatureGroups) -> dict[str, str]:
    """Per feature, what its imputer puts in place of a missing value."""
    return {column: IMPUTED_WITH[group] for group in IMPUTED_WITH for column in getattr(groups, group)}


def without(groups: FeatureGroups, excluded: list[str]) -> FeatureGroups:
    """The feature groups minus columns a model is trained without (training.exclude_columns)."""
    return FeatureGroups(**{g: [c for c in getattr(groups, g) if c not in excluded] for g in IMPUTED_WITH})


def build_preprocessor(groups: FeatureGroups) -> ColumnTransformer:
    """One transformer for the seed's four feature groups; unfitted, so each pipeline fits its own.
    A column in no group (one the model is trained without) is dropped."""
    return ColumnTransformer(
        transformers=[
            (
                "numeric",
                Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]),
                groups.numeric,
            ),
            (
                "categorical",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="most_frequent")),
                        ("one_hot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ]
                ),
                groups.categorical,
            ),
            # Ordinal codes (slope, vessel count) are already ordered integers: impute and keep the order.
            ("ordinal", SimpleImputer(strategy="most_frequent"), groups.ordinal),
            ("binary", SimpleImputer(strategy="most_frequent"), groups.binary),
        ],
        remainder="drop",
        verbose_feature_names_out=True,
    )


def prepare_training_data(kept: pd.DataFrame, target: str, test_size: float, seed: int) -> PreparedData:
    """Drop exact duplicates BEFORE the split (a copy on both sides would be leakage), then split."""
    deduplicated, duplicates = drop_exact_duplicates(kept)
    x_train, x_test, y_train, y_test = split_train_test(deduplicated, target, test_size, seed)
    return PreparedData(x_train, x_test, y_train, y_test, duplicates, len(kept))


def clean_feature_frames(prepared: PreparedData, groups: FeatureGroups) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The features as the classifier sees them, from a preprocessor fitted on the training rows only."""
    preprocessor = build_preprocessor(groups).fit(prepared.x_train)
    names = preprocessor.get_feature_names_out()
    return (
        pd.DataFrame(preprocessor.transform(prepared.x_train), columns=names, index=prepared.x_train.index),
        pd.DataFrame(preprocessor.transform(prepared.x_test), columns=names, index=prepared.x_test.index),
    )


def write_training_exports(
    prepared: PreparedData, groups: FeatureGroups, target: str, out_dir: Path, export_format: str = "csv"
) -> list[Path]:
    """The original project's five CSVs, plus the dropped duplicates. Each file is written once.

    ``export_format="parquet"`` (outputs.export_format) writes them as Parquet instead: at a million
    rows the CSVs are most of a run's disk use and of the preprocess step's time."""
    out_dir.mkdir(parents=True, exist_ok=True)
    x_train_clean, x_test_clean = clean_feature_frames(prepared, groups)
    processed = pd.concat(
        [prepared.x_train.assign(**{target: prepared.y_train}), prepared.x_test.assign(**{target: prepared.y_test})]
    ).sort_index()
    frames = {
        "processed_heart": processed,
        "X_train_clean": x_train_clean,
        "X_test_clean": x_test_clean,
        "y_train": prepared.y_train.to_frame(),
        "y_test": prepared.y_test.to_frame(),
    }
    if len(prepared.duplicates):
        frames["duplicates_removed"] = prepared.duplicates
    written = []
    for name, frame in frames.items():
        path = out_dir / f"{name}.{export_format}"
        if export_format == "parquet":
            frame.to_parquet(path, index=False)
        else:
            write_csv_for_people(frame, path)
        written.append(path)
    return written


@task(name="preprocess")
def preprocess_task(kept: pd.DataFrame, settings: Settings, seed: int, out_dir: Path) -> PreparedData:
    from prefect import get_run_logger

    prepared = prepare_training_data(kept, settings.data.target, settings.split.test_size, seed)
    groups = without(settings.features, settings.training.exclude_columns)
    write_training_exports(prepared, groups, settings.data.target, out_dir, settings.outputs.export_format)
    get_run_logger().info(
        "Preprocessed %d rows: %d duplicates removed, %d train / %d test; exports in %s",
        prepared.rows_in,
        prepared.duplicates_removed,
        prepared.n_train,
        prepared.n_test,
        out_dir,
    )
    return prepared
