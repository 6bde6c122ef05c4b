"""The data steps' cache key: the dataset's content, the configuration arguments and the step code."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from heart_pipeline.caching import code_digest, data_step_cache_policy
from heart_pipeline.config import load_config


@dataclass
class FakeDataset:
    fingerprint: str
    path: str


def key(policy, **parameters) -> str | None:
    return policy.compute_key(task_ctx=None, inputs=parameters, flow_parameters={})


def test_key_follows_content_and_config_not_the_path() -> None:
    settings = load_config()
    policy = data_step_cache_policy("dataset", "heart_pipeline.data_contract.contract")
    base = {"dataset": FakeDataset("abc", "/a.csv"), "validation": settings.validation}
    assert key(policy, **base) == key(policy, **{**base, "dataset": FakeDataset("abc", "/elsewhere.csv")})
    assert key(policy, **base) != key(policy, **{**base, "dataset": FakeDataset("abd", "/a.csv")})
    stricter = settings.validation.model_copy(update={"max_invalid_fraction": 0.1})
    assert key(policy, **base) != key(policy, **{**base, "validation": stricter})


def test_code_digest_reads_source_without_importing_and_names_a_missing_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "step_under_test.py").write_text("raise SystemExit('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = code_digest(["step_under_test"])
    assert "step_under_test" not in sys.modules
    (tmp_path / "step_under_test.py").write_text("raise SystemExit('changed')\n")
    assert code_digest(["step_under_test"]) != before
    with pytest.raises(ModuleNotFoundError, match="no_such_step"):
        code_digest(["heart_pipeline.no_such_step"])
