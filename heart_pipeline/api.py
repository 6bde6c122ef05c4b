"""The prediction API: FastAPI over models:/heart-disease@champion, plus the data-quality endpoints.

Field types and bounds come from the data contract (great_expectations/), so the API rejects
exactly what the data gate would quarantine, with a 422 that names the field.
"""

import json
import math
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
from fastapi import Body, FastAPI, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, create_model

from heart_pipeline.config import Settings, load_settings_and_contract
from heart_pipeline.contract import Contract
from heart_pipeline.errors import PipelineError
from heart_pipeline.registry import champion_version, load_model_version, predict_with_threshold


def patient_model(contract: Contract, target: str) -> type[BaseModel]:
    """One pydantic model per patient record, built from the contract's bounds and value sets."""
    fields: dict[str, Any] = {}
    for column in contract.columns:
        if column == target:
            continue
        values = contract.value_set(column)
        bounds = contract.bounds(column)
        description = contract.why(column)
        if values is not None:
            fields[column] = (Literal[tuple(values)], Field(description=description))
        elif bounds is not None:
            low, high = bounds
            fields[column] = (float, Field(ge=low, le=high, allow_inf_nan=False, description=description))
        else:
            fields[column] = (float, Field(allow_inf_nan=False, description=description))
    return create_model("Patient", __config__=ConfigDict(extra="forbid"), **fields)


class Prediction(BaseModel):
    probability: float = Field(description="Probability of heart disease")
    label: int = Field(description="1 = disease, at the model's decision threshold")


class PredictionResponse(BaseModel):
    registered_model: str
    model_version: str
    threshold: float
    predictions: list[Prediction]


class ChampionCache:
    """Loads the champion once and reloads it when the alias moves (checked at most every N seconds)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model: Any = None
        self.version: str | None = None
        self.checked_at = 0.0
        self.lock = threading.Lock()

    def get(self) -> tuple[Any, str]:
        with self.lock:
            now = time.monotonic()
            if self.model is None or now - self.checked_at >= self.settings.api.reload_interval_seconds:
                name, uri = self.settings.mlflow.registered_model, self.settings.tracking_uri
                try:
                    version = champion_version(uri, name)
                except PipelineError as exc:
                    self.checked_at = 0.0
                    raise HTTPException(status_code=503, detail=str(exc)) from None
                if version != self.version:
                    self.model = load_model_version(uri, name, version)
                    self.version = version
                self.checked_at = now
            assert self.version is not None
            return self.model, self.version


def _json_safe(value: Any) -> Any:
    """NaN and infinity are valid Python floats but not JSON; echo them back as text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _frame(patients: list[BaseModel], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame([p.model_dump() for p in patients], columns=columns).astype("float64")


def _latest(settings: Settings, pattern: str) -> Path | None:
    found = sorted(settings.resolve(settings.outputs.runs_dir).glob(pattern), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def create_app(config_path: str | None = None) -> FastAPI:
    settings, contract = load_settings_and_contract(config_path)
    feature_columns = [c for c in contract.columns if c != settings.data.target]
    Patient = patient_model(contract, settings.data.target)
    champion = ChampionCache(settings)
    app = FastAPI(
        title="heart-pipeline",
        version="1",
        description="Heart-disease risk from the registered champion model. Fields follow the data contract.",
    )
    state: dict[str, Path | None] = {"last_ingested": None}

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default handler echoes the input, and a NaN in it would turn the 422 into a 500.
        return JSONResponse(status_code=422, content={"detail": _json_safe(jsonable_encoder(exc.errors()))})

    def as_records(payload: Any) -> list[BaseModel]:
        records = payload if isinstance(payload, list) else [payload]
        if not records:
            raise HTTPException(status_code=422, detail="send at least one patient record")
        return records

    @app.get("/health")
    def health() -> dict[str, Any]:
        _, version = champion.get()
        return {"status": "ok", "registered_model": settings.mlflow.registered_model, "champion_version": version}

    @app.post("/predict", response_model=PredictionResponse)
    def predict(
        patients: Annotated[Patient | list[Patient], Body(description="one patient record or a list of them")],  # type: ignore[valid-type]
    ) -> PredictionResponse:
        records = as_records(patients)
        model, version = champion.get()
        probabilities, labels = predict_with_threshold(model, _frame(records, feature_columns))
        return PredictionResponse(
            registered_model=settings.mlflow.registered_model,
            model_version=version,
            threshold=float(model.threshold),
            predictions=[
                Prediction(probability=float(p), label=int(lbl)) for p, lbl in zip(probabilities, labels, strict=True)
            ],
        )

    @app.post("/preprocess")
    def preprocess(
        patients: Annotated[Patient | list[Patient], Body(description="one patient record or a list of them")],  # type: ignore[valid-type]
    ) -> dict[str, Any]:
        """The champion's fitted preprocessor applied to raw records: the features the classifier sees."""
        records = as_records(patients)
        model, version = champion.get()
        preprocessor = model.estimator_.named_steps["preprocess"]
        matrix = preprocessor.transform(_frame(records, feature_columns))
        return {
            "model_version": version,
            "columns": preprocessor.get_feature_names_out().tolist(),
            "rows": matrix.tolist(),
        }

    def run_quality_checks(path: Path) -> dict[str, Any]:
        # The flow runs in its own process through the CLI: the API imports no flow (imports run one way).
        command = [sys.executable, "-m", "heart_pipeline.cli", "validate", "--json", "--data", str(path)]
        if config_path:
            command += ["--config", config_path]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode == 0:
            return {"passed": True, **json.loads(done.stdout)}
        reason = (done.stderr.strip().splitlines() or ["data-quality flow failed"])[-1]
        reason = reason.removeprefix("heart-pipeline: error: ")
        raise HTTPException(status_code=422, detail={"passed": False, "data_path": str(path), "reason": reason})

    @app.post("/ingest")
    async def ingest(request: Request) -> dict[str, Any]:
        """Upload a CSV (request body, text/csv); it is stored and run through the data-quality flow."""
        body = await request.body()
        if not body.strip():
            raise HTTPException(status_code=422, detail="the request body must be a CSV file")
        if len(body) > settings.data.max_file_mb * 2**20:
            raise HTTPException(status_code=413, detail=f"CSV above {settings.data.max_file_mb:g} MB")
        inbox = settings.resolve(settings.outputs.runs_dir) / "ingested"
        inbox.mkdir(parents=True, exist_ok=True)
        path = inbox / f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}.csv"
        path.write_bytes(body)
        state["last_ingested"] = path
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(run_quality_checks, path)

    @app.get("/quality-checks")
    def quality_checks() -> dict[str, Any]:
        """Run the data-quality flow on the last ingested file (or the configured data file)."""
        path = state["last_ingested"] or settings.resolve(settings.data.path)
        return run_quality_checks(path)

    @app.get("/data")
    def data(limit: Annotated[int, Query(ge=1, le=1000)] = 10) -> dict[str, Any]:
        """A sample of the rows that passed the most recent validation."""
        latest = _latest(settings, "*/*/validation/validated.csv")
        if latest is None:
            raise HTTPException(status_code=404, detail="no validated data yet: run a flow or POST /ingest")
        frame = pd.read_csv(latest)
        sample = frame.head(limit).astype(object).where(frame.head(limit).notna(), None)
        return {"source": str(latest), "rows_total": len(frame), "rows": sample.to_dict(orient="records")}

    return app
