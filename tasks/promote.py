"""Promote step: pick the challenger honestly, gate it against floors and the current champion,
and move the MLflow ``champion`` alias only when it earns it. Also: rollback."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import numpy as np
from prefect import task

from heart_pipeline.config import Settings
from heart_pipeline.registry import CHAMPION, current_champion, load_model_version, tracking_store
from heart_pipeline.render import champion_headline, promotion_markdown
from heart_pipeline.results import Evaluation, PairedComparison, PromotionDecision, TrackedModel
from heart_pipeline.stats import corrected_paired_t_test, held_out_metrics
from heart_pipeline.tasks.preprocess import PreparedData


def compare_on_same_folds(a: Evaluation, b: Evaluation, n_train: int, n_splits: int) -> PairedComparison:
    """Which model has the higher CV ROC-AUC, and how sure we can be (fold overlap corrected)."""
    diff = np.array(a.cv_scores["roc_auc"]) - np.array(b.cv_scores["roc_auc"])
    better, worse = (a.name, b.name) if diff.mean() >= 0 else (b.name, a.name)
    n_test = n_train // n_splits
    p_value = corrected_paired_t_test(diff, n_train - n_test, n_test)
    return PairedComparison(better, worse, float(abs(diff.mean())), p_value)


def select_challenger(evaluations: list[Evaluation]) -> Evaluation:
    """The best candidate by mean CV ROC-AUC on the training folds, never by the test set."""
    return max(evaluations, key=lambda e: e.metrics["cv_roc_auc_mean"])


def gate(
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    floors: dict[str, float],
    metric: str,
    margin: float,
) -> tuple[bool, list[str]]:
    """Promote only if every floor holds and the challenger is no worse than the champion - margin."""
    reasons = []
    passed = True
    for name, floor in floors.items():
        ok = challenger[name] >= floor
        passed &= ok
        reasons.append(f"{name} {challenger[name]:.3f} {'>=' if ok else '<'} floor {floor:.3f}")
    if champion is None:
        reasons.append("no current champion")
    else:
        ok = challenger[metric] >= champion[metric] - margin
        passed &= ok
        reasons.append(
            f"{metric} {challenger[metric]:.3f} vs champion {champion[metric]:.3f} on today's test set: "
            f"{'within' if ok else 'worse than'} margin {margin:.3f}"
        )
    return passed, reasons


def score_version_on(model: Any, prepared: PreparedData) -> dict[str, float]:
    """Held-out metrics of any registered version on today's test set, at its own threshold."""
    proba = model.predict_proba(prepared.x_test.astype("float64"))[:, 1]
    threshold = float(getattr(model, "threshold", 0.5))
    return held_out_metrics(prepared.y_test.to_numpy(), proba, threshold)


def promote_best_model(
    tracked: list[TrackedModel],
    evaluations: list[Evaluation],
    prepared: PreparedData,
    settings: Settings,
) -> PromotionDecision:
    import mlflow

    name = settings.mlflow.registered_model
    best = select_challenger(evaluations)
    challenger = next(t for t in tracked if t.name == best.name)
    comparison = (
        compare_on_same_folds(evaluations[0], evaluations[1], prepared.n_train, settings.cross_validation.n_splits)
        if len(evaluations) == 2
        else None
    )
    policy = settings.promotion
    with tracking_store(settings.tracking_uri):
        client = mlflow.MlflowClient(settings.tracking_uri)
        champion_version = current_champion(client, name)
        champion_metrics = None
        if champion_version is not None:
            champion_model = load_model_version(settings.tracking_uri, name, champion_version)
            champion_metrics = score_version_on(champion_model, prepared)
        promoted, reasons = gate(best.metrics, champion_metrics, policy.floors, policy.metric, policy.margin)
        decision = PromotionDecision(
            registered_model=name,
            challenger=best.name,
            challenger_version=challenger.version,
            promoted=promoted,
            reasons=reasons,
            # Point estimates only: the champion is re-scored today without bootstrap intervals.
            challenger_metrics={k: v for k, v in best.metrics.items() if k.startswith("test_") and "_ci95_" not in k},
            champion_version_before=champion_version,
            champion_metrics=champion_metrics,
            champion_version_after=challenger.version if promoted else champion_version,
            comparison=comparison,
            floors=dict(policy.floors),
            metric=policy.metric,
            margin=policy.margin,
        )
        record_decision(client, decision, [t for t in tracked if t is not challenger])
        if promoted:
            client.set_registered_model_alias(name, CHAMPION, challenger.version)
    return decision


def record_decision(client: Any, decision: PromotionDecision, others: list[TrackedModel]) -> None:
    """The decision and its numbers live on the model versions, where the registry UI shows them."""
    version = decision.challenger_version
    tags = {
        "promotion.decision": "promoted" if decision.promoted else "rejected",
        "promotion.reasons": "; ".join(decision.reasons),
        "promotion.champion_before": decision.champion_version_before or "none",
        "promotion.challenger_metrics": json.dumps({k: round(v, 4) for k, v in decision.challenger_metrics.items()}),
    }
    if decision.champion_metrics is not None:
        tags["promotion.champion_metrics_today"] = json.dumps(
            {k: round(v, 4) for k, v in decision.champion_metrics.items()}
        )
    if decision.promoted and decision.champion_version_before:
        tags["promotion.previous_champion"] = decision.champion_version_before
    for key, value in tags.items():
        client.set_model_version_tag(decision.registered_model, version, key, value)
    for other in others:
        client.set_model_version_tag(
            decision.registered_model,
            other.version,
            "promotion.decision",
            f"not selected: lower CV ROC-AUC than {decision.challenger}",
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
        "promoted" if decision.promoted else "not promoted",
        "; ".join(decision.reasons),
    )
    return decision


def decision_summary(decision: PromotionDecision) -> dict[str, Any]:
    return asdict(decision)
