"""Cache keys for Prefect tasks: the data fingerprint, the configuration and the code, nothing else.

Prefect's INPUTS policy would hash the run's own output folder (new every run, so never a hit)
and file paths rather than their content, and TASK_SOURCE covers only the thin wrapper, not the
step functions it calls. This key hashes the task's inputs except its output folder, file inputs
by content, plus the full source of the step modules.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import BaseModel

EXCLUDED_INPUTS = frozenset({"out_dir"})


def fingerprint_bytes(data: bytes) -> str:
    """The data fingerprint used everywhere: run names, MLflow tags, cache keys."""
    return hashlib.sha256(data).hexdigest()


def fingerprint_file(path: Path) -> str:
    return fingerprint_bytes(path.read_bytes())


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        # A file input is keyed by its content, not its name: the same data under another run's
        # folder is the same data.
        try:
            return {"sha256": fingerprint_file(value)} if value.is_file() else str(value)
        except OSError:
            return str(value)
    return value


def code_digest(modules: list[ModuleType]) -> str:
    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(str(module.__file__)).read_bytes())
    return digest.hexdigest()


def step_cache_key(inputs: dict[str, Any], code: str) -> str:
    payload = {k: _plain(v) for k, v in sorted(inputs.items()) if k not in EXCLUDED_INPUTS}
    text = json.dumps({"inputs": payload, "code": code}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def cache_key_for(*modules: ModuleType) -> Callable[[Any, dict[str, Any]], str]:
    """A Prefect ``cache_key_fn`` keyed by inputs (minus ``out_dir``) and the given modules' code."""
    code = code_digest(list(modules))

    def key(_context: Any, inputs: dict[str, Any]) -> str:
        return step_cache_key(inputs, code)

    return key
