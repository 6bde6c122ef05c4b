"""Fingerprints and the cache policy of the data steps.

A data step's cache key is Prefect's own INPUTS policy (its configuration arguments) minus the
dataset argument, plus the dataset's content fingerprint and the source of the step modules:
Prefect's TASK_SOURCE covers only the thin task wrapper, not the step functions it calls, and
hashing the rows themselves would cost more than the fingerprint the load step already has.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any


def fingerprint_bytes(data: bytes) -> str:
    """The data fingerprint used everywhere: run names, MLflow tags, cache keys."""
    return hashlib.sha256(data).hexdigest()


def fingerprint_file(path: Path) -> str:
    """The same digest as ``fingerprint_bytes`` of the file's bytes, read in chunks (model files, large inputs)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def code_digest(module_names: list[str]) -> str:
    """The modules' source, found without importing them (the validate step's GE expectations cost
    seconds to import, and only a run that validates needs them)."""
    digest = hashlib.sha256()
    for name in module_names:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(f"cache policy: no source for module {name!r}")
        digest.update(Path(spec.origin).read_bytes())
    return digest.hexdigest()


def data_step_cache_policy(dataset_argument: str, *module_names: str) -> Any:
    """INPUTS without ``dataset_argument``, plus that argument's ``.fingerprint`` and the named modules' code."""
    from prefect.cache_policies import INPUTS, CacheKeyFnPolicy

    code = code_digest(list(module_names))

    def content_key(_context: Any, parameters: dict[str, Any]) -> str:
        dataset = parameters.get(dataset_argument)
        # identity: the content plus how it is read (a declared label coding); fingerprint otherwise.
        fingerprint = getattr(dataset, "identity", None) or getattr(dataset, "fingerprint", "")
        return hashlib.sha256(f"{fingerprint}:{code}".encode()).hexdigest()

    return (INPUTS - dataset_argument) + CacheKeyFnPolicy(cache_key_fn=content_key)
