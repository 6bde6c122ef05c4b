"""Prefect flows: composition only; the work lives in tasks/."""

import heart_pipeline  # noqa: F401  (sets telemetry defaults before prefect is imported)
from heart_pipeline.runtime import install_log_filters

# Every process that imports a flow (CLI, worker, tests) logs expected data errors as one line.
install_log_filters()
