"""Parallel work: the same numbers on one core, all cores or a Dask cluster."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import RepeatedStratifiedKFold, cross_validate

from heart_pipeline.config import load_config
from heart_pipeline.operations.compute import (
    available_cores,
    core_budget,
    dask_cluster,
    in_tree_order,
    one_job_inside,
    parallel_work,
)
from heart_pipeline.tasks.train import build_model


def test_core_budget_reads_n_jobs_like_scikit_learn() -> None:
    cores = available_cores()
    assert core_budget(-1) == cores
    assert core_budget(1) == 1
    assert core_budget(10_000) == cores
    assert core_budget(-10_000) == 1


def _cv_scores(frame: pd.DataFrame) -> np.ndarray:
    settings = load_config()
    params = {**settings.hyperparameters("random_forest"), "n_estimators": 15}
    model = build_model("random_forest", params, settings.features, seed=0)
    x, y = frame.drop(columns=["target"]), frame["target"]
    folds = RepeatedStratifiedKFold(n_splits=3, n_repeats=2, random_state=0)
    # n_jobs=None: the active joblib configuration decides where folds and trees run
    result = cross_validate(one_job_inside(model), x, y, cv=folds, scoring="roc_auc")
    model.fit(x, y)
    with in_tree_order():
        return np.concatenate([result["test_score"], model.predict_proba(x)[:, 1]])


@pytest.fixture(scope="module")
def one_core_scores(clean_frame: pd.DataFrame) -> np.ndarray:
    with parallel_work(1):
        return _cv_scores(clean_frame)


def test_results_do_not_depend_on_the_number_of_cores(clean_frame: pd.DataFrame, one_core_scores: np.ndarray) -> None:
    with parallel_work(-1):
        scores = _cv_scores(clean_frame)
    assert np.array_equal(scores, one_core_scores)


@pytest.mark.e2e
def test_folds_and_trees_run_on_the_dask_cluster_with_the_same_results(
    clean_frame: pd.DataFrame, one_core_scores: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    from distributed import Client

    with dask_cluster("auto", local_workers=2) as address, Client(address) as observer:
        with parallel_work(-1, address):
            scores = _cv_scores(clean_frame)
        ran = observer.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
    assert np.array_equal(scores, one_core_scores)
    assert any("batch" in name.lower() for name in ran), f"no joblib batches ran on the cluster: {ran}"
