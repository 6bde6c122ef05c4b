"""Renderers: the text people read in Prefect artifacts, the terminal and reports.

One home for them, so wording and number formats agree wherever a result is shown. Pure
functions of plain values: no Prefect, MLflow or Great Expectations import here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from heart_pipeline.results import PromotionDecision, RuleOutcome, SubgroupResult, ValidationReport


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


def expectation_table(outcomes: Sequence[RuleOutcome]) -> list[dict[str, Any]]:
    """The Prefect table of the gate: failures first (critical, then warning), each with what the
    rule checks, what was found and the file lines."""
    from heart_pipeline.evidence.report_html import capped_lines, sorted_outcomes

    return [
        {
            "result": "pass" if o.success else "FAIL",
            "severity": o.severity,
            "rule": o.rule,
            "checks": o.checks,
            "failing rows": o.unexpected_count if not o.success else 0,
            "found": "" if o.success else o.detail,
            "lines": "" if o.success else capped_lines(o.lines, None, o.unexpected_count),
        }
        for o in sorted_outcomes(outcomes)
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
        + f"Report (open in a browser): `{report.html_report_path}`  \nQuarantined rows, with rule and value: "
        f"`{report.quarantine_path}`\n"
    )


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def promotion_markdown(decision: PromotionDecision) -> str:
    verdict = (
        "PROMOTED to @champion" if decision.promoted else f"NOT promoted ({decision.outcome}); @champion unchanged"
    )
    compared = decision.challenger_compared_metrics or decision.challenger_metrics
    rows = "\n".join(
        f"| {k} | {decision.challenger_metrics[k]:.3f} | {compared[k]:.3f} | {decision.champion_metrics[k]:.3f} |"
        if decision.champion_metrics
        else f"| {k} | {decision.challenger_metrics[k]:.3f} | - | - |"
        for k in decision.challenger_metrics
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
    shared = (
        f"{decision.rows_compared} held-out rows the champion did not train on ({decision.rows_left_out} left out)"
        if decision.rows_compared is not None
        else "the held-out rows the champion did not train on"
    )
    return (
        f"# Promotion: {decision.challenger} v{decision.challenger_version} {verdict}\n\n"
        f"Candidates tried in order of mean CV ROC-AUC on the training folds; the first to pass every floor "
        f"is compared with the champion.{comparison}\n"
        + "\n".join(f"- {r}" for r in decision.reasons)
        + f"\n\nChampion before: v{decision.champion_version_before or '-'}; "
        f"after: v{decision.champion_version_after or '-'}\n\n"
        f"| metric | challenger, today's test set | challenger, shared rows | champion, shared rows |\n"
        f"|---|---|---|---|\n{rows}\n\nShared rows: {shared}.\n"
    )


def failure_markdown(flow_name: str, run: Any, state: Any, mlflow_outcome: str) -> str:
    """``mlflow_outcome``: what this flow run left in MLflow, as found in the store (see runs.py)."""
    parameters = "\n".join(f"- `{k}` = `{v}`" for k, v in (run.parameters or {}).items()) or "- (defaults)"
    return (
        f"# {flow_name} failed\n\n"
        f"**Why:** {state.message or state.name}\n\n"
        f"Flow run `{run.name}` (`{run.id}`) ended in state **{state.name}**.\n\n"
        f"Parameters:\n{parameters}\n\n"
        f"{mlflow_outcome}\n\nNo earlier run's outputs were touched. "
        "Data-quality failures name the file, the column and the lines; fix the file and run again.\n"
    )


def _interval(metrics: Mapping[str, Any], name: str, mean_key: str | None = None) -> str:
    """'0.91 [0.83, 0.97]' from ``<name>``/``<mean_key>`` and ``<name>_ci95_low/high``."""
    value = metrics.get(mean_key or name)
    low, high = metrics.get(f"{name}_ci95_low"), metrics.get(f"{name}_ci95_high")
    if value is None:
        return "-"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]" if low is not None and high is not None else f"{value:.3f}"


def champion_headline(promotion: Mapping[str, Any]) -> str:
    """What @champion is now: 'heart-disease@champion -> random_forest v3 (was v1)'."""
    model = promotion.get("registered_model", "model")
    challenger = f"{promotion.get('challenger')} v{promotion.get('challenger_version')}"
    if promotion.get("promoted"):
        before = promotion.get("champion_version_before")
        return f"{model}@champion -> {challenger}" + (f" (was v{before})" if before else " (first champion)")
    after = promotion.get("champion_version_after")
    return f"{model}@champion " + (f"stays v{after}" if after else "not set") + f"; {challenger} not promoted"


def champion_line(promotion: Mapping[str, Any]) -> str:
    """The promotion decision and its reasons in one line."""
    return f"{champion_headline(promotion)}: " + "; ".join(promotion.get("reasons") or [])


def training_terminal_summary(result: Mapping[str, Any]) -> str:
    """What `heart-pipeline train` prints at the end: a few lines a user can act on."""
    validation = result.get("validation", {})
    v = validation
    lines = [
        f"Data: {v.get('data_path')} - gate {v.get('decision')}, {v.get('rows_in')} rows in, {v.get('rows_kept')} "
        f"kept, {v.get('rows_quarantined')} quarantined, {v.get('duplicate_rows')} duplicate(s) dropped",
        "",
        f"{'model':22} {'test ROC-AUC [95% CI]':26} {'CV ROC-AUC [95% CI]':26} {'threshold':>9}  version",
    ]
    for name, model in result.get("models", {}).items():
        metrics = model.get("metrics", {})
        lines.append(
            f"{name:22} {_interval(metrics, 'test_roc_auc'):26} "
            f"{_interval(metrics, 'cv_roc_auc', 'cv_roc_auc_mean'):26} {model.get('threshold', float('nan')):9.3f}  "
            f"v{model.get('version')}"
        )
    lines += ["", champion_line(result.get("promotion", {})), f"Run folder: {result.get('run_dir')}"]
    if result.get("validation_report"):
        lines.append(f"Validation report: {result['validation_report']}")
    if result.get("mlflow_ui_command"):
        lines.append(f"MLflow UI: {result['mlflow_ui_command']}")
    return "\n".join(lines)


def validation_terminal_summary(result: Mapping[str, Any]) -> str:
    lines = [
        f"Data-quality gate {result.get('decision')}: {result.get('data_path')} - {result.get('rows_in')} rows in, "
        f"{result.get('rows_kept')} kept, {result.get('rows_quarantined')} quarantined"
    ]
    lines += [f"  warning: {w}" for w in result.get("warning_failures", [])]
    for label, key in (("Report", "validation_report"), ("Quarantine", "quarantine_path"), ("MLflow", "mlflow_run")):
        if result.get(key):
            lines.append(f"{label}: {result[key]}")
    return "\n".join(lines)


def scoring_terminal_summary(result: Mapping[str, Any]) -> str:
    lines = [
        f"Scored {result.get('rows_scored')} of {result.get('rows_in')} patients with model version "
        f"{result.get('model_version')} ({result.get('rows_quarantined')} quarantined, not scored)",
        f"Predictions: {result.get('copied_to') or result.get('predictions_path')}",
    ]
    if result.get("quarantine_path"):
        lines.append(f"Quarantine: {result['quarantine_path']}")
    lines += [f"  warning: {w}" for w in result.get("warnings") or []]
    return "\n".join(lines)


def mlflow_ui_command(tracking_uri: str, artifact_root: str) -> str:
    """The one command that shows a store's runs with their artifacts.

    A server URI is already a UI. For a local SQLite store, ``--artifacts-destination`` points the
    UI's artifact proxy at the folder the stack's server writes to: runs made through the stack
    record ``mlflow-artifacts:/`` locations, which a UI without it shows as "No Artifacts Recorded";
    runs made by `make run` record absolute file locations, which it reads directly.
    """
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri}"
    return f".venv/bin/mlflow ui --backend-store-uri {tracking_uri} --artifacts-destination {artifact_root} --port 5000"


def training_summary_markdown(
    models: Sequence[Mapping[str, Any]], promotion: Mapping[str, Any], validation: Mapping[str, Any]
) -> str:
    """The training run's Prefect summary: the decision first, then one narrow row per model
    (fits 1600 px with the MLflow link in view; every other metric is in the MLflow run)."""
    rows = [
        f"| {m['name']} | {_interval(m['metrics'], 'test_roc_auc')} | {_interval(m['metrics'], 'test_recall')} | "
        f"{_interval(m['metrics'], 'cv_roc_auc', 'cv_roc_auc_mean')} | {m['threshold']:.3f} | "
        f"[v{m['version']}]({m.get('version_url', '')}) | [run]({m['run_url']}) |"
        for m in models
    ]
    reasons = "\n".join(f"- {markdown_cell(r)}" for r in promotion.get("reasons") or [])
    return (
        f"# heart-training: {markdown_cell(champion_headline(promotion))}\n\n{reasons}\n\n"
        "| model | test ROC-AUC [95% CI] | sensitivity [95% CI] | CV ROC-AUC [95% CI] | threshold | version "
        "| MLflow |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        f"Data `{validation.get('data_path')}`: gate {validation.get('decision')}, {validation.get('rows_in')} rows "
        f"in, {validation.get('rows_kept')} kept, {validation.get('rows_quarantined')} quarantined, "
        f"{validation.get('duplicate_rows')} duplicate rows dropped. Intervals: bootstrap on the test set, "
        "Nadeau-Bengio corrected t on the CV folds.\n"
    )


def scoring_summary_markdown(result: Mapping[str, Any]) -> str:
    """The batch-scoring run's Prefect summary: what was scored, by which model, and where it went."""
    where = [
        ("Predictions", result.get("predictions_path")),
        ("Copied to", result.get("copied_to")),
        ("Quarantined rows (not scored), with rule and value", result.get("quarantine_path")),
        ("Validation report", result.get("validation_report")),
    ]
    return (
        f"# heart-batch-scoring: {result.get('rows_scored')} of {result.get('rows_in')} patients scored\n\n"
        f"Model `{result.get('registered_model')}` version **{result.get('model_version')}** (@champion at "
        f"scoring time); {result.get('rows_quarantined')} rows quarantined by the data contract.\n\n"
        + "".join(f"- **warning**: {markdown_cell(w)}\n" for w in result.get("warnings") or [])
        + "".join(f"- {label}: `{path}`\n" for label, path in where if path)
    )


def _ci(metrics: Mapping[str, Any], name: str, digits: int = 2) -> str:
    """``0.87 [0.83, 0.92]``; ``-`` when the figure is absent or not a number."""
    value = metrics.get(name)
    if value is None or value != value:
        return "-"
    low, high = metrics.get(f"{name}_ci95_low"), metrics.get(f"{name}_ci95_high")
    if low is None or high is None or low != low:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def subgroup_markdown(rows: Sequence[SubgroupResult]) -> str:
    """The subgroup table: counts, then each figure with its interval, or why there is none."""
    lines = [
        "| subgroup | n | with disease | ROC-AUC [95% CI] | sensitivity [95% CI] | specificity [95% CI] | "
        "mean predicted / observed | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        m = row.metrics
        shares = f"{m['mean_predicted']:.2f} / {m['observed_rate']:.2f}" if row.estimable else "-"
        lines.append(
            f"| {row.attribute} {markdown_cell(row.group)} | {row.n} | {row.positives} | {_ci(m, 'roc_auc')} | "
            f"{_ci(m, 'sensitivity')} | {_ci(m, 'specificity')} | {shares} | "
            f"{markdown_cell(('**warning**: ' + row.warning) if row.warning else row.note)} |"
        )
    return "\n".join(lines) + "\n"


EXTERNAL_COLUMNS = (
    "| site | rows scored / in | disease rate | ROC-AUC [95% CI] | mean predicted | calibration slope [95% CI] "
    "| sensitivity [95% CI] | specificity [95% CI] | Brier |\n|---|---|---|---|---|---|---|---|---|"
)


def external_row(site: Mapping[str, Any]) -> str:
    m = site["metrics"]
    return (
        f"| {markdown_cell(site['site'])} | {site['n']} / {site['rows_in']} | {site['prevalence']:.2f} | "
        f"{_ci(m, 'roc_auc')} | {m['mean_predicted']:.2f} | {_ci(m, 'calibration_slope')} | "
        f"{_ci(m, 'sensitivity')} | {_ci(m, 'specificity')} | {m['brier']:.3f} |"
    )


def external_validation_markdown(result: Mapping[str, Any]) -> str:
    """The external-validation run's Prefect summary: one comparison row per site, the warnings,
    then each site's subgroup table."""
    sites = result["sites"]
    parts = [
        f"# heart-external-validation: {result['registered_model']} v{result['model_version']} on "
        f"{len(sites)} site(s)\n\n{EXTERNAL_COLUMNS}\n" + "\n".join(external_row(s) for s in sites) + "\n",
        "Intervals: stratified bootstrap, 95%. Mean predicted against the observed disease rate is "
        "calibration-in-the-large; slope 1 is perfect calibration of the spread.\n",
    ]
    for site in sites:
        warnings = "".join(f"- {markdown_cell(w)}\n" for w in site["warnings"])
        rows = [SubgroupResult(**row) if isinstance(row, Mapping) else row for row in site["subgroups"]]
        links = f"[MLflow run]({site['run_url']}), predictions `{site['predictions_path']}`"
        parts.append(f"## {markdown_cell(site['site'])}\n\n{warnings}\n{subgroup_markdown(rows)}\n{links}\n")
    return "\n".join(parts)


def external_terminal_summary(result: Mapping[str, Any]) -> str:
    """What `heart-pipeline evaluate` prints: the headline row per site and the warnings."""
    lines = [
        f"{result['registered_model']} v{result['model_version']} on {len(result['sites'])} site(s) "
        "(95% bootstrap intervals):",
        f"{'site':14} {'scored/in':>9} {'rate':>5} {'ROC-AUC':20} {'mean pred':>9} {'cal. slope':20} "
        f"{'sensitivity':20} {'specificity':20}",
    ]
    for s in result["sites"]:
        m = s["metrics"]
        lines.append(
            f"{s['site'][:14]:14} {str(s['n']) + '/' + str(s['rows_in']):>9} {s['prevalence']:5.2f} "
            f"{_ci(m, 'roc_auc'):20} {m['mean_predicted']:9.2f} {_ci(m, 'calibration_slope'):20} "
            f"{_ci(m, 'sensitivity'):20} {_ci(m, 'specificity'):20}"
        )
    for s in result["sites"]:
        groups = [row for row in s["subgroups"] if row["warning"]]
        site_wide = [w for w in s["warnings"] if not any(w == row["warning"] for row in groups)]
        lines += [f"  {s['site']}: {w}" for w in site_wide]
        if groups:
            shown = ", ".join(f"{row['attribute']} {row['group']}" for row in groups)
            lines.append(f"  {s['site']}: sensitivity below the promotion floor in subgroups {shown} (subgroups.md)")
    lines.append(f"Run folder: {result['run_dir']} (per site: predictions.csv, plots, subgroups.md)")
    return "\n".join(lines)
