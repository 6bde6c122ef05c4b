"""Promote step: pick the challenger honestly, gate it against floors and the current champion,
and move the MLflow ``champion`` alias only when it earns it. Also: rollback."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from prefect import task
from scipy import stats

from heart_pipeline.config import Settings
from heart_pipeline.errors import PipelineError
from tasks.evaluate import Evaluation, held_out_metrics
from tasks.preprocess import PreparedData, read_split
from tasks.track import TrackedModel, tracking_store

CHAMPION = "champion"


@dataclass(frozen=True)
class PairedComparison:
    """Corrected resampled t-test (Nadeau & Bengio) of two models' CV ROC-AUC on the same folds."""

    better: str
    worse: str
    mean_difference: float
    p_value: float


@dataclass(frozen=True)
class PromotionDecision:
    registered_model: str
    challenger: str
    challenger_version: str
    promoted: bool
    reasons: list[str]
    challenger_metrics: dict[str, float]
    champion_version_before: str | None
    champion_metrics: dict[str, float] | None
    champion_version_after: str | None
    comparison: PairedComparison | None = None
    floors: dict[str, float] = field(default_factory=dict)
    metric: str = "test_roc_auc"
    margin: float = 0.0


def compare_on_same_folds(a: Evaluation, b: Evaluation, n_train: int, n_splits: int) -> PairedComparison:
    """Which model has the higher CV ROC-AUC, and how sure we can be (fold overlap corrected)."""
    diff = np.array(a.cv_scores["roc_auc"]) - np.array(b.cv_scores["roc_auc"])
    better, worse = (a.name, b.name) if diff.mean() >= 0 else (b.name, a.name)
    k = len(diff)
    n_test = n_train // n_splits
    variance = np.var(diff, ddof=1) * (1 / k + n_test / (n_train - n_test))
    if variance <= 0 or k < 2:
        p_value = 1.0 if diff.mean() == 0 else 0.0
    else:
        t_stat = diff.mean() / math.sqrt(variance)
        p_value = float(2 * stats.t.sf(abs(t_stat), df=k - 1))
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


def score_version_on(model: Any, prepared: PreparedData, target: str) -> dict[str, float]:
    """Held-out metrics of any registered version on today's test set, at its own threshold."""
    x_test, y_test = read_split(prepared.test_path, target)
    proba = model.predict_proba(x_test.astype("float64"))[:, 1]
    threshold = float(getattr(model, "threshold", 0.5))
    return held_out_metrics(y_test.to_numpy(), proba, threshold)


def current_champion(client: Any, name: str) -> str | None:
    import mlflow

    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except mlflow.exceptions.MlflowException:
        return None


def promote_best_model(
    tracked: list[TrackedModel],
    evaluations: list[Evaluation],
    prepared: PreparedData,
    settings: Settings,
) -> PromotionDecision:
    import mlflow
    import mlflow.sklearn

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
            champion_model = mlflow.sklearn.load_model(f"models:/{name}/{champion_version}")
            champion_metrics = score_version_on(champion_model, prepared, settings.data.target)
        promoted, reasons = gate(best.metrics, champion_metrics, policy.floors, policy.metric, policy.margin)
        decision = PromotionDecision(
            registered_model=name,
            challenger=best.name,
            challenger_version=challenger.version,
            promoted=promoted,
            reasons=reasons,
            challenger_metrics={k: v for k, v in best.metrics.items() if k.startswith("test_")},
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


def rollback_champion(tracking_uri: str, name: str, to_version: str | None = None) -> tuple[str, str]:
    """Point ``champion`` back at the version it replaced (or at ``to_version``); returns (from, to)."""
    import mlflow

    with tracking_store(tracking_uri):
        client = mlflow.MlflowClient(tracking_uri)
        current = current_champion(client, name)
        if current is None:
            raise PipelineError(f"{name}: there is no champion to roll back")
        if to_version is None:
            to_version = client.get_model_version(name, current).tags.get("promotion.previous_champion")
            if not to_version:
                raise PipelineError(f"{name}: champion v{current} has no previous champion to roll back to")
        try:
            client.get_model_version(name, to_version)
        except mlflow.exceptions.MlflowException:
            raise PipelineError(f"{name}: version {to_version} does not exist") from None
        client.set_registered_model_alias(name, CHAMPION, to_version)
        client.set_model_version_tag(name, current, "promotion.rolled_back", f"champion moved back to v{to_version}")
        # Keep the history walkable: rolling back again continues to the version before that one.
        return current, to_version


def promotion_markdown(decision: PromotionDecision) -> str:
    verdict = "PROMOTED to @champion" if decision.promoted else "NOT promoted; @champion unchanged"
    rows = "\n".join(
        f"| {k} | {v:.3f} | {decision.champion_metrics[k]:.3f} |"
        if decision.champion_metrics
        else f"| {k} | {v:.3f} | - |"
        for k, v in decision.challenger_metrics.items()
    )
    comparison = ""
    if decision.comparison:
        c = decision.comparison
        comparison = (
            f"\nOn the same repeated CV folds, {c.better} beats {c.worse} by {c.mean_difference:.3f} ROC-AUC "
            f"(corrected resampled t-test p = {c.p_value:.3f}"
            + ("; not a significant difference)" if c.p_value >= 0.05 else ")")
            + ".\n"
        )
    return (
        f"# Promotion: {decision.challenger} v{decision.challenger_version} {verdict}\n\n"
        f"Challenger chosen by mean CV ROC-AUC on the training folds.{comparison}\n"
        + "\n".join(f"- {r}" for r in decision.reasons)
        + f"\n\nChampion before: v{decision.champion_version_before or '-'}; "
        f"after: v{decision.champion_version_after or '-'}\n\n"
        f"| metric (today's test set) | challenger | champion |\n|---|---|---|\n{rows}\n"
    )


@task(name="promote")
def promote_best_model_task(
    tracked: list[TrackedModel], evaluations: list[Evaluation], prepared: PreparedData, settings: Settings
) -> PromotionDecision:
    from prefect import get_run_logger
    from prefect.artifacts import create_markdown_artifact

    decision = promote_best_model(tracked, evaluations, prepared, settings)
    create_markdown_artifact(key="promotion-decision", markdown=promotion_markdown(decision))
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
