"""The model card: sections, limitations written from the numbers, offline HTML, escaped text."""

from __future__ import annotations

from heart_pipeline.evidence.model_card import ModelCard, limitations, render_html, render_markdown


def card(**overrides) -> ModelCard:
    facts = {
        "registered_model": "heart-disease",
        "version": "3",
        "algorithm": "random_forest",
        "created": "2026-12-03 09:00 UTC",
        "decision": "promoted",
        "is_champion": True,
        "threshold": 0.42,
        "label_definition": "target = 1: disease (UCI num > 0)",
        "codebook_version": "1",
        "training": {
            "source": "data/heart.csv",
            "rows": 297,
            "rows_train": 237,
            "rows_test": 60,
            "sites": ["cleveland"],
        },
        "metrics": {
            "test_roc_auc": 0.91,
            "test_roc_auc_ci95_low": 0.83,
            "test_roc_auc_ci95_high": 0.97,
            "test_recall": 0.8,
        },
        "floors": {"test_recall": 0.7},
    }
    facts.update(overrides)
    return ModelCard(**facts)


def test_limitations_come_from_the_numbers() -> None:
    va = {
        "site": "va",
        "n": 200,
        "prevalence": 0.75,
        "metrics": {"mean_predicted": 0.39, "roc_auc": 0.71, "sensitivity": 0.36},
    }
    women = {"attribute": "sex", "group": "female", "n": 19, "positives": 6, "metrics": {"sensitivity": 0.5}}
    found = limitations(card(external=[va], subgroups=[women]))
    text = " | ".join(found)
    assert "under-predicts at va: mean predicted 0.39 against 0.75 observed" in text
    assert "ROC-AUC 0.710 against 0.910" in text and "finds 36% of patients with disease" in text
    assert (
        "sex female (n = 19)" in text
        and "trained on 297 patients" in text
        and "one site's patients (cleveland)" in text
    )
    assert limitations(card(training={"rows": 5000, "sites": ["a", "b"]})) == []


def test_the_html_is_self_contained_and_escapes_text() -> None:
    hostile = card(algorithm='<img src="https://evil.example/x.png" onerror="alert(1)">')
    page = render_html(hostile)
    assert "<img" not in page and "&lt;img" in page
    assert 'src="https://evil' not in page
    assert "default-src 'none'" in page
    assert "0.910 [0.830, 0.970]" in page  # metrics with their intervals
    markdown = render_markdown(card())
    assert markdown.startswith("# Model card: heart-disease v3 (random_forest, @champion)")
    assert "## Not for" in markdown and "## External validation" in markdown


def test_a_version_description_reads_as_a_table_with_intervals_not_json() -> None:
    from heart_pipeline.evidence.render import metrics_table_markdown

    table = metrics_table_markdown(
        {"test_roc_auc": 0.91, "test_roc_auc_ci95_low": 0.83, "test_roc_auc_ci95_high": 0.97, "cv_roc_auc_mean": 0.89}
    )
    assert "| ROC-AUC | 0.910 [0.830, 0.970] |" in table and "| CV roc auc (training folds) | 0.890 |" in table
    assert "{" not in table


def test_a_version_trained_on_every_column_has_no_excluded_columns() -> None:
    from heart_pipeline.tracking.model_cards import excluded_columns

    # tasks/register.py tags "none" when nothing was left out; the card once read it as a column called "none".
    assert excluded_columns("none") == [] and excluded_columns("") == []
    assert excluded_columns("ca,thal") == ["ca", "thal"]
