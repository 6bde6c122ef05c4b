"""The promotion's pure parts under hostile inputs: champions and challengers with different metric sets,
NaN values and tiny test sets. Rendering never raises, and a decision either completes or leaves the
alias where it was (no store needed: ``record_decision`` runs against an in-memory registry)."""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from heart_pipeline.evidence.render import (
    champion_headline,
    champion_line,
    failure_markdown,
    markdown_text,
    promotion_markdown,
    scoring_summary_markdown,
    training_summary_markdown,
    training_terminal_summary,
    validation_markdown,
)
from heart_pipeline.results import Evaluation, PairedComparison, PromotionDecision, TrackedModel, ValidationReport
from heart_pipeline.tasks.promote import plan_promotion, record_decision
from heart_pipeline.tracking.policy import (
    LABEL_ALARM,
    NOT_SELECTED,
    PROMOTED,
    REJECTED,
    ChampionComparison,
    first_passing,
    gate,
    label_alarm,
    rank_candidates,
)
from heart_pipeline.tracking.registry import CHAMPION, DECISION_TAG, HEADLINE, description_sections

METRIC_NAMES = ["test_roc_auc", "test_recall", "test_accuracy", "test_roc_auc_ci95_low", "test_recall_ci95_low"]
OLD_NAMES = ["test_auc", "accuracy", "roc_auc", "test_accuracy_ci95_low"]
values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(float("nan")), st.floats(0, 1))
metric_sets = st.dictionaries(st.sampled_from(METRIC_NAMES + OLD_NAMES), values, max_size=8)


def decision_from(
    challenger: dict[str, float], champion: dict[str, float] | None, outcome: str, before: str | None, p: float
) -> PromotionDecision:
    promoted = outcome == PROMOTED
    return PromotionDecision(
        registered_model="heart-disease",
        challenger="random_forest",
        challenger_version="2",
        promoted=promoted,
        reasons=["a reason with [a link](http://x.example) and <img src=x onerror=alert(1)>"],
        challenger_metrics=challenger,
        champion_version_before=before,
        champion_metrics=champion,
        champion_version_after="2" if promoted else before,
        comparison=PairedComparison("random_forest", "logistic_regression", 0.0, p),
        floors={"test_roc_auc": 0.8, "test_recall": 0.7},
        outcome=outcome,
        rows_compared=3,
        rows_left_out=0,
        challenger_compared_metrics=champion and {k: v for k, v in challenger.items() if k in champion},
        tie="CV tie" if p >= 0.05 or math.isnan(p) else None,
        tie_rule="higher_sensitivity" if p >= 0.05 or math.isnan(p) else None,
    )


class MemoryRegistry:
    """The registry calls ``record_decision`` makes, in memory; ``fail_on`` makes one call raise."""

    def __init__(self, versions: dict[str, str], champion: str | None, fail_on: str | None = None) -> None:
        self.descriptions = dict(versions)
        self.tags: dict[str, dict[str, str]] = {v: {} for v in versions}
        self.champion, self.fail_on = champion, fail_on

    def _maybe_fail(self, call: str) -> None:
        if call == self.fail_on:
            raise ConnectionError(f"{call} failed")

    def get_model_version(self, name: str, version: str) -> Any:
        self._maybe_fail("get_model_version")
        return SimpleNamespace(description=self.descriptions[version], tags=self.tags[version])

    def update_model_version(self, name: str, version: str, description: str) -> None:
        self._maybe_fail("update_model_version")
        self.descriptions[version] = description

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self._maybe_fail("set_model_version_tag")
        if key == DECISION_TAG and version == "2":
            self._maybe_fail("the decision tag after the alias")
        self.tags[version][key] = value

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        assert alias == CHAMPION
        self._maybe_fail("set_registered_model_alias")
        self.champion = version


def tracked(version: str, name: str) -> TrackedModel:
    return TrackedModel(name, f"run{version}", "1", f"models:/m-{version}", "heart-disease", version, "http://ui")


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    challenger=metric_sets,
    champion=st.one_of(st.none(), metric_sets),
    other=metric_sets,
    outcome=st.sampled_from([PROMOTED, REJECTED, LABEL_ALARM, "identical to champion"]),
    before=st.sampled_from([None, "1", "2"]),
    p_value=st.one_of(st.floats(0, 1), st.just(float("nan"))),
    fail_on=st.sampled_from(
        [
            None,
            "get_model_version",
            "update_model_version",
            "set_model_version_tag",
            "set_registered_model_alias",
            "the decision tag after the alias",
        ]
    ),
)
def test_rendering_never_raises_and_a_decision_completes_or_leaves_the_alias(
    challenger: dict, champion: dict | None, other: dict, outcome: str, before: str | None, p_value: float, fail_on: str
) -> None:
    decision = decision_from(challenger, champion, outcome, before, p_value)
    evaluations = [
        Evaluation("random_forest", challenger, 0.5, "fixed"),
        Evaluation("logistic_regression", other, 0.5, "fixed"),
    ]
    plan = plan_promotion(decision, [tracked("2", "random_forest"), tracked("3", "logistic_regression")], evaluations)
    assert plan.markdown.startswith("# Promotion: random\\_forest v2")
    assert "[a link](" not in plan.markdown and "<img" not in plan.markdown
    champion_line(asdict(decision))
    training_summary_markdown([{"name": "x", "metrics": challenger}, {}], asdict(decision), {})
    training_terminal_summary(
        {"models": {"x": {"metrics": challenger, "threshold": math.nan}}, "promotion": asdict(decision)}
    )
    registry = MemoryRegistry({"1": "## Model\nold", "2": "", "3": "## Model\nLR"}, before, fail_on)
    try:
        record_decision(registry, plan, lambda: None)
    except ConnectionError:
        assert registry.champion == before, "a failed commit leaves the alias where it was"
        if decision.promoted:
            assert registry.tags["2"].get(DECISION_TAG) is None, "no version says promoted that never served"
        return
    assert registry.champion == ("2" if decision.promoted and before != "2" else before)
    if plan.after_commit:  # the alias moved, then a write failed: said, never raised
        assert decision.promoted and plan.after_commit[0].startswith("promoted v2, then could not publish")
    elif before != "2":
        first_line = registry.descriptions["2"].splitlines()[0]
        assert first_line.startswith("random_forest v2: ") and "Own numbers:" in first_line
        assert registry.tags["2"][DECISION_TAG] == outcome
    assert registry.descriptions["3"].splitlines()[0].startswith("logistic_regression v3: ")


def test_the_retrain_crash_is_gone() -> None:
    """The decision that crashed `train --seed 24`: the challenger carries interval bounds, the champion
    (re-scored on the shared rows) does not."""
    challenger = {"test_accuracy": 0.8, "test_accuracy_ci95_low": 0.7, "test_roc_auc": 0.9, "test_recall": 0.8}
    champion = {"test_accuracy": 0.82, "test_roc_auc": 0.91, "test_recall": 0.75}
    markdown = promotion_markdown(decision_from(challenger, champion, PROMOTED, "1", 0.5))
    assert "| test\\_accuracy\\_ci95\\_low | 0\\.700 | - | - |" not in markdown  # numbers are ours: not escaped
    assert "| test\\_accuracy\\_ci95\\_low | 0.700 | - | - |" in markdown
    assert "| test\\_roc\\_auc | 0.900 | 0.900 | 0.910 |" in markdown


def evaluation(name: str, cv: list[float], recall: float, roc: float = 0.9) -> Evaluation:
    metrics = {"cv_roc_auc_mean": sum(cv) / len(cv), "test_recall": recall, "test_roc_auc": roc}
    return Evaluation(name, metrics, 0.5, "fixed", cv_scores={"roc_auc": cv})


@pytest.mark.parametrize(
    ("rule", "first", "says"),
    [
        ("higher_sensitivity", "logistic_regression", "tie rule higher_sensitivity puts logistic_regression first"),
        ("simpler_model", "logistic_regression", "tie rule simpler_model puts logistic_regression first"),
        ("cv_order", "random_forest", "tie rule cv_order keeps random_forest first"),
    ],
)
def test_a_cv_tie_is_broken_by_the_stated_rule(rule: str, first: str, says: str) -> None:
    forest = evaluation("random_forest", [0.91, 0.89, 0.90], recall=0.714)
    linear = evaluation("logistic_regression", [0.90, 0.90, 0.899], recall=0.857)
    tie = PairedComparison("random_forest", "logistic_regression", 0.0003, 0.998)
    ranked, note = rank_candidates([forest, linear], tie, 0.05, rule)
    assert ranked[0].name == first and note is not None and says in note and "p = 0.998 >= alpha 0.05" in note
    # A significant difference is no tie: the CV order stands, whatever the rule.
    ranked, note = rank_candidates([forest, linear], replace(tie, p_value=0.01), 0.05, rule)
    assert ranked[0].name == "random_forest" and note is None


def test_floors_on_the_interval_low_bound() -> None:
    metrics = {"test_recall": 0.71, "test_recall_ci95_low": 0.54}
    assert first_passing([Evaluation("random_forest", metrics, 0.5, "")], {"test_recall": 0.7})[0] is not None
    chosen, notes = first_passing([Evaluation("random_forest", metrics, 0.5, "")], {"test_recall": 0.7}, "ci_low")
    assert chosen is None and "test_recall 95% CI low 0.540 < floor 0.700" in notes[0]


def test_missing_or_nan_metrics_refuse_instead_of_raising() -> None:
    ok, reasons = gate({"test_roc_auc": 0.9}, {"accuracy": 0.8}, {}, "test_roc_auc", 0.01)
    assert not ok and "the champion has no value on the shared rows" in reasons[-1]
    ok, reasons = gate({"test_roc_auc": math.nan}, {"test_roc_auc": 0.8}, {"test_recall": 0.7}, "test_roc_auc", 0.0)
    assert not ok and "test_recall missing < floor 0.700" in reasons[0]
    nan_auc = ChampionComparison({}, {"test_roc_auc": math.nan}, (math.nan, math.nan), 3, 0, identical=False)
    assert label_alarm(nan_auc, "1") is None


HOSTILE = '=HYPERLINK("http://evil.example")[click](http://evil.example) <img src=x onerror=alert(1)> a|b'


def inert(markdown: str) -> bool:
    return "](http" not in markdown and "<img" not in markdown and "[click]" not in markdown


def test_cell_text_is_inert_in_every_markdown_artifact() -> None:
    assert markdown_text(HOSTILE).count("\\|") == 1 and "&lt;img" in markdown_text(HOSTILE)
    report = ValidationReport(
        HOSTILE, "f" * 64, 10, 9, 1, {HOSTILE: 1}, 0, [], "quarantined", [HOSTILE], [HOSTILE],
        html_report_path=HOSTILE, quarantine_path=HOSTILE,
    )  # fmt: skip
    decision = replace(decision_from({HOSTILE: 0.9}, {HOSTILE: 0.8}, REJECTED, "1", 0.5), reasons=[HOSTILE])
    run = SimpleNamespace(name=HOSTILE, id=HOSTILE, parameters={"data_path": HOSTILE})
    state = SimpleNamespace(message=HOSTILE, name="Failed")
    for markdown in (
        validation_markdown(report),
        promotion_markdown(decision),
        training_summary_markdown([{"name": HOSTILE, "metrics": {}}], asdict(decision), {"data_path": HOSTILE}),
        failure_markdown("heart-training", run, state, "nothing"),
        scoring_summary_markdown({"predictions_path": HOSTILE, "quarantine_path": HOSTILE, "model_version": HOSTILE}),
    ):
        assert inert(markdown), markdown


def test_a_not_selected_version_states_its_own_numbers() -> None:
    decision = decision_from({"test_roc_auc": 0.91, "test_recall": 0.714}, None, PROMOTED, None, 0.5)
    lr = {"test_roc_auc": 0.93, "test_recall": 0.857, "cv_roc_auc_mean": 0.9}
    plan = plan_promotion(
        decision,
        [tracked("2", "random_forest"), tracked("3", "logistic_regression")],
        [
            Evaluation("random_forest", decision.challenger_metrics, 0.5, ""),
            Evaluation("logistic_regression", lr, 0.5, ""),
        ],
    )
    registry = MemoryRegistry({"2": "## Model\nRF", "3": "LR registered\n\n## Model\nLR"}, None)
    record_decision(registry, plan, lambda: None)
    first = registry.descriptions["3"].splitlines()[0]
    assert first.startswith(
        "logistic_regression v3: NOT SELECTED, the tie rule higher_sensitivity put random_forest v2"
    )
    assert "test ROC-AUC 0.930, sensitivity 0.857" in first and "0.714" not in first
    assert registry.tags["3"][DECISION_TAG] == NOT_SELECTED
    assert description_sections(registry.descriptions["3"])["Model"] == "LR"
    assert description_sections(registry.descriptions["2"])[HEADLINE].startswith(
        "random_forest v2: PROMOTED to @champion after a CV tie broken by higher_sensitivity (first champion)"
    )
    assert registry.champion == "2" and "CV tie broken by higher_sensitivity" in champion_headline(asdict(decision))


@hypothesis_settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(0, 1), min_size=2, max_size=8).filter(lambda y: 0 < sum(y) < len(y)),
    data=st.data(),
)
def test_tiny_test_sets_give_a_decision_not_an_error(labels: list[int], data: st.DataObject) -> None:
    """Two or more rows of both classes, any probabilities (ties included): metrics, intervals, the alarm
    and the gate all answer, and the rendered decision shows what could not be computed as '-'."""
    import numpy as np

    from heart_pipeline.evidence.stats import bootstrap_intervals, held_out_metrics

    y = np.array(labels)
    probabilities = st.lists(st.sampled_from([0.0, 0.3, 0.5, 1.0]), min_size=len(y), max_size=len(y))
    ours, theirs = (np.array(data.draw(probabilities)) for _ in range(2))
    challenger, champion = held_out_metrics(y, ours, 0.5), held_out_metrics(y, theirs, 0.5)
    intervals = bootstrap_intervals(y, theirs, 0.5, seed=0, n_resamples=20)
    comparison = ChampionComparison(
        challenger,
        champion,
        (intervals["test_roc_auc_ci95_low"], intervals["test_roc_auc_ci95_high"]),
        len(y),
        0,
        False,
    )
    label_alarm(comparison, "1")
    passed, reasons = gate(challenger, champion, {"test_recall": 0.7}, "test_roc_auc", 0.01)
    ours_auc, theirs_auc = challenger["test_roc_auc"], champion["test_roc_auc"]
    assert passed == (challenger["test_recall"] >= 0.7 and ours_auc >= theirs_auc - 0.01)  # NaN compares False
    decision = decision_from({**challenger, **bootstrap_intervals(y, ours, 0.5, 0, 20)}, champion, REJECTED, "1", 1.0)
    assert "# Promotion:" in promotion_markdown(replace(decision, reasons=reasons))
