"""The data-quality gate: rule outcomes, quarantine, and the hostile corpus at function level."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from heart_pipeline.config import load_settings_and_contract
from heart_pipeline.data_contract.contract import tolerating_unrecorded, without_coding_check
from heart_pipeline.errors import DataError
from tests.helpers import run_gate
from tests.hostile import CASES, HostileCase

SETTINGS, CONTRACT = load_settings_and_contract()


def gate(path: Path, out_dir: Path | None = None, **overrides: object):
    return run_gate(path, CONTRACT, out_dir, **overrides)


def test_contract_covers_every_column_with_documented_rules() -> None:
    for column in CONTRACT.columns:
        rules = [r for r in CONTRACT.rules if r.column == column]
        assert any(r.type == "expect_column_values_to_be_in_type_list" for r in rules), column
        assert any(r.type == "expect_column_values_to_not_be_null" for r in rules), column
        assert any(
            r.type in ("expect_column_values_to_be_between", "expect_column_values_to_be_in_set") for r in rules
        ), column
    assert all(r.why for r in CONTRACT.rules), "every rule documents why"


def test_clean_file_passes(clean_csv: Path) -> None:
    report = gate(clean_csv)
    assert report.decision == "passed"
    assert report.rows_kept == report.rows_in
    assert all(o.success for o in report.outcomes)


def test_bundled_file_quarantines_the_rows_uci_left_missing(bundled_csv: Path, tmp_path: Path) -> None:
    report = gate(bundled_csv, tmp_path)
    assert report.decision == "quarantined"
    assert (report.rows_in, report.rows_kept, report.rows_quarantined) == (303, 297, 6)
    assert report.quarantined_by_rule == {
        "expect_column_values_to_not_be_null(ca)": 4,
        "expect_column_values_to_not_be_null(thal)": 2,
    }
    quarantine = pd.read_csv(report.quarantine_path)
    assert sorted(quarantine["column"].tolist()) == ["ca"] * 4 + ["thal"] * 2
    assert len(pd.read_csv(report.validated_path)) == 297


def test_warning_rows_are_quarantined_with_column_rule_and_value(clean_frame: pd.DataFrame, tmp_path: Path) -> None:
    frame = clean_frame.copy()
    frame.loc[10, "ca"] = 4
    frame.loc[20, "thal"] = 0
    frame.loc[30, "chol"] = 700
    frame = pd.concat([frame, frame.iloc[[40]]], ignore_index=True)
    path = tmp_path / "dirty.csv"
    frame.to_csv(path, index=False)
    report = gate(path, tmp_path / "out")
    assert report.decision == "quarantined"
    assert report.rows_quarantined == 3
    assert report.duplicate_rows == 1
    assert report.duplicate_lines == [len(frame) + 1]
    quarantine = pd.read_csv(report.quarantine_path)
    found = {(r.source_line, r.column, r.rule, r.value) for r in quarantine.itertuples()}
    assert found == {
        (12, "ca", "expect_column_values_to_be_in_set(ca)", 4),
        (22, "thal", "expect_column_values_to_be_in_set(thal)", 0),
        (32, "chol", "expect_column_values_to_be_between(chol)", 700),
    }
    assert any("line 12" in w for w in report.warning_failures)
    kept = pd.read_csv(report.validated_path)
    assert len(kept) == len(frame) - 3, "duplicates are kept here; preprocess drops the extra copy"


def test_on_warning_fail_stops_instead_of_quarantining(clean_frame: pd.DataFrame, tmp_path: Path) -> None:
    frame = clean_frame.copy()
    frame.loc[10, "ca"] = 4
    path = tmp_path / "one-bad.csv"
    frame.to_csv(path, index=False)
    report = gate(path, on_warning="fail")
    assert report.decision == "failed"
    assert "validation.on_warning is 'fail'" in report.failure_message()
    assert "line 12" in report.failure_message()


def test_question_marks_are_missing_values_and_quarantined(clean_frame: pd.DataFrame, tmp_path: Path) -> None:
    text = clean_frame.to_csv(index=False).splitlines()
    cells = text[3].split(",")
    cells[11] = "?"  # ca on line 4
    text[3] = ",".join(cells)
    path = tmp_path / "question.csv"
    path.write_text("\n".join(text) + "\n")
    report = gate(path)
    assert report.quarantined_by_rule == {"expect_column_values_to_not_be_null(ca)": 1}
    assert "column 'ca' is missing at line 4" in report.warning_failures


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_case_gives_one_line_naming_file_and_cause(
    case: HostileCase, tmp_path: Path, clean_frame: pd.DataFrame
) -> None:
    if case.name == "unreadable-permissions" and os.geteuid() == 0:
        pytest.skip("root reads files whatever their permissions")
    path = case.build(tmp_path, clean_frame)
    try:
        report = gate(path)
    except DataError as error:
        message = str(error)
    else:
        assert report.decision == "failed", report.summary()
        message = report.failure_message()
    assert message.startswith(str(path)), message
    assert case.expected in message, message
    assert "\n" not in message
    assert len(message.encode()) < 1024, "one bounded line, whatever the file holds"


def test_a_labelled_file_given_to_scoring_is_told_where_labelled_files_go(clean_csv: Path) -> None:
    settings, contract = load_settings_and_contract()
    target = settings.data.target
    scoring = tolerating_unrecorded(without_coding_check(contract.for_scoring(target)), target)
    report = run_gate(clean_csv, scoring)
    assert report.decision == "failed", report.summary()
    message = report.failure_message()
    assert f"unexpected ['{target}']" in message
    assert f"the file carries the label column '{target}'" in message and "heart-pipeline evaluate" in message
    assert "\n" not in message and len(message.encode()) < 1024
    # the training contract has the label: no such hint for a file with an unexpected feature
    assert "label column" not in gate(clean_csv).summary()
