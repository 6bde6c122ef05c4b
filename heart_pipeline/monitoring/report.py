"""The monitor's verdict as ONE self-contained HTML page and as a markdown artifact. Pure.

The page follows the validation report's rules (evidence/report_html.py, whose CSS it extends):
inline CSS, bars drawn as CSS widths, no script, no image, no link to any host, and a
Content-Security-Policy that forbids outside requests even if a value slipped through unescaped.
Every text that came from a file or a summary (column names, codes, sources, versions) is escaped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from html import escape
from typing import Any

from heart_pipeline.data_contract.meaning import MISSING
from heart_pipeline.evidence.render import markdown_text
from heart_pipeline.evidence.report_html import CSS
from heart_pipeline.monitoring.drift import ColumnDrift, PerformanceCheck, Verdict

# The validation page's banner colours, read as the monitor's three verdicts.
BANNER = {"ok": "passed", "drift": "quarantined", "performance drop": "failed"}
MONITOR_CSS = """
table.shares{width:auto;min-width:560px}table.shares td{padding:3px 8px}
.pair{width:280px}.bar{height:9px;border-radius:2px;margin:2px 0}
.bar.ref{background:#9aa5b4}.bar.now{background:#2f6fb3}.bar.now.moved{background:#c62828}
.key{display:inline-block;width:12px;height:9px;border-radius:2px;margin:0 4px 0 8px}
.key.ref{background:#9aa5b4}.key.now{background:#2f6fb3}.key.moved{background:#c62828}
section.column{margin:0 0 22px}h3{font-size:16px;margin:18px 0 4px}
"""
_NUMBER = re.compile(r"^(?:< |>= )?(-?\d+(?:\.\d+)?(?:e[-+]?\d+)?)")


def p_text(p_value: float) -> str:
    """``0.0031``, or ``< 1e-300`` for a p-value that underflowed to 0 (never a bare 0)."""
    return f"{p_value:.2g}" if p_value > 0 else "< 1e-300"


def _percent(share: float) -> str:
    return f"{share:.1%}" if 0 < share < 0.01 else f"{share:.0%}"


def _key_order(key: str) -> tuple[int, float, str]:
    """Bins and codes in numeric order (``0`` and ``< x`` first), unknown text next, ``missing`` last."""
    if key == MISSING:
        return (3, 0.0, key)
    match = _NUMBER.match(key)
    if not match:
        return (2, 0.0, key)
    if key.startswith("< ") or key == "0":
        return (0, -math.inf if key == "0" else float(match.group(1)) - 1e9, key)
    return (1, float(match.group(1)), key)


def share_rows(
    counts: Mapping[str, int], reference: Mapping[str, float], moved: str, meanings: Mapping[str, str] | None = None
) -> str:
    """One row per key (a code with its meaning): the training share and the recent share as paired bars."""
    total = sum(counts.values()) or 1
    rows = []
    for key in sorted(set(counts) | set(reference), key=_key_order):
        now, ref = counts.get(key, 0) / total, float(reference.get(key, 0.0))
        flag = " moved" if key == moved else ""
        rows.append(
            f"<tr><td><code>{escape(key)}</code>"
            + (f' <span class="muted">{escape(meanings[key])}</span>' if meanings and key in meanings else "")
            + "</td>"
            f'<td class="pair"><div class="bar ref" style="width:{100 * ref:.1f}%"></div>'
            f'<div class="bar now{flag}" style="width:{100 * now:.1f}%"></div></td>'
            f'<td class="num">{_percent(ref)}</td><td class="num">{_percent(now)}</td></tr>'
        )
    return (
        '<table class="shares"><thead><tr><th>value</th><th>training / recent</th><th>training</th>'
        "<th>recent</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _range_text(entry: Mapping[str, Any] | None) -> str:
    if not entry or entry.get("min") is None:
        return "no recorded value"
    return f"{entry['min']:g} to {entry['max']:g}"


def column_section(
    drift: ColumnDrift,
    profile: Mapping[str, Any],
    merged: Mapping[str, Any],
    meanings: Mapping[str, Mapping[str, str]] | None = None,
) -> str:
    """One column: PSI and p, what moved most, imputed share and ranges, then the paired bars."""
    reference = profile["columns"][drift.column]
    recent = merged["columns"][drift.column]
    tag = '<span class="tag critical">drifted</span>' if drift.drifted else '<span class="tag pass">stable</span>'
    training_range = reference.get("range")
    facts = (
        f"PSI {drift.psi:.3f}, chi-square p {'' if drift.p_value == 0 else '= '}{p_text(drift.p_value)}; "
        "imputed in "
        f"{_percent(float(merged['imputed'].get(drift.column, 0.0)))} of recent rows "
        f"(missing in {_percent(float(reference.get('missing', 0.0)))} at training); range "
        f"{_range_text(recent)} recent, "
        + (f"{training_range[0]:g} to {training_range[1]:g}" if training_range else "none recorded")
        + " at training"
    )
    return (
        f'<section class="column"><h3><code>{escape(drift.column)}</code> {tag}</h3>'
        f'<div class="why">{escape(drift.describe())}</div><div class="muted">{escape(facts)}</div>'
        + share_rows(recent["counts"], reference["shares"], drift.moved, (meanings or {}).get(drift.column))
        + "</section>"
    )


def performance_section(check: PerformanceCheck | None) -> str:
    if check is None:
        return ""
    state = '<span class="tag critical">dropped</span>' if check.dropped else '<span class="tag pass">holds</span>'
    reasons = "".join(f"<li>{escape(r)}</li>" for r in check.reasons)
    return (
        f"<h2>Performance on labelled rows {state}</h2><p>{escape(check.describe())}</p>"
        + (f'<ul class="reasons">{reasons}</ul>' if reasons else "")
        + "<p class=\"muted\">Dropped when ROC-AUC is below the champion's 95% interval and the batch's own "
        "upper bound (Hanley-McNeil) is below the champion's estimate, or when the observed disease rate is "
        "more than 10 points off the mean predicted risk with a z-test p below monitoring.alpha.</p>"
    )


def risk_section(verdict: Verdict, profile: Mapping[str, Any], merged: Mapping[str, Any]) -> str:
    if verdict.risk is None or "risk" not in profile:
        return ""
    return (
        "<h2>Predicted risk</h2>"
        f'<div class="why">{escape(verdict.risk.describe())}</div>'
        '<p class="muted">Reported, not deciding: the training shares come from out-of-fold predictions, '
        "while a recent batch may hold rows the model was trained on.</p>"
        + share_rows(merged["risk"]["counts"], profile["risk"]["shares"], verdict.risk.moved)
    )


def _facts(verdict: Verdict, profile: Mapping[str, Any], merged: Mapping[str, Any], generated_at: str) -> str:
    facts = {
        "Model version": verdict.model_version,
        "Rows scored": verdict.rows,
        "Batches": verdict.batches,
        "From": f"{merged.get('first_when', '')} to {merged.get('last_when', '')}",
        "Sources": ", ".join(merged.get("sources", [])),
        "Training reference": str(profile.get("source", "")),  # says its rows: "random_forest training rows (237)"
    }
    if generated_at:
        facts["Checked at"] = generated_at
    return "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in facts.items())


def render_monitoring_html(
    verdict: Verdict,
    profile: dict[str, Any],
    merged: dict[str, Any],
    generated_at: str = "",
    meanings: Mapping[str, Mapping[str, str]] | None = None,
) -> str:
    """The whole page: the verdict and what moved first, then every column (codes with the codebook's
    ``meanings``), predicted risk, performance."""
    details = "".join(f"<li>{escape(line)}</li>" for line in verdict.details())
    columns = "".join(column_section(d, profile, merged, meanings) for d in verdict.columns)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>Monitoring: {escape(verdict.headline())} - model version {escape(verdict.model_version)}</title>"
        f"<style>{CSS}{MONITOR_CSS}</style></head><body>\n"
        f"<h1>Monitoring: {escape(verdict.headline())}</h1>"
        f'<div class="banner {BANNER[verdict.verdict]}">{escape(verdict.headline())}</div>\n'
        f'<ul class="reasons">{details}</ul>\n'
        f'<dl class="facts">{_facts(verdict, profile, merged, generated_at)}</dl>\n'
        + performance_section(verdict.performance)
        + "<h2>Columns</h2>"
        '<p class="muted">Per column, most drifted first: the share of training rows against the share of recent '
        'rows in each bin or code:<span class="key ref"></span>training<span class="key now"></span>recent'
        '<span class="key moved"></span>recent, the value that moved most. A column drifts when its PSI reaches '
        "monitoring.psi_threshold and the chi-square p of training rows against recent rows is below "
        "monitoring.alpha divided by the number of columns compared.</p>\n"
        + (columns or '<p class="muted">No column compared (see the notes above).</p>')
        + risk_section(verdict, profile, merged)
        + "\n</body></html>\n"
    )


def _fmt(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "n/a"


def verdict_markdown(verdict: Verdict, report_path: str) -> str:
    """The Prefect artifact: the verdict line first, what moved, a table of columns, the report's path."""
    lines = [f"**{verdict.headline()}** (model version {markdown_text(verdict.model_version)}, "]
    lines[0] += f"{verdict.rows} rows in {verdict.batches} batch{'' if verdict.batches == 1 else 'es'})"
    lines += ["", *(f"- {markdown_text(line)}" for line in verdict.details()), ""]
    if verdict.columns:
        lines += [
            "| column | PSI | p | moved most | recent | training | drifted |",
            "|---|---:|---:|---|---:|---:|---|",
        ]
        lines += [
            f"| {markdown_text(c.column)} | {_fmt(c.psi)} | {markdown_text(p_text(c.p_value))} | "
            f"{markdown_text(c.where())} | {_percent(c.observed_share)} | {_percent(c.reference_share)} | "
            f"{'yes' if c.drifted else 'no'} |"
            for c in verdict.columns
        ]
    lines += ["", f"Report: {markdown_text(report_path)}"]
    return "\n".join(lines) + "\n"
