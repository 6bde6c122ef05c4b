"""Checks of meaning: every defect class generated from the bundled data, judged by the real gate
(Great Expectations with the contract's custom expectations), plus the pure statistics on
bootstrap samples of honest data (they must not fire)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from heart_pipeline.config import default_codebook, load_settings_and_contract
from heart_pipeline.data_contract.meaning import (
    foreign_coding_fits,
    label_inversion_reason,
    largest_shift,
    marker_effects,
    resolve_expectations,
)
from heart_pipeline.data_contract.reference_profile import bundled_profile, profile_json
from heart_pipeline.results import ValidationReport
from heart_pipeline.tasks.validate import exact_percent
from tests.helpers import run_gate
from tests.hostile import MEANING_CASES, HostileCase, in_foreign_coding, inverted

SETTINGS, CONTRACT = load_settings_and_contract()
BOOK = default_codebook()
REFERENCE = CONTRACT.reference
BOOTSTRAP_SAMPLES = 200


def _rule(rule_type: str) -> dict:
    return next(e for e in CONTRACT.raw["expectations"] if e["type"] == rule_type)


LABEL_RULE = _rule("expect_target_to_agree_with_disease_markers")["kwargs"]
CODING_RULE = next(
    e for e in resolve_expectations(CONTRACT.raw["expectations"], REFERENCE, BOOK) if "codings" in e["kwargs"]
)["kwargs"]


@pytest.fixture(scope="module")
def bundled(bundled_csv: Path) -> pd.DataFrame:
    return pd.read_csv(bundled_csv)


def gate(frame: pd.DataFrame, tmp_path: Path, name: str) -> ValidationReport:
    path = tmp_path / f"{name}.csv"
    frame.to_csv(path, index=False)
    return run_gate(path, CONTRACT)


def label_fires(frame: pd.DataFrame) -> str | None:
    effects = marker_effects(frame, "target", LABEL_RULE["markers"])
    return label_inversion_reason(effects, LABEL_RULE["min_reversed"], LABEL_RULE["max_p_value"])


def coding_fires(frame: pd.DataFrame) -> dict:
    return foreign_coding_fits(
        frame, CODING_RULE["columns"], CODING_RULE["codings"], REFERENCE, CODING_RULE["min_evidence"]
    )


# --- pure functions ------------------------------------------------------------------------


def test_committed_reference_profile_is_the_bundled_datas() -> None:
    """`make reference-profile` regenerates it; this fails until it is rerun after a data change."""
    committed = SETTINGS.resolve(SETTINGS.contract.reference_profile_path)
    assert committed.read_text() == profile_json(bundled_profile(SETTINGS))


def test_exact_percent_never_rounds_a_part_to_all_or_none() -> None:
    assert exact_percent(293, 294) == "99.7%"
    assert exact_percent(99_999, 100_000) == "99.999%"
    assert exact_percent(1, 100_000) == "0.001%"
    assert exact_percent(294, 294) == "100.0%"


@pytest.mark.slow  # 400 resamples: the false-alarm rate of the thresholds, not their logic
@pytest.mark.parametrize("rows", [None, 60])
def test_label_and_coding_checks_never_fire_on_bootstrap_samples_of_honest_data(
    bundled: pd.DataFrame, rows: int | None
) -> None:
    rng = np.random.default_rng(7)
    size = rows or len(bundled)
    label_alarms = coding_alarms = 0
    for _ in range(BOOTSTRAP_SAMPLES):
        sample = bundled.iloc[rng.integers(0, len(bundled), size)]
        label_alarms += label_fires(sample) is not None
        coding_alarms += bool(coding_fires(sample))
    assert (label_alarms, coding_alarms) == (0, 0)


def test_label_check_fires_on_an_inverted_target_even_at_60_rows(bundled: pd.DataFrame) -> None:
    assert label_fires(inverted(bundled)).startswith("target looks inverted: 5 of 5 disease markers")
    rng = np.random.default_rng(3)
    small = [inverted(bundled.iloc[rng.integers(0, len(bundled), 60)]) for _ in range(50)]
    assert sum(label_fires(s) is not None for s in small) >= 45


@pytest.mark.parametrize("columns", [["cp"], ["restecg"], ["slope"], ["thal"], ["cp", "restecg", "slope", "thal"]])
def test_coding_check_names_each_column_in_uci_coding(bundled: pd.DataFrame, columns: list[str]) -> None:
    assert set(coding_fires(in_foreign_coding(bundled, columns))["uci"]) == set(columns)


# --- through the gate (real Great Expectations) --------------------------------------------


@pytest.mark.parametrize("case", MEANING_CASES, ids=[c.name for c in MEANING_CASES])
def test_gate_stops_each_defect_with_a_one_line_reason(
    case: HostileCase, bundled: pd.DataFrame, tmp_path: Path
) -> None:
    path = case.build(tmp_path, bundled)
    report = run_gate(path, CONTRACT)
    assert report.decision == "failed"
    message = report.failure_message()
    assert message.startswith(f"{path}: data-quality gate failed: ")
    assert case.expected in message, message
    assert "\n" not in message and len(message) < 1500


def test_placeholder_zeros_are_a_warning_naming_column_and_shift(bundled: pd.DataFrame, tmp_path: Path) -> None:
    report = gate(bundled.assign(slope=bundled["slope"].where(bundled.index % 3 == 0, 0)), tmp_path, "slope-zeros")
    assert report.passed, report.failure_message()
    (shift,) = [w for w in report.warning_failures if w.startswith("slope = 0 in ")]
    assert "in 70% of rows against 7% in the reference" in shift


def test_shift_test_counts_the_references_own_size() -> None:
    """The same 40-row file, 80/20 against shares of 50/50: measured on 20 rows those shares are noisy
    and the shift is not significant at the gate's 0.001; measured on 2,000 rows it is."""
    file = pd.Series([0] * 32 + [1] * 8)
    shares = {"kind": "codes", "shares": {"0": 0.5, "1": 0.5}}
    small, large = (largest_shift(file, "exang", {**shares, "rows": rows}) for rows in (20, 2000))
    assert small is not None and large is not None
    assert (small.value, small.observed, small.reference) == ("0", 0.8, 0.5)
    assert small.p_value > 0.01 and large.p_value < 0.001


def test_mostly_duplicated_file_is_a_warning_with_distinct_count(bundled: pd.DataFrame, tmp_path: Path) -> None:
    rows = np.concatenate([np.arange(len(bundled)), np.resize(np.arange(len(bundled)), 707)])
    report = gate(bundled.iloc[rows], tmp_path, "duplicated")
    assert (report.rows_in, report.duplicate_rows, report.distinct_rows) == (1010, 707, 303)
    assert any(
        w.startswith("707 of 1010 rows (70.0%) repeat an earlier row, 303 distinct") for w in report.warning_failures
    )


def test_class_balance_change_through_quarantine_is_a_warning(bundled: pd.DataFrame, tmp_path: Path) -> None:
    sick = bundled.index[bundled["target"] == 1][:50]
    frame = bundled.copy()
    frame.loc[sick, "trestbps"] = 999
    report = gate(frame, tmp_path, "balance")
    assert report.passed
    assert report.disease_share_in == pytest.approx(139 / 303)
    assert any(w.startswith("quarantine moved the disease share from 45.9% to ") for w in report.warning_failures)


def test_too_many_invalid_rows_names_the_worst_rule_with_exact_shares(bundled: pd.DataFrame, tmp_path: Path) -> None:
    frame = bundled.assign(trestbps=bundled["trestbps"].where(bundled.index < 100, 999))
    message = gate(frame, tmp_path, "many-invalid").failure_message()
    assert "fail warning rules" in message
    assert "most by expect_column_values_to_be_between(trestbps): 203 rows (67.0%)" in message


def test_contract_carries_severity_and_reason_in_ge_native_fields() -> None:
    raw = json.loads(SETTINGS.resolve(SETTINGS.contract.suite_path).read_text())
    assert all("meta" not in e and e["severity"] in ("critical", "warning") and e["notes"] for e in raw["expectations"])
    docs_kinds = {e["type"] for e in raw["expectations"] if e.get("description")}
    assert docs_kinds == {
        "expect_target_to_agree_with_disease_markers",
        "expect_coded_columns_to_fit_the_project_coding",
        "expect_column_value_shares_to_match_reference",
    }
