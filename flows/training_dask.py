"""heart-training on Dask: the same flow, with its tasks fanned out to a Dask cluster.

Set DASK_SCHEDULER_ADDRESS (Dask's own variable, e.g. tcp://scheduler:8786) to use an existing
cluster; without it a local cluster of two single-threaded worker processes is started per run.
Workers must see the same file system paths as the flow (runs/ and the MLflow artifact store),
for example a shared volume, or an object-store artifact root for MLflow.
"""

from __future__ import annotations

import os

from prefect_dask import DaskTaskRunner

from heart_pipeline.flows.training import heart_training


def dask_task_runner(address: str | None = None) -> DaskTaskRunner:
    address = address or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
    )


heart_training_dask = heart_training.with_options(name="heart-training-dask", task_runner=dask_task_runner())
