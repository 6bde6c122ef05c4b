"""Load and validate config/config.yaml. Every path, column list, bound policy and hyperparameter lives there."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from heart_pipeline.data_contract.codebook import Codebook, disagreements_with_contract, load_codebook
from heart_pipeline.data_contract.contract import Contract, load_contract, load_reference_profile
from heart_pipeline.errors import ConfigError
from heart_pipeline.evidence.algorithms import ALGORITHMS

PACKAGE_DIR = Path(__file__).resolve().parent
# What ships inside the wheel: config/, great_expectations/ and data/, laid out as in the checkout.
BUNDLED_ROOT = PACKAGE_DIR / "_bundled"


def find_project_root() -> Path:
    """Where relative paths (data, runs/, mlruns/) resolve, never the current directory by accident.

    1. ``HEART_PIPELINE_ROOT`` when set;
    2. the checkout this package was installed from (editable install or source tree): its root
       holds pyproject.toml and config/config.yaml;
    3. otherwise (an installed wheel) the current directory, the user's workspace.
    """
    if env := os.environ.get("HEART_PIPELINE_ROOT"):
        return Path(env).expanduser().resolve()
    checkout = PACKAGE_DIR.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "config" / "config.yaml").is_file():
        return checkout
    return Path.cwd()


PROJECT_ROOT = find_project_root()


def default_config_path() -> Path:
    """The project's config when there is one (a checkout, or a workspace with config/), else the bundled one."""
    local = PROJECT_ROOT / "config" / "config.yaml"
    return local if local.is_file() else BUNDLED_ROOT / "config" / "config.yaml"


DEFAULT_CONFIG_PATH = default_config_path()
ALGORITHM_NAMES = tuple(ALGORITHMS)


class _Strict(BaseModel):
    # Domain values have no pydantic defaults: config/config.yaml declares each one, and a key missing
    # from it is an error that names the key (never a silent fallback to a value hidden here).
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    path: Path
    bundled_source: Path
    bundled_format: Literal["uci", "kaggle"]
    target: str
    na_values: list[str]
    max_file_mb: float = Field(gt=0)
    max_rows: int = Field(gt=0)
    max_memory_mb: int = Field(gt=0)
    disease_label: Literal[0, 1]


class ContractConfig(_Strict):
    suite_path: Path
    codebook_path: Path
    reference_profile_path: Path


class ValidationConfig(_Strict):
    on_warning: Literal["quarantine", "fail"]
    max_invalid_fraction: float = Field(ge=0, le=1)


class FeatureGroups(_Strict):
    numeric: list[str]
    categorical: list[str]
    ordinal: list[str]
    binary: list[str]

    @property
    def all(self) -> list[str]:
        return [*self.numeric, *self.categorical, *self.ordinal, *self.binary]


class SplitConfig(_Strict):
    test_size: float = Field(gt=0, lt=1)
    seed: int


class CrossValidationConfig(_Strict):
    n_splits: int = Field(ge=2)
    n_repeats: int = Field(ge=1)


class ThresholdConfig(_Strict):
    strategy: Literal["youden", "fixed"]
    value: float = Field(gt=0, lt=1)


class PromotionConfig(_Strict):
    floors: dict[str, float]
    # point: a floor holds on the metric's estimate; ci_low: on the lower bound of its 95% bootstrap interval
    floors_on: Literal["point", "ci_low"]
    metric: str
    margin: float = Field(ge=0, le=1)
    # The two candidates' CV ROC-AUC differ significantly only when the corrected paired t-test gives p < alpha;
    # otherwise it is a tie and ``tie_rule`` orders them: higher_sensitivity (test recall at each model's own
    # threshold), simpler_model (logistic regression first) or cv_order (the higher CV mean, however small).
    alpha: float = Field(gt=0, lt=1)
    tie_rule: Literal["higher_sensitivity", "simpler_model", "cv_order"]


class IngestConfig(_Strict):
    """Uploads to /ingest: what is kept on disk and how many checks run at once."""

    keep_last: int = Field(ge=1)
    max_age_days: float = Field(gt=0)
    max_running_jobs: int = Field(ge=1)


class ApiConfig(_Strict):
    # No defaults: every bound is declared in config/config.yaml, and a missing key is an error naming it.
    reload_interval_seconds: float = Field(gt=0)
    max_request_kb: int = Field(gt=0)
    max_records_per_request: int = Field(ge=1)
    max_errors_shown: int = Field(ge=1)
    token: str | None = Field(min_length=16)
    max_running_launches: int = Field(ge=1)  # deployment runs the API started that are not finished (launches.py)
    ingest: IngestConfig
    example_patient: dict[str, int | float]


# One field per algorithm, each with that algorithm's own parameter schema (heart_pipeline/evidence/algorithms.py).
ModelsConfig: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "ModelsConfig",
    __base__=_Strict,
    **{name: (algorithm.params, ...) for name, algorithm in ALGORITHMS.items()},
)


class TrainingConfig(_Strict):
    models: list[str] = Field(min_length=1)
    timeout_seconds: float = Field(gt=0)
    exclude_columns: list[str]  # features left out of every model (a column a site never records)

    @field_validator("models")
    @classmethod
    def _known_algorithms(cls, models: list[str]) -> list[str]:
        unknown = [m for m in models if m not in ALGORITHMS]
        if unknown:
            raise ValueError(f"unknown algorithms {unknown}; choose from {list(ALGORITHMS)}")
        return models


class DecisionCurveConfig(_Strict):
    low: float = Field(gt=0, lt=1)
    high: float = Field(gt=0, lt=1)
    step: float = Field(gt=0, lt=1)


class EvaluationConfig(_Strict):
    """External validation and the subgroup tables of every evaluation."""

    age_bands: list[float] = Field(min_length=1)
    min_group_rows: int = Field(ge=2)
    site_column: str = Field(min_length=1)
    mostly_imputed_share: float = Field(ge=0, le=1)
    decision_curve: DecisionCurveConfig

    @field_validator("age_bands")
    @classmethod
    def _increasing(cls, edges: list[float]) -> list[float]:
        if sorted(set(edges)) != edges:
            raise ValueError(f"age band edges must increase strictly, got {edges}")
        return edges


class MlflowConfig(_Strict):
    tracking_uri: str
    artifact_root: Path
    experiment: str
    registered_model: str = Field(min_length=1)


class OutputsConfig(_Strict):
    runs_dir: Path
    export_format: Literal["csv", "parquet"]  # the five preprocessing exports; parquet for large runs


class ComputeConfig(_Strict):
    n_jobs: int  # cores for CV folds and forest trees, as scikit-learn reads it (-1: every core)
    local_dask_workers: int = Field(ge=1)  # --dask with no address and no DASK_SCHEDULER_ADDRESS


class PrefectConfig(_Strict):
    work_pool: str
    local_server: Literal["background", "ephemeral"]  # without PREFECT_API_URL: reuse one server, or one per call
    local_server_port: int = Field(ge=1, le=65535)
    local_server_home: Path
    background_server_idle_minutes: float = Field(gt=0)  # the background server ends itself when idle this long


class StackConfig(_Strict):
    """The local stack behind `make up`: where it keeps its state and which ports it serves on."""

    host: str
    prefect_port: int = Field(ge=1, le=65535)
    mlflow_port: int = Field(ge=1, le=65535)
    prefect_home: Path
    state_dir: Path


class MonitoringConfig(_Strict):
    """The monitor: scored batches against the champion's training profile (heart_pipeline/monitoring); the
    retraining trigger's cooldown lives in prefect.yaml (its `within`), where Prefect enforces it."""

    experiment: str = Field(min_length=1)
    psi_threshold: float = Field(gt=0)
    alpha: float = Field(gt=0, lt=1)
    min_rows: int = Field(ge=1)
    min_labelled_rows: int = Field(ge=2)
    min_class_rows: int = Field(ge=1)
    api_window_records: int = Field(ge=1)
    api_window_seconds: float = Field(gt=0)
    keep_rows: bool

    @model_validator(mode="after")
    def _classes_fit_in_the_labelled_rows(self) -> MonitoringConfig:
        if 2 * self.min_class_rows > self.min_labelled_rows:
            raise ValueError("min_labelled_rows must hold min_class_rows of each class (>= 2 * min_class_rows)")
        return self


class Settings(_Strict):
    data: DataConfig
    contract: ContractConfig
    validation: ValidationConfig
    features: FeatureGroups
    split: SplitConfig
    cross_validation: CrossValidationConfig
    threshold: ThresholdConfig
    models: ModelsConfig  # type: ignore[valid-type]
    training: TrainingConfig
    compute: ComputeConfig
    mlflow: MlflowConfig
    promotion: PromotionConfig
    evaluation: EvaluationConfig
    outputs: OutputsConfig
    prefect: PrefectConfig
    stack: StackConfig
    api: ApiConfig
    monitoring: MonitoringConfig

    @model_validator(mode="after")
    def _feature_groups_are_disjoint(self) -> Settings:
        from heart_pipeline.evidence.stats import HELD_OUT_METRICS

        columns = self.features.all
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if repeated:
            raise ValueError(f"features: columns in more than one group: {repeated}")
        if self.data.target in columns:
            raise ValueError(f"features: the target {self.data.target!r} cannot be a feature")
        known = {f"test_{m}" for m in HELD_OUT_METRICS}
        unknown = sorted(set(self.promotion.floors) - known) + sorted({self.promotion.metric} - known)
        if unknown:
            raise ValueError(f"promotion: unknown metrics {unknown}; use {sorted(known)}")
        not_features = sorted(set(self.training.exclude_columns) - set(columns))
        if not_features:
            raise ValueError(f"training.exclude_columns: not features {not_features}; features are {columns}")
        return self

    def with_disease_label(self, code: int | None) -> Settings:
        """These settings for a file that declares ``code`` as its disease label (None: as configured)."""
        if code is None:
            return self
        try:
            data = DataConfig.model_validate({**self.data.model_dump(), "disease_label": code})
        except ValidationError:
            raise ConfigError(f"--disease-label must be 0 or 1, got {code!r}") from None
        return self.model_copy(update={"data": data})

    def without_columns(self, columns: list[str] | None) -> Settings:
        """These settings with ``columns`` added to training.exclude_columns (``train --without COL``)."""
        if not columns:
            return self
        excluded = list(dict.fromkeys([*self.training.exclude_columns, *columns]))
        try:
            return Settings.model_validate(
                {**self.model_dump(), "training": {**self.training.model_dump(), "exclude_columns": excluded}}
            )
        except ValidationError as exc:
            raise ConfigError("; ".join(str(e["msg"]) for e in exc.errors())) from None

    def hyperparameters(self, algorithm: str) -> dict[str, Any]:
        return dict(getattr(self.models, algorithm).model_dump())

    def resolve(self, path: Path | str) -> Path:
        """An absolute path: relative ones are taken from the project root."""
        path = Path(path).expanduser()
        return path if path.is_absolute() else PROJECT_ROOT / path

    def resolve_resource(self, path: Path | str) -> Path:
        """A shipped resource (the contract, the codebook, the bundled data): the project's copy when it
        has one, else the copy inside the installed package."""
        resolved = self.resolve(path)
        if resolved.exists() or Path(path).is_absolute():
            return resolved
        bundled = BUNDLED_ROOT / path
        return bundled if bundled.exists() else resolved

    @property
    def tracking_uri(self) -> str:
        """MLFLOW_TRACKING_URI wins; a relative sqlite path is anchored at the project root."""
        uri = os.environ.get("MLFLOW_TRACKING_URI") or self.mlflow.tracking_uri
        prefix = "sqlite:///"
        if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
            return prefix + str(self.resolve(uri[len(prefix) :]))
        return uri

    @property
    def mlflow_ui_url(self) -> str:
        """Where a person opens the tracking store: the server itself, or the local `mlflow ui` port."""
        uri = self.tracking_uri
        if uri.startswith(("http://", "https://")):
            return uri.rstrip("/")
        return f"http://{self.stack.host}:{self.stack.mlflow_port}"


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
    contract = load_contract(settings.resolve_resource(settings.contract.suite_path))
    declared = {*settings.features.all, settings.data.target}
    if declared != set(contract.columns):
        extra = sorted(declared - set(contract.columns))
        missing = sorted(set(contract.columns) - declared)
        raise ConfigError(
            f"{path or DEFAULT_CONFIG_PATH}: features and target must cover the contract's columns exactly: "
            f"not in the contract {extra}, not in any feature group {missing}"
        )
    book = load_codebook_for(settings)
    disagree = disagreements_with_contract(book, {name: contract.value_set(name) for name in book.columns})
    if disagree:
        raise ConfigError(f"{book.path}: the codebook and the contract disagree: {'; '.join(disagree)}")
    return settings, replace(contract, reference=load_reference_profile_for(settings))


def load_codebook_for(settings: Settings) -> Codebook:
    """The codebook that ``settings`` points at."""
    return load_codebook(settings.resolve_resource(settings.contract.codebook_path))


def default_codebook() -> Codebook:
    """The codebook the default config names (contract.codebook_path): its location is written once."""
    return load_codebook_for(load_config())


def default_reference_profile() -> dict[str, Any]:
    """The bundled data's profile the default config names (contract.reference_profile_path), for code that
    has a contract but no settings: its location is written once."""
    return load_reference_profile_for(load_config())


def load_reference_profile_for(settings: Settings) -> dict[str, Any]:
    """The reference profile that ``settings`` points at (contract.reference_profile_path)."""
    return load_reference_profile(settings.resolve_resource(settings.contract.reference_profile_path))


def write_private_config(directory: Path, overrides: dict[str, Any], base: Path = DEFAULT_CONFIG_PATH) -> Path:
    """``base`` with its runs folder (monitoring reports included), MLflow store and artifacts moved under ``directory``
    and dotted ``overrides`` applied ({"cross_validation.n_repeats": 1}); written to ``directory/config.yaml``.
    For the tests and the benchmark, whose runs must not touch the project's store."""
    config = yaml.safe_load(base.read_text(encoding="utf-8"))
    config["outputs"]["runs_dir"] = str(directory / "runs")
    config["mlflow"]["tracking_uri"] = f"sqlite:///{directory / 'mlflow.db'}"
    config["mlflow"]["artifact_root"] = str(directory / "mlartifacts")
    config["contract"]["suite_path"] = str(PROJECT_ROOT / config["contract"]["suite_path"])
    for dotted, value in overrides.items():
        node = config
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path
