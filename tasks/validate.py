"""Validate step: the Great Expectations gate. Critical failures stop the run; warnings quarantine rows."""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task

import heart_pipeline.contract
import tasks.load
from heart_pipeline.caching import cache_key_for
from heart_pipeline.config import Settings
from heart_pipeline.contract import Contract, Rule
from heart_pipeline.errors import DataError
from tasks.load import RawData, read_heart_csv

FINITE_RULE = "finite_numbers"
COLUMNS_RULE = "expect_table_columns_to_match_ordered_list"
UNIQUE_RULE = "expect_compound_columns_to_be_unique"
MAX_LINES_IN_MESSAGE = 8


@dataclass(frozen=True)
class RuleOutcome:
    """The result of one rule on one file, with failing rows as file line numbers."""

    rule: str
    expectation: str
    column: str | None
    severity: str
    success: bool
    unexpected_count: int
    lines: list[int]
    detail: str
    why: str


@dataclass(frozen=True)
class ValidationReport:
    data_path: str
    fingerprint: str
    rows_in: int
    rows_kept: int
    rows_quarantined: int
    quarantined_by_rule: dict[str, int]
    duplicate_rows: int
    duplicate_lines: list[int]
    decision: str  # passed | quarantined | failed
    critical_failures: list[str]
    warning_failures: list[str]
    outcomes: list[RuleOutcome] = field(default_factory=list)
    validated_path: str | None = None
    quarantine_path: str | None = None
    report_path: str | None = None
    data_docs_path: str | None = None

    @property
    def validated_file(self) -> Path:
        if self.validated_path is None:
            raise DataError(self.failure_message())
        return Path(self.validated_path)

    def outputs_missing(self) -> bool:
        files = [self.validated_path, self.report_path]
        return any(path is not None and not Path(path).exists() for path in files)

    @property
    def passed(self) -> bool:
        return self.decision != "failed"

    def failure_message(self) -> str:
        """One line: the file, then each critical failure with its column and lines."""
        shown = "; ".join(self.critical_failures[:3])
        more = len(self.critical_failures) - 3
        suffix = f"; (+{more} more, see {self.report_path})" if more > 0 else ""
        return f"{self.data_path}: data-quality gate failed: {shown}{suffix}"

    def summary(self) -> dict[str, Any]:
        """Counts only, for logs, MLflow params and markdown."""
        return {
            "data_path": self.data_path,
            "fingerprint": self.fingerprint,
            "decision": self.decision,
            "rows_in": self.rows_in,
            "rows_kept": self.rows_kept,
            "rows_quarantined": self.rows_quarantined,
            "quarantined_by_rule": self.quarantined_by_rule,
            "duplicate_rows": self.duplicate_rows,
            "duplicate_lines": self.duplicate_lines,
            "critical_failures": self.critical_failures,
            "warning_failures": self.warning_failures,
        }


def _format_lines(lines: list[int]) -> str:
    shown = ", ".join(str(n) for n in lines[:MAX_LINES_IN_MESSAGE])
    more = len(lines) - MAX_LINES_IN_MESSAGE
    return f"line{'s' if len(lines) > 1 else ''} {shown}" + (f" (+{more} more)" if more > 0 else "")


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def find_non_numeric_cells(series: pd.Series) -> pd.Series:
    """Cells that hold text where a number is expected (missing values are not counted)."""
    coerced = pd.to_numeric(series, errors="coerce")
    return series[series.notna() & coerced.isna()]


def find_non_finite_cells(frame: pd.DataFrame) -> dict[str, list[int]]:
    """Positions of inf/-inf per numeric column: no instrument reports infinity, so it means a broken export."""
    found: dict[str, list[int]] = {}
    for column in frame.columns:
        if _is_numeric(frame[column]):
            values = frame[column].to_numpy(dtype="float64", na_value=np.nan)
            positions = np.flatnonzero(np.isinf(values)).tolist()
            if positions:
                found[str(column)] = positions
    return found


def run_expectation_suite(
    frame: pd.DataFrame, contract: Contract, docs_root: Path | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Run the suite with Great Expectations; return per-expectation results and the Data Docs index.

    With ``docs_root`` a file-backed context is created there (one per run, so concurrent runs
    never share GE state) and Data Docs HTML is built; without it the context is ephemeral.
    """
    from great_expectations.data_context.types.base import ProgressBarsConfig

    import great_expectations as gx

    if docs_root is None:
        context = gx.get_context(mode="ephemeral")
    else:
        docs_root.mkdir(parents=True, exist_ok=True)
        context = gx.get_context(mode="file", project_root_dir=str(docs_root))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    suite = context.suites.add(
        gx.ExpectationSuite(
            name=contract.name, expectations=contract.raw["expectations"], meta=contract.raw.get("meta")
        )
    )
    batch_definition = (
        context.data_sources.add_or_update_pandas("heart_csv")
        .add_dataframe_asset("raw_rows")
        .add_batch_definition_whole_dataframe("whole_file")
    )
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{contract.name}_validation", data=batch_definition, suite=suite)
    )
    actions = [] if docs_root is None else [gx.checkpoint.UpdateDataDocsAction(name="build_data_docs")]
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{contract.name}_checkpoint",
            validation_definitions=[validation],
            actions=actions,
            result_format={"result_format": "COMPLETE"},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    outcomes: list[dict[str, Any]] = []
    for run_result in result.run_results.values():
        for item in run_result.results:
            raised = bool(item.exception_info and item.exception_info.get("raised_exception"))
            outcomes.append(
                {
                    "type": item.expectation_config.type,
                    "kwargs": dict(item.expectation_config.kwargs),
                    "success": bool(item.success),
                    "result": dict(item.result or {}),
                    "exception": (item.exception_info or {}).get("exception_message") if raised else None,
                }
            )
    docs_index = None
    if docs_root is not None:
        index = docs_root / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
        docs_index = str(index) if index.exists() else None
    return outcomes, docs_index


def _match_rule(contract: Contract, ge_outcome: dict[str, Any]) -> Rule:
    for rule in contract.rules:
        if rule.type == ge_outcome["type"] and rule.kwargs.get("column") == ge_outcome["kwargs"].get("column"):
            if rule.type != "expect_column_values_to_be_in_set" or rule.kwargs["value_set"] == list(
                ge_outcome["kwargs"].get("value_set", [])
            ):
                return rule
    raise KeyError(ge_outcome["type"])


def _describe(rule: Rule, result: dict[str, Any], frame: pd.DataFrame, lines: list[int], contract: Contract) -> str:
    """A short human description of a failed rule."""
    column = rule.column
    if rule.type == COLUMNS_RULE:
        actual = [str(c) for c in frame.columns]
        missing = [c for c in contract.columns if c not in actual]
        extra = [c for c in actual if c not in contract.columns]
        if len(actual) == 1 and ";" in actual[0]:
            return f"the file looks ';'-delimited (one column {actual[0][:40]!r}...); the contract expects ','"
        if not missing and not extra:
            return f"columns are out of order: expected {contract.columns}, found {actual}"
        parts = [f"missing {missing}" if missing else "", f"unexpected {extra}" if extra else ""]
        return "columns do not match the contract: " + ", ".join(p for p in parts if p)
    if rule.type == "expect_table_row_count_to_be_between":
        return f"has {len(frame)} data rows; at least {rule.kwargs.get('min_value')} are needed"
    if rule.type == "expect_column_values_to_be_in_type_list":
        if column not in frame.columns:
            return f"column '{column}' is absent"
        bad = find_non_numeric_cells(frame[column])
        if len(bad):
            bad_lines = [lines[frame.index.get_loc(i)] for i in bad.index]
            return f"column '{column}' is not numeric: {bad.iloc[0]!r} at {_format_lines(bad_lines)}"
        return f"column '{column}' has type {frame[column].dtype}, expected a number"
    if rule.type == "expect_column_distinct_values_to_contain_set":
        observed = sorted(pd.Series(frame[column]).dropna().unique().tolist()) if column in frame else []
        return f"column '{column}' holds only {observed}; every class of {rule.kwargs['value_set']} is needed"
    if rule.type == UNIQUE_RULE:
        return describe_duplicates(frame, lines)
    failing = lines_of(result, lines)
    if rule.type == "expect_column_values_to_not_be_null":
        return f"column '{column}' is missing at {_format_lines(failing)}"
    values = sorted({_plain(v) for v in result.get("unexpected_list", [])}, key=str)[:5]
    if rule.type == "expect_column_values_to_be_between":
        bound = f"[{rule.kwargs.get('min_value')}, {rule.kwargs.get('max_value')}]"
        return f"column '{column}' outside {bound}: {values} at {_format_lines(failing)}"
    if rule.type == "expect_column_values_to_be_in_set":
        return f"column '{column}' not in {rule.kwargs['value_set']}: {values} at {_format_lines(failing)}"
    return f"{rule.name} failed at {_format_lines(failing)}" if failing else f"{rule.name} failed"


def describe_duplicates(frame: pd.DataFrame, lines: list[int]) -> str:
    """'line 166 repeats line 165': GE flags every copy, but only the extra copies are dropped."""
    first_line_of: dict[tuple[Any, ...], int] = {}
    repeats: list[str] = []
    for position, row in enumerate(frame.itertuples(index=False, name=None)):
        key = tuple("<NA>" if pd.isna(v) else v for v in row)
        if key in first_line_of:
            repeats.append(f"line {lines[position]} repeats line {first_line_of[key]}")
        else:
            first_line_of[key] = lines[position]
    shown = ", ".join(repeats[:MAX_LINES_IN_MESSAGE])
    more = len(repeats) - MAX_LINES_IN_MESSAGE
    return f"{len(repeats)} exact duplicate row(s): {shown}" + (f" (+{more} more)" if more > 0 else "")


def _plain(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def lines_of(result: dict[str, Any], lines: list[int]) -> list[int]:
    positions = result.get("unexpected_index_list") or []
    return [lines[int(p)] for p in positions if isinstance(p, (int, np.integer)) and 0 <= int(p) < len(lines)]


def assess_outcomes(
    frame: pd.DataFrame, source_lines: list[int], contract: Contract, ge_outcomes: list[dict[str, Any]]
) -> list[RuleOutcome]:
    """Turn raw GE results (plus the finite-number check GE lacks) into RuleOutcomes."""
    outcomes: list[RuleOutcome] = []
    for ge_outcome in ge_outcomes:
        rule = _match_rule(contract, ge_outcome)
        result = ge_outcome["result"]
        failing = lines_of(result, source_lines)
        success = ge_outcome["success"]
        detail = "" if success else _describe(rule, result, frame, source_lines, contract)
        if ge_outcome["exception"] and not success and rule.column and rule.column not in frame.columns:
            detail = f"column '{rule.column}' is absent"
        count = int(result.get("unexpected_count") or len(failing))
        outcomes.append(
            RuleOutcome(rule.name, rule.type, rule.column, rule.severity, success, count, failing, detail, rule.why)
        )
    for column, positions in find_non_finite_cells(frame).items():
        bad_lines = [source_lines[p] for p in positions]
        outcomes.append(
            RuleOutcome(
                f"{FINITE_RULE}({column})",
                FINITE_RULE,
                column,
                "critical",
                False,
                len(positions),
                bad_lines,
                f"column '{column}' has non-finite values (inf) at {_format_lines(bad_lines)}",
                "Infinity is not a measurement; it means the export that wrote the file is broken.",
            )
        )
    return outcomes


def quarantine_invalid_rows(
    frame: pd.DataFrame, source_lines: list[int], outcomes: list[RuleOutcome]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split rows into kept and quarantined. Each quarantine line says which rule and value failed.

    Duplicates are not quarantined here: the preprocess step drops the extra copies (and writes
    them out) so that the first copy still trains.
    """
    line_to_position = {line: pos for pos, line in enumerate(source_lines)}
    records: list[dict[str, Any]] = []
    bad_positions: set[int] = set()
    for outcome in outcomes:
        if outcome.success or outcome.severity != "warning" or outcome.expectation == UNIQUE_RULE:
            continue
        for line in outcome.lines:
            position = line_to_position[line]
            bad_positions.add(position)
            value = frame.iloc[position][outcome.column] if outcome.column in frame.columns else None
            records.append(
                {
                    "source_line": line,
                    "column": outcome.column,
                    "rule": outcome.rule,
                    "value": None if value is None or pd.isna(value) else _plain(value),
                    **frame.iloc[[position]].to_dict("records")[0],
                }
            )
    keep = [pos for pos in range(len(frame)) if pos not in bad_positions]
    quarantine = pd.DataFrame.from_records(
        records, columns=["source_line", "column", "rule", "value", *[str(c) for c in frame.columns]]
    )
    return frame.iloc[keep].reset_index(drop=True), quarantine.sort_values(["source_line", "rule"], kind="stable")


def decide(
    outcomes: list[RuleOutcome],
    rows_in: int,
    rows_quarantined: int,
    on_warning: str,
    max_invalid_fraction: float,
    min_rows: int,
) -> tuple[str, list[str], list[str]]:
    """The gate's decision (passed | quarantined | failed) with critical and warning descriptions."""
    failed = [o for o in outcomes if not o.success]
    columns_broken = [o for o in failed if o.expectation == COLUMNS_RULE]
    critical = [o.detail for o in (columns_broken or [o for o in failed if o.severity == "critical"])]
    warnings = [o.detail for o in failed if o.severity == "warning" and not columns_broken]
    if not critical:
        if warnings and on_warning == "fail":
            critical = [f"warning rules fail and validation.on_warning is 'fail': {w}" for w in warnings]
        elif rows_in and rows_quarantined / rows_in > max_invalid_fraction:
            critical = [
                f"{rows_quarantined} of {rows_in} rows ({rows_quarantined / rows_in:.0%}) fail warning rules, "
                f"above validation.max_invalid_fraction={max_invalid_fraction:g}; first: {warnings[0]}"
            ]
        elif rows_in - rows_quarantined < min_rows:
            critical = [f"only {rows_in - rows_quarantined} rows pass the gate; at least {min_rows} are needed"]
    if critical:
        return "failed", critical, warnings
    return ("quarantined" if rows_quarantined else "passed"), critical, warnings


def min_rows_of(contract: Contract) -> int:
    for rule in contract.rules:
        if rule.type == "expect_table_row_count_to_be_between":
            return int(rule.kwargs.get("min_value") or 0)
    return 0


def validate_frame(
    raw: RawData,
    data_path: str,
    contract: Contract,
    on_warning: str,
    max_invalid_fraction: float,
    out_dir: Path | None,
) -> ValidationReport:
    """Run the whole gate on an already-read file; write kept rows, quarantine, report and Data Docs."""
    frame = raw.frame
    ge_outcomes, docs_index = run_expectation_suite(
        frame, contract, out_dir / "great_expectations" if out_dir else None
    )
    outcomes = assess_outcomes(frame, raw.source_lines, contract, ge_outcomes)
    columns_ok = all(o.success for o in outcomes if o.expectation == COLUMNS_RULE)
    kept, quarantine = (
        quarantine_invalid_rows(frame, raw.source_lines, outcomes) if columns_ok else (frame.iloc[0:0], frame.iloc[0:0])
    )
    rows_quarantined = len(frame) - len(kept) if columns_ok else 0
    decision, critical, warnings = decide(
        outcomes, len(frame), rows_quarantined, on_warning, max_invalid_fraction, min_rows_of(contract)
    )
    duplicate_mask = frame.duplicated(keep="first") if columns_ok else pd.Series(False, index=frame.index)
    duplicate_lines = [raw.source_lines[p] for p in np.flatnonzero(duplicate_mask.to_numpy()).tolist()]
    by_rule = dict(Counter(quarantine["rule"].tolist())) if len(quarantine) else {}
    report = ValidationReport(
        data_path=data_path,
        fingerprint=raw.fingerprint,
        rows_in=len(frame),
        rows_kept=len(kept) if columns_ok else 0,
        rows_quarantined=rows_quarantined,
        quarantined_by_rule=by_rule,
        duplicate_rows=len(duplicate_lines),
        duplicate_lines=duplicate_lines,
        decision=decision,
        critical_failures=critical,
        warning_failures=warnings,
        outcomes=outcomes,
        data_docs_path=docs_index,
    )
    if out_dir is None:
        return report
    return write_validation_outputs(report, kept, quarantine, out_dir)


def write_validation_outputs(
    report: ValidationReport, kept: pd.DataFrame, quarantine: pd.DataFrame, out_dir: Path
) -> ValidationReport:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str | None] = {"validated_path": None, "quarantine_path": None}
    if report.passed:
        kept.to_csv(out_dir / "validated.csv", index=False)
        paths["validated_path"] = str(out_dir / "validated.csv")
    if len(quarantine):
        quarantine.to_csv(out_dir / "quarantine.csv", index=False)
        paths["quarantine_path"] = str(out_dir / "quarantine.csv")
    report_path = out_dir / "validation_report.json"
    final = ValidationReport(
        **{**asdict(report), "outcomes": report.outcomes, **paths, "report_path": str(report_path)}
    )
    report_path.write_text(json.dumps(asdict(final), indent=2, default=_json_default))
    return final


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def validate_dataset(
    data_path: Path,
    contract: Contract,
    na_values: list[str],
    max_file_mb: float,
    on_warning: str,
    max_invalid_fraction: float,
    out_dir: Path | None,
) -> ValidationReport:
    raw = read_heart_csv(data_path, na_values, max_file_mb)
    return validate_frame(raw, str(data_path), contract, on_warning, max_invalid_fraction, out_dir)


def expectation_table(report: ValidationReport) -> list[dict[str, Any]]:
    return [
        {
            "expectation": o.rule,
            "severity": o.severity,
            "result": "pass" if o.success else "FAIL",
            "unexpected_count": o.unexpected_count,
            "detail": o.detail,
        }
        for o in report.outcomes
    ]


def validation_markdown(report: ValidationReport) -> str:
    by_rule = "\n".join(f"| {rule} | {count} |" for rule, count in sorted(report.quarantined_by_rule.items()))
    failures = "\n".join(f"- **critical**: {c}" for c in report.critical_failures) or "- no critical failures"
    warnings = "\n".join(f"- warning: {w}" for w in report.warning_failures)
    return (
        f"# Data-quality gate: {report.decision}\n\n"
        f"File `{report.data_path}` (sha256 `{report.fingerprint[:12]}`)\n\n"
        f"| rows in | rows kept | rows quarantined | duplicate rows (dropped before split) |\n"
        f"|---|---|---|---|\n| {report.rows_in} | {report.rows_kept} | {report.rows_quarantined} | "
        f"{report.duplicate_rows} |\n\n"
        f"{failures}\n{warnings}\n\n"
        + (f"| quarantined by rule | rows |\n|---|---|\n{by_rule}\n\n" if by_rule else "")
        + f"Quarantine: `{report.quarantine_path}`  \nData Docs: `{report.data_docs_path}`\n"
    )


def enforce_gate(report: ValidationReport) -> ValidationReport:
    """Stop with the report's one-line reason if a critical rule failed."""
    if not report.passed:
        raise DataError(report.failure_message())
    return report


@task(
    name="validate",
    cache_key_fn=cache_key_for(sys.modules[__name__], tasks.load, heart_pipeline.contract),
    cache_expiration=timedelta(days=7),
    persist_result=True,
)
def validate_dataset_task(
    data_path: Path,
    contract: Contract,
    settings: Settings,
    out_dir: Path,
    max_invalid_fraction: float | None = None,
) -> ValidationReport:
    """Run the gate. Cached on the data, config and code; a failed gate is a result too, so the
    caller can record the evidence before ``apply_gate_task`` fails the run."""
    from prefect import get_run_logger

    report = validate_dataset(
        data_path,
        contract,
        settings.data.na_values,
        settings.data.max_file_mb,
        settings.validation.on_warning,
        settings.validation.max_invalid_fraction if max_invalid_fraction is None else max_invalid_fraction,
        out_dir,
    )
    get_run_logger().info(
        "Gate %s: %d rows in, %d kept, %d quarantined %s, %d duplicate rows",
        report.decision,
        report.rows_in,
        report.rows_kept,
        report.rows_quarantined,
        report.quarantined_by_rule,
        report.duplicate_rows,
    )
    return report


@task(name="apply-gate")
def apply_gate_task(report: ValidationReport) -> ValidationReport:
    """Publish the gate's evidence as Prefect artifacts (also when validation came from cache),
    then stop the run if a critical rule failed."""
    from prefect import get_run_logger
    from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

    create_table_artifact(
        key="data-quality-expectations", table=expectation_table(report), description="Each expectation: pass or fail"
    )
    create_markdown_artifact(key="data-quality-report", markdown=validation_markdown(report))
    if report.data_docs_path:
        create_link_artifact(
            key="data-quality-data-docs", link=Path(report.data_docs_path).as_uri(), link_text="Data Docs (local file)"
        )
    for warning in report.warning_failures:
        get_run_logger().warning("Quarantined: %s", warning)
    return enforce_gate(report)
