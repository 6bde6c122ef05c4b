"""The benchmark's synthetic data (pure, fast) and a smoke run of the benchmark at 1,000 rows (e2e)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from heart_pipeline.bench.synthetic import synthesize, valid_rows
from heart_pipeline.config import load_settings_and_contract
from tests.helpers import cli_env


@pytest.fixture(scope="module")
def synthetic(clean_frame: pd.DataFrame) -> pd.DataFrame:
    settings, contract = load_settings_and_contract()
    return synthesize(clean_frame, 5_000, contract, settings.features.numeric, seed=1)


def test_synthetic_rows_are_valid_distinct_and_sized(synthetic: pd.DataFrame) -> None:
    _, contract = load_settings_and_contract()
    assert len(synthetic) == 5_000
    assert list(synthetic.columns) == contract.columns
    assert not synthetic.duplicated().any()
    assert len(valid_rows(synthetic, contract)) == len(synthetic), "every row passes bounds and code sets"


def test_synthetic_rows_are_jittered_not_copied(synthetic: pd.DataFrame, clean_frame: pd.DataFrame) -> None:
    copied = synthetic.merge(clean_frame.drop_duplicates(), how="inner")
    assert len(copied) < 0.2 * len(synthetic)
    assert synthetic["oldpeak"].round(1).equals(synthetic["oldpeak"]), "oldpeak keeps its one decimal"
    assert (synthetic["age"] % 1 == 0).all()


def test_synthetic_rows_keep_the_label_relationship(synthetic: pd.DataFrame, clean_frame: pd.DataFrame) -> None:
    assert abs(synthetic["target"].mean() - clean_frame["target"].mean()) < 0.03
    for column in ("thalach", "oldpeak", "exang", "cp"):
        real = clean_frame[column].corr(clean_frame["target"])
        fake = synthetic[column].corr(synthetic["target"])
        assert abs(real - fake) < 0.1, (column, real, fake)


@pytest.mark.e2e
def test_bench_smoke_at_1000_rows(prefect_server: str, session_dir: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "heart_pipeline.bench.run",
            *("--sizes", "1000", "--repeats", "1", "--out", str(tmp_path)),
            *("--set", "cross_validation.n_repeats=1", "--set", "models.random_forest.n_estimators=20"),
        ],
        env=cli_env(prefect_server, session_dir / "prefect-home"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = pd.read_csv(tmp_path / "bench_runs.csv")
    assert sorted(runs["kind"]) == ["bare", "ours"]
    assert (runs["wall_seconds"] > 0).all() and (runs["peak_rss_mib"] > 50).all()
    ours = runs[runs["kind"] == "ours"].iloc[0]
    assert "train-random_forest" in ours["steps"], ours["steps"]
    assert "differs" not in result.stdout, "the pipeline and the baseline must reach the same test ROC-AUC"
    summary = pd.read_csv(tmp_path / "bench_summary.csv")
    assert summary.loc[0, "rows"] == 1000 and summary.loc[0, "ratio"] > 0
    assert (tmp_path / "bench.png").stat().st_size > 1000
