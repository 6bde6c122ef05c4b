"""Validate step: the Great Expectations gate. Critical failures stop the run; warnings quarantine rows."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task

from heart_pipeline.caching import data_step_cache_policy
from heart_pipeline.config import ValidationConfig, default_codebook, default_reference_profile
from heart_pipeline.data_contract.codebook import Codebook
from heart_pipeline.data_contract.contract import RECORDED_RULES, Contract, rule_name
from heart_pipeline.data_contract.files import write_csv_for_people
from heart_pipeline.data_contract.meaning import resolve_expectations
from heart_pipeline.data_contract.profile import column_profiles
from heart_pipeline.data_contract.recorded import not_recorded_summary
from heart_pipeline.errors import cell
from heart_pipeline.evidence.render import expectation_table, profile_markdown, rule_check, validation_markdown
from heart_pipeline.evidence.report_html import render_validation_html, report_html_path
from heart_pipeline.results import RuleOutcome, ValidationReport
from heart_pipeline.tasks.load import Dataset, RawData

FINITE_RULE = "finite_numbers"
COLUMNS_RULE = "expect_table_columns_to_match_ordered_list"
UNIQUE_RULE = "expect_compound_columns_to_be_unique"
MAX_LINES_IN_MESSAGE = 8
MAX_LINES_IN_REPORT = 20  # per rule in the JSON report; quarantine.csv lists every line


@dataclass(frozen=True)
class ValidationResult:
    """The gate's verdict plus the rows it kept (indexed by file line) and the quarantine lines."""

    report: ValidationReport
    kept: pd.DataFrame
    quarantine: pd.DataFrame


def exact_percent(part: int, whole: int) -> str:
    """``99.7%`` for 293 of 294: one decimal, more when rounding would say 0% or 100% of a part
    that is neither none nor all."""
    share = 100 * part / whole if whole else 0.0
    for decimals in range(1, 7):
        text = f"{share:.{decimals}f}"
        if (0 < part < whole) and float(text) in (0.0, 100.0):
            continue
        return f"{text}%"
    return f"{share}%"


def _format_lines(lines: list[int], total: int | None = None) -> str:
    """``lines 3, 9 (+40 more)``: at most MAX_LINES_IN_MESSAGE, the rest counted (quarantine.csv has all)."""
    total = len(lines) if total is None else total
    shown = ", ".join(str(n) for n in lines[:MAX_LINES_IN_MESSAGE])
    more = total - min(len(lines), MAX_LINES_IN_MESSAGE)
    return f"line{'s' if total > 1 else ''} {shown}" + (f" (+{more} more)" if more > 0 else "")


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def find_non_numeric_cells(series: pd.Series) -> pd.Series:
    """Cells that hold text where a number is expected (missing values are not counted)."""
    coerced = pd.to_numeric(series, errors="coerce")
    return series[series.notna() & coerced.isna()]


def find_non_finite_cells(frame: pd.DataFrame) -> dict[str, list[int]]:
    """Index labels (file lines) of inf/-inf per numeric column: no instrument reports infinity, so
    it means a broken export."""
    found: dict[str, list[int]] = {}
    for column in frame.columns:
        if _is_numeric(frame[column]):
            values = frame[column].to_numpy(dtype="float64", na_value=np.nan)
            labels = frame.index[np.isinf(values)].tolist()
            if labels:
                found[str(column)] = labels
    return found


@dataclass(frozen=True)
class GeOutcome:
    """One expectation's result as GE returns it, with the contract's fields read back from GE."""

    type: str
    kwargs: dict[str, Any]
    severity: str
    notes: str
    success: bool
    result: dict[str, Any]
    exception: str | None

    @property
    def failing_lines(self) -> list[int]:
        """GE's unexpected index list: file lines, because the frame's index is the file's lines."""
        return [int(i) for i in self.result.get("unexpected_index_list") or []]


def run_expectation_suite(frame: pd.DataFrame, suite_name: str, expectations: list[dict[str, Any]]) -> list[GeOutcome]:
    """Run the suite with Great Expectations and return per-expectation results.

    ``frame`` is indexed by file line, so GE's ``unexpected_index_list`` holds file lines. The context
    is in memory: concurrent runs share no GE state. (GE's Data Docs are not built: offline they load
    jQuery, Bootstrap and Vega from outside hosts; the run's own report replaces them.)
    """
    from great_expectations.data_context.types.base import ProgressBarsConfig

    import great_expectations as gx
    import heart_pipeline.data_contract.expectations  # noqa: F401  (registers the contract's custom expectations)

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("heart_csv")
        .add_dataframe_asset("raw_rows")
        .add_batch_definition_whole_dataframe("whole_file")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    # Batch.validate, not a Checkpoint: a checkpoint with no actions only adds stores that serialise
    # the suite and every result (about 40% of the gate's time at 303 rows) for nobody to read.
    # COMPLETE for the failing index (quarantine needs every row); the values themselves are read
    # from the frame, so GE keeps no second unbounded list of values, nor a query string that
    # spells out every index.
    result = batch.validate(
        gx.ExpectationSuite(name=suite_name, expectations=expectations),
        result_format={
            "result_format": "COMPLETE",
            "exclude_unexpected_values": True,
            "return_unexpected_index_query": False,
        },
    )
    outcomes: list[GeOutcome] = []
    for item in result.results:
        config = item.expectation_config
        if config is None:  # GE fills it for every suite expectation; typed as optional
            continue
        raised = bool(item.exception_info and item.exception_info.get("raised_exception"))
        notes = config.notes or ""
        outcomes.append(
            GeOutcome(
                type=config.type,
                kwargs=dict(config.kwargs),
                severity=str(getattr(config.severity, "value", config.severity)),
                notes=" ".join(notes) if isinstance(notes, list) else str(notes),
                success=bool(item.success),
                result=dict(item.result or {}),
                exception=(item.exception_info or {}).get("exception_message") if raised else None,
            )
        )
    return outcomes


def _describe_columns(frame: pd.DataFrame, contract: Contract) -> str:
    actual = [str(c) for c in frame.columns]
    missing = [c for c in contract.columns if c not in actual]
    extra = [c for c in actual if c not in contract.columns]
    if len(actual) == 1 and ";" in actual[0]:
        return f"the file looks ';'-delimited (one column {actual[0][:40]!r}...); the contract expects ','"
    if not missing and not extra:
        return f"columns are out of order: expected {contract.columns}, found {actual}"
    shared = [c for c in contract.columns if c in actual]
    if len(shared) * 2 < len(contract.columns):
        return (
            f"a different dataset, not a heart-disease file this project reads: it shares {len(shared)} of "
            f"{len(contract.columns)} columns ({', '.join(shared) or 'none'}); found {cell(','.join(actual), 80)}"
        )
    parts = [f"missing {missing}" if missing else "", f"unexpected {extra}" if extra else ""]
    if contract.label_left_out in extra:
        parts.append(
            f"the file carries the label column {contract.label_left_out!r}: scoring reads patients' features "
            f"only (drop that column), while `heart-pipeline evaluate` measures the model on a labelled file"
        )
    return "columns do not match the contract: " + ", ".join(p for p in parts if p)


def _describe(ge: GeOutcome, frame: pd.DataFrame, contract: Contract) -> str:
    """A short human description of a failed rule: its column, its meaning, and where."""
    column = ge.kwargs.get("column")
    details = ge.result.get("details") or {}
    if isinstance(details, dict) and details.get("reason"):
        return str(details["reason"])  # the contract's custom expectations word their own reason
    if ge.type == COLUMNS_RULE:
        return _describe_columns(frame, contract)
    if ge.type == "expect_table_row_count_to_be_between":
        return f"has {len(frame)} data rows; at least {ge.kwargs.get('min_value')} are needed"
    if column is not None and column not in frame.columns:
        return f"column '{column}' is absent"
    if ge.type == "expect_column_values_to_be_in_type_list":
        bad = find_non_numeric_cells(frame[column])
        if len(bad):
            return f"column '{column}' is not numeric: {bad.iloc[0]!r} at {_format_lines(bad.index.tolist())}"
        return f"column '{column}' has type {frame[column].dtype}, expected a number"
    if ge.type == "expect_column_distinct_values_to_contain_set":
        observed = sorted(pd.Series(frame[column]).dropna().unique().tolist())
        return f"column '{column}' holds only {observed}; every class of {ge.kwargs['value_set']} is needed"
    if ge.type == "expect_column_proportion_of_non_null_values_to_be_between":
        missing = int(frame[column].isna().sum())
        allowed = 1 - float(ge.kwargs.get("min_value") or 0)
        return (
            f"column '{column}' is {exact_percent(missing, len(frame))} missing ({missing} of {len(frame)} rows; "
            f"at most {allowed:.0%} may be): it is not recorded in this file, so no row can be trusted for it"
        )
    if ge.type == "expect_column_unique_value_count_to_be_between":
        values = frame[column].dropna().unique().tolist()
        shown = _plain(values[0]) if values else "nothing"
        return (
            f"column '{column}' holds the single value {shown} in every row with a value: "
            "a placeholder or a broken export, not a measurement"
        )
    if ge.type == UNIQUE_RULE:
        return describe_duplicates(frame)
    failing = ge.failing_lines
    count = int(ge.result.get("unexpected_count") or len(failing))
    where = _format_lines(failing, count)
    if ge.type == "expect_column_values_to_not_be_null":
        return f"column '{column}' is missing at {where}"
    values = sorted({_plain(v) for v in frame.loc[failing[:1000], column].dropna().tolist()}, key=str)[:5]
    if ge.type == "expect_column_values_to_be_between":
        bound = f"[{ge.kwargs.get('min_value')}, {ge.kwargs.get('max_value')}]"
        return f"column '{column}' outside {bound}: {values} at {where}"
    if ge.type == "expect_column_values_to_be_in_set":
        return f"column '{column}' not in {ge.kwargs['value_set']}: {values} at {where}"
    name = rule_name(ge.type, ge.kwargs)
    return f"{name} failed at {where}" if failing else f"{name} failed"


def duplicate_mask(frame: pd.DataFrame) -> pd.Series:
    """True for each extra copy of an earlier row (missing values compare equal)."""
    return frame.duplicated(keep="first")


def describe_duplicates(frame: pd.DataFrame) -> str:
    """'723 of 1025 rows (70.5%) repeat an earlier row: 302 distinct; line 166 repeats line 165, ...'

    Vectorised: the mask is pandas' exact row comparison; a row hash maps the few listed copies
    to the line of their first occurrence.
    """
    extra = duplicate_mask(frame)
    count = int(extra.sum())
    if not count:
        return "no duplicate rows"
    keys = pd.util.hash_pandas_object(frame, index=False)
    first_line_of = pd.Series(frame.index[~extra.to_numpy()], index=keys[~extra].to_numpy())
    first_line_of = first_line_of[~first_line_of.index.duplicated()]
    shown_lines = frame.index[extra.to_numpy()][:MAX_LINES_IN_MESSAGE]
    firsts = first_line_of.reindex(keys[extra].to_numpy()[:MAX_LINES_IN_MESSAGE]).tolist()
    shown = ", ".join(f"line {line} repeats line {first}" for line, first in zip(shown_lines, firsts, strict=True))
    more = count - len(shown_lines)
    return (
        f"{count} of {len(frame)} rows ({exact_percent(count, len(frame))}) repeat an earlier row, "
        f"{len(frame) - count} distinct; the copies are dropped before the split: {shown}"
        + (f" (+{more} more)" if more > 0 else "")
    )


def _plain(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def assess_outcomes(frame: pd.DataFrame, contract: Contract, ge_outcomes: list[GeOutcome]) -> list[RuleOutcome]:
    """Turn GE's results (plus the finite-number check GE lacks) into RuleOutcomes.

    ``frame`` is indexed by file line. Severity and reason come from GE's own result fields.
    """
    outcomes: list[RuleOutcome] = []
    for ge in ge_outcomes:
        failing = ge.failing_lines
        detail = "" if ge.success else _describe(ge, frame, contract)
        count = int(ge.result.get("unexpected_count") or len(failing))
        outcomes.append(
            RuleOutcome(
                rule_name(ge.type, ge.kwargs),
                ge.type,
                ge.kwargs.get("column"),
                ge.severity,
                ge.success,
                count,
                failing[:MAX_LINES_IN_REPORT],
                detail,
                ge.notes,
                rule_check(ge.type, ge.kwargs),
            )
        )
    for column, bad_lines in find_non_finite_cells(frame).items():
        outcomes.append(
            RuleOutcome(
                f"{FINITE_RULE}({column})",
                FINITE_RULE,
                column,
                "critical",
                False,
                len(bad_lines),
                bad_lines[:MAX_LINES_IN_REPORT],
                f"column '{column}' has non-finite values (inf) at {_format_lines(bad_lines)}",
                "Infinity is not a measurement; it means the export that wrote the file is broken.",
                rule_check(FINITE_RULE, {}),
            )
        )
    # GE returns results in its own order; the contract's order puts the root causes first (a
    # missing or constant column before the rules its rows then fail).
    position = {rule.name: i for i, rule in enumerate(contract.rules)}
    return sorted(outcomes, key=lambda o: position.get(o.rule, len(position)))


def quarantines(ge: GeOutcome) -> bool:
    """Whether a failed result sends its rows to quarantine: row-level warning rules do; duplicates
    are dropped by preprocess instead (the first copy still trains), and table-level warnings
    (shift, duplicates) have no rows of their own."""
    return not ge.success and ge.severity == "warning" and ge.type != UNIQUE_RULE and bool(ge.failing_lines)


def quarantine_invalid_rows(frame: pd.DataFrame, ge_outcomes: list[GeOutcome]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split rows (indexed by file line) into kept and quarantined, without a per-row loop.

    Each quarantine row says which line, rule, column and value failed, then the whole row.
    """
    pieces: list[pd.DataFrame] = []
    for ge in ge_outcomes:
        if not quarantines(ge):
            continue
        lines = pd.Index(ge.failing_lines)
        column = ge.kwargs.get("column")
        rows = frame.loc[lines]
        values = rows[column].to_numpy(dtype=object) if column in frame.columns else None
        head = pd.DataFrame(
            {"source_line": lines, "column": column, "rule": rule_name(ge.type, ge.kwargs), "value": values}
        )
        pieces.append(pd.concat([head, rows.reset_index(drop=True)], axis=1))
    columns = ["source_line", "column", "rule", "value", *[str(c) for c in frame.columns]]
    if not pieces:
        return frame, pd.DataFrame(columns=columns)
    quarantine = pd.concat(pieces, ignore_index=True)[columns]
    quarantine["value"] = quarantine["value"].map(lambda v: None if pd.isna(v) else _plain(v))
    bad = frame.index.isin(quarantine["source_line"].to_numpy())
    return frame.loc[~bad], quarantine.sort_values(["source_line", "rule"], kind="stable", ignore_index=True)


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
            critical = [too_many_invalid(outcomes, rows_in, rows_quarantined, max_invalid_fraction)]
        elif rows_in - rows_quarantined < min_rows:
            critical = [f"only {rows_in - rows_quarantined} rows pass the gate; at least {min_rows} are needed"]
    if critical:
        return "failed", critical, warnings
    return ("quarantined" if rows_quarantined else "passed"), critical, warnings


def too_many_invalid(outcomes: list[RuleOutcome], rows_in: int, rows_quarantined: int, limit: float) -> str:
    """Names the rule that quarantined the most rows, with exact shares (293 of 294 is 99.7%)."""
    row_rules = [o for o in outcomes if not o.success and o.severity == "warning" and o.lines]
    worst = max(row_rules, key=lambda o: o.unexpected_count)
    return (
        f"{rows_quarantined} of {rows_in} rows ({exact_percent(rows_quarantined, rows_in)}) fail warning rules, "
        f"above validation.max_invalid_fraction={limit:g}; most by {worst.rule}: {worst.unexpected_count} rows "
        f"({exact_percent(worst.unexpected_count, rows_in)}): {worst.detail}"
    )


def combine_not_recorded(critical: list[str], outcomes: list[RuleOutcome], frame: pd.DataFrame) -> list[str]:
    """Columns a file does not record, stopped by the mostly-missing rule, as one line with the remedy first:
    ``train without them (--without ca --without thal), or score or evaluate this file, which impute
    them: 2 columns not recorded: ca 99%, thal 90% missing``; the other reasons follow."""
    failed = [o for o in outcomes if not o.success and o.severity == "critical" and o.expectation == RECORDED_RULES[0]]
    columns_broken = any(not o.success and o.expectation == COLUMNS_RULE for o in outcomes)
    shares = {str(o.column): float(frame[o.column].isna().mean()) for o in failed if o.column in frame.columns}
    if columns_broken or not shares or not len(frame):
        return critical  # an absent column is the columns rule's business, reported alone
    flags = " ".join(f"--without {column}" for column in sorted(shares, key=lambda c: -shares[c]))
    line = f"train without them ({flags}), or score or evaluate this file, which impute them: "
    details = {o.detail for o in failed}
    return [line + not_recorded_summary(shares, 0.0), *(c for c in critical if c not in details)]


def min_rows_of(contract: Contract) -> int:
    for rule in contract.rules:
        if rule.type == "expect_table_row_count_to_be_between":
            return int(rule.kwargs.get("min_value") or 0)
    return 0


def disease_share(frame: pd.DataFrame, target: str | None) -> float | None:
    if target is None or target not in frame.columns or not len(frame):
        return None
    labels = pd.to_numeric(frame[target], errors="coerce")
    return float((labels == 1).sum() / labels.notna().sum()) if labels.notna().any() else None


def class_balance_warning(share_in: float | None, share_kept: float | None, limit: float) -> str | None:
    """A warning when quarantine changed the share of disease rows by more than ``limit``: the rows
    dropped were not a random sample, so the kept rows describe another population."""
    if share_in is None or share_kept is None or abs(share_kept - share_in) <= limit:
        return None
    return (
        f"quarantine moved the disease share from {share_in:.1%} to {share_kept:.1%} "
        f"(more than {limit:.0%}): the quarantined rows are mostly of one class; read quarantine.csv"
    )


def validate_frame(
    raw: RawData,
    data_path: str,
    contract: Contract,
    on_warning: str,
    max_invalid_fraction: float,
    reference: dict[str, Any] | None = None,
    codebook: Codebook | None = None,
) -> ValidationResult:
    """Run the whole gate on an already-read file: the verdict, the kept rows and the quarantine.

    ``reference`` is the profile the shift and coding checks compare with: by default the contract's
    (the bundled data's, committed with it); pass another, e.g. ``build_reference_profile`` of the
    champion's training rows, to compare with that. ``codebook`` supplies the foreign codings.
    """
    reference = reference or contract.reference or default_reference_profile()
    expectations = resolve_expectations(contract.raw["expectations"], reference, codebook or default_codebook())
    # Indexed by file line: GE's failing indices, the quarantine and every message speak in lines.
    # (An unnamed index: GE reports a named one as dicts.)
    frame = raw.frame.set_axis(pd.Index(raw.source_lines), axis=0)
    ge_outcomes = run_expectation_suite(frame, contract.name, expectations)
    outcomes = assess_outcomes(frame, contract, ge_outcomes)
    columns_ok = all(o.success for o in outcomes if o.expectation == COLUMNS_RULE)
    kept, quarantine = quarantine_invalid_rows(frame, ge_outcomes) if columns_ok else (frame.iloc[0:0], frame.iloc[0:0])
    rows_quarantined = len(frame) - len(kept) if columns_ok else 0
    decision, critical, warnings = decide(
        outcomes, len(frame), rows_quarantined, on_warning, max_invalid_fraction, min_rows_of(contract)
    )
    critical = combine_not_recorded(critical, outcomes, frame)
    share_in, share_kept = disease_share(frame, contract.label_column), disease_share(kept, contract.label_column)
    balance = class_balance_warning(share_in, share_kept if columns_ok else None, contract.max_disease_share_change)
    warnings = warnings + ([balance] if balance else [])
    duplicates = duplicate_mask(frame) if columns_ok else pd.Series(False, index=frame.index)
    duplicate_lines = frame.index[duplicates.to_numpy()]
    by_rule = quarantine["rule"].value_counts(sort=False).to_dict() if len(quarantine) else {}
    report = ValidationReport(
        data_path=data_path,
        fingerprint=raw.fingerprint,
        rows_in=len(frame),
        rows_kept=len(kept) if columns_ok else 0,
        rows_quarantined=rows_quarantined,
        quarantined_by_rule={str(k): int(v) for k, v in by_rule.items()},
        duplicate_rows=len(duplicate_lines),
        duplicate_lines=duplicate_lines[:MAX_LINES_IN_REPORT].tolist(),
        decision=decision,
        critical_failures=critical,
        warning_failures=warnings,
        outcomes=outcomes,
        distinct_rows=len(frame) - len(duplicate_lines),
        disease_share_in=share_in,
        disease_share_kept=share_kept if columns_ok else None,
        profile=column_profiles(frame, contract, reference),
    )
    return ValidationResult(report, kept, quarantine)


def write_validation_outputs(result: ValidationResult, out_dir: Path, keep_rows: bool) -> ValidationReport:
    """The evidence in the run folder: the report, the quarantine lines and, when asked (flows that do not
    preprocess), the rows that passed. Returns the report with those paths filled in."""
    out_dir.mkdir(parents=True, exist_ok=True)
    validated_path = quarantine_path = None
    if keep_rows and result.report.passed:
        write_csv_for_people(result.kept, out_dir / "validated.csv")
        validated_path = str(out_dir / "validated.csv")
    if len(result.quarantine):
        write_csv_for_people(result.quarantine, out_dir / "quarantine.csv")
        quarantine_path = str(out_dir / "quarantine.csv")
    report_path = out_dir / "validation_report.json"
    html_path = report_html_path(out_dir)
    final = replace(
        result.report,
        validated_path=validated_path,
        quarantine_path=quarantine_path,
        report_path=str(report_path),
        html_report_path=str(html_path),
    )
    report_path.write_text(json.dumps(asdict(final), indent=2, default=_json_default))
    checked_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    html_path.write_text(render_validation_html(final, checked_at), encoding="utf-8")
    return final


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


@task(
    name="validate",
    # Every module whose code decides the verdict: a change to any of them must not serve an old verdict.
    cache_policy=data_step_cache_policy(
        "dataset",
        __name__,
        "heart_pipeline.tasks.load",
        "heart_pipeline.data_contract.contract",
        "heart_pipeline.data_contract.meaning",
        "heart_pipeline.data_contract.expectations",
    ),
    cache_expiration=timedelta(days=7),
    persist_result=True,
)
def validate_dataset_task(
    dataset: Dataset, contract: Contract, validation: ValidationConfig, max_invalid_fraction: float | None = None
) -> ValidationResult:
    """Run the gate. Cached on the data, contract, policy and code; a failed gate is a result too, so the
    caller can record the evidence before ``apply_gate_task`` fails the run."""
    from prefect import get_run_logger

    result = validate_frame(
        dataset.raw,
        dataset.path,
        contract,
        validation.on_warning,
        validation.max_invalid_fraction if max_invalid_fraction is None else max_invalid_fraction,
    )
    report = result.report
    get_run_logger().info(
        "Gate %s: %d rows in, %d kept, %d quarantined %s, %d distinct (duplicates are dropped in preprocess)",
        report.decision,
        report.rows_in,
        report.rows_kept,
        report.rows_quarantined,
        report.quarantined_by_rule,
        report.distinct_rows,
    )
    return result


@task(name="save-validation")
def save_validation_task(
    result: ValidationResult, data_path: str, out_dir: Path, keep_rows: bool = False
) -> ValidationReport:
    """Write this run's evidence (also when the verdict came from cache, so every run folder is complete).

    The verdict is cached by content, so a cached one may carry another file's name: the report and every
    message name the file this run was given.
    """
    named = ValidationResult(replace(result.report, data_path=data_path), result.kept, result.quarantine)
    return write_validation_outputs(named, out_dir, keep_rows)


@task(name="apply-gate")
def apply_gate_task(report: ValidationReport) -> ValidationReport:
    """Publish the gate's evidence as Prefect artifacts (also when validation came from cache),
    then stop the run if a critical rule failed."""
    from prefect import get_run_logger
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_table_artifact(
        key="data-quality-expectations",
        table=expectation_table(report.outcomes),
        description=f"Data-quality gate {report.decision}: every rule of the contract, failures first, "
        "with the bound or code set it checks and the failing file lines",
    )
    used = f"{report.rows_used} of {report.rows_in} rows used" if report.passed else "the file was refused"
    create_markdown_artifact(
        key="data-quality-report",
        markdown=validation_markdown(report) + profile_markdown(report.profile, report.html_report_path),
        description=f"Data-quality gate {report.decision}: {used}",
    )
    logger = get_run_logger()
    for warning in report.warning_failures:
        logger.warning("Data-quality warning: %s", warning)
    if report.duplicate_rows:
        logger.info(
            "%d duplicate rows (%d distinct) are kept by the gate and dropped by preprocess before the split",
            report.duplicate_rows,
            report.distinct_rows,
        )
    return report.enforce()
