"""Renderers: the text people read in Prefect artifacts, the terminal and reports.

One home for them, so wording and number formats agree wherever a result is shown. Pure
functions of plain values: no Prefect, MLflow or Great Expectations import here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _values(values: Sequence[Any]) -> str:
    return ", ".join(str(v) for v in values)


def rule_check(expectation: str, kwargs: Mapping[str, Any]) -> str:
    """What a rule checks, in words: 'between 1 and 120', 'one of 0, 1', 'at least 50 rows'."""
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if expectation == "expect_column_values_to_be_between":
        if low is not None and high is not None:
            return f"between {low} and {high}"
        return f"at least {low}" if low is not None else f"at most {high}"
    if expectation == "expect_table_row_count_to_be_between":
        return f"at least {low} rows" + (f", at most {high}" if high is not None else "")
    if expectation == "expect_column_values_to_be_in_set":
        return f"one of {_values(kwargs.get('value_set', []))}"
    if expectation == "expect_column_distinct_values_to_contain_set":
        return f"every class present: {_values(kwargs.get('value_set', []))}"
    if expectation == "expect_column_values_to_not_be_null":
        return "no missing value"
    if expectation == "expect_column_values_to_be_in_type_list":
        return "a number"
    if expectation == "expect_table_columns_to_match_ordered_list":
        return f"columns in order: {_values(kwargs.get('column_list', []))}"
    if expectation == "expect_compound_columns_to_be_unique":
        return "no two identical rows"
    if expectation == "finite_numbers":
        return "finite numbers (no inf)"
    return ""


def markdown_cell(value: Any) -> str:
    """A value that cannot break a markdown table: pipes escaped, newlines flattened."""
    return " ".join(str(value).split()).replace("|", "\\|")
