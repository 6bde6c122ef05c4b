"""The data steps' cache key: the dataset's content, the configuration arguments and the step code."""

from __future__ import annotations

from dataclasses import dataclass

import heart_pipeline.contract as contract_module
from heart_pipeline.caching import data_step_cache_policy
from heart_pipeline.config import load_config


@dataclass
class FakeDataset:
    fingerprint: str
    path: str


def key(policy, **parameters) -> str | None:
    return policy.compute_key(task_ctx=None, inputs=parameters, flow_parameters={})


def test_key_follows_content_and_config_not_the_path() -> None:
    settings = load_config()
    policy = data_step_cache_policy("dataset", contract_module)
    base = {"dataset": FakeDataset("abc", "/a.csv"), "validation": settings.validation}
    assert key(policy, **base) == key(policy, **{**base, "dataset": FakeDataset("abc", "/elsewhere.csv")})
    assert key(policy, **base) != key(policy, **{**base, "dataset": FakeDataset("abd", "/a.csv")})
    stricter = settings.validation.model_copy(update={"max_invalid_fraction": 0.1})
    assert key(policy, **base) != key(policy, **{**base, "validation": stricter})
