"""The promotion policy's pure parts: how candidates are ranked, gated and compared with the champion.
No MLflow call here; tasks/promote.py reads the registry and commits what these functions decide."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from heart_pipeline.evidence.stats import corrected_paired_t_test
from heart_pipeline.results import Evaluation, PairedComparison, PromotionDecision
from heart_pipeline.tracking.registry import CODEBOOK_TAG, LABEL_TAG

# Outcomes, as written to each version's promotion.decision tag.
PROMOTED = "promoted"
REJECTED = "rejected"
NOT_SELECTED = "not selected"
IDENTICAL = "identical to champion"
LABEL_ALARM = "label alarm"
ALREADY_CHAMPION = "already champion"  # never written: a rerun leaves the registry untouched
# @champion moving under a comparison more often than this means something keeps promoting: stop.
MAX_COMPARISONS = 5
# Fewer unseen rows than this (or one class only) give no ROC-AUC worth comparing.
MIN_COMPARISON_ROWS = 10
# simpler_model: the algorithms from the simplest (fewest parameters, readable coefficients) up.
SIMPLICITY = ("logistic_regression", "random_forest")


def finite(value: object) -> float | None:
    """``value`` as a float when it is a finite number, else None (missing, NaN, inf, text)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True)
class ChampionComparison:
    """Both models on the same rows: today's held-out rows the champion did not train on."""

    challenger: dict[str, float]
    champion: dict[str, float]
    champion_auc_interval: tuple[float, float]
    rows_compared: int
    rows_left_out: int
    identical: bool  # the same probabilities on every row: the same model, whatever its version


def compare_on_same_folds(a: Evaluation, b: Evaluation, n_train: int, n_splits: int) -> PairedComparison:
    """Which model has the higher CV ROC-AUC, and how sure we can be (fold overlap corrected)."""
    diff = np.array(a.cv_scores["roc_auc"]) - np.array(b.cv_scores["roc_auc"])
    better, worse = (a.name, b.name) if diff.mean() >= 0 else (b.name, a.name)
    n_test = n_train // n_splits
    p_value = corrected_paired_t_test(diff, n_train - n_test, n_test)
    return PairedComparison(better, worse, float(abs(diff.mean())), p_value)


def rank_by_cv(evaluations: list[Evaluation]) -> list[Evaluation]:
    """Candidates best first by mean CV ROC-AUC on the training folds, never by the test set (a
    missing or NaN mean ranks last)."""
    return sorted(evaluations, key=lambda e: _or_lowest(e.metrics.get("cv_roc_auc_mean")), reverse=True)


def _or_lowest(value: object) -> float:
    number = finite(value)
    return -math.inf if number is None else number


def is_tie(comparison: PairedComparison | None, alpha: float) -> bool:
    """The two candidates' CV ROC-AUC do not differ significantly (p >= alpha, or no p-value)."""
    if comparison is None:
        return False
    p_value = finite(comparison.p_value)
    return p_value is None or p_value >= alpha


def rank_candidates(
    evaluations: list[Evaluation], comparison: PairedComparison | None, alpha: float, tie_rule: str
) -> tuple[list[Evaluation], str | None]:
    """The CV order, unless the two candidates tie on CV: then ``tie_rule`` orders them. Returns the
    order and, for a tie, the sentence that says so and which rule decided (None otherwise)."""
    ranked = rank_by_cv(evaluations)
    if len(ranked) != 2 or comparison is None or not is_tie(comparison, alpha):
        return ranked, None
    first, second = ranked
    tie = (
        f"CV tie: {comparison.better} vs {comparison.worse} differ by {_fmt(comparison.mean_difference)} CV ROC-AUC, "
        f"not significant (corrected paired t-test p = {_fmt(comparison.p_value)} >= alpha {alpha:g})"
    )
    if tie_rule == "higher_sensitivity":
        recall = {e.name: _or_lowest(e.metrics.get("test_recall")) for e in ranked}
        if recall[first.name] != recall[second.name]:
            first, second = sorted(ranked, key=lambda e: recall[e.name], reverse=True)
        shown = " vs ".join(f"{e.name} {_fmt(e.metrics.get('test_recall'))}" for e in (first, second))
        why = (
            "the higher CV mean decides, as sensitivities are equal"
            if recall[first.name] == recall[second.name]
            else ""
        )
        return (
            [first, second],
            f"{tie}; tie rule higher_sensitivity puts {first.name} first (test sensitivity at "
            f"each model's own threshold: {shown}){'; ' + why if why else ''}",
        )
    if tie_rule == "simpler_model":
        order = sorted(ranked, key=lambda e: SIMPLICITY.index(e.name) if e.name in SIMPLICITY else len(SIMPLICITY))
        return order, f"{tie}; tie rule simpler_model puts {order[0].name} first"
    return ranked, f"{tie}; tie rule cv_order keeps {first.name} first (the higher CV mean)"


def _fmt(value: object) -> str:
    number = finite(value)
    return "-" if number is None else f"{number:.3f}"


def floor_value(metrics: Mapping[str, float], name: str, on: str) -> float | None:
    """What a floor is checked on: the estimate (``point``) or its 95% interval's lower bound (``ci_low``)."""
    return finite(metrics.get(f"{name}_ci95_low" if on == "ci_low" else name))


def floor_check(metrics: Mapping[str, float], floors: dict[str, float], on: str = "point") -> tuple[bool, list[str]]:
    """Every floor on today's held-out test set, and a reason line per floor. A metric that is missing
    or not a number fails its floor (and the line says so)."""
    label = " 95% CI low" if on == "ci_low" else ""
    passed, reasons = True, []
    for name, floor in floors.items():
        value = floor_value(metrics, name, on)
        ok = value is not None and value >= floor
        passed &= ok
        shown = "missing" if value is None else f"{value:.3f}"
        reasons.append(f"{name}{label} {shown} {'>=' if ok else '<'} floor {floor:.3f}")
    return passed, reasons


def first_passing(
    ranked: list[Evaluation], floors: dict[str, float], on: str = "point"
) -> tuple[Evaluation | None, list[str]]:
    """The best-ranked candidate that passes every floor, and why each better-ranked one did not."""
    notes: list[str] = []
    for evaluation in ranked:
        passed, reasons = floor_check(evaluation.metrics, floors, on)
        if passed:
            return evaluation, [*notes, *reasons]
        failed = "; ".join(r for r in reasons if " < floor " in r)
        notes.append(f"{evaluation.name} (rank {len(notes) + 1}) failed a floor: {failed}")
    return None, notes


def gate(
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    floors: dict[str, float],
    metric: str,
    margin: float,
) -> tuple[bool, list[str]]:
    """Promote only if every floor holds and the challenger is no worse than the champion - margin.
    When either side lacks ``metric`` (or it is not a number) the two cannot be compared: not promoted."""
    passed, reasons = floor_check(challenger, floors)
    if champion is None:
        reasons.append("no current champion")
        return passed, reasons
    ours, theirs = finite(challenger.get(metric)), finite(champion.get(metric))
    if ours is None or theirs is None:
        missing = " and ".join(side for side, v in (("challenger", ours), ("champion", theirs)) if v is None)
        reasons.append(f"{metric} cannot be compared: the {missing} has no value on the shared rows; @champion stays")
        return False, reasons
    ok = ours >= theirs - margin
    reasons.append(
        f"{metric} {ours:.3f} vs champion {theirs:.3f} on the same held-out rows: "
        f"{'within' if ok else 'worse than'} margin {margin:.3f}"
    )
    return passed and ok, reasons


def label_alarm(comparison: ChampionComparison, champion_version: str) -> str | None:
    """The reason to stop when the champion is worse than chance on today's rows, else None. An AUC
    that could not be computed (NaN) is no evidence either way: no alarm."""
    auc = finite(comparison.champion.get("test_roc_auc"))
    low, high = (finite(v) for v in comparison.champion_auc_interval)
    if (auc is None or auc >= 0.5) and (high is None or high >= 0.5):
        return None
    return (
        f"the labels of today's data and of champion v{champion_version} disagree: it scores ROC-AUC {_fmt(auc)} "
        f"[95% CI {_fmt(low)}, {_fmt(high)}] on {comparison.rows_compared} of today's held-out rows, below chance. "
        "Check the file's label coding (--disease-label, data.disease_label) or roll the champion back; "
        "nothing was promoted and @champion did not move"
    )


def comparable(challenger_tags: dict[str, str], champion_tags: dict[str, str], champion_version: str) -> str | None:
    """Why the two models cannot be compared (a different codebook or label definition), else None."""
    ours = (challenger_tags.get(CODEBOOK_TAG), challenger_tags.get(LABEL_TAG))
    theirs = (champion_tags.get(CODEBOOK_TAG), champion_tags.get(LABEL_TAG))
    if ours == theirs:
        return None
    return (
        f"not compared with champion v{champion_version}: it was trained under codebook {theirs[0] or 'unknown'} "
        f"with label {theirs[1] or 'unknown'!r}, today's under codebook {ours[0]} with label {ours[1]!r}; "
        "decided on the floors alone"
    )


@dataclass(frozen=True)
class VersionRecord:
    """What one version's registry entry says about this decision: its decision tag, the first line of
    its description (what it is and its decision, with its own numbers) and its Promotion section."""

    version: str
    outcome: str
    headline: str
    section: str


def own_numbers(metrics: Mapping[str, float]) -> str:
    """A version's own headline numbers, '-' for any it lacks."""
    return (
        f"test ROC-AUC {_fmt(metrics.get('test_roc_auc'))}, sensitivity {_fmt(metrics.get('test_recall'))}, "
        f"CV ROC-AUC {_fmt(metrics.get('cv_roc_auc_mean'))}"
    )


def why_not(reasons: list[str]) -> str:
    """The reasons that refused a challenger (a failed floor, a worse score, no comparison), else the last."""
    refusing = [r for r in reasons if " < floor " in r or "worse than" in r or "cannot" in r or "no candidate" in r]
    return "; ".join(refusing or reasons[-1:]) or "no reason recorded"


def challenger_headline(decision: PromotionDecision, metrics: Mapping[str, float]) -> str:
    """The chosen candidate's first description line: what it is, its decision and its own numbers."""
    what = f"{decision.challenger} v{decision.challenger_version}"
    before = decision.champion_version_before
    tie = f" after a CV tie broken by {decision.tie_rule}" if decision.tie and decision.tie_rule else ""
    if decision.outcome == PROMOTED:
        verdict = f"PROMOTED to @champion{tie} ({f'replaced v{before}' if before else 'first champion'})"
    elif decision.outcome == LABEL_ALARM:
        verdict = f"REJECTED: label alarm, today's labels and champion v{before}'s disagree; the run failed"
    elif decision.outcome == IDENTICAL:
        verdict = f"NOT PROMOTED: identical to champion v{before}"
    else:
        stays = f"v{before}" if before else "unset"
        verdict = f"REJECTED{tie}, @champion stays {stays}: {why_not(decision.reasons)}"
    return f"{what}: {verdict}. Own numbers: {own_numbers(metrics)}."


def other_record(decision: PromotionDecision, version: str, name: str, metrics: Mapping[str, float]) -> VersionRecord:
    """A candidate of the same run that was not the one decided on: rejected by its own floors, or
    not selected because the chosen one ranked first (on CV, or by the tie rule)."""
    passed, floors = floor_check(metrics, decision.floors, decision.floors_on)
    what, chosen = f"{name} v{version}", f"{decision.challenger} v{decision.challenger_version}"
    if not passed:
        failed = "; ".join(r for r in floors if " < floor " in r)
        headline = f"{what}: REJECTED, failed a floor ({failed}). Own numbers: {own_numbers(metrics)}."
        return VersionRecord(version, REJECTED, headline, f"{headline}\n\nThe run's decision is on {chosen}'s page.")
    ranked = f"the tie rule {decision.tie_rule} put {chosen} first" if decision.tie else f"{chosen} ranked first on CV"
    headline = f"{what}: NOT SELECTED, {ranked}. Own numbers: {own_numbers(metrics)}."
    details = "\n".join(f"- {r}" for r in [*floors, *([decision.tie] if decision.tie else [])])
    return VersionRecord(
        version, NOT_SELECTED, headline, f"{headline}\n\n{details}\n\nThe run's decision is on {chosen}'s page."
    )


def decision_text(decision: PromotionDecision) -> str:
    """The decided candidate's reasons, as its Promotion section lists them."""
    before = f"v{decision.champion_version_before}" if decision.champion_version_before else "none"
    tie = [decision.tie] if decision.tie else []
    return f"Champion before: {before}.\n\n" + "\n".join(f"- {r}" for r in [*tie, *decision.reasons])


def version_records(
    decision: PromotionDecision, candidates: Mapping[str, tuple[str, Mapping[str, float]]], created: set[str]
) -> list[VersionRecord]:
    """Every registry record this decision writes, computed before anything is written.

    ``candidates``: version -> (algorithm, its own metrics) for each of the run's versions; ``created``:
    the versions this run registered (a reused version keeps its own history). Nothing is written for a
    decided version that is already the champion (it failed today's floors, or this is a rerun)."""
    records = []
    version = decision.challenger_version
    if version != decision.champion_version_before:
        name, metrics = candidates.get(version, (decision.challenger, decision.challenger_metrics))
        headline = challenger_headline(decision, metrics)
        records.append(VersionRecord(version, decision.outcome, headline, f"{headline}\n\n{decision_text(decision)}"))
    for other, (name, metrics) in candidates.items():
        if other != version and other in created:
            records.append(other_record(decision, other, name, metrics))
    return records
