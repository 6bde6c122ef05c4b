"""Flow runs the API starts as Prefect deployment runs, and what it reports about them.

When a Prefect API is configured (``PREFECT_API_URL``, as under ``make up`` or a remote server), the
API creates a flow run of a deployment from prefect.yaml with ``run_deployment(..., timeout=0)`` and
answers at once; a worker runs it, and it shows in the Prefect UI like any other run. The API never
imports a flow: it only talks to the Prefect API. ``LAUNCHABLE`` is the route table: one line per
deployment the API may start (its URL name, deployment, parameter model and the artifact whose
description summarises a completed run).

The worker is assumed to see the same files as the API (one machine, or a shared volume): a
``data_path`` (each of ``data_paths``) is checked here, and the run reads it there.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from heart_pipeline.config import ALGORITHM_NAMES, Settings
from heart_pipeline.evidence.external import site_names

LAUNCH_TAG = "launched-by:heart-api"  # every run the API starts carries it; the bound counts them
MAX_PATH_CHARS = 4096
MAX_SITES = 20  # files one launched external validation may take
MAX_SITE_NAME_CHARS = 80


def allowed_data_roots(settings: Settings) -> list[Path]:
    """Where a launched run may read from: the configured data folder and the API's ingest folder."""
    runs_dir = settings.resolve(settings.outputs.runs_dir)
    return [settings.resolve(settings.data.path).parent, runs_dir / "ingested"]


def checked_data_path(value: str, roots: Sequence[Path], settings: Settings) -> str:
    """``value`` as the real path of an existing file inside one of ``roots``; anything else raises.

    No ``..`` at all (even one that would stay inside), and the check is on the resolved path, so a
    symlink inside a root that points outside it (or /proc, /etc) is refused too."""
    if "\x00" in value or not value.strip():
        raise ValueError("not a file path")
    if ".." in Path(value).parts:
        raise ValueError("may not contain '..'")
    real = Path(os.path.realpath(settings.resolve(value)))
    if not any(real.is_relative_to(os.path.realpath(root)) for root in roots):
        raise ValueError("must name a file inside the data folder or the ingest folder")
    if not real.is_file():
        raise ValueError("no such file in the data folder or the ingest folder")
    return str(real)


def settings_of(info: ValidationInfo) -> Settings:
    settings = (info.context or {}).get("settings")
    if not isinstance(settings, Settings):
        raise ValueError("cannot be checked without the API's settings")
    return settings


class LaunchParameters(BaseModel):
    """What every launchable flow's parameters share: an unknown field is refused (a flow argument such as
    ``config_path`` or ``out_path`` is never the caller's to set). Validate with ``context={"settings": settings}``."""

    model_config = ConfigDict(extra="forbid")


class FileParameters(LaunchParameters):
    """Parameters of a flow that reads one data file."""

    data_path: str | None = Field(
        default=None,
        max_length=MAX_PATH_CHARS,
        description="a file inside the data folder (relative to the project root, or absolute) or the ingest folder",
    )

    @field_validator("data_path")
    @classmethod
    def _inside_the_data_folders(cls, value: str | None, info: ValidationInfo) -> str | None:
        settings = settings_of(info)
        return None if value is None else checked_data_path(value, allowed_data_roots(settings), settings)


class DataQualityParameters(FileParameters):
    disease_label: int | None = Field(default=None, ge=0, le=1, description="the file's code for disease")


class TrainingParameters(DataQualityParameters):
    models: list[str] | None = Field(default=None, min_length=1, max_length=len(ALGORITHM_NAMES))
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)

    @field_validator("models")
    @classmethod
    def _known_algorithms(cls, value: list[str] | None) -> list[str] | None:
        unknown = sorted(set(value or ()) - set(ALGORITHM_NAMES))
        if unknown:
            raise ValueError(f"unknown models {unknown}; use {list(ALGORITHM_NAMES)}")
        return value


class ScoringParameters(FileParameters):
    data_path: str = Field(max_length=MAX_PATH_CHARS, description="the patients to score (required)")


class ExternalValidationParameters(LaunchParameters):
    """heart-external-validation's parameters: labelled site files, each checked like ``data_path``."""

    data_paths: list[Annotated[str, Field(max_length=MAX_PATH_CHARS)]] = Field(
        min_length=1, max_length=MAX_SITES, description="labelled files from other sites, each inside the data folder"
    )
    sites: list[Annotated[str, Field(min_length=1, max_length=MAX_SITE_NAME_CHARS)]] | None = Field(
        default=None, description="one name per file, in order (default: each file's name)"
    )
    version: str | None = Field(default=None, pattern=r"^[0-9]{1,9}$", description="a registered version")
    alias: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$", description="default: champion")
    disease_label: int | None = Field(default=None, ge=0, le=1, description="the files' code for disease")

    @field_validator("data_paths")
    @classmethod
    def _each_inside_the_data_folders(cls, value: list[str], info: ValidationInfo) -> list[str]:
        settings = settings_of(info)
        roots = allowed_data_roots(settings)
        checked = []
        for position, path in enumerate(value):
            try:
                checked.append(checked_data_path(path, roots, settings))
            except ValueError as exc:
                raise ValueError(f"data_paths[{position}] {exc}") from None
        return checked

    @model_validator(mode="after")
    def _one_model_and_distinct_sites(self) -> ExternalValidationParameters:
        # The flow would fail on these at once; refusing them here starts nothing.
        if self.version is not None and self.alias is not None:
            raise ValueError("give version or alias, not both")
        site_names(self.data_paths, self.sites)
        return self


@dataclass(frozen=True)
class Launchable:
    deployment: str  # "FLOW/DEPLOYMENT", as prefect.yaml declares it
    parameters: type[LaunchParameters]
    decision_artifact: str  # the artifact whose description sums up a completed run


LAUNCHABLE: dict[str, Launchable] = {
    "training": Launchable("heart-training/heart-training", TrainingParameters, "heart-training-summary"),
    "data-quality": Launchable("heart-data-quality/heart-data-quality", DataQualityParameters, "data-quality-report"),
    "batch-scoring": Launchable(
        "heart-batch-scoring/heart-batch-scoring", ScoringParameters, "heart-batch-scoring-summary"
    ),
    "external-validation": Launchable(
        "heart-external-validation/heart-external-validation",
        ExternalValidationParameters,
        "heart-external-validation",
    ),
}


class LaunchRefused(Exception):
    """A launch the API will not make now (the bound is reached, the deployment is missing)."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code, self.detail = status_code, detail


ACTIVE_STATES = ("SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING")


class PrefectLauncher:
    """Starts deployment runs on the Prefect API at ``api_url`` and reads them back.

    At most ``max_running`` runs started by the API (tagged ``LAUNCH_TAG``) may be unfinished at once:
    counting them and creating the next happen under one lock, so two requests cannot both take the
    last slot (the count is the server's, so runs started before a restart of the API count too)."""

    def __init__(self, api_url: str, max_running: int, config_path: str | None) -> None:
        self.api_url = api_url
        self.max_running = max_running
        self.config_path = config_path
        self.lock = threading.Lock()

    @contextmanager
    def client(self) -> Iterator[Any]:
        """A sync Prefect client for this API, whatever the process's own Prefect settings say."""
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: self.api_url}), get_client(sync_client=True) as client:
            yield client

    def ui_url(self, flow_run_id: str) -> str | None:
        from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

        with temporary_settings({PREFECT_API_URL: self.api_url}):
            base = get_current_settings().ui_url
        return f"{base.rstrip('/')}/runs/flow-run/{flow_run_id}" if base else None

    def active_launches(self, client: Any) -> int:
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
            FlowRunFilterTags,
        )
        from prefect.client.schemas.objects import StateType

        active = FlowRunFilterStateType(any_=[StateType(s) for s in ACTIVE_STATES])
        flow_runs = FlowRunFilter(tags=FlowRunFilterTags(all_=[LAUNCH_TAG]), state=FlowRunFilterState(type=active))
        return int(client.count_flow_runs(flow_run_filter=flow_runs))

    def launch(self, name: str, parameters: LaunchParameters, config_path: str | None = None) -> dict[str, Any]:
        """Create a flow run of ``name``'s deployment now and return at once (``timeout=0``)."""
        from prefect.deployments import run_deployment
        from prefect.exceptions import ObjectNotFound

        launchable = LAUNCHABLE[name]
        values = {**parameters.model_dump(exclude_none=True), "config_path": config_path or self.config_path}
        values = {k: v for k, v in values.items() if v is not None}
        with self.lock, self.client() as client:
            running = self.active_launches(client)
            if running >= self.max_running:
                raise LaunchRefused(429, f"{running} launched runs are not finished (api.max_running_launches)")
            try:
                flow_run = run_deployment(
                    launchable.deployment, parameters=values, timeout=0, tags=[LAUNCH_TAG], as_subflow=False
                )
            except ObjectNotFound:
                raise LaunchRefused(
                    503, f"deployment {launchable.deployment} not found: deploy prefect.yaml (make up)"
                ) from None
        return self.describe(flow_run, name) | {"parameters": values}

    def describe(self, flow_run: Any, name: str) -> dict[str, Any]:
        state = flow_run.state
        return {
            "mode": "prefect-deployment",
            "flow_run_id": str(flow_run.id),
            "flow_run_name": flow_run.name,
            "flow": name,
            "deployment": LAUNCHABLE[name].deployment,
            "state": state.type.value if state else "UNKNOWN",
            "state_name": state.name if state else None,
            "ui_url": self.ui_url(str(flow_run.id)),
        }

    def status(self, flow_run_id: UUID) -> dict[str, Any] | None:
        """A run the API may have started (a run of a ``LAUNCHABLE`` deployment), with its state and, once
        finished, its summary: the decision artifact's description (for training, the champion decision),
        every artifact's key and description, and for a failed run its one-line reason."""
        from prefect.exceptions import ObjectNotFound

        with self.client() as client:
            try:
                flow_run = client.read_flow_run(flow_run_id)
            except ObjectNotFound:
                return None
            name = self.launchable_name(client, flow_run.deployment_id)
            if name is None:
                return None
            body = self.describe(flow_run, name)
            if flow_run.state is not None and flow_run.state.is_final():
                body["message"] = flow_run.state.message
                body |= self.summary(client, flow_run_id, LAUNCHABLE[name].decision_artifact)
        return body

    @staticmethod
    def launchable_name(client: Any, deployment_id: UUID | None) -> str | None:
        if deployment_id is None:
            return None
        deployment = client.read_deployment(deployment_id)
        return next((k for k, v in LAUNCHABLE.items() if v.deployment.split("/")[1] == deployment.name), None)

    @staticmethod
    def summary(client: Any, flow_run_id: UUID, decision_key: str) -> dict[str, Any]:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        keyed = {a.key: a.description for a in artifacts if a.key}
        return {"decision": keyed.get(decision_key), "artifacts": keyed}
