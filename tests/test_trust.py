"""Model trust checks on model folders written by MLflow itself (no tracking store needed)."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from heart_pipeline.tracking import trust
from heart_pipeline.tracking.trust import SKOPS_TRUSTED_TYPES, UntrustedModelError
from tests.helpers import MarkerWritingModel


def save(model: object, path: Path, serialization: str) -> Path:
    mlflow.sklearn.save_model(
        model,
        path,
        serialization_format=serialization,
        skops_trusted_types=list(SKOPS_TRUSTED_TYPES) if serialization == "skops" else None,
        pip_requirements=[],
    )
    return path


def mlmodel(path: Path) -> dict:
    return yaml.safe_load((path / "MLmodel").read_text())


@pytest.fixture(scope="module")
def fitted() -> RandomForestClassifier:
    rng = np.random.default_rng(0)
    return RandomForestClassifier(n_estimators=3, random_state=0).fit(rng.random((30, 3)), [0, 1] * 15)


@pytest.mark.parametrize("serialization", ["cloudpickle", "pickle"])
def test_pickled_models_are_refused_before_their_bytes_are_read(tmp_path: Path, serialization: str) -> None:
    marker = tmp_path / "marker"
    folder = save(MarkerWritingModel(marker), tmp_path / "model", serialization)
    assert not marker.exists()  # saving did not run it either
    with pytest.raises(UntrustedModelError, match=rf"heart-disease v7: refused to load: .*'{serialization}'"):
        trust.model_file_name(mlmodel(folder), "heart-disease v7")
    assert not marker.exists()


def test_a_skops_model_with_its_identity_loads(tmp_path: Path, fitted: RandomForestClassifier) -> None:
    folder = save(fitted, tmp_path / "model", "skops")
    model_file = folder / trust.model_file_name(mlmodel(folder), "v1")
    loaded = trust.load_verified(model_file, trust.identity_tags(model_file), "v1")
    x = np.random.default_rng(1).random((5, 3))
    assert np.array_equal(loaded.predict_proba(x), fitted.predict_proba(x))


def test_a_tampered_skops_file_is_refused(tmp_path: Path, fitted: RandomForestClassifier) -> None:
    folder = save(fitted, tmp_path / "model", "skops")
    model_file = folder / "model.skops"
    tags = trust.identity_tags(model_file)
    with zipfile.ZipFile(model_file, "a") as archive:  # still a valid skops file, different bytes
        archive.writestr("extra.bin", b"x")
    with pytest.raises(UntrustedModelError, match="v3: refused to load: model file changed after registration"):
        trust.load_verified(model_file, tags, "v3")


def test_an_unregistered_file_is_refused(tmp_path: Path, fitted: RandomForestClassifier) -> None:
    model_file = save(fitted, tmp_path / "model", "skops") / "model.skops"
    with pytest.raises(UntrustedModelError, match=r"no model\.sha256 tag"):
        trust.load_verified(model_file, {}, "v2")


def test_the_key_signs_and_a_wrong_key_is_refused(
    tmp_path: Path, fitted: RandomForestClassifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_file = save(fitted, tmp_path / "model", "skops") / "model.skops"
    monkeypatch.setenv(trust.MODEL_KEY_ENV, "registration-key")
    tags = trust.identity_tags(model_file)
    assert trust.HMAC_TAG in tags
    trust.load_verified(model_file, tags, "v1")
    monkeypatch.setenv(trust.MODEL_KEY_ENV, "another-key")
    with pytest.raises(UntrustedModelError, match=r"model\.hmac does not match HEART_PIPELINE_MODEL_KEY"):
        trust.load_verified(model_file, tags, "v1")
    unsigned = {trust.SHA256_TAG: tags[trust.SHA256_TAG]}
    with pytest.raises(UntrustedModelError, match=r"model\.hmac does not match"):
        trust.load_verified(model_file, unsigned, "v1")


class ForeignEstimator(BaseEstimator, ClassifierMixin):
    """Any class outside numpy/scikit-learn/scipy: skops would build it if told to trust it."""

    def fit(self, x: object, y: object) -> ForeignEstimator:
        self.classes_ = np.array([0, 1])
        return self

    def predict(self, rows: object) -> np.ndarray:
        return np.zeros(len(rows))  # type: ignore[arg-type]


def test_types_beyond_the_project_list_are_refused_even_when_the_model_trusts_them(tmp_path: Path) -> None:
    """The model's MLmodel trusts its own class, and MLflow's loader would build it; ours refuses."""
    foreign_type = f"{__name__}.ForeignEstimator"
    folder = tmp_path / "model"
    mlflow.sklearn.save_model(
        ForeignEstimator().fit(None, None),
        folder,
        serialization_format="skops",
        skops_trusted_types=[foreign_type],
        pip_requirements=[],
    )
    assert mlmodel(folder)["flavors"]["sklearn"]["skops_trusted_types"] == [foreign_type]
    model_file = folder / trust.model_file_name(mlmodel(folder), "v9")
    assert trust.untrusted_types(model_file, "v9") == [foreign_type]
    with pytest.raises(
        UntrustedModelError,
        match=rf"v9: refused to load: types outside the project's allow-list: {re.escape(foreign_type)}",
    ):
        trust.load_verified(model_file, trust.identity_tags(model_file), "v9")


def test_mlmodel_shapes_that_are_refused() -> None:
    skops_flavor = {"serialization_format": "skops", "pickled_model": "model.skops", "code": None}
    assert trust.model_file_name({"flavors": {"sklearn": skops_flavor}}, "v1") == "model.skops"
    for flavors, reason in [
        ({}, "no sklearn flavor"),
        ({"sklearn": {**skops_flavor, "serialization_format": None}}, "serialization format None"),
        ({"sklearn": {"pickled_model": "model.pkl"}}, "'pickle'"),
        ({"sklearn": {**skops_flavor, "code": "code"}}, "ships Python code"),
        ({"sklearn": {**skops_flavor, "pickled_model": "../../etc/passwd"}}, "not a plain file name"),
    ]:
        with pytest.raises(UntrustedModelError, match=reason):
            trust.model_file_name({"flavors": flavors}, "v1")


def test_not_a_skops_file(tmp_path: Path) -> None:
    model_file = tmp_path / "model.skops"
    model_file.write_bytes(b"not a zip")
    with pytest.raises(UntrustedModelError, match="not a readable skops file"):
        trust.load_verified(model_file, trust.identity_tags(model_file), "v1")


def test_project_pipelines_need_no_type_beyond_the_list() -> None:
    """Both algorithms' fitted pipelines serialize within the allow-list (a new type fails here first)."""
    import skops.io

    rng = np.random.default_rng(0)
    x, y = pd.DataFrame(rng.random((40, 3)), columns=list("abc")), [0, 1] * 20
    for model in (LogisticRegression(solver="liblinear"), RandomForestClassifier(n_estimators=2)):
        found = skops.io.get_untrusted_types(data=skops.io.dumps(model.fit(x, y)))
        assert set(found) <= set(SKOPS_TRUSTED_TYPES), found


def test_row_hashes_ignore_column_order_and_dtype() -> None:
    frame = pd.DataFrame({"age": [63, 41], "chol": [233.0, 204.0]})
    swapped = frame[["chol", "age"]].astype("float64")
    assert trust.row_hashes(frame).tolist() == trust.row_hashes(swapped).tolist()
    assert trust.row_hashes(frame).nunique() == 2
    assert trust.row_hashes(frame.assign(age=[64, 41])).iloc[0] != trust.row_hashes(frame).iloc[0]


def test_content_key_is_order_free_and_sensitive() -> None:
    parts = {"algorithm": "random_forest", "data": "abc", "seed": 42}
    assert trust.content_key(parts) == trust.content_key(dict(reversed(parts.items())))
    assert trust.content_key(parts) != trust.content_key({**parts, "seed": 43})
