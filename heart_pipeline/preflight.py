"""Checks that need no Prefect, MLflow or Great Expectations: a data file that cannot be opened and
a tracking store that cannot be opened are reported in well under a second, before any server
starts or any heavy library is imported."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from heart_pipeline.errors import ConfigError
from heart_pipeline.files import check_input_file

SQLITE_PREFIX = "sqlite:///"


def check_data_file(path: Path, max_memory_mb: int) -> None:
    """The load step's file checks (``heart_pipeline.files``), without reading the file."""
    check_input_file(path, max_memory_mb * 2**20, "data.max_memory_mb")


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_dir(path: Path, what: str) -> None:
    """The directory exists and is writable, or can be created."""
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise ConfigError(f"{path}: {what} cannot be created: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{path}: {what} is not writable (no write permission on {existing})")


def check_tracking_store(uri: str) -> None:
    """A local SQLite store must open as SQLite (or be creatable); a server URI is left to MLflow."""
    if not uri.startswith(SQLITE_PREFIX):
        return
    path = Path(uri[len(SQLITE_PREFIX) :])
    if path.exists():
        if path.is_dir():
            raise ConfigError(f"{uri}: tracking store is a directory, not an SQLite file")
        try:
            connection = sqlite3.connect(f"file:{path}?mode=rw", uri=True)
            try:
                connection.execute("pragma schema_version").fetchone()  # fails on a file that is not SQLite
            finally:
                connection.close()
        except sqlite3.Error as exc:
            raise ConfigError(f"{uri}: tracking store cannot be opened: {exc}") from None
        return
    check_writable_dir(path.parent, "the tracking store's folder")
