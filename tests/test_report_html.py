"""The self-contained validation report: no outside host, escaped cells, failures first, decision words."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse

import pytest

from heart_pipeline.evidence.render import rule_check
from heart_pipeline.evidence.report_html import capped_lines, render_validation_html, sorted_outcomes
from heart_pipeline.results import RuleOutcome, ValidationReport

HOSTILE = '<script src="https://evil.example/x.js"></script><img src=//cdn.example/p.png>'


class References(HTMLParser):
    """Every URL-bearing attribute and every tag, as a browser would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "action", "srcset", "poster", "data") and value is not None:
                self.urls.append(value)


def parse(html: str) -> References:
    parser = References()
    parser.feed(html)
    return parser


def outcome(
    rule: str, success: bool, severity: str = "warning", lines: list[int] | None = None, detail: str = "", **kwargs
):
    lines = lines or []
    expectation = rule.split("(")[0]
    checks = rule_check(expectation, kwargs)
    return RuleOutcome(rule, expectation, None, severity, success, len(lines), lines, detail, "why " + rule, checks)


def report(decision: str, outcomes: list[RuleOutcome], quarantine: str | None = None) -> ValidationReport:
    return ValidationReport(
        data_path="/data/heart.csv",
        fingerprint="ab" * 32,
        rows_in=303,
        rows_kept=301,
        rows_quarantined=2,
        quarantined_by_rule={},
        duplicate_rows=1,
        duplicate_lines=[166],
        decision=decision,
        critical_failures=[HOSTILE] if decision == "failed" else [],
        warning_failures=["column 'thal' not in [1, 2, 3]: [0] at lines 50, 283"],
        outcomes=outcomes,
        quarantine_path=quarantine,
    )


def test_no_outside_host_and_every_cell_escaped():
    outcomes = [
        outcome("expect_column_values_to_be_in_set(thal)", False, lines=[50, 283], detail=HOSTILE),
        outcome("expect_column_values_to_not_be_null(age)", True),
    ]
    html = render_validation_html(report("failed", outcomes))
    refs = parse(html)
    outside = [u for u in refs.urls if urlparse(u).netloc or urlparse(u).scheme not in ("", "data")]
    assert outside == [], outside
    assert refs.urls == []  # nothing to fetch at all: no logo, no font, no stylesheet link
    assert "script" not in refs.tags and "img" not in refs.tags and "link" not in refs.tags
    assert "&lt;script src=&quot;https://evil.example/x.js&quot;&gt;" in html
    assert "@import" not in html and "url(" not in html


def test_failures_first_with_their_bound_and_capped_lines():
    many = list(range(2, 40))
    outcomes = [
        outcome("expect_column_values_to_not_be_null(age)", True),
        outcome("expect_column_values_to_be_between(chol)", False, lines=many, min_value=100, max_value=600),
        outcome("expect_column_values_to_be_in_set(target)", False, "critical", [7], value_set=[0, 1]),
    ]
    ordered = sorted_outcomes(outcomes)
    assert [o.rule for o in ordered] == [
        "expect_column_values_to_be_in_set(target)",
        "expect_column_values_to_be_between(chol)",
        "expect_column_values_to_not_be_null(age)",
    ]
    html = render_validation_html(report("quarantined", outcomes, "/runs/x/validation/quarantine.csv"))
    body = html.split("<tbody>")[1]
    # failures one by one, then the passing rules grouped by kind
    assert body.index("in_set(target)") < body.index("between(chol)") < body.index("to_not_be_null</code> (1)")
    assert "between 100 and 600" in body and "one of 0, 1" in body
    assert "+18 more; full list in quarantine.csv" in body
    assert capped_lines([1, 2, 3], "x.csv", limit=2) == "1, 2 +1 more; full list in x.csv"


@pytest.mark.parametrize("decision", ["passed", "quarantined", "failed"])
def test_status_agrees_with_the_pipeline_decision(decision):
    html = render_validation_html(report(decision, [outcome("expect_column_values_to_not_be_null(age)", True)]))
    assert f"<h1>Data-quality gate: {decision}</h1>" in html
    assert f'class="banner {decision}"' in html
    other = {"passed", "quarantined", "failed"} - {decision}
    assert not any(f"gate: {word}" in html for word in other)
    assert ("none: the file was refused" in html) == (decision == "failed")


def test_report_path_is_in_the_validation_folder(tmp_path: Path):
    from heart_pipeline.evidence.report_html import report_html_path

    assert report_html_path(tmp_path / "validation") == tmp_path / "validation" / "report.html"


def test_passing_rules_are_grouped_and_each_reason_shown_once():
    columns = ["age", "sex", "cp", "chol", "thal"]
    outcomes = [
        RuleOutcome(
            f"expect_column_values_to_not_be_null({c})",
            "expect_column_values_to_not_be_null",
            c,
            "warning",
            True,
            0,
            [],
            "",
            "A missing value cannot be scored.",
            "no missing value",
        )
        for c in columns
    ]
    html = render_validation_html(report("passed", outcomes))
    body = html.split("<tbody>")[-1]
    assert body.count("<tr") == 1 and body.count("A missing value cannot be scored.") == 1
    assert "age, sex, cp, chol, thal" in body


def test_every_rule_of_the_contract_says_what_it_checks():
    from heart_pipeline.config import load_settings_and_contract

    _, contract = load_settings_and_contract(None)
    empty = sorted({r.type for r in contract.rules if not rule_check(r.type, r.kwargs)})
    assert empty == []


def test_the_report_leads_with_what_each_column_holds(clean_frame):
    from dataclasses import replace

    from heart_pipeline.config import load_settings_and_contract
    from heart_pipeline.data_contract.profile import column_profiles

    _, contract = load_settings_and_contract(None)
    frame = clean_frame.copy()
    frame.loc[frame.index[:3], "chol"] = 900.0  # outside the contract's bound
    frame.loc[frame.index[3:5], "ca"] = None
    profile = {p.column: p for p in column_profiles(frame, contract, contract.reference)}
    assert profile["chol"].outside == 3 and "900" in profile["chol"].observed
    assert (
        profile["ca"].missing == 2
        and profile["ca"].codes
        and profile["sex"].codes == {"0": int((frame["sex"] == 0).sum()), "1": int((frame["sex"] == 1).sum())}
    )
    assert profile["chol"].allowed.startswith("between ") and profile["sex"].allowed == "one of 0, 1"
    html = render_validation_html(replace(report("quarantined", []), profile=list(profile.values())))
    assert html.index("What the file holds") < html.index("Every rule of the data contract")
    assert "900" in html and "one of 0, 1" in html


def test_a_refusal_line_is_bounded_and_keeps_the_report_path():
    from dataclasses import replace

    from heart_pipeline.errors import MAX_MESSAGE_CHARS

    long_reasons = [f"reason {i}: " + "x" * 150 for i in range(5)]
    refused = replace(
        report("failed", []), critical_failures=long_reasons, html_report_path="/runs/abc/validation/report.html"
    )
    line = refused.failure_message()
    assert len(line) <= MAX_MESSAGE_CHARS and line.endswith("(full report: /runs/abc/validation/report.html)")
    assert line.startswith("/data/heart.csv: data-quality gate failed: reason 0") and "more]" in line
    assert refused.summary()["rows_kept"] == 0 and refused.summary()["rows_passing_row_rules"] == 301
