"""The data contract: the Great Expectations suite JSON under great_expectations/, read as plain data.

Reading the JSON directly (not through GE) keeps the contract's facts (columns, bounds, value
sets) usable by the CLI, the API schema and config checks without GE's multi-second import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from heart_pipeline.errors import ConfigError

Severity = Literal["critical", "warning"]


@dataclass(frozen=True)
class Rule:
    """One expectation of the suite, with the severity and reason from its meta."""

    type: str
    kwargs: dict[str, Any]
    severity: Severity
    why: str

    @property
    def column(self) -> str | None:
        return self.kwargs.get("column")

    @property
    def name(self) -> str:
        """A short, stable identifier such as ``expect_column_values_to_be_between(chol)``."""
        target = self.column or ("rows" if self.type == "expect_compound_columns_to_be_unique" else "table")
        return f"{self.type}({target})"


@dataclass(frozen=True)
class Contract:
    name: str
    columns: list[str]
    rules: list[Rule] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def bounds(self, column: str) -> tuple[float | None, float | None] | None:
        for rule in self.rules:
            if rule.type == "expect_column_values_to_be_between" and rule.column == column:
                return rule.kwargs.get("min_value"), rule.kwargs.get("max_value")
        return None

    def value_set(self, column: str) -> list[Any] | None:
        for rule in self.rules:
            if rule.type == "expect_column_values_to_be_in_set" and rule.column == column:
                return list(rule.kwargs["value_set"])
        return None

    def why(self, column: str) -> str:
        for rule in self.rules:
            if rule.column == column and rule.type in (
                "expect_column_values_to_be_between",
                "expect_column_values_to_be_in_set",
            ):
                return rule.why
        return ""

    def for_scoring(self, target: str) -> Contract:
        """The contract for unlabelled patients: no target rules, and any number of rows is fine
        (the minimum row count protects training, not scoring)."""
        expectations = []
        for exp in self.raw["expectations"]:
            kwargs = exp["kwargs"]
            if kwargs.get("column") == target:
                continue
            if exp["type"] == "expect_table_row_count_to_be_between":
                exp = {**exp, "kwargs": {**kwargs, "min_value": 1}}
            if "column_list" in kwargs:
                exp = {**exp, "kwargs": {**kwargs, "column_list": [c for c in kwargs["column_list"] if c != target]}}
            expectations.append(exp)
        return contract_from_dict({**self.raw, "name": f"{self.name}_scoring", "expectations": expectations})


def contract_from_dict(raw: dict[str, Any]) -> Contract:
    rules: list[Rule] = []
    columns: list[str] = []
    for exp in raw["expectations"]:
        meta = exp.get("meta") or {}
        severity = meta.get("severity")
        if severity not in ("critical", "warning"):
            raise ConfigError(f"contract {raw.get('name')}: {exp['type']} has no meta.severity of critical|warning")
        rules.append(Rule(type=exp["type"], kwargs=dict(exp["kwargs"]), severity=severity, why=meta.get("why", "")))
        if exp["type"] == "expect_table_columns_to_match_ordered_list":
            columns = list(exp["kwargs"]["column_list"])
    if not columns:
        raise ConfigError(f"contract {raw.get('name')}: no expect_table_columns_to_match_ordered_list rule")
    return Contract(name=raw["name"], columns=columns, rules=rules, raw=raw)


def load_contract(path: Path) -> Contract:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the expectation suite: {exc}") from None
    return contract_from_dict(raw)
