"""heart-pipeline: Prefect flows that take a heart-disease CSV through the ML lifecycle."""

import os
import warnings

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

# `make run` starts a temporary Prefect server; Prefect gives it 20 s, which a busy laptop exceeds
# ("Timed out while attempting to connect to ephemeral Prefect API server").
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

# MLflow's HTTP client retries 7 times with exponential back-off and a 120 s timeout by default:
# about 4 minutes per call against a server that is down. A pipeline run should fail in seconds and
# say why, so the budget is a few seconds unless the user chose otherwise (MLflow's own variables).
for _name, _value in {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    # Reading a run's small artifacts (model cards, row hashes) would print a progress bar per file.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}.items():
    os.environ.setdefault(_name, _value)

# Import-time noise from dependencies that a user cannot act on:
# - MLflow infers schemas for its own GenAI response types when mlflow.pyfunc is first imported and
#   warns that its own `Any` hints are not validated;
# - requests probes for optional SOCKS proxy support, and urllib3 warns when PySocks is absent.
warnings.filterwarnings("ignore", message=r".*Any type hint is inferred as AnyType", category=UserWarning)
warnings.filterwarnings("ignore", message=r"SOCKS support in urllib3 requires", module=r"urllib3\.contrib\.socks")
