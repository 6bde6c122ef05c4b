"""The codebook: every coded column's meaning, the label definition, and the foreign codings."""

from pathlib import Path

import pytest
import yaml

from heart_pipeline.config import default_codebook, load_codebook_for, load_settings_and_contract
from heart_pipeline.data_contract.codebook import codebook_from_dict, disagreements_with_contract
from heart_pipeline.errors import ConfigError

CODED = ["sex", "cp", "fbs", "restecg", "exang", "slope", "ca", "thal", "target"]


def test_every_coded_column_has_a_meaning_for_each_code() -> None:
    book = default_codebook()
    assert sorted(book.columns) == sorted(CODED)
    assert book.version >= 1
    assert "num > 0" in book.label_definition
    assert book.meaning("cp", 0) == "asymptomatic"
    assert book.meaning("restecg", 1) == "normal"
    assert book.meaning("target", 1).startswith("disease")
    assert "not a cp code" in book.meaning("cp", 7)


def test_contract_value_sets_agree_with_the_codebook() -> None:
    settings, contract = load_settings_and_contract()
    book = load_codebook_for(settings)
    assert disagreements_with_contract(book, {c: contract.value_set(c) for c in book.columns}) == []


def test_a_disagreeing_codebook_is_refused(tmp_path: Path) -> None:
    book = default_codebook()
    raw = yaml.safe_load(book.path.read_text())
    raw["columns"]["cp"]["codes"][4] = "made up"
    changed = codebook_from_dict(raw, tmp_path / "codebook.yaml")
    _, contract = load_settings_and_contract()
    problems = disagreements_with_contract(changed, {c: contract.value_set(c) for c in changed.columns})
    assert problems == ["cp: contract [0, 1, 2, 3] vs codebook [0, 1, 2, 3, 4]"]


def test_uci_mapping_is_the_verified_one() -> None:
    uci = default_codebook().foreign_coding("uci")
    assert uci.to_ours["cp"].codes == {1: 3, 2: 1, 3: 2, 4: 0}
    assert uci.to_ours["restecg"].codes == {0: 1, 1: 2, 2: 0}, "a rotation, not a swap"
    assert uci.to_ours["slope"].codes == {1: 2, 2: 1, 3: 0}
    assert uci.to_ours["thal"].codes == {3: 2, 6: 1, 7: 3}
    assert uci.to_ours["num"].column == "target"
    assert {n: t for n, t in uci.to_ours["num"].codes.items()} == {0: 0, 1: 1, 2: 1, 3: 1, 4: 1}
    assert uci.target_column("target") == "num"


def test_mapped_codes_mean_the_same_thing_in_both_codings() -> None:
    """UCI's text for each code and ours agree after the mapping (the meanings are one fact each)."""
    book = default_codebook()
    uci = book.foreign_coding("uci")
    for source in ("cp", "slope", "thal", "restecg"):
        for theirs, ours in uci.to_ours[source].codes.items():
            their_meaning = uci.codes[source][theirs].lower()
            assert book.meaning(source, ours).lower().startswith(their_meaning), (source, theirs, ours)


def test_kaggle_target_is_inverted_and_placeholders_are_missing() -> None:
    kaggle = default_codebook().foreign_coding("kaggle")
    assert kaggle.to_ours["target"].codes == {0: 1, 1: 0}
    assert kaggle.to_ours["thal"].codes[0] is None
    assert kaggle.to_ours["ca"].codes[4] is None


def test_a_mapping_to_a_code_we_do_not_have_is_refused(tmp_path: Path) -> None:
    raw = yaml.safe_load(default_codebook().path.read_text())
    raw["foreign_codings"]["uci"]["to_ours"]["cp"]["codes"][4] = 9
    with pytest.raises(ConfigError, match=r"maps to codes \[9\]"):
        codebook_from_dict(raw, tmp_path / "codebook.yaml")


def test_contract_command_prints_each_code_meaning(capsys: pytest.CaptureFixture[str]) -> None:
    from heart_pipeline.cli import main

    assert main(["contract"]) == 0
    out = capsys.readouterr().out
    assert "0 = asymptomatic" in out
    assert "1 = normal" in out  # restecg in our coding
    assert "label: target = 1" in out
