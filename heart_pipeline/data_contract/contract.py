"""The data contract: the Great Expectations suite JSON under great_expectations/, read as plain data.

Reading the JSON directly (not through GE) keeps the contract's facts (columns, bounds, value
sets) usable by the CLI, the API schema and config checks without GE's multi-second import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from heart_pipeline.data_contract.meaning import CODING_RULE
from heart_pipeline.errors import ConfigError

Severity = Literal["critical", "warning"]


@dataclass(frozen=True)
class Rule:
    """One expectation of the suite, with GE's native severity and its reason (GE's ``notes``)."""

    type: str
    kwargs: dict[str, Any]
    severity: Severity
    why: str

    @property
    def column(self) -> str | None:
        return self.kwargs.get("column")

    @property
    def name(self) -> str:
        return rule_name(self.type, self.kwargs)


def rule_name(expectation_type: str, kwargs: dict[str, Any]) -> str:
    """A short, stable identifier such as ``expect_column_values_to_be_between(chol)``, from an
    expectation's type and kwargs (so GE's own results name their rule without a lookup)."""
    target = kwargs.get("column") or ("rows" if expectation_type == "expect_compound_columns_to_be_unique" else "table")
    return f"{expectation_type}({target})"


@dataclass(frozen=True)
class Contract:
    name: str
    columns: list[str]
    rules: list[Rule] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    # The checks of meaning compare files with this profile (great_expectations/reference_profile.json,
    # set by load_settings_and_contract); empty means the committed default.
    reference: dict[str, Any] = field(default_factory=dict, repr=False)
    # Set by ``for_scoring``: the label column a scored file must not carry (named in the refusal).
    label_left_out: str | None = None

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

    @property
    def label_column(self) -> str | None:
        """The label: the column whose rule demands every class (a file of one class cannot train).
        None for a contract of unlabelled rows (batch scoring)."""
        for rule in self.rules:
            if rule.type == "expect_column_distinct_values_to_contain_set" and rule.column:
                return rule.column
        return None

    @property
    def max_disease_share_change(self) -> float:
        """How far quarantine may move the share of disease rows before the gate warns (suite meta)."""
        return float((self.raw.get("meta") or {}).get("max_disease_share_change", 1.0))

    def with_expectations(self, suffix: str, expectations: list[dict[str, Any]]) -> Contract:
        """This contract with other expectations (named ``<name>_<suffix>``), keeping what its suite does not
        hold: the reference profile and the label left out. Every derived contract is made here, so a field
        of Contract is carried over once rather than in each derivation."""
        derived = contract_from_dict({**self.raw, "name": f"{self.name}_{suffix}", "expectations": expectations})
        return replace(derived, reference=self.reference, label_left_out=self.label_left_out)

    def for_scoring(self, target: str) -> Contract:
        """The contract for unlabelled patients: no target rules, and any number of rows is fine
        (the minimum row count protects training, not scoring)."""
        expectations = []
        for exp in self.raw["expectations"]:
            kwargs = exp["kwargs"]
            if target in (kwargs.get("column"), kwargs.get("target")):
                continue
            if exp["type"] == "expect_table_row_count_to_be_between":
                exp = {**exp, "kwargs": {**kwargs, "min_value": 1}}
            if "column_list" in kwargs:
                exp = {**exp, "kwargs": {**kwargs, "column_list": [c for c in kwargs["column_list"] if c != target]}}
            expectations.append(exp)
        return replace(self.with_expectations("scoring", expectations), label_left_out=target)


# Checks that a column is recorded at all: for scoring and external validation a column a site never
# records is a fact about the site (warned about with its imputed share), not a broken file.
RECORDED_RULES = (
    "expect_column_proportion_of_non_null_values_to_be_between",
    "expect_column_unique_value_count_to_be_between",
)
NOT_NULL_RULE = "expect_column_values_to_not_be_null"


def tolerating_unrecorded(contract: Contract, target: str) -> Contract:
    """The contract for rows that a fitted model scores: a missing feature value goes to the model's
    imputers (the feature's not-null rule is left out) and a mostly-missing or single-valued feature
    is a warning, not a stop. Invalid recorded values (bounds, code sets) are still quarantined, and
    every rule on the label keeps its severity (an inverted label still stops the run)."""
    expectations = []
    for exp in contract.raw["expectations"]:
        column = exp["kwargs"].get("column")
        if column is not None and column != target:
            if exp["type"] == NOT_NULL_RULE:
                continue
            if exp["type"] in RECORDED_RULES:
                exp = {**exp, "severity": "warning"}
        expectations.append(exp)
    return contract.with_expectations("recorded", expectations)


def without_columns(contract: Contract, columns: list[str]) -> Contract:
    """The training contract for models trained without ``columns`` (training.exclude_columns): the
    file still has them, but no rule judges their values, so a column a site never records stops
    nothing; the coding check no longer looks at them either."""
    if not columns:
        return contract
    expectations = []
    for exp in contract.raw["expectations"]:
        kwargs = exp["kwargs"]
        if kwargs.get("column") in columns:
            continue
        if exp["type"] == CODING_RULE:
            exp = {**exp, "kwargs": {**kwargs, "columns": [c for c in kwargs["columns"] if c not in columns]}}
        expectations.append(exp)
    return contract.with_expectations("without", expectations)


def without_coding_check(contract: Contract) -> Contract:
    """The contract without the foreign-coding check: for a file the project's own importer wrote
    (its provenance sidecar matches its bytes), whose codes are ours by construction. Another
    population's shares (VA's restecg) must not read as another coding."""
    expectations = [exp for exp in contract.raw["expectations"] if exp["type"] != CODING_RULE]
    return contract.with_expectations("converted", expectations)


def notes_text(expectation: dict[str, Any]) -> str:
    """GE's ``notes`` field as one string (GE allows a string or a list of strings)."""
    notes = expectation.get("notes") or ""
    return " ".join(notes) if isinstance(notes, list) else str(notes)


def contract_from_dict(raw: dict[str, Any]) -> Contract:
    rules: list[Rule] = []
    columns: list[str] = []
    for exp in raw["expectations"]:
        severity = exp.get("severity")
        if severity not in ("critical", "warning"):
            raise ConfigError(f"contract {raw.get('name')}: {exp['type']} has no severity of critical|warning")
        rules.append(Rule(type=exp["type"], kwargs=dict(exp["kwargs"]), severity=severity, why=notes_text(exp)))
        if exp["type"] == "expect_table_columns_to_match_ordered_list":
            columns = list(exp["kwargs"]["column_list"])
    if not columns:
        raise ConfigError(f"contract {raw.get('name')}: no expect_table_columns_to_match_ordered_list rule")
    return Contract(name=raw["name"], columns=columns, rules=rules, raw=raw)


def load_reference_profile(path: Path) -> dict[str, Any]:
    """The reference profile the checks of meaning compare files with (``make reference-profile``)."""
    try:
        profile: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the reference profile: {exc}") from None
    return profile


def load_contract(path: Path) -> Contract:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the expectation suite: {exc}") from None
    return contract_from_dict(raw)
