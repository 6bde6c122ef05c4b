"""A model card for one registered version (Mitchell et al. 2019, "Model Cards for Model Reporting", with
the TRIPOD+AI items that apply): what the model is for and not for, what it was trained on, how well it
does with intervals, for whom (subgroups), where else it was tried (external validation), how well its
risks are calibrated, and the limitations its own numbers show.

Pure: ``ModelCard`` (facts gathered from the registry by tasks/model_card.py) in, Markdown or one
self-contained HTML page out. The limitations are written from the numbers, never by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

# A site's mean predicted risk this far from its observed disease rate is called out as miscalibration.
CALIBRATION_GAP = 0.10
# An external ROC-AUC this far below the internal one is called out as a drop in discrimination.
DISCRIMINATION_DROP = 0.05
SMALL_TRAINING_SET = 500

INTENDED_USE = (
    "Decision support for clinicians and data teams estimating the probability of angiographic coronary artery "
    "disease (> 50% narrowing in at least one major vessel) in adults referred for evaluation of chest pain, from "
    "the 13 routine clinical and exercise-test measurements in the data contract."
)
NOT_FOR = (
    "deciding on treatment or ruling out disease on its own: it supports, never replaces, a clinician's judgement",
    "populations unlike its training data (children, asymptomatic screening, emergency triage of acute chest pain)",
    "sites where it has not been validated: run `heart-pipeline evaluate` on local labelled data first",
    "patients whose key measurements were not recorded: predictions then rest on imputed training medians",
)

HEADLINE = (
    ("test_roc_auc", "ROC-AUC"),
    ("test_recall", "sensitivity"),
    ("test_specificity", "specificity"),
    ("test_precision", "PPV"),
    ("test_npv", "NPV"),
    ("test_brier", "Brier score"),
    ("test_accuracy", "accuracy"),
    ("test_log_loss", "log loss"),
    ("cv_roc_auc_mean", "CV ROC-AUC (training folds)"),
)


@dataclass(frozen=True)
class ModelCard:
    """Everything the card says, gathered from one registered version and its evidence."""

    registered_model: str
    version: str
    algorithm: str
    created: str
    decision: str  # the version's promotion decision
    is_champion: bool
    threshold: float | None
    label_definition: str
    codebook_version: str
    training: Mapping[str, Any]  # source, fingerprint, rows, rows_train, rows_test, prevalence, sites, dates
    metrics: Mapping[str, float]  # internal test metrics, with <name>_ci95_low/high where known
    excluded_columns: Sequence[str] = ()
    subgroups: Sequence[Mapping[str, Any]] = ()  # evidence.subgroups rows: attribute, group, n, positives, metrics
    external: Sequence[Mapping[str, Any]] = ()  # one per site: site, n, prevalence, metrics/intervals, run_url
    floors: Mapping[str, float] = field(default_factory=dict)
    links: Mapping[str, str] = field(default_factory=dict)


def _value(metrics: Mapping[str, Any], key: str) -> str:
    value = metrics.get(key)
    if value is None or value != value:  # missing or NaN
        return "-"
    low, high = (
        metrics.get(f"{key.removesuffix('_mean')}_ci95_low"),
        metrics.get(f"{key.removesuffix('_mean')}_ci95_high"),
    )
    if low is None or high is None or low != low or high != high:
        return f"{float(value):.3f}"
    return f"{float(value):.3f} [{float(low):.3f}, {float(high):.3f}]"


def _site_value(site: Mapping[str, Any], key: str) -> str:
    return _value(site.get("metrics") or {}, key)


def limitations(card: ModelCard) -> list[str]:
    """What the model's own numbers say it cannot be trusted for."""
    found: list[str] = []
    rows = int(card.training.get("rows") or 0)
    if rows and rows < SMALL_TRAINING_SET:
        found.append(f"trained on {rows} patients: intervals are wide, and rare presentations are barely seen")
    sites = card.training.get("sites") or []
    if len(sites) <= 1:
        where = sites[0] if sites else "one file without a site column"
        found.append(f"trained on one site's patients ({where}): other populations may differ")
    if card.excluded_columns:
        found.append(f"trained without {', '.join(card.excluded_columns)}: it cannot use them where they are recorded")
    internal_auc = card.metrics.get("test_roc_auc")
    floor = card.floors.get("test_recall")
    for site in card.external:
        found.extend(_site_limitations(site, internal_auc, floor))
    for group in card.subgroups:
        recall = (group.get("metrics") or {}).get("sensitivity")
        if group.get("warning"):
            found.append(str(group["warning"]))
        elif floor is not None and recall is not None and recall == recall and recall < floor:
            found.append(
                f"sensitivity {recall:.2f} for {group.get('attribute')} {group.get('group')} "
                f"(n = {group.get('n')}) is below the promotion floor {floor:.2f}"
            )
    return found


def _site_limitations(site: Mapping[str, Any], internal_auc: float | None, floor: float | None) -> list[str]:
    found = []
    metrics = site.get("metrics") or {}
    name, observed, predicted = site.get("site"), site.get("prevalence"), metrics.get("mean_predicted")
    if observed is not None and predicted is not None and abs(predicted - observed) > CALIBRATION_GAP:
        word = "under-predicts" if predicted < observed else "over-predicts"
        found.append(f"{word} at {name}: mean predicted {predicted:.2f} against {observed:.2f} observed")
    auc = metrics.get("roc_auc", metrics.get("test_roc_auc"))
    if internal_auc is not None and auc is not None and auc < internal_auc - DISCRIMINATION_DROP:
        found.append(f"discriminates less well at {name}: ROC-AUC {auc:.3f} against {internal_auc:.3f} internally")
    recall = metrics.get("sensitivity", metrics.get("test_recall"))
    if floor is not None and recall is not None and recall < floor:
        found.append(f"at {name} it finds {recall:.0%} of patients with disease (floor {floor:.0%})")
    return found


def subgroup_rows(groups: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """The subgroup table: a header, then one row per group (a group too small says so, no number)."""
    return [["group", "n", "disease rate", "ROC-AUC [95% CI]", "sensitivity [95% CI]", "note"]] + [
        [
            f"{g.get('attribute')}: {g.get('group')}",
            str(g.get("n", "-")),
            f"{g['positives'] / g['n']:.2f}" if g.get("n") and g.get("positives") is not None else "-",
            _value(g.get("metrics") or {}, "roc_auc"),
            _value(g.get("metrics") or {}, "sensitivity"),
            str(g.get("warning") or g.get("note") or ""),
        ]
        for g in groups
    ]


def card_sections(card: ModelCard) -> list[tuple[str, list[str] | list[list[str]]]]:
    """The card's sections in order: a heading and either paragraphs or a table (first row = header)."""
    t = card.training
    sites = ", ".join(t.get("sites") or []) or "one file, no site column"
    training = [
        f"Source: {t.get('source', '-')} (SHA-256 {str(t.get('fingerprint', '-'))[:12]})",
        f"Sites: {sites}; collected: {t.get('dates') or 'not stated'}",
        f"Provenance: {t.get('provenance') or 'not recorded'}",
        f"Patients: {t.get('rows', '-')} ({t.get('rows_train', '-')} for training, {t.get('rows_test', '-')} held out)"
        f"; disease prevalence {t.get('prevalence', '-')}",
        f"Label: {card.label_definition} (codebook v{card.codebook_version})",
        f"Columns left out: {', '.join(card.excluded_columns) or 'none'}",
    ]
    metrics = [["metric", "internal test set [95% CI]"]] + [
        [label, _value(card.metrics, key)] for key, label in HEADLINE if key in card.metrics
    ]
    subgroups = subgroup_rows(card.subgroups)
    external = [
        [
            "site",
            "n",
            "disease rate",
            "mean predicted",
            "ROC-AUC [95% CI]",
            "calibration slope",
            "sensitivity",
            "specificity",
        ]
    ] + [
        [
            str(s.get("site")),
            str(s.get("n")),
            f"{s['prevalence']:.2f}" if isinstance(s.get("prevalence"), float) else "-",
            _site_value(s, "mean_predicted"),
            _site_value(s, "roc_auc"),
            _site_value(s, "calibration_slope"),
            _site_value(s, "sensitivity"),
            _site_value(s, "specificity"),
        ]
        for s in card.external
    ]
    return [
        ("Intended use", [INTENDED_USE]),
        ("Not for", [f"Not for {item}." for item in NOT_FOR]),
        ("Training data", training),
        ("Performance on held-out patients", metrics),
        ("Subgroups (held-out patients)", subgroups if len(subgroups) > 1 else ["No subgroup table recorded."]),
        (
            "External validation",
            external if len(external) > 1 else ["Not validated on another site yet (`heart-pipeline evaluate`)."],
        ),
        ("Known limitations, from the numbers above", limitations(card) or ["None found by the card's checks."]),
    ]


def _title(card: ModelCard) -> str:
    role = "@champion" if card.is_champion else card.decision or "undecided"
    return f"Model card: {card.registered_model} v{card.version} ({card.algorithm}, {role})"


def _summary(card: ModelCard) -> str:
    threshold = f"{card.threshold:.3f}" if card.threshold is not None else "-"
    return f"Registered {card.created}. Decision: {card.decision or 'none yet'}. Decision threshold: {threshold}."


def render_markdown(card: ModelCard) -> str:
    lines = [f"# {_title(card)}", "", _summary(card), ""]
    for heading, body in card_sections(card):
        lines += [f"## {heading}", ""]
        if body and isinstance(body[0], list):
            header, *rows = body
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        else:
            lines += [f"- {item}" for item in body]
        lines.append("")
    return "\n".join(lines)


CSS = (
    "body{font:15px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;padding:0 16px;color:#1d2430}"
    "h1{font-size:23px}h2{font-size:18px;margin-top:26px}table{border-collapse:collapse;width:100%;font-size:14px}"
    "th,td{border-bottom:1px solid #dde2e8;padding:6px 8px;text-align:left}th{background:#f3f5f8}"
    ".muted{color:#5a6473}li{margin:3px 0}"
)


def render_html(card: ModelCard) -> str:
    """One page: inline CSS, no script, no image, nothing fetched from any host."""
    parts = []
    for heading, body in card_sections(card):
        parts.append(f"<h2>{escape(heading)}</h2>")
        if body and isinstance(body[0], list):
            header, *rows = body
            head = "".join(f"<th>{escape(h)}</th>" for h in header)
            cells = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
        else:
            parts.append("<ul>" + "".join(f"<li>{escape(str(item))}</li>" for item in body) + "</ul>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>{escape(_title(card))}</title><style>{CSS}</style></head><body>"
        f'<h1>{escape(_title(card))}</h1><p class="muted">{escape(_summary(card))}</p>'
        + "".join(parts)
        + "</body></html>\n"
    )
