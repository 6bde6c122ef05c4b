"""Renderers: the text people read in Prefect artifacts, the terminal and reports.

One home for them, so wording and number formats agree wherever a result is shown. Pure
functions of plain values: no Prefect, MLflow or Great Expectations import here.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from heart_pipeline.results import ColumnProfile, PromotionDecision, RuleOutcome, SubgroupResult, ValidationReport


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
    return _meaning_check(expectation, kwargs)


def _meaning_check(expectation: str, kwargs: Mapping[str, Any]) -> str:
    """The checks of the file as a whole: recorded, varying, like the reference, coded and labelled our way."""
    if expectation == "expect_column_proportion_of_non_null_values_to_be_between":
        return f"recorded in at least {float(kwargs.get('min_value') or 0):.0%} of rows"
    if expectation == "expect_column_unique_value_count_to_be_between":
        return f"at least {kwargs.get('min_value')} distinct values (not a placeholder)"
    if expectation == "expect_column_value_shares_to_match_reference":
        within = kwargs.get("max_difference")
        return "value shares like the reference profile's" + (
            f" (within {float(within):.0%}, or not significantly different)" if within is not None else ""
        )
    if expectation == "expect_target_to_agree_with_disease_markers":
        markers = ", ".join(str(m.get("column")) for m in kwargs.get("markers") or [])
        limit = kwargs.get("min_reversed")
        return f"target rises with the disease markers ({markers})" + (
            f"; fewer than {limit} significantly reversed" if limit is not None else ""
        )
    if expectation == "expect_coded_columns_to_fit_the_project_coding":
        return f"codes of {_values(kwargs.get('columns', []))} fit the project's coding better than a foreign one"
    return ""


# Markdown punctuation that can start a link, an image, emphasis, code, a table cell or an autolink
# (``://``, ``www.``, ``user@host``): each is backslash-escaped, which renders as the character itself.
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+!|~:@.-])")


def markdown_text(value: Any) -> str:
    """File- or cell-derived text as inert markdown: one line, HTML escaped (``<img onerror>`` shows as
    text), every markdown punctuation mark escaped (``[x](y)`` shows as text, a pipe cannot end a table
    cell, a URL is not linked). The one escape for text that did not come from this project's code."""
    flat = html.escape(" ".join(str(value).split()), quote=False)
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", flat)


def markdown_cell(value: Any) -> str:
    """A value inside a markdown table cell (the same escape as ``markdown_text``)."""
    return markdown_text(value)


def number(value: Any, digits: int = 3) -> str:
    """A metric as text: '-' when it is missing, not a number, NaN or infinite."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


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


def profile_markdown(profile: Sequence[ColumnProfile], report_path: str | None) -> str:
    """The file column by column, for the Prefect UI (which cannot open a file from the run folder)."""
    rows = "\n".join(
        f"| {markdown_cell(p.column)} | {markdown_cell(p.observed)} | {p.missing} ({p.missing_share:.0%}) | "
        f"{markdown_cell(p.allowed)} | {p.outside} |"
        for p in profile
    )
    where = f"\n\nThe whole report (one page, opens offline): {markdown_text(report_path)}\n" if report_path else ""
    if not rows:
        return where
    return (
        "\n\n## What the file holds\n\n| column | observed | missing | contract allows | outside |\n"
        f"|---|---|---|---|---|\n{rows}{where}"
    )


def validation_markdown(report: ValidationReport) -> str:
    """The gate's Prefect artifact; every file-derived text (path, rules, values, reasons) is escaped."""
    by_rule = "\n".join(
        f"| {markdown_cell(rule)} | {count} |" for rule, count in sorted(report.quarantined_by_rule.items())
    )
    failures = (
        "\n".join(f"- **critical**: {markdown_text(c)}" for c in report.critical_failures) or "- no critical failures"
    )
    warnings = "\n".join(f"- warning: {markdown_text(w)}" for w in report.warning_failures)
    return (
        f"# Data-quality gate: {markdown_text(report.decision)}\n\n"
        f"File {markdown_text(report.data_path)} (sha256 {markdown_text(report.fingerprint[:12])})\n\n"
        f"| rows in | rows kept | rows quarantined | distinct rows | duplicate rows (dropped before split) "
        f"| disease share in / kept |\n|---|---|---|---|---|---|\n| {report.rows_in} | {report.rows_used} | "
        f"{report.rows_quarantined} | {report.distinct_rows} | {report.duplicate_rows} | "
        f"{_share(report.disease_share_in)} / {_share(report.disease_share_kept)} |\n\n"
        f"{failures}\n{warnings}\n\n"
        + (f"| quarantined by rule | rows |\n|---|---|\n{by_rule}\n\n" if by_rule else "")
        + f"Report (open in a browser): {markdown_text(report.html_report_path)}  \nQuarantined rows, with rule and "
        f"value: {markdown_text(report.quarantine_path)}\n"
    )


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def metric_rows(decision: PromotionDecision) -> list[str]:
    """One table row per metric either side has: '-' where a side lacks it (an older champion, a
    comparison that was not made) or where it is not a number."""
    compared = decision.challenger_compared_metrics or {}
    champion = decision.champion_metrics or {}
    keys = list(dict.fromkeys([*decision.challenger_metrics, *compared, *champion]))
    return [
        f"| {markdown_cell(k)} | {number(decision.challenger_metrics.get(k))} | {number(compared.get(k))} "
        f"| {number(champion.get(k))} |"
        for k in keys
    ]


def paired_comparison_text(decision: PromotionDecision) -> str:
    c = decision.comparison
    if c is None:
        return ""
    significant = c.p_value < decision.alpha if math.isfinite(c.p_value) else False
    return (
        f"\nOn the same repeated CV folds, {markdown_text(c.better)} beats {markdown_text(c.worse)} by "
        f"{number(c.mean_difference)} ROC-AUC (corrected resampled t-test p = {number(c.p_value)}"
        + ("" if significant else f"; not a significant difference at alpha {number(decision.alpha, 2)}")
        + ").\n"
    )


def promotion_markdown(decision: PromotionDecision) -> str:
    """The promotion's Prefect artifact. Total: any metric set on either side, NaN, no comparison."""
    verdict = (
        "PROMOTED to @champion"
        if decision.promoted
        else f"NOT promoted ({markdown_text(decision.outcome)}); @champion unchanged"
    )
    tie = f"\n**Tie:** {markdown_text(decision.tie)}\n" if decision.tie else ""
    shared = (
        f"{decision.rows_compared} held-out rows the champion did not train on ({decision.rows_left_out} left out)"
        if decision.rows_compared is not None
        else "the held-out rows the champion did not train on"
    )
    return (
        f"# Promotion: {markdown_text(decision.challenger)} v{markdown_text(decision.challenger_version)} {verdict}\n\n"
        f"Candidates tried in order of mean CV ROC-AUC on the training folds (a tie is broken by the configured "
        f"rule); the first to pass every floor is compared with the champion.{paired_comparison_text(decision)}{tie}\n"
        + "\n".join(f"- {markdown_text(r)}" for r in decision.reasons)
        + f"\n\nChampion before: v{markdown_text(decision.champion_version_before or '-')}; "
        f"after: v{markdown_text(decision.champion_version_after or '-')}\n\n"
        f"| metric | challenger, today's test set | challenger, shared rows | champion, shared rows |\n"
        f"|---|---|---|---|\n" + "\n".join(metric_rows(decision)) + f"\n\nShared rows: {shared}.\n"
    )


def failure_markdown(flow_name: str, run: Any, state: Any, mlflow_outcome: str) -> str:
    """``mlflow_outcome``: what this flow run left in MLflow, as found in the store (see runs.py). The
    state's message and the parameters may quote a file's cells or paths: escaped."""
    parameters = (
        "\n".join(f"- {markdown_text(k)} = {markdown_text(v)}" for k, v in (run.parameters or {}).items())
        or "- (defaults)"
    )
    return (
        f"# {markdown_text(flow_name)} failed\n\n"
        f"**Why:** {markdown_text(state.message or state.name)}\n\n"
        f"Flow run {markdown_text(run.name)} ({markdown_text(run.id)}) ended in state "
        f"**{markdown_text(state.name)}**.\n\n"
        f"Parameters:\n{parameters}\n\n"
        f"{mlflow_outcome}\n\nNo earlier run's outputs were touched. "
        "Data-quality failures name the file, the column and the lines; fix the file and run again.\n"
    )


METRIC_WORDS = {
    "test_roc_auc": "ROC-AUC",
    "test_recall": "sensitivity (recall)",
    "test_precision": "PPV (precision)",
    "test_accuracy": "accuracy",
    "test_f1": "F1",
    "test_log_loss": "log loss",
}


def metrics_table_markdown(metrics: Mapping[str, Any]) -> str:
    """A model's held-out and CV figures with their 95% intervals, as a markdown table."""
    rows = [f"| {words} | {_interval(metrics, key)} |" for key, words in METRIC_WORDS.items() if key in metrics]
    for name in ("roc_auc", "accuracy", "log_loss"):
        if f"cv_{name}_mean" in metrics:
            value = _interval(metrics, f"cv_{name}", f"cv_{name}_mean")
            rows.append(f"| CV {name.replace('_', ' ')} (training folds) | {value} |")
    return "| metric | value [95% CI] |\n|---|---|\n" + "\n".join(rows)


def _interval(metrics: Mapping[str, Any], name: str, mean_key: str | None = None) -> str:
    """'0.91 [0.83, 0.97]' from ``<name>``/``<mean_key>`` and ``<name>_ci95_low/high``; '-' for what is
    missing or not a number."""
    value = number(metrics.get(mean_key or name))
    low, high = number(metrics.get(f"{name}_ci95_low")), number(metrics.get(f"{name}_ci95_high"))
    if value == "-" or low == "-" or high == "-":
        return value
    return f"{value} [{low}, {high}]"


def champion_headline(promotion: Mapping[str, Any]) -> str:
    """What @champion is now: 'heart-disease@champion -> random_forest v3 (was v1)', and, when the two
    candidates tied on CV, which rule chose: '; CV tie broken by higher_sensitivity'."""
    model = promotion.get("registered_model", "model")
    challenger = f"{promotion.get('challenger')} v{promotion.get('challenger_version')}"
    tie = f"; CV tie broken by {promotion['tie_rule']}" if promotion.get("tie") and promotion.get("tie_rule") else ""
    if promotion.get("promoted"):
        before = promotion.get("champion_version_before")
        return f"{model}@champion -> {challenger}" + (f" (was v{before})" if before else " (first champion)") + tie
    after = promotion.get("champion_version_after")
    return f"{model}@champion " + (f"stays v{after}" if after else "not set") + f"; {challenger} not promoted" + tie


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
            f"{_interval(metrics, 'cv_roc_auc', 'cv_roc_auc_mean'):26} {number(model.get('threshold')):>9}  "
            f"v{model.get('version')}"
        )
    lines += ["", champion_line(result.get("promotion", {})), f"Run folder: {result.get('run_dir')}"]
    labels = {
        "validation_report": "Validation report",
        "mlflow_ui_command": "MLflow UI",
        "mlflow_experiment_url": "  runs",
        "mlflow_compare_url": "  compare",
    }
    return "\n".join(lines + labelled_lines(result, labels))


def labelled_lines(result: Mapping[str, Any], labels: Mapping[str, str]) -> list[str]:
    """'Label: value' for each key of ``labels`` that the result has, in that order."""
    return [f"{label}: {result[key]}" for key, label in labels.items() if result.get(key)]


def validation_terminal_summary(result: Mapping[str, Any]) -> str:
    lines = [
        f"Data-quality gate {result.get('decision')}: {result.get('data_path')} - {result.get('rows_in')} rows in, "
        f"{result.get('rows_kept')} kept, {result.get('rows_quarantined')} quarantined"
    ]
    lines += [f"  warning: {w}" for w in result.get("warning_failures", [])]
    labels = {"validation_report": "Report", "quarantine_path": "Quarantine", "mlflow_run": "MLflow"}
    return "\n".join(lines + labelled_lines(result, labels))


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
    models: Sequence[Mapping[str, Any]],
    promotion: Mapping[str, Any],
    validation: Mapping[str, Any],
    links: Mapping[str, str | None] | None = None,
) -> str:
    """The training run's Prefect summary: the decision first, then one narrow row per model
    (fits 1600 px with the MLflow link in view; every other metric is in the MLflow run). Total: a
    model row may lack any metric, and the promotion may be empty."""
    rows = [
        f"| {markdown_cell(m.get('name'))} | {_interval(m.get('metrics') or {}, 'test_roc_auc')} | "
        f"{_interval(m.get('metrics') or {}, 'test_recall')} | "
        f"{_interval(m.get('metrics') or {}, 'cv_roc_auc', 'cv_roc_auc_mean')} | {number(m.get('threshold'))} | "
        f"[v{markdown_text(m.get('version'))}]({m.get('version_url', '')}) | [run]({m.get('run_url', '')}) · "
        f"[model card]({m.get('model_card_url', '')}) |"
        for m in models
    ]
    reasons = "\n".join(f"- {markdown_text(r)}" for r in promotion.get("reasons") or [])
    tie = f"\n\n**Tie:** {markdown_text(promotion['tie'])}" if promotion.get("tie") else ""
    v = validation
    return (
        f"# heart-training: {markdown_text(champion_headline(promotion))}\n\n{reasons}{tie}\n\n"
        "| model | test ROC-AUC [95% CI] | sensitivity [95% CI] | CV ROC-AUC [95% CI] | threshold | version "
        "| MLflow |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        f"Data {markdown_text(v.get('data_path'))}: gate {markdown_text(v.get('decision'))}, {v.get('rows_in')} rows "
        f"in, {v.get('rows_kept')} kept, {v.get('rows_quarantined')} quarantined, "
        f"{v.get('duplicate_rows')} duplicate rows dropped. Intervals: bootstrap on the test set, "
        "Nadeau-Bengio corrected t on the CV folds.\n" + _mlflow_links(links or {})
    )


def _mlflow_links(links: Mapping[str, str | None]) -> str:
    """Links into MLflow's classic view: the runs table, and these runs compared plot by plot."""
    shown = [
        f"[{label}]({links[key]})"
        for label, key in (
            ("All runs in MLflow", "mlflow_experiment_url"),
            ("Compare these runs", "mlflow_compare_url"),
        )
        if links.get(key)
    ]
    return ("\n" + " · ".join(shown) + "\n") if shown else ""


def scoring_summary_markdown(result: Mapping[str, Any]) -> str:
    """The batch-scoring run's Prefect summary: what was scored, by which model, and where it went."""
    where = [
        ("Predictions", result.get("predictions_path")),
        ("Copied to", result.get("copied_to")),
        ("Quarantined rows (not scored), with rule and value", result.get("quarantine_path")),
        ("Validation report", result.get("validation_report")),
        ("Monitoring", result.get("monitoring")),
    ]
    return (
        f"# heart-batch-scoring: {result.get('rows_scored')} of {result.get('rows_in')} patients scored\n\n"
        f"Model {markdown_text(result.get('registered_model'))} version "
        f"**{markdown_text(result.get('model_version'))}** (@champion at "
        f"scoring time); {result.get('rows_quarantined')} rows quarantined by the data contract.\n\n"
        + "".join(f"- **warning**: {markdown_text(w)}\n" for w in result.get("warnings") or [])
        + "".join(f"- {label}: {markdown_text(path)}\n" for label, path in where if path)
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


def external_validation_headline(result: Mapping[str, Any]) -> str:
    """One line for the run's artifact description (what GET /runs/{id} reports): per site, rows scored
    and the discrimination and operating-point figures with their intervals."""
    sites = "; ".join(
        f"{s['site']}: n={s['n']}/{s['rows_in']}, ROC-AUC {_ci(s['metrics'], 'roc_auc')}, "
        f"sensitivity {_ci(s['metrics'], 'sensitivity')}, specificity {_ci(s['metrics'], 'specificity')}, "
        f"calibration slope {_ci(s['metrics'], 'calibration_slope')}"
        for s in result["sites"]
    )
    return f"{result['registered_model']} v{result['model_version']} on {len(result['sites'])} site(s): {sites}"


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
