"""Which registered models this pipeline deserializes, and how it tells: the pure half of the registry.

A model file is code: unpickling runs whatever the file says, and skops runs only the types it is
told to trust. MLflow reads the serialization format and the trusted types from the model's own
MLmodel file, so anyone who can register a version chooses what the API and the worker execute.
Here the project decides instead:

- only the skops format is read; pickle and cloudpickle are refused before their bytes are opened;
- the skops file may hold only the types in ``SKOPS_TRUSTED_TYPES`` (the project's list, checked
  before loading), never the list stored with the model;
- the file's SHA-256 must equal the ``model.sha256`` tag written when the pipeline registered it
  (the bytes did not change after registration), and when ``HEART_PIPELINE_MODEL_KEY`` is set, the
  ``model.hmac`` tag must be that key's HMAC of the digest (only a holder of the key registered it).

Nothing here talks to MLflow; ``heart_pipeline.tracking.registry`` downloads the files and calls these checks.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from heart_pipeline.caching import fingerprint_file
from heart_pipeline.errors import PipelineError

# skops trusts scikit-learn's estimators, numpy arrays and scipy matrices by itself; these are the
# only further types the project's pipelines hold (the RF's tree structure and numpy dtypes).
# A new algorithm needing more fails at registration, naming the type to review and add here.
SKOPS_TRUSTED_TYPES: tuple[str, ...] = ("numpy.dtype", "sklearn.tree._tree.Tree")
SKOPS_FORMAT = "skops"
MODEL_KEY_ENV = "HEART_PIPELINE_MODEL_KEY"
SHA256_TAG = "model.sha256"
HMAC_TAG = "model.hmac"


class UntrustedModelError(PipelineError):
    """A registered version this pipeline will not deserialize."""


def refuse(label: str, why: str) -> UntrustedModelError:
    return UntrustedModelError(f"{label}: refused to load: {why}")


def model_key() -> bytes | None:
    """The signing key from the environment, if the deployment set one."""
    key = os.environ.get(MODEL_KEY_ENV, "")
    return key.encode() if key else None


def model_hmac(sha256: str, key: bytes) -> str:
    return hmac.new(key, sha256.encode(), hashlib.sha256).hexdigest()


def identity_tags(model_file: Path) -> dict[str, str]:
    """The tags that let a later load prove these are the bytes this pipeline registered."""
    sha256 = fingerprint_file(model_file)
    key = model_key()
    return {SHA256_TAG: sha256, **({HMAC_TAG: model_hmac(sha256, key)} if key else {})}


def model_file_name(mlmodel: Mapping[str, Any], label: str) -> str:
    """The skops file an MLmodel points at, or a refusal naming why it is not one we read."""
    flavor = (mlmodel.get("flavors") or {}).get("sklearn")
    if not isinstance(flavor, Mapping):
        raise refuse(label, "not a scikit-learn model (no sklearn flavor in its MLmodel)")
    serialization = flavor.get("serialization_format", "pickle")  # MLflow's own default when absent
    if serialization != SKOPS_FORMAT:
        raise refuse(label, f"serialization format {serialization!r}; only skops is loaded (pickle runs code)")
    if flavor.get("code"):
        raise refuse(label, "it ships Python code with the model")
    name = str(flavor.get("pickled_model", ""))
    if not name or Path(name).name != name:
        raise refuse(label, f"model file {name!r} is not a plain file name inside the model")
    return name


def verify_identity(model_file: Path, tags: Mapping[str, str], label: str) -> None:
    """The file is byte for byte what the pipeline registered, and signed when a key is set."""
    recorded = tags.get(SHA256_TAG)
    if not recorded:
        raise refuse(label, f"no {SHA256_TAG} tag: it was not registered by this pipeline")
    actual = fingerprint_file(model_file)
    if not hmac.compare_digest(actual, recorded):
        raise refuse(label, f"model file changed after registration (SHA-256 {actual[:12]}..., tag {recorded[:12]}...)")
    key = model_key()
    if key is not None and not hmac.compare_digest(tags.get(HMAC_TAG, ""), model_hmac(recorded, key)):
        raise refuse(label, f"{HMAC_TAG} does not match {MODEL_KEY_ENV}: not registered by a holder of the key")


def untrusted_types(model_file: Path, label: str) -> list[str]:
    """Types in the skops file beyond skops' defaults and the project's list (reads, never builds)."""
    import skops.io

    try:
        found = skops.io.get_untrusted_types(file=model_file)
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, AttributeError) as exc:
        raise refuse(label, f"{model_file.name} is not a readable skops file: {exc}"[:300]) from None
    return sorted(set(found) - set(SKOPS_TRUSTED_TYPES))


def load_verified(model_file: Path, tags: Mapping[str, str], label: str) -> Any:
    """Deserialize a skops file only after its identity and its types have been checked."""
    import skops.io
    from skops.io.exceptions import UntrustedTypesFoundException

    verify_identity(model_file, tags, label)
    foreign = untrusted_types(model_file, label)
    if foreign:
        raise refuse(label, f"types outside the project's allow-list: {', '.join(foreign)[:300]}")
    try:
        return skops.io.load(model_file, trusted=list(SKOPS_TRUSTED_TYPES))
    except UntrustedTypesFoundException as exc:  # skops' own audit, should the two ever disagree
        raise refuse(label, str(exc)[:300]) from None


def row_hashes(features: pd.DataFrame) -> pd.Series:
    """One 16-hex-digit hash per row of feature values (columns in name order, as float64), so the
    same patient hashes the same in any file and any column order. The label is left out on purpose:
    a row the model has seen is seen, whatever today's file says its label is."""
    canonical = features[sorted(features.columns)].astype("float64")
    return pd.util.hash_pandas_object(canonical, index=False).map("{:016x}".format)


def content_key(parts: Mapping[str, Any]) -> str:
    """What identifies a trained model: the same data, settings, code, libraries, algorithm and seed
    give the same key (skops files embed object ids and timestamps, so their bytes cannot)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def code_fingerprint(package_dirs: list[Path]) -> str:
    """SHA-256 of the pipeline's Python sources: a change to any step is a different model, committed or not."""
    digest = hashlib.sha256()
    for directory in package_dirs:
        for path in sorted(directory.rglob("*.py")):
            digest.update(f"{path.relative_to(directory.parent)}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()
