"""The promotion policy's pure parts: how candidates are ranked, gated and compared with the champion.
No MLflow call here; tasks/promote.py reads the registry and commits what these functions decide."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from heart_pipeline.evidence.stats import corrected_paired_t_test
from heart_pipeline.results import Evaluation, PairedComparison
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
    """Candidates best first by mean CV ROC-AUC on the training folds, never by the test set."""
    return sorted(evaluations, key=lambda e: e.metrics["cv_roc_auc_mean"], reverse=True)


def floor_check(metrics: dict[str, float], floors: dict[str, float]) -> tuple[bool, list[str]]:
    """Every floor on today's held-out test set, and a reason line per floor."""
    passed = {name: metrics[name] >= floor for name, floor in floors.items()}
    reasons = [f"{n} {metrics[n]:.3f} {'>=' if passed[n] else '<'} floor {floor:.3f}" for n, floor in floors.items()]
    return all(passed.values()), reasons


def first_passing(ranked: list[Evaluation], floors: dict[str, float]) -> tuple[Evaluation | None, list[str]]:
    """The best-ranked candidate that passes every floor, and why each better-ranked one did not."""
    notes: list[str] = []
    for evaluation in ranked:
        passed, reasons = floor_check(evaluation.metrics, floors)
        if passed:
            return evaluation, [*notes, *reasons]
        failed = "; ".join(r for r in reasons if " < floor " in r)
        notes.append(f"{evaluation.name} (CV rank {len(notes) + 1}) failed a floor: {failed}")
    return None, notes


def gate(
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    floors: dict[str, float],
    metric: str,
    margin: float,
) -> tuple[bool, list[str]]:
    """Promote only if every floor holds and the challenger is no worse than the champion - margin."""
    passed, reasons = floor_check(challenger, floors)
    if champion is None:
        reasons.append("no current champion")
    else:
        ok = challenger[metric] >= champion[metric] - margin
        passed &= ok
        reasons.append(
            f"{metric} {challenger[metric]:.3f} vs champion {champion[metric]:.3f} on the same held-out rows: "
            f"{'within' if ok else 'worse than'} margin {margin:.3f}"
        )
    return passed, reasons


def label_alarm(comparison: ChampionComparison, champion_version: str) -> str | None:
    """The reason to stop when the champion is worse than chance on today's rows, else None."""
    auc = comparison.champion["test_roc_auc"]
    low, high = comparison.champion_auc_interval
    if auc >= 0.5 and high >= 0.5:
        return None
    return (
        f"the labels of today's data and of champion v{champion_version} disagree: it scores ROC-AUC {auc:.3f} "
        f"[95% CI {low:.3f}, {high:.3f}] on {comparison.rows_compared} of today's held-out rows, below chance. "
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
