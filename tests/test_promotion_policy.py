"""The promotion gate's policy as a pure function (no store)."""

from heart_pipeline.results import Evaluation
from heart_pipeline.tracking.policy import ChampionComparison, comparable, first_passing, gate, label_alarm, rank_by_cv
from heart_pipeline.tracking.registry import CODEBOOK_TAG, LABEL_TAG


def test_gate_logic() -> None:
    floors = {"test_roc_auc": 0.8, "test_recall": 0.7}
    good = {"test_roc_auc": 0.9, "test_recall": 0.8}
    assert gate(good, None, floors, "test_roc_auc", 0.01)[0]
    assert gate(good, {"test_roc_auc": 0.905, "test_recall": 0.9}, floors, "test_roc_auc", 0.01)[0]
    assert not gate(good, {"test_roc_auc": 0.95, "test_recall": 0.9}, floors, "test_roc_auc", 0.01)[0]
    assert not gate({"test_roc_auc": 0.99, "test_recall": 0.6}, None, floors, "test_roc_auc", 0.01)[0]


def evaluation(name: str, cv: float, roc: float, recall: float) -> Evaluation:
    return Evaluation(name, {"cv_roc_auc_mean": cv, "test_roc_auc": roc, "test_recall": recall}, 0.5, "fixed")


def test_candidates_are_tried_in_cv_order_until_one_passes_the_floors() -> None:
    floors = {"test_roc_auc": 0.8, "test_recall": 0.7}
    forest = evaluation("random_forest", 0.892, 0.95, 0.679)  # best CV, fails the recall floor
    linear = evaluation("logistic_regression", 0.891, 0.943, 0.75)
    chosen, notes = first_passing(rank_by_cv([linear, forest]), floors)
    assert chosen is linear
    assert notes[0] == "random_forest (rank 1) failed a floor: test_recall 0.679 < floor 0.700"
    assert first_passing([forest], floors) == (None, [notes[0]])


def comparison(champion_auc: float, interval: tuple[float, float]) -> ChampionComparison:
    return ChampionComparison({}, {"test_roc_auc": champion_auc}, interval, 48, 13, identical=False)


def test_label_alarm_fires_below_chance_or_when_the_interval_is() -> None:
    assert label_alarm(comparison(0.91, (0.82, 0.97)), "3") is None
    assert label_alarm(comparison(0.5, (0.3, 0.7)), "3") is None
    assert "champion v3 disagree: it scores ROC-AUC 0.080 [95% CI 0.020, 0.150] on 48" in label_alarm(
        comparison(0.08, (0.02, 0.15)), "3"
    )
    assert label_alarm(comparison(0.49, (0.3, 0.68)), "3") is not None


def test_only_models_of_the_same_label_definition_are_compared() -> None:
    ours = {CODEBOOK_TAG: "1", LABEL_TAG: "num>0"}
    assert comparable(ours, dict(ours), "2") is None
    why = comparable(ours, {CODEBOOK_TAG: "1", LABEL_TAG: "num>=2"}, "2")
    assert why is not None and why.startswith("not compared with champion v2") and "'num>=2'" in why
    assert "codebook unknown" in str(comparable(ours, {}, "2"))
