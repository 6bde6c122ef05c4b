"""Load and validate config/config.yaml. Every path, column list and hyperparameter lives there."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from heart_pipeline.codebook import Codebook, disagreements_with_contract, load_codebook
from heart_pipeline.contract import Contract, load_contract
from heart_pipeline.errors import ConfigError

PROJECT_ROOT = Path(os.environ.get("HEART_PIPELINE_ROOT", Path(__file__).resolve().parents[1]))
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "config" / "config.yaml"

ModelName = Literal["logistic_regression", "random_forest"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    path: Path
    bundled_source: Path
    bundled_format: Literal["uci", "kaggle"]
    target: str = "target"
    na_values: list[str] = Field(default_factory=lambda: ["?"])
    max_file_mb: float = Field(50, gt=0)
    max_rows: int = Field(gt=0)
    max_memory_mb: int = Field(gt=0)
    disease_label: Literal[0, 1]


class ContractConfig(_Strict):
    suite_path: Path
    codebook_path: Path


class ValidationConfig(_Strict):
    on_warning: Literal["quarantine", "fail"] = "quarantine"
    max_invalid_fraction: float = Field(0.2, ge=0, le=1)


class FeatureGroups(_Strict):
    numeric: list[str]
    categorical: list[str]
    ordinal: list[str]
    binary: list[str]

    @property
    def all(self) -> list[str]:
        return [*self.numeric, *self.categorical, *self.ordinal, *self.binary]


class SplitConfig(_Strict):
    test_size: float = Field(0.2, gt=0, lt=1)
    seed: int = 42


class CrossValidationConfig(_Strict):
    n_splits: int = Field(5, ge=2)
    n_repeats: int = Field(3, ge=1)


class ThresholdConfig(_Strict):
    strategy: Literal["youden", "fixed"] = "youden"
    value: float = Field(0.5, gt=0, lt=1)


class PromotionConfig(_Strict):
    floors: dict[str, float] = Field(default_factory=lambda: {"test_roc_auc": 0.8, "test_recall": 0.7})
    metric: str = "test_roc_auc"
    margin: float = Field(0.01, ge=0, le=1)


class ApiConfig(_Strict):
    reload_interval_seconds: float = Field(10, gt=0)


class LogisticRegressionParams(_Strict):
    C: float = Field(0.48, gt=0)
    l1_ratio: float = Field(1.0, ge=0, le=1)
    solver: Literal["liblinear", "saga"] = "liblinear"
    max_iter: int = Field(10000, ge=1)


class RandomForestParams(_Strict):
    n_estimators: int = Field(100, ge=1)
    max_depth: int | None = Field(10, ge=1)
    min_samples_split: int = Field(5, ge=2)
    random_state: int = 42


class ModelsConfig(_Strict):
    logistic_regression: LogisticRegressionParams = LogisticRegressionParams()
    random_forest: RandomForestParams = RandomForestParams()


class TrainingConfig(_Strict):
    models: list[ModelName] = Field(default_factory=lambda: ["logistic_regression", "random_forest"], min_length=1)
    timeout_seconds: float = Field(600, gt=0)


class MlflowConfig(_Strict):
    tracking_uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_root: Path = Path("mlruns")
    experiment: str = "heart-disease"
    registered_model: str = Field("heart-disease", min_length=1)


class OutputsConfig(_Strict):
    runs_dir: Path = Path("runs")


class PrefectConfig(_Strict):
    work_pool: str = "heart-pool"


class Settings(_Strict):
    data: DataConfig
    contract: ContractConfig
    validation: ValidationConfig = ValidationConfig()
    features: FeatureGroups
    split: SplitConfig = SplitConfig()
    cross_validation: CrossValidationConfig = CrossValidationConfig()
    threshold: ThresholdConfig = ThresholdConfig()
    models: ModelsConfig = ModelsConfig()
    training: TrainingConfig = TrainingConfig()
    mlflow: MlflowConfig
    promotion: PromotionConfig = PromotionConfig()
    outputs: OutputsConfig = OutputsConfig()
    prefect: PrefectConfig = PrefectConfig()
    api: ApiConfig = ApiConfig()

    @model_validator(mode="after")
    def _feature_groups_are_disjoint(self) -> Settings:
        columns = self.features.all
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if repeated:
            raise ValueError(f"features: columns in more than one group: {repeated}")
        if self.data.target in columns:
            raise ValueError(f"features: the target {self.data.target!r} cannot be a feature")
        known = {"test_accuracy", "test_f1", "test_precision", "test_recall", "test_roc_auc"}
        unknown = sorted(set(self.promotion.floors) - known) + sorted({self.promotion.metric} - known)
        if unknown:
            raise ValueError(f"promotion: unknown metrics {unknown}; use {sorted(known)}")
        return self

    def resolve(self, path: Path | str) -> Path:
        """An absolute path: relative ones are taken from the project root."""
        path = Path(path).expanduser()
        return path if path.is_absolute() else PROJECT_ROOT / path

    @property
    def tracking_uri(self) -> str:
        """MLFLOW_TRACKING_URI wins; a relative sqlite path is anchored at the project root."""
        uri = os.environ.get("MLFLOW_TRACKING_URI") or self.mlflow.tracking_uri
        prefix = "sqlite:///"
        if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
            return prefix + str(self.resolve(uri[len(prefix) :]))
        return uri


def load_config(path: Path | str | None = None) -> Settings:
    """Read and validate the YAML config; any problem is one ConfigError line naming the file."""
    config_path = Path(path) if path else DEFAULT_CONFIG_PATH
    try:
        raw: Any = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{config_path}: config file not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = " ".join(str(exc).split())
        raise ConfigError(f"{config_path}: cannot read config: {reason}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{config_path}: config must be a YAML mapping")
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"{config_path}: invalid config: {problems}") from None


def load_settings_and_contract(path: Path | str | None = None) -> tuple[Settings, Contract]:
    """The config plus the data contract it points at, checked against each other."""
    settings = load_config(path)
    contract = load_contract(settings.resolve(settings.contract.suite_path))
    declared = {*settings.features.all, settings.data.target}
    if declared != set(contract.columns):
        extra = sorted(declared - set(contract.columns))
        missing = sorted(set(contract.columns) - declared)
        raise ConfigError(
            f"{path or DEFAULT_CONFIG_PATH}: features and target must cover the contract's columns exactly: "
            f"not in the contract {extra}, not in any feature group {missing}"
        )
    book = load_codebook(settings.resolve(settings.contract.codebook_path))
    disagree = disagreements_with_contract(book, {name: contract.value_set(name) for name in book.columns})
    if disagree:
        raise ConfigError(f"{book.path}: the codebook and the contract disagree: {'; '.join(disagree)}")
    return settings, contract


def load_codebook_for(settings: Settings) -> Codebook:
    """The codebook that ``settings`` points at."""
    return load_codebook(settings.resolve(settings.contract.codebook_path))
