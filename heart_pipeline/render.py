"""Renderers: the text people read in Prefect artifacts, the terminal and reports.

One home for them, so wording and number formats agree wherever a result is shown. Pure
functions of plain values: no Prefect, MLflow or Great Expectations import here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from heart_pipeline.results import Evaluation, PromotionDecision, TrackedModel, ValidationReport


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
        f"| rows in | rows kept | rows quarantined | distinct rows | duplicate rows (dropped before split) "
        f"| disease share in / kept |\n|---|---|---|---|---|---|\n| {report.rows_in} | {report.rows_kept} | "
        f"{report.rows_quarantined} | {report.distinct_rows} | {report.duplicate_rows} | "
        f"{_share(report.disease_share_in)} / {_share(report.disease_share_kept)} |\n\n"
        f"{failures}\n{warnings}\n\n"
        + (f"| quarantined by rule | rows |\n|---|---|\n{by_rule}\n\n" if by_rule else "")
        + f"Quarantine: `{report.quarantine_path}`  \nReport: `{report.report_path}`\n"
    )


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def training_summary_markdown(
    tracked: list[TrackedModel], evaluations: list[Evaluation], report: ValidationReport, tracking_uri: str
) -> str:
    rows = []
    for t, e in zip(tracked, evaluations, strict=True):
        m = e.metrics
        rows.append(
            f"| {t.name} | {m['test_roc_auc']:.3f} | {m['test_accuracy']:.3f} | {m['test_f1']:.3f} | "
            f"{m['test_precision']:.3f} | {m['test_recall']:.3f} | {m['test_log_loss']:.3f} | "
            f"{m['cv_roc_auc_mean']:.3f} [{m['cv_roc_auc_ci95_low']:.3f}, {m['cv_roc_auc_ci95_high']:.3f}] | "
            f"{e.threshold:.3f} | `{t.registered_model}` v{t.version} | [run]({t.ui_url}) |"
        )
    return (
        "# heart-training results\n\n"
        f"Data `{report.data_path}`: {report.rows_in} rows in, {report.rows_kept} kept, "
        f"{report.rows_quarantined} quarantined, {report.duplicate_rows} duplicate rows.\n\n"
        "| model | test ROC-AUC | accuracy | F1 | precision | recall | log loss | CV ROC-AUC [95% CI] | threshold "
        "| registered | MLflow |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n\n"
        + "".join(f"Threshold of {e.name}: {e.threshold_note}.\n\n" for e in evaluations)
        + f"Tracking store: `{tracking_uri}`.\n"
    )


def promotion_markdown(decision: PromotionDecision) -> str:
    verdict = "PROMOTED to @champion" if decision.promoted else "NOT promoted; @champion unchanged"
    rows = "\n".join(
        f"| {k} | {v:.3f} | {decision.champion_metrics[k]:.3f} |"
        if decision.champion_metrics
        else f"| {k} | {v:.3f} | - |"
        for k, v in decision.challenger_metrics.items()
    )
    comparison = ""
    if decision.comparison:
        c = decision.comparison
        comparison = (
            f"\nOn the same repeated CV folds, {c.better} beats {c.worse} by {c.mean_difference:.3f} ROC-AUC "
            f"(corrected resampled t-test p = {c.p_value:.3f}"
            + ("; not a significant difference)" if c.p_value >= 0.05 else ")")
            + ".\n"
        )
    return (
        f"# Promotion: {decision.challenger} v{decision.challenger_version} {verdict}\n\n"
        f"Challenger chosen by mean CV ROC-AUC on the training folds.{comparison}\n"
        + "\n".join(f"- {r}" for r in decision.reasons)
        + f"\n\nChampion before: v{decision.champion_version_before or '-'}; "
        f"after: v{decision.champion_version_after or '-'}\n\n"
        f"| metric (today's test set) | challenger | champion |\n|---|---|---|\n{rows}\n"
    )


def failure_markdown(flow_name: str, run: Any, state: Any) -> str:
    parameters = "\n".join(f"- `{k}` = `{v}`" for k, v in (run.parameters or {}).items()) or "- (defaults)"
    return (
        f"# {flow_name} failed\n\n"
        f"**Why:** {state.message or state.name}\n\n"
        f"Flow run `{run.name}` (`{run.id}`) ended in state **{state.name}**.\n\n"
        f"Parameters:\n{parameters}\n\n"
        "Nothing was registered in MLflow and no earlier run's outputs were touched. "
        "Data-quality failures name the file, the column and the lines; fix the file and run again.\n"
    )
