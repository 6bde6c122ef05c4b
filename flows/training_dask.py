"""heart-training-dask: heart-training with its CV folds and forest trees on a Dask cluster.

The cluster is DASK_SCHEDULER_ADDRESS (Dask's own variable, e.g. tcp://scheduler:8786), or, if that
is unset, a local cluster of ``compute.local_dask_workers`` worker processes started for the run.
The Prefect tasks stay in the flow's process; only scikit-learn's work goes to the workers, through
joblib's Dask backend (heart_pipeline/operations/compute.py). So the workers need the same Python packages
(scikit-learn, this package) but no Prefect server, no Prefect API and none of the run's files.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from heart_pipeline.flows.training import heart_training
from heart_pipeline.operations.compute import AUTO
from heart_pipeline.operations.runs import FAILURE_HOOKS, training_run_name


@flow(
    name="heart-training-dask",
    flow_run_name=training_run_name,
    **FAILURE_HOOKS,
)
def heart_training_dask(
    data_path: str | None = None,
    models: list[str] | None = None,
    seed: int | None = None,
    config_path: str | None = None,
    disease_label: int | None = None,
    dask_address: str = AUTO,
    exclude_columns: list[str] | None = None,
) -> dict[str, Any]:
    """heart-training on the Dask cluster at ``dask_address`` ("auto": DASK_SCHEDULER_ADDRESS, else local)."""
    return heart_training.fn(
        data_path=data_path,
        models=models,
        seed=seed,
        config_path=config_path,
        disease_label=disease_label,
        dask_address=dask_address,
        exclude_columns=exclude_columns,
    )
