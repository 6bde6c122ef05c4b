"""Preprocess step: deduplicate, split (seeded, stratified), and build the ColumnTransformer."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pandas as pd
from prefect import task
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from heart_pipeline.caching import cache_key_for
from heart_pipeline.config import FeatureGroups, Settings
from heart_pipeline.runs import adopt_outputs
from tasks.validate import ValidationReport


@dataclass(frozen=True)
class PreparedData:
    """Paths of the run's split files plus counts: a small, persistable task result."""

    out_dir: str
    processed_path: str
    train_path: str  # raw feature columns + target: what the model pipelines are fitted on
    test_path: str
    x_train_clean_path: str  # transformed features, for inspection (the seed's outputs)
    x_test_clean_path: str
    y_train_path: str
    y_test_path: str
    duplicates_path: str | None
    rows_in: int
    duplicates_removed: int
    n_train: int
    n_test: int
    n_features_out: int

    def outputs_missing(self) -> bool:
        return any(not Path(p).exists() for p in (self.train_path, self.test_path, self.processed_path))


def drop_exact_duplicates(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep the first copy of each row; return (deduplicated, removed copies)."""
    mask = frame.duplicated(keep="first")
    return frame.loc[~mask].reset_index(drop=True), frame.loc[mask]


def split_train_test(
    frame: pd.DataFrame, target: str, test_size: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    features = frame.drop(columns=[target])
    labels = frame[target].astype(int)
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=test_size, random_state=seed, stratify=labels
    )
    return x_train, x_test, y_train, y_test


def build_preprocessor(groups: FeatureGroups) -> ColumnTransformer:
    """One transformer for the seed's four feature groups; unfitted, so each pipeline fits its own."""
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


def preprocess_dataset(
    validated_path: Path, target: str, groups: FeatureGroups, test_size: float, seed: int, out_dir: Path
) -> PreparedData:
    frame = pd.read_csv(validated_path)
    deduplicated, duplicates = drop_exact_duplicates(frame)
    x_train, x_test, y_train, y_test = split_train_test(deduplicated, target, test_size, seed)
    preprocessor = build_preprocessor(groups).fit(x_train)  # fitted on training rows only: no leakage
    names = preprocessor.get_feature_names_out()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        name: out_dir / f"{name}.csv"
        for name in ("processed_heart", "train", "test", "X_train_clean", "X_test_clean", "y_train", "y_test")
    }
    deduplicated.to_csv(paths["processed_heart"], index=False)
    x_train.assign(**{target: y_train}).to_csv(paths["train"], index=False)
    x_test.assign(**{target: y_test}).to_csv(paths["test"], index=False)
    pd.DataFrame(preprocessor.transform(x_train), columns=names).to_csv(paths["X_train_clean"], index=False)
    pd.DataFrame(preprocessor.transform(x_test), columns=names).to_csv(paths["X_test_clean"], index=False)
    y_train.to_frame().to_csv(paths["y_train"], index=False)
    y_test.to_frame().to_csv(paths["y_test"], index=False)
    duplicates_path = None
    if len(duplicates):
        duplicates_path = out_dir / "duplicates_removed.csv"
        duplicates.to_csv(duplicates_path, index=False)
    return PreparedData(
        out_dir=str(out_dir),
        processed_path=str(paths["processed_heart"]),
        train_path=str(paths["train"]),
        test_path=str(paths["test"]),
        x_train_clean_path=str(paths["X_train_clean"]),
        x_test_clean_path=str(paths["X_test_clean"]),
        y_train_path=str(paths["y_train"]),
        y_test_path=str(paths["y_test"]),
        duplicates_path=str(duplicates_path) if duplicates_path else None,
        rows_in=len(frame),
        duplicates_removed=len(duplicates),
        n_train=len(x_train),
        n_test=len(x_test),
        n_features_out=len(names),
    )


def read_split(path: str, target: str) -> tuple[pd.DataFrame, pd.Series]:
    frame = pd.read_csv(path)
    return frame.drop(columns=[target]), frame[target].astype(int)


@task(
    name="preprocess",
    cache_key_fn=cache_key_for(sys.modules[__name__]),
    cache_expiration=timedelta(days=7),
    persist_result=True,
)
def preprocess_dataset_task(validated_path: Path, settings: Settings, seed: int, out_dir: Path) -> PreparedData:
    from prefect import get_run_logger

    prepared = preprocess_dataset(
        validated_path, settings.data.target, settings.features, settings.split.test_size, seed, out_dir
    )
    get_run_logger().info(
        "Preprocessed %d rows: %d duplicates removed, %d train / %d test, %d features after encoding, in %s",
        prepared.rows_in,
        prepared.duplicates_removed,
        prepared.n_train,
        prepared.n_test,
        prepared.n_features_out,
        prepared.out_dir,
    )
    return prepared


@task(name="collect-step-outputs")
def collect_step_outputs_task(report: ValidationReport, prepared: PreparedData, run_dir: Path) -> list[str]:
    """When validate or preprocess were served from cache, their files live in an earlier run's
    folder; link them into this run's folder so every run folder is complete on its own."""
    from prefect import get_run_logger

    adopted = []
    for source, name in ((Path(str(report.report_path)).parent, "validation"), (Path(prepared.out_dir), "data")):
        if source.resolve() != (run_dir / name).resolve():
            adopt_outputs(source, run_dir / name)
            adopted.append(f"{name} <- {source}")
    if adopted:
        get_run_logger().info("Reused cached step outputs: %s", "; ".join(adopted))
    return adopted
