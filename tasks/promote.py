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

from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from prefect import task

from heart_pipeline.config import Settings
from heart_pipeline.errors import PipelineError
from heart_pipeline.evidence.render import champion_headline, markdown_text, promotion_markdown
from heart_pipeline.evidence.stats import bootstrap_intervals, held_out_metrics
from heart_pipeline.results import Evaluation, PairedComparison, PromotionDecision, TrackedModel
from heart_pipeline.tasks.preprocess import PreparedData
from heart_pipeline.tracking.policy import (
    ALREADY_CHAMPION,
    IDENTICAL,
    LABEL_ALARM,
    MAX_COMPARISONS,
    MIN_COMPARISON_ROWS,
    PROMOTED,
    REJECTED,
    ChampionComparison,
    VersionRecord,
    comparable,
    compare_on_same_folds,
    first_passing,
    gate,
    label_alarm,
    rank_candidates,
    version_records,
)
from heart_pipeline.tracking.registry import (
    CHAMPION,
    DECISION_TAG,
    PREVIOUS_CHAMPION_TAG,
    commit_if_champion_is,
    current_champion,
    description_with,
    load_model_version,
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
    tie: str | None = None

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
            alpha=policy.alpha,
            tie=self.tie,
            tie_rule=policy.tie_rule if self.tie else None,
            floors_on=policy.floors_on,
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
    policy = settings.promotion
    by_name = {e.name: e for e in evaluations}
    pair = [by_name[t.name] for t in tracked]
    n_splits = settings.cross_validation.n_splits
    comparison = compare_on_same_folds(pair[0], pair[1], prepared.n_train, n_splits) if len(pair) == 2 else None
    ranked, tie = rank_candidates(evaluations, comparison, policy.alpha, policy.tie_rule)
    candidate, notes = first_passing(ranked, policy.floors, policy.floors_on)
    chosen = candidate or ranked[0]
    version = {t.name: t.version for t in tracked}[chosen.name]
    decided = Decider(chosen, version, notes, comparison, settings, champion, tie)
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


@dataclass(frozen=True)
class PromotionPlan:
    """Everything a decision writes and publishes, rendered before anything is written: a renderer that
    fails, fails here, while the registry is as it was."""

    decision: PromotionDecision
    records: list[VersionRecord]
    markdown: str
    headline: str
    after_commit: list[str] = field(default_factory=list)  # what could not be written once the alias moved


def plan_promotion(
    decision: PromotionDecision, tracked: list[TrackedModel], evaluations: list[Evaluation]
) -> PromotionPlan:
    """Render the registry records and the artifact of ``decision`` (pure: no store call)."""
    metrics = {e.name: e.metrics for e in evaluations}
    candidates = {t.version: (t.name, metrics.get(t.name, {})) for t in tracked}
    created = {t.version for t in tracked if t.created}
    return PromotionPlan(
        decision,
        version_records(decision, candidates, created),
        promotion_markdown(decision),
        champion_headline(asdict(decision)),
    )


def record_decision(client: Any, plan: PromotionPlan, still_held: Callable[[], None]) -> None:
    """Write the planned records; the alias moves last but one.

    Order: every new description is composed from the stored one first (a failure there writes
    nothing); then the records that hold whatever happens next (the other candidates, the challenger's
    description and previous-champion tag); then, if the lease is still ours, the alias; then the
    challenger's decision tag, so that a crash leaves no version tagged "promoted" that never was the
    champion (the doctor lists a version without a decision)."""
    decision, name = plan.decision, plan.decision.registered_model
    descriptions = {
        r.version: description_with(
            client.get_model_version(name, r.version).description or "", r.headline, "Promotion", r.section
        )
        for r in plan.records
    }
    challenger = next((r for r in plan.records if r.version == decision.challenger_version), None)
    for record in plan.records:
        if record is not challenger:
            client.set_model_version_tag(name, record.version, DECISION_TAG, record.outcome)
            client.update_model_version(name, record.version, description=descriptions[record.version])
    if challenger is None:
        return  # the champion failed today's floors: it stays, and its own record stays as it was
    previous = client.get_model_version(name, challenger.version).description or ""
    client.update_model_version(name, challenger.version, description=descriptions[challenger.version])
    if decision.promoted:
        if decision.champion_version_before:
            client.set_model_version_tag(
                name, challenger.version, PREVIOUS_CHAMPION_TAG, decision.champion_version_before
            )
        try:
            still_held()
            client.set_registered_model_alias(name, CHAMPION, challenger.version)
        except BaseException:
            with suppress(Exception):  # it did not happen: the description says so again (best effort)
                client.update_model_version(name, challenger.version, description=previous)
            raise
    try:
        client.set_model_version_tag(name, challenger.version, DECISION_TAG, challenger.outcome)
    except Exception as exc:
        if not decision.promoted:
            raise  # nothing moved: failing the run tells the truth
        plan.after_commit.append(
            f"promoted v{challenger.version}, then could not publish its {DECISION_TAG} tag: {exc}"
            " (`heart-pipeline doctor` lists it as undecided)"
        )


def promote_best_model(
    tracked: list[TrackedModel], evaluations: list[Evaluation], prepared: PreparedData, settings: Settings
) -> PromotionDecision:
    """Decide against the current champion and commit only if it is still the champion (else decide
    again); a label alarm is recorded, then raised."""
    return promote_and_plan(tracked, evaluations, prepared, settings).decision


def promote_and_plan(
    tracked: list[TrackedModel], evaluations: list[Evaluation], prepared: PreparedData, settings: Settings
) -> PromotionPlan:
    """``promote_best_model`` that also returns the rendered artifact of the committed decision."""
    import mlflow

    name = settings.mlflow.registered_model
    with tracking_store(settings.tracking_uri):
        client = mlflow.MlflowClient(settings.tracking_uri)
        for _ in range(MAX_COMPARISONS):
            champion = current_champion(client, name)
            decision = judge(client, tracked, evaluations, prepared, settings, champion)
            if decision.outcome == ALREADY_CHAMPION:
                return plan_promotion(decision, tracked, evaluations)  # a rerun leaves the registry as it was
            plan = plan_promotion(decision, tracked, evaluations)
            if commit_if_champion_is(client, name, champion, partial(record_decision, client, plan)):
                if decision.alarm:
                    raise LabelAlarm(f"{name}: {decision.alarm}")
                return plan
    raise PipelineError(
        f"{name}: @champion moved {MAX_COMPARISONS} times while this run compared against it; run again"
    )


def publish_promotion(plan: PromotionPlan, logger: Any) -> None:
    """After the commit nothing may fail the run: a failure to publish is said, with what moved."""
    from prefect.artifacts import create_markdown_artifact

    decision = plan.decision
    for problem in plan.after_commit:
        logger.warning("%s", problem)
    extra = "".join(f"\n\n**After the commit:** {markdown_text(p)}" for p in plan.after_commit)
    try:
        create_markdown_artifact(key="promotion-decision", markdown=plan.markdown + extra, description=plan.headline)
    except Exception as exc:  # noqa: BLE001 - the decision is committed; the run must say so, not fail
        moved = (
            f"promoted v{decision.challenger_version}"
            if decision.promoted
            else f"@champion stays v{decision.champion_version_after or '-'}"
        )
        logger.warning("%s, then could not publish the promotion artifact: %s", moved, exc)


@task(name="promote")
def promote_best_model_task(
    tracked: list[TrackedModel], evaluations: list[Evaluation], prepared: PreparedData, settings: Settings
) -> PromotionDecision:
    from prefect import get_run_logger

    plan = promote_and_plan(tracked, evaluations, prepared, settings)
    logger = get_run_logger()
    publish_promotion(plan, logger)
    decision = plan.decision
    logger.info(
        "%s v%s %s: %s",
        decision.challenger,
        decision.challenger_version,
        decision.outcome,
        "; ".join(([decision.tie] if decision.tie else []) + decision.reasons),
    )
    return decision


def decision_summary(decision: PromotionDecision) -> dict[str, Any]:
    return asdict(decision)
