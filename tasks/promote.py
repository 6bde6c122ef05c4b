"""Promote step: rank the candidates honestly, gate them against floors and the current champion,
and move the MLflow ``champion`` alias only when one earns it.

The gate never serves a backwards model:
- every model that passes the floors is a candidate, in CV order; when the best fails a floor, the
  next one is tried;
- the champion is compared only when it was trained under the same codebook and label definition,
  and only on today's held-out rows it did not train on (both models scored on the same rows);
- a champion below chance on today's held-out rows means today's labels and the champion's disagree:
  the run fails with that message and nothing moves;
- the decision is committed with a compare-and-set: if @champion moved meanwhile, compare again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from prefect import task

from heart_pipeline.config import Settings
from heart_pipeline.errors import PipelineError
from heart_pipeline.evidence.render import champion_headline, promotion_markdown
from heart_pipeline.evidence.stats import bootstrap_intervals, held_out_metrics
from heart_pipeline.results import Evaluation, PairedComparison, PromotionDecision, TrackedModel
from heart_pipeline.tasks.preprocess import PreparedData
from heart_pipeline.tracking.policy import (
    ALREADY_CHAMPION,
    IDENTICAL,
    LABEL_ALARM,
    MAX_COMPARISONS,
    MIN_COMPARISON_ROWS,
    NOT_SELECTED,
    PROMOTED,
    REJECTED,
    ChampionComparison,
    comparable,
    compare_on_same_folds,
    first_passing,
    gate,
    label_alarm,
    rank_by_cv,
)
from heart_pipeline.tracking.registry import (
    CHAMPION,
    DECISION_TAG,
    PREVIOUS_CHAMPION_TAG,
    commit_if_champion_is,
    current_champion,
    load_model_version,
    set_description_section,
    tracking_store,
    training_row_hashes,
)
from heart_pipeline.tracking.trust import UntrustedModelError, row_hashes


class LabelAlarm(PipelineError):
    """Today's labels and the champion's disagree: promotion must not go on."""


def unseen_rows(x_test: pd.DataFrame, champion_rows: set[str] | None) -> np.ndarray:
    """Mask of today's held-out rows that were not in the champion's training data."""
    if champion_rows is None:
        return np.ones(len(x_test), dtype=bool)
    return ~row_hashes(x_test).isin(champion_rows).to_numpy()


def probabilities(model: Any, rows: pd.DataFrame) -> np.ndarray:
    return model.predict_proba(rows.astype("float64"))[:, 1]


def compare_with_champion(
    challenger_model: Any, champion_model: Any, prepared: PreparedData, keep: np.ndarray, seed: int
) -> ChampionComparison:
    """Both models scored at their own thresholds on the held-out rows the champion never saw."""
    x, y = prepared.x_test[keep], prepared.y_test[keep].to_numpy()
    challenger_proba, champion_proba = probabilities(challenger_model, x), probabilities(champion_model, x)
    champion_threshold = float(champion_model.threshold)
    intervals = bootstrap_intervals(y, champion_proba, champion_threshold, seed)
    return ChampionComparison(
        challenger=held_out_metrics(y, challenger_proba, float(challenger_model.threshold)),
        champion=held_out_metrics(y, champion_proba, champion_threshold),
        champion_auc_interval=(intervals["test_roc_auc_ci95_low"], intervals["test_roc_auc_ci95_high"]),
        rows_compared=int(keep.sum()),
        rows_left_out=int((~keep).sum()),
        identical=bool(np.array_equal(challenger_proba, champion_proba)),
    )


@dataclass(frozen=True)
class Decider:
    """Builds the decision record for one chosen candidate: every outcome shares these facts."""

    chosen: Evaluation
    version: str
    notes: list[str]
    comparison: PairedComparison | None
    settings: Settings
    champion: str | None

    def __call__(self, outcome: str, reasons: list[str], **extra: Any) -> PromotionDecision:
        promoted, policy = outcome == PROMOTED, self.settings.promotion
        return PromotionDecision(
            registered_model=self.settings.mlflow.registered_model,
            challenger=self.chosen.name,
            challenger_version=self.version,
            promoted=promoted,
            reasons=[*self.notes, *reasons],
            challenger_metrics={k: v for k, v in self.chosen.metrics.items() if k.startswith("test_")},
            champion_version_before=self.champion,
            champion_metrics=extra.pop("champion_metrics", None),
            champion_version_after=self.version if promoted else self.champion,
            comparison=self.comparison,
            floors=dict(policy.floors),
            metric=policy.metric,
            margin=policy.margin,
            outcome=outcome,
            **extra,
        )


def judge(
    client: Any,
    tracked: list[TrackedModel],
    evaluations: list[Evaluation],
    prepared: PreparedData,
    settings: Settings,
    champion: str | None,
) -> PromotionDecision:
    """The decision against the champion of this moment (``champion``); writes nothing."""
    ranked = rank_by_cv(evaluations)
    candidate, notes = first_passing(ranked, settings.promotion.floors)
    chosen = candidate or ranked[0]
    by_name = {e.name: e for e in evaluations}
    pair = [by_name[t.name] for t in tracked]
    n_splits = settings.cross_validation.n_splits
    comparison = compare_on_same_folds(pair[0], pair[1], prepared.n_train, n_splits) if len(pair) == 2 else None
    version = {t.name: t.version for t in tracked}[chosen.name]
    decided = Decider(chosen, version, notes, comparison, settings, champion)
    if candidate is None:
        return decided(REJECTED, ["no candidate passed every floor"])
    if version == champion:
        return decided(ALREADY_CHAMPION, [f"champion is already this model (v{champion})"])
    if champion is None:
        return decided(PROMOTED, ["no current champion"])
    return judge_against_champion(client, decided, prepared, settings)


def judge_against_champion(
    client: Any, decided: Decider, prepared: PreparedData, settings: Settings
) -> PromotionDecision:
    """The challenger against a champion that exists: comparable, servable, then on the same unseen rows."""
    name, champion, version = settings.mlflow.registered_model, str(decided.champion), decided.version
    champion_entry = client.get_model_version(name, champion)
    why_not = comparable(client.get_model_version(name, version).tags, champion_entry.tags, champion)
    if why_not:
        return decided(PROMOTED, [why_not])
    try:
        champion_model = load_model_version(settings.tracking_uri, name, champion)
    except UntrustedModelError as exc:
        return decided(PROMOTED, [f"the champion cannot be served, so it is replaced: {exc}"])
    keep = unseen_rows(prepared.x_test, training_row_hashes(client, champion_entry.run_id))
    left_out = (
        f"{int((~keep).sum())} of today's {len(keep)} held-out rows were in v{champion}'s training data: left out"
        if keep.size and (~keep).any()
        else f"none of today's {len(keep)} held-out rows were in v{champion}'s training data"
    )
    if keep.sum() < MIN_COMPARISON_ROWS or prepared.y_test[keep].nunique() < 2:
        return decided(
            REJECTED,
            [left_out, f"cannot compare with champion v{champion} on {int(keep.sum())} unseen rows; @champion stays"],
            rows_compared=int(keep.sum()),
            rows_left_out=int((~keep).sum()),
        )
    compared = compare_with_champion(
        load_model_version(settings.tracking_uri, name, version), champion_model, prepared, keep, settings.split.seed
    )
    rows = {"rows_compared": compared.rows_compared, "rows_left_out": compared.rows_left_out}
    if alarm := label_alarm(compared, champion):
        return decided(LABEL_ALARM, [left_out, alarm], champion_metrics=compared.champion, alarm=alarm, **rows)
    if compared.identical:
        reason = f"champion v{champion} gives identical probabilities on every compared row: it is already this model"
        return decided(IDENTICAL, [left_out, reason], champion_metrics=compared.champion, **rows)
    ok, reasons = gate(compared.challenger, compared.champion, {}, settings.promotion.metric, settings.promotion.margin)
    return decided(
        PROMOTED if ok else REJECTED,
        [left_out, *reasons],
        champion_metrics=compared.champion,
        challenger_compared_metrics=compared.challenger,
        **rows,
    )


def record_decision(client: Any, decision: PromotionDecision, tracked: list[TrackedModel]) -> None:
    """Write the decision where the registry UI shows it; move the alias last but one, so that a
    crash leaves no version tagged "promoted" that never was the champion."""
    name, version = decision.registered_model, decision.challenger_version
    if version == decision.champion_version_before:
        return  # the champion failed today's floors: it stays, and its own record stays as it was
    if decision.promoted:
        if decision.champion_version_before:
            client.set_model_version_tag(name, version, PREVIOUS_CHAMPION_TAG, decision.champion_version_before)
        client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, DECISION_TAG, decision.outcome)
    set_description_section(client, name, version, "Promotion", decision_text(decision))
    for other in tracked:
        if other.version != version and other.created:  # a reused version keeps its own history
            why = f"Not selected: {decision.challenger} v{version} was the candidate.\n\n{decision_text(decision)}"
            client.set_model_version_tag(name, other.version, DECISION_TAG, NOT_SELECTED)
            set_description_section(client, name, other.version, "Promotion", why)


def decision_text(decision: PromotionDecision) -> str:
    verdict = {
        PROMOTED: f"Promoted to @{CHAMPION}",
        REJECTED: "Not promoted",
        LABEL_ALARM: "Not promoted: label alarm, the run failed",
        IDENTICAL: "Not promoted: identical to the champion",
    }.get(decision.outcome, decision.outcome)
    before = f"v{decision.champion_version_before}" if decision.champion_version_before else "none"
    return f"{verdict} (champion before: {before}).\n\n" + "\n".join(f"- {r}" for r in decision.reasons)


def promote_best_model(
    tracked: list[TrackedModel], evaluations: list[Evaluation], prepared: PreparedData, settings: Settings
) -> PromotionDecision:
    """Decide against the current champion and commit only if it is still the champion (else decide
    again); a label alarm is recorded, then raised."""
    import mlflow

    name = settings.mlflow.registered_model
    with tracking_store(settings.tracking_uri):
        client = mlflow.MlflowClient(settings.tracking_uri)
        for _ in range(MAX_COMPARISONS):
            champion = current_champion(client, name)
            decision = judge(client, tracked, evaluations, prepared, settings, champion)
            if decision.outcome == ALREADY_CHAMPION:
                return decision  # nothing to write: a rerun leaves the registry as it was
            if commit_if_champion_is(client, name, champion, partial(record_decision, client, decision, tracked)):
                if decision.alarm:
                    raise LabelAlarm(f"{name}: {decision.alarm}")
                return decision
    raise PipelineError(
        f"{name}: @champion moved {MAX_COMPARISONS} times while this run compared against it; run again"
    )


@task(name="promote")
def promote_best_model_task(
    tracked: list[TrackedModel], evaluations: list[Evaluation], prepared: PreparedData, settings: Settings
) -> PromotionDecision:
    from prefect import get_run_logger
    from prefect.artifacts import create_markdown_artifact

    decision = promote_best_model(tracked, evaluations, prepared, settings)
    create_markdown_artifact(
        key="promotion-decision",
        markdown=promotion_markdown(decision),
        description=champion_headline(asdict(decision)),
    )
    get_run_logger().info(
        "%s v%s %s: %s",
        decision.challenger,
        decision.challenger_version,
        decision.outcome,
        "; ".join(decision.reasons),
    )
    return decision


def decision_summary(decision: PromotionDecision) -> dict[str, Any]:
    return asdict(decision)
