"""Pipeline steps: pure, typed functions plus thin Prefect task wrappers."""

import heart_pipeline  # noqa: F401  (sets telemetry defaults before prefect is imported)
