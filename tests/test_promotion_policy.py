"""The promotion gate's policy as a pure function (no store)."""

from heart_pipeline.tasks.promote import gate


def test_gate_logic() -> None:
    floors = {"test_roc_auc": 0.8, "test_recall": 0.7}
    good = {"test_roc_auc": 0.9, "test_recall": 0.8}
    assert gate(good, None, floors, "test_roc_auc", 0.01)[0]
    assert gate(good, {"test_roc_auc": 0.905, "test_recall": 0.9}, floors, "test_roc_auc", 0.01)[0]
    assert not gate(good, {"test_roc_auc": 0.95, "test_recall": 0.9}, floors, "test_roc_auc", 0.01)[0]
    assert not gate({"test_roc_auc": 0.99, "test_recall": 0.6}, None, floors, "test_roc_auc", 0.01)[0]
