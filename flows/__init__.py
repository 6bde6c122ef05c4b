"""Prefect flows: composition only; the work lives in tasks/."""

import heart_pipeline  # noqa: F401  (sets telemetry defaults before prefect is imported)
