from pathlib import Path

import pytest
import yaml

from heart_pipeline.config import DEFAULT_CONFIG_PATH, PROJECT_ROOT, load_config, load_settings_and_contract
from heart_pipeline.errors import ConfigError


def test_default_config_matches_the_contract() -> None:
    settings, contract = load_settings_and_contract()
    assert contract.columns[-1] == settings.data.target
    assert sorted(settings.features.all) == sorted(contract.columns[:-1])
    assert settings.resolve("data/heart.csv") == PROJECT_ROOT / "data" / "heart.csv"


def _write(tmp_path: Path, mutate) -> Path:
    config = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    config["contract"]["suite_path"] = str(PROJECT_ROOT / config["contract"]["suite_path"])
    mutate(config)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c["split"].update(test_size=1.5), "split.test_size"),
        (lambda c: c["models"]["random_forest"].update(n_trees=5), "random_forest.n_trees"),
        (lambda c: c["features"]["binary"].append("age"), "more than one group"),
        (lambda c: c["features"]["numeric"].remove("chol"), "not in any feature group ['chol']"),
        (lambda c: c["validation"].update(on_warning="ignore"), "validation.on_warning"),
        (lambda c: c["training"].update(models=["xgboost"]), "training.models"),
        (lambda c: c["monitoring"].pop("min_rows"), "monitoring.min_rows"),
        (lambda c: c["monitoring"].update(alpha=0), "monitoring.alpha"),
        (lambda c: c["monitoring"].update(min_class_rows=40), "min_labelled_rows must hold min_class_rows"),
    ],
)
def test_bad_config_gives_one_line_naming_the_file(tmp_path: Path, mutate, message: str) -> None:
    path = _write(tmp_path, mutate)
    with pytest.raises(ConfigError) as error:
        load_settings_and_contract(path)
    assert str(path) in str(error.value)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_and_unparsable_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(bad)


def test_tracking_uri_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_config()
    assert settings.tracking_uri == f"sqlite:///{PROJECT_ROOT / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert settings.tracking_uri == "http://mlflow.example:5000"


MONITORING_KEYS = {
    "experiment",
    "psi_threshold",
    "alpha",
    "min_rows",
    "min_labelled_rows",
    "min_class_rows",
    "api_window_records",
    "api_window_seconds",
    "keep_rows",
}


def test_every_monitoring_key_is_declared_and_commented() -> None:
    """The monitor reads no hidden default: each key sits in config.yaml with the reason beside it."""
    settings = load_config()
    assert set(settings.monitoring.model_dump()) == MONITORING_KEYS
    lines = DEFAULT_CONFIG_PATH.read_text().split("\nmonitoring:", 1)[1].splitlines()[1:]
    section = [line for line in lines if line.startswith("  ") and not line.lstrip().startswith("#")]
    commented = {line.split(":", 1)[0].strip() for line in section if "#" in line}
    assert commented == MONITORING_KEYS
