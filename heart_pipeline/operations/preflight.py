"""Fail fast: check the data file, the MLflow tracking store (and the Prefect API, when one is set)
before any work, and before any server starts or heavy library is imported.

Without these checks an unreachable server surfaced only at the track step, after every model had
trained, and MLflow's HTTP client then retried for minutes; an unopenable SQLite path made MLflow's
engine retry silently; a corrupt store was reported after training without naming the file. Each
check here takes at most ``PROBE_TIMEOUT_SECONDS`` and its error names the store.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import re
import socket
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from heart_pipeline.data_contract.files import check_input_file
from heart_pipeline.errors import PipelineError

PROBE_TIMEOUT_SECONDS = 5.0
SQLITE_PREFIX = "sqlite:///"
# Database schemes MLflow reaches through SQLAlchemy; reachability is a TCP connect to host:port.
NETWORK_DB_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
REVISION_LINE = re.compile(r'^revision = "(\w+)"', re.MULTILINE)
DOWN_REVISION_LINE = re.compile(r'^down_revision = "(\w+)"', re.MULTILINE)


class StoreUnavailable(PipelineError):
    """The tracking store or the Prefect API cannot be used; the message names it."""


def check_data_file(path: Path, max_memory_mb: int) -> None:
    """The load step's file checks (``heart_pipeline.data_contract.files``), without reading the file."""
    check_input_file(path, max_memory_mb * 2**20, "data.max_memory_mb")


def check_tracking_store(uri: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> None:
    """Raise ``StoreUnavailable`` naming ``uri`` unless the store answers and its schema is usable."""
    if uri.startswith(SQLITE_PREFIX):
        check_sqlite_store(Path(uri[len(SQLITE_PREFIX) :]), timeout)
    elif uri.startswith(("http://", "https://")):
        check_http_store(uri, timeout)
    elif (scheme := urlsplit(uri).scheme.split("+")[0]) in NETWORK_DB_PORTS:
        parts = urlsplit(uri)
        check_tcp(uri, parts.hostname or "localhost", parts.port or NETWORK_DB_PORTS[scheme], timeout)


def check_sqlite_store(path: Path, timeout: float = PROBE_TIMEOUT_SECONDS) -> None:
    """The file opens as SQLite, passes a quick integrity check, and carries MLflow's current schema.

    A missing file in a writable folder is fine: MLflow creates and migrates it on first use.
    """
    where = f"MLflow tracking store {path}"
    if path.exists() and not path.is_file():
        raise StoreUnavailable(f"{where}: not a regular file")
    folder = path.parent
    if not path.exists():
        # MLflow creates the folder too; doing it here turns a failure into a named, immediate error.
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"{where}: cannot create its folder ({exc.strerror or exc})") from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise StoreUnavailable(f"{where}: cannot create it, {folder} is not writable")
        return
    if not os.access(path, os.R_OK | os.W_OK):
        raise StoreUnavailable(f"{where}: no read/write permission")
    try:
        # Read-only: a probe must never create, lock for writing or migrate the store.
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=timeout)) as connection:
            integrity = connection.execute("PRAGMA quick_check").fetchone()[0]
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            revision = (
                connection.execute("SELECT version_num FROM alembic_version").fetchone()
                if "alembic_version" in tables
                else None
            )
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"{where}: cannot be read as SQLite ({exc})") from None
    if integrity != "ok":
        raise StoreUnavailable(f"{where}: corrupt (SQLite integrity check: {integrity})")
    if not tables:
        return  # an empty file: MLflow initialises it
    if revision is None:
        raise StoreUnavailable(f"{where}: an SQLite file without MLflow's schema (no alembic_version table)")
    expected = mlflow_schema_revision()
    if expected and revision[0] != expected:
        raise StoreUnavailable(
            f"{where}: schema version {revision[0]}, this MLflow expects {expected}; "
            f"back it up, then `mlflow db upgrade sqlite:///{path}`"
        )


def mlflow_schema_revision() -> str | None:
    """The schema revision this MLflow writes: the head of its Alembic migration files.

    Read from the files, not through MLflow's private helper: that imports MLflow's store and
    Alembic, seconds on a busy machine, for one string. None if the files cannot be found.
    """
    spec = importlib.util.find_spec("mlflow")
    if spec is None or not spec.submodule_search_locations:
        return None
    versions = Path(next(iter(spec.submodule_search_locations))) / "store" / "db_migrations" / "versions"
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in versions.glob("*.py"):
        text = script.read_text(encoding="utf-8", errors="replace")
        revisions.update(REVISION_LINE.findall(text))
        parents.update(DOWN_REVISION_LINE.findall(text))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _http_status(url: str, timeout: float) -> int:
    """The HTTP status of a GET; 0 with no answer at all."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError, ValueError):
        return 0


def check_http_store(uri: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> None:
    """The server answers its REST API (401/403 count as answering: MLflow then handles credentials)."""
    base = uri.rstrip("/")
    status = _http_status(f"{base}/api/2.0/mlflow/experiments/search?max_results=1", timeout)
    if status == 0:
        raise StoreUnavailable(
            f"MLflow tracking server {base} is not answering (no reply within {timeout:.0f}s); "
            "start it (`make up`) or set MLFLOW_TRACKING_URI to a reachable store"
        )
    if status not in (200, 401, 403):
        raise StoreUnavailable(f"MLflow tracking server {base} answered HTTP {status} to a search; is it MLflow?")


def check_tcp(what: str, host: str, port: int, timeout: float = PROBE_TIMEOUT_SECONDS) -> None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        raise StoreUnavailable(f"{what}: {host}:{port} is not reachable ({exc})") from None


def check_prefect_api(url: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> None:
    if _http_status(f"{url.rstrip('/')}/health", timeout) != 200:
        raise StoreUnavailable(
            f"Prefect API {url} is not answering (no healthy reply within {timeout:.0f}s); "
            "start it (`make up`) or unset PREFECT_API_URL to use a temporary local server"
        )


def configured_prefect_api() -> str | None:
    """PREFECT_API_URL from the environment or the active Prefect profile, if any."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


@contextmanager
def _creation_lock(path: Path) -> Iterator[None]:
    """One process at a time checks (and, when absent, creates) the SQLite store at ``path``.

    Concurrent first calls on a fresh checkout otherwise all run MLflow's schema migrations on the
    same new file, and all but one fail ("duplicate column name: step"). A folder that cannot hold
    the lock file is left to the check, which names the problem."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.with_name(f".{path.name}.lock").open("w")
    except OSError:
        handle = None
    if handle is None:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def check_before_run(tracking_uri: str) -> None:
    """Everything a command needs from outside, checked in seconds; the first problem raises.

    The store first: its check needs no Prefect import, which alone takes seconds on a busy machine.
    An absent SQLite store is created here, under a lock, so that concurrent first runs share it.
    """
    if tracking_uri.startswith(SQLITE_PREFIX):
        path = Path(tracking_uri[len(SQLITE_PREFIX) :])
        with _creation_lock(path):
            check_tracking_store(tracking_uri)
            if not path.exists() or path.stat().st_size == 0:
                import mlflow

                mlflow.MlflowClient(tracking_uri).search_experiments(max_results=1)  # creates and migrates it
    else:
        check_tracking_store(tracking_uri)
    if prefect_api := configured_prefect_api():
        check_prefect_api(prefect_api)
