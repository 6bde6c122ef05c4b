"""Where scikit-learn's parallel work runs: this machine's cores, or a Dask cluster.

The steps never choose: they call scikit-learn with ``n_jobs=None``, which defers to the joblib
configuration active around them. The flow sets it once per model with ``parallel_work``:

- locally, ``n_jobs`` = the run's core budget (``compute.n_jobs``; -1 is every core this process
  may use). CV folds then run in that many loky processes and the forest's trees in that many
  threads. The model tasks run one after the other, each with the whole budget, so two tasks never
  oversubscribe the cores, and logistic regression, done in seconds, never leaves the forest with
  half of them.
- with a Dask scheduler address, joblib's Dask backend sends the CV folds and the forest's trees
  to the cluster's workers. The workers run plain scikit-learn: no Prefect, no server of their own.

Results do not depend on either, bit for bit: folds come from seeded splitters and a forest's
per-tree seeds are drawn from its ``random_state`` up front, so every fit is the same. Only a
forest's predictions could differ: in parallel it adds its trees' probabilities in completion
order, which changes the last bit, enough to flip a tie in a ROC-AUC. So each CV fold runs
single-threaded inside (``one_job_inside``: the parallelism is across folds), and predictions that
are reported are made in tree order (``in_tree_order``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

AUTO = "auto"  # DASK_SCHEDULER_ADDRESS, else a local cluster


def available_cores() -> int:
    """The cores this process may run on (a container's or taskset's limit, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def core_budget(n_jobs: int) -> int:
    """``n_jobs`` as scikit-learn reads it (-1 every core, -2 all but one, ...) turned into a count."""
    cores = available_cores()
    if n_jobs < 0:
        return max(1, cores + 1 + n_jobs)
    return max(1, min(n_jobs, cores))


@contextmanager
def parallel_work(n_jobs: int, dask_address: str | None = None) -> Iterator[None]:
    """joblib's configuration for the block: ``n_jobs`` local workers, or the Dask cluster at
    ``dask_address``."""
    import joblib

    if not dask_address:
        with joblib.parallel_config(n_jobs=core_budget(n_jobs)):
            yield
        return
    from distributed import Client

    with Client(dask_address, set_as_default=False) as client, joblib.parallel_config(backend="dask", client=client):
        yield


def one_job_inside(estimator: Any) -> Any:
    """A clone of ``estimator`` with every nested ``n_jobs`` set to 1: for CV, where the folds are
    the parallel unit and a fold's own predictions must come out in a fixed order."""
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression

    copy = clone(estimator)
    params = copy.get_params(deep=True)
    owners = {key: params[key.rpartition("__")[0]] if "__" in key else copy for key in params}
    # LogisticRegression's n_jobs does nothing since scikit-learn 1.8 and warns when set: leave it.
    single = {
        key: 1
        for key in params
        if key.rpartition("__")[2] == "n_jobs" and not isinstance(owners[key], LogisticRegression)
    }
    return copy.set_params(**single)


def in_tree_order() -> AbstractContextManager[Any]:
    """Predictions inside the block run in one thread, so a forest sums its trees in order."""
    import joblib

    return joblib.parallel_config(backend="sequential", n_jobs=1)  # also inside a Dask block


@contextmanager
def dask_cluster(address: str | None, local_workers: int) -> Iterator[str | None]:
    """The scheduler address for the block.

    None: no Dask. ``"auto"``: ``DASK_SCHEDULER_ADDRESS`` (Dask's own variable) if set, else a local
    cluster of ``local_workers`` single-threaded worker processes, started for the block and
    stopped after it. Anything else is a scheduler address, used as given.
    """
    if address == AUTO:
        address = os.environ.get("DASK_SCHEDULER_ADDRESS") or None
        if address is None:
            from distributed import LocalCluster

            with LocalCluster(
                n_workers=local_workers, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster:
                yield cluster.scheduler_address
            return
    yield address
