"""The validation report as ONE self-contained HTML file: what a user opens to see why a file passed,
was quarantined or was refused.

It replaces Great Expectations' Data Docs as the thing people open: those load jQuery, Bootstrap,
Vega and Font Awesome from six outside hosts and a logo from GX's servers, so offline they render
unstyled; they also say "Failed" for a file the pipeline accepted. This page has inline CSS, no
script, no image and no link to any other host, so it reads the same from a run folder, an MLflow
artifact view or an e-mail attachment. Every value is HTML-escaped: cells hold text from the
user's file.

Pure: takes the report and returns a string; the validate step writes it next to its other outputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path

from heart_pipeline.results import ColumnProfile, RuleOutcome, ValidationReport

REPORT_FILE_NAME = "report.html"
MAX_LINES_SHOWN = 20
DECISION_WORDS = {
    "passed": "Passed: every rule holds; the file was used as is.",
    "quarantined": "Quarantined: rows that break warning rules were set aside; the rest was used.",
    "failed": "Failed: a critical rule does not hold; the file was refused and nothing was trained on it.",
}
SEVERITY_ORDER = {"critical": 0, "warning": 1}

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1500px;
padding:0 16px;color:#1d2430;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px}
.banner{border-radius:6px;padding:14px 18px;margin:12px 0 18px;font-size:17px;border:1px solid}
.passed{background:#e7f6ec;border-color:#2e7d46;color:#1b5e30}
.quarantined{background:#fff6e0;border-color:#b7791f;color:#7a4b00}
.failed{background:#fdecec;border-color:#c62828;color:#8e1c1c}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:0}
dl.facts dt{color:#5a6473}dl.facts dd{margin:0;font-family:ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{border-bottom:1px solid #dde2e8;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f8;position:sticky;top:0}
tr.fail-critical td{background:#fdecec}tr.fail-warning td{background:#fff6e0}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td:last-child{min-width:11em}
.tag{display:inline-block;border-radius:4px;padding:1px 6px;font-size:12px;font-weight:600}
.tag.critical{background:#c62828;color:#fff}.tag.warning{background:#b7791f;color:#fff}
.tag.pass{background:#2e7d46;color:#fff}.tag.fail{background:#1d2430;color:#fff}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px}
.why{color:#5a6473;font-size:13px}.muted{color:#5a6473}
ul.reasons li{margin:4px 0}
"""


def report_html_path(validation_dir: Path) -> Path:
    """Where the validate step writes the page inside a run's ``validation/`` folder."""
    return validation_dir / REPORT_FILE_NAME


def sorted_outcomes(outcomes: Iterable[RuleOutcome]) -> list[RuleOutcome]:
    """Failures first (critical before warning, most failing rows first), then passes in contract order."""
    indexed = list(enumerate(outcomes))
    indexed.sort(
        key=lambda item: (
            item[1].success,
            SEVERITY_ORDER.get(item[1].severity, 2),
            -item[1].unexpected_count,
            item[0],
        )
    )
    return [outcome for _, outcome in indexed]


def capped_lines(
    lines: Sequence[int], where_full_list: str | None, total: int | None = None, limit: int = MAX_LINES_SHOWN
) -> str:
    """'12, 40, 41' or '12, 40 +7 more; full list in quarantine.csv' (plain text, not escaped).

    ``total`` is the number of failing rows when ``lines`` holds only the first of them."""
    if not lines:
        return ""
    shown = ", ".join(str(n) for n in lines[:limit])
    more = max(len(lines), total or 0) - min(len(lines), limit)
    if more <= 0:
        return shown
    return f"{shown} +{more} more" + (f"; full list in {where_full_list}" if where_full_list else "")


def _row(outcome: RuleOutcome, quarantine_file: str | None) -> str:
    state = "pass" if outcome.success else "fail"
    row_class = "" if outcome.success else f' class="fail-{escape(outcome.severity)}"'
    failing = "" if outcome.success else str(outcome.unexpected_count or len(outcome.lines))
    cells = [
        f'<span class="tag {state}">{state.upper()}</span>',
        f'<span class="tag {escape(outcome.severity)}">{escape(outcome.severity)}</span>',
        f"<code>{escape(outcome.rule)}</code>",
        escape(outcome.checks),
        f'{escape(outcome.detail)}<div class="why">{escape(outcome.why)}</div>',
        failing,
        # Rows of warning rules are all in quarantine.csv; a critical failure refuses the whole file.
        escape(
            capped_lines(
                outcome.lines, quarantine_file if outcome.severity == "warning" else None, outcome.unexpected_count
            )
        )
        if not outcome.success
        else "",
    ]
    classes = ["", "", "", "", "", ' class="num"', ""]
    return f"<tr{row_class}>" + "".join(f"<td{c}>{v}</td>" for c, v in zip(classes, cells, strict=True)) + "</tr>"


def _passing_family_row(family: list[RuleOutcome]) -> str:
    """One row for every column that passes the same rule: the page lists each reason once."""
    first = family[0]
    checks = {o.checks for o in family}
    if len(checks) == 1:
        columns = ", ".join(o.column or "(table)" for o in family)
        what = f'{escape(first.checks)}<div class="why">{escape(columns)}</div>'
    else:
        what = "<br>".join(f"<code>{escape(o.column or '')}</code> {escape(o.checks)}" for o in family)
    cells = [
        '<span class="tag pass">PASS</span>',
        f'<span class="tag {escape(first.severity)}">{escape(first.severity)}</span>',
        f"<code>{escape(first.expectation)}</code> ({len(family)})",
        what,
        f'<div class="why">{escape(first.why)}</div>',
        "",
        "",
    ]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def rule_rows(outcomes: list[RuleOutcome], quarantine_file: str | None) -> str:
    """Failing rules one by one, then passing rules grouped by kind (in contract order)."""
    failing = [_row(o, quarantine_file) for o in outcomes if not o.success]
    families: dict[tuple[str, str], list[RuleOutcome]] = {}
    for outcome in outcomes:
        if outcome.success:
            families.setdefault((outcome.expectation, outcome.severity), []).append(outcome)
    return "\n".join([*failing, *(_passing_family_row(f) for f in families.values())])


def profile_table(profile: Sequence[ColumnProfile]) -> str:
    """What each column holds against what the contract allows and what the reference holds."""
    if not profile:
        return ""
    rows = []
    for p in profile:
        flag = ' class="fail-warning"' if p.outside or p.missing_share > 0.5 else ""
        missing = f"{p.missing} ({p.missing_share:.0%})" if p.missing else "0"
        rows.append(
            f"<tr{flag}><td><code>{escape(p.column)}</code></td><td>{escape(p.observed)}</td>"
            f'<td class="num">{escape(missing)}</td><td>{escape(p.allowed)}</td><td class="num">{p.outside}</td>'
            f'<td class="why">{escape(p.reference)}</td></tr>'
        )
    return (
        "<h2>What the file holds</h2>"
        '<p class="muted">Per column: the values found (codes with their counts, or the range), missing values, '
        "what the contract allows and how many recorded values fall outside it, and the reference profile's shares "
        "(the bundled data) for comparison.</p>\n"
        "<table><thead><tr><th>column</th><th>observed</th><th>missing</th><th>contract allows</th>"
        "<th>outside</th><th>reference shares</th></tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table>\n"
    )


def render_validation_html(report: ValidationReport, generated_at: str = "") -> str:
    """The whole page: decision, counts, reasons, then every rule, failures first."""
    decision = report.decision if report.decision in DECISION_WORDS else "failed"
    quarantine_file = Path(report.quarantine_path).name if report.quarantine_path else None
    outcomes = sorted_outcomes(report.outcomes)
    n_failed = sum(not o.success for o in outcomes)
    reasons = [("critical", r) for r in report.critical_failures] + [("warning", w) for w in report.warning_failures]
    reason_items = "".join(f'<li><span class="tag {kind}">{kind}</span> {escape(text)}</li>' for kind, text in reasons)
    facts = {
        "File": report.data_path,
        "SHA-256": report.fingerprint,
        "Rows in the file": report.rows_in,
        "Rows kept": report.rows_kept
        if report.passed
        else f"none: the file was refused ({report.rows_kept} rows pass the row-level rules)",
        "Rows quarantined": f"{report.rows_quarantined}"
        + (f" (listed with rule and value in {Path(report.quarantine_path).name})" if report.quarantine_path else ""),
        "Exact duplicate rows": f"{report.duplicate_rows}"
        + (
            f" (lines {capped_lines(report.duplicate_lines, None, report.duplicate_rows)}; "
            "the first copy is kept, the others are dropped before the split)"
            if report.duplicate_lines
            else ""
        ),
        "Rules checked": f"{len(outcomes)}, {n_failed} failing",
    }
    if generated_at:
        facts["Checked at"] = generated_at
    fact_items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in facts.items())
    rows = rule_rows(outcomes, quarantine_file)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # No outside requests of any kind, even if a value slipped through unescaped.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>Data-quality gate: {escape(decision)} - {escape(Path(report.data_path).name)}</title>"
        f"<style>{CSS}</style></head><body>\n"
        f"<h1>Data-quality gate: {escape(decision)}</h1>"
        f'<div class="muted">{escape(report.data_path)}</div>'
        f'<div class="banner {decision}">{escape(DECISION_WORDS[decision])}</div>\n'
        f'<dl class="facts">{fact_items}</dl>\n'
        + (f'<h2>Why</h2><ul class="reasons">{reason_items}</ul>\n' if reasons else "")
        + profile_table(report.profile)
        + "<h2>Every rule of the data contract</h2>"
        '<p class="muted">Failing rules first, one by one; then passing rules, one row per kind with the columns '
        "it covers. Line numbers are lines of the file (line 1 is the header). "
        "Critical rules refuse the file; warning rules set the offending rows aside.</p>\n"
        "<table><thead><tr><th>result</th><th>severity</th><th>rule</th><th>checks</th>"
        "<th>what was found / why the rule exists</th><th>failing rows</th><th>lines</th></tr></thead>"
        f"<tbody>\n{rows}\n</tbody></table>\n</body></html>\n"
    )
