"""heart-pipeline: Prefect flows that take a heart-disease CSV through the ML lifecycle."""

import os

__version__ = "0.1.0"

# No network here or on most clinical hosts: keep every library's telemetry off unless the user
# explicitly turned it on. These must be set before prefect, mlflow or great_expectations read them.
for _name, _value in {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
}.items():
    os.environ.setdefault(_name, _value)
