"""The algorithms the pipeline can train: the one mapping that the config schema, the CLI choices,
the train step and the reports derive from.

Estimator classes are named, not imported, so that reading the config (which every command does)
does not pay for importing scikit-learn.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Params(BaseModel):
    # No defaults: every hyperparameter is declared in config/config.yaml, and a missing one is an error.
    model_config = ConfigDict(extra="forbid", frozen=True)


class LogisticRegressionParams(_Params):
    C: float = Field(gt=0)
    l1_ratio: float = Field(ge=0, le=1)
    solver: Literal["liblinear", "saga"]
    max_iter: int = Field(ge=1)


class RandomForestParams(_Params):
    n_estimators: int = Field(ge=1)
    max_depth: int | None = Field(ge=1)
    min_samples_split: int = Field(ge=2)


@dataclass(frozen=True)
class Algorithm:
    name: str
    label: str  # how people call it, for titles and summaries
    estimator: str  # dotted path of the scikit-learn class
    params: type[_Params]

    def build(self, params: dict[str, Any], seed: int) -> Any:
        """The unfitted estimator. The run's seed seeds every algorithm (one rule, so runs repeat exactly)."""
        module, _, cls = self.estimator.rpartition(".")
        estimator_class = getattr(importlib.import_module(module), cls)
        return estimator_class(**params, random_state=seed)


ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm(
            "logistic_regression",
            "Logistic regression",
            "sklearn.linear_model.LogisticRegression",
            LogisticRegressionParams,
        ),
        Algorithm("random_forest", "Random forest", "sklearn.ensemble.RandomForestClassifier", RandomForestParams),
    )
}
