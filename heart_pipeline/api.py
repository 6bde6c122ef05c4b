"""The prediction API: FastAPI over models:/heart-disease@champion, plus the data-quality endpoints.

Field types and bounds come from the data contract (great_expectations/), each code's meaning from
the codebook, so the API rejects exactly what the data gate would quarantine, with a 422 that names
the field. Every bound (body size, records, errors shown, uploads kept) is in config/config.yaml.
The docs pages (/docs, /redoc) load their scripts from this server (fastapi-offline ships them),
so they work with no internet.
"""

import hmac
import math
import os
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.models import Example
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model
from pydantic_core import PydanticCustomError

from heart_pipeline.api_limits import BodySizeLimit, bounded_errors
from heart_pipeline.codebook import Codebook
from heart_pipeline.config import Settings, load_codebook_for, load_settings_and_contract
from heart_pipeline.contract import Contract
from heart_pipeline.errors import ConfigError
from heart_pipeline.ingest_jobs import IngestJobs, Retention, public_paths
from heart_pipeline.registry import champion_version, load_model_version, predict_with_threshold

TOKEN_ENV = "HEART_PIPELINE_API_TOKEN"
MIN_TOKEN_CHARS = 16  # the same bound as api.token in config.py


def _code_not_bool_or_text(value: Any) -> Any:
    # JSON true is the integer 1 to Python, so Literal[0, 1] would take it; a code is a JSON number.
    if isinstance(value, bool | str):
        kind = {"kind": type(value).__name__}
        raise PydanticCustomError("code_type", "a code must be a JSON number, not {kind}", kind)
    return value


def field_text(column: str, contract: Contract, codebook: Codebook) -> tuple[str, str]:
    """A title and a description for a field: a code's meaning from the codebook, a bound's reason from the contract."""
    why = contract.why(column)
    if column in codebook.columns:
        coded = codebook.column(column)
        return coded.description, f"{coded.description}. Codes: {coded.describe()}."
    return why.split(". ")[0].rstrip(".") or column, why


def patient_model(contract: Contract, target: str, codebook: Codebook, example: dict[str, Any]) -> type[BaseModel]:
    """One pydantic model per patient record, built from the contract's bounds and value sets.

    Strict: a measurement must be a JSON number and a code one of the listed numbers; ``true`` or
    ``"1"`` is a 422, never silently read as 1.
    """
    fields: dict[str, Any] = {}
    for column in contract.columns:
        if column == target:
            continue
        values = contract.value_set(column)
        bounds = contract.bounds(column)
        title, description = field_text(column, contract, codebook)
        if values is not None:
            fields[column] = (
                Annotated[Literal[tuple(values)], BeforeValidator(_code_not_bool_or_text)],
                Field(title=title, description=description),
            )
        elif bounds is not None:
            low, high = bounds
            fields[column] = (
                float,
                Field(ge=low, le=high, allow_inf_nan=False, title=title, description=description),
            )
        else:
            fields[column] = (float, Field(allow_inf_nan=False, title=title, description=description))
    return create_model(
        "Patient",
        __config__=ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [example]}),
        **fields,
    )


class Prediction(BaseModel):
    probability: float = Field(description="Probability of heart disease")
    label: int = Field(description="1 = disease, at the model's decision threshold")


class PredictionResponse(BaseModel):
    registered_model: str
    model_version: str = Field(description="the version that scored these records (the last good champion)")
    threshold: float = Field(description="the model's decision threshold: label is probability >= threshold")
    predictions: list[Prediction]


def probe(model: Any, probe_row: pd.DataFrame) -> float:
    """Score the probe patient; a model that cannot is not fit to serve."""
    probability = float(predict_with_threshold(model, probe_row)[0][0])
    if not (math.isfinite(probability) and 0 <= probability <= 1):
        raise ValueError(f"the probe patient scored {probability!r}, not a probability")
    return probability


class ChampionCache:
    """Serves the last champion that loaded and scored the probe row.

    The alias is checked at most every ``api.reload_interval_seconds``. A new champion that cannot
    be loaded (refused as untrusted, corrupt, unreachable) or cannot score the probe row is not
    served: the previous good model keeps answering, and /health reports why.
    """

    def __init__(self, settings: Settings, probe_row: pd.DataFrame) -> None:
        self.settings = settings
        self.probe_row = probe_row
        self.model: Any = None
        self.version: str | None = None
        self.champion: str | None = None
        self.refused: str | None = None
        self.problem: str | None = None
        self.checked_at = -math.inf
        self.lock = threading.Lock()

    def refresh(self) -> None:
        with self.lock:
            now = time.monotonic()
            if now - self.checked_at < self.settings.api.reload_interval_seconds:
                return
            self.checked_at = now
            name, uri = self.settings.mlflow.registered_model, self.settings.tracking_uri
            try:
                self.champion = champion_version(uri, name)
            except Exception as exc:  # noqa: BLE001 - any store failure: keep serving, report it
                self.problem = f"cannot read {name}@champion: {exc}"
                return
            if self.champion in (self.version, self.refused):
                self.problem = None if self.champion == self.version else self.problem
                return
            try:
                model = load_model_version(uri, name, self.champion)
                probe(model, self.probe_row)
            except Exception as exc:  # noqa: BLE001 - untrusted, corrupt or broken: never serve it
                self.refused = self.champion
                self.problem = f"champion {name} v{self.champion} refused: {type(exc).__name__}: {exc}"
                return
            self.model, self.version, self.refused, self.problem = model, self.champion, None, None

    def serving(self) -> tuple[Any, str]:
        self.refresh()
        if self.model is None or self.version is None:
            raise HTTPException(status_code=503, detail=self.problem or "no champion model loaded")
        return self.model, self.version


def _frame(patients: list[BaseModel], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame([p.model_dump() for p in patients], columns=columns).astype("float64")


def _count_rows(path: Path) -> int:
    with path.open("rb") as handle:
        return max(0, sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(2**20), b"")) - 1)


def _latest_validated(runs_dir: Path) -> Path | None:
    # Flow runs write runs/<flow>/<run>/validation/; ingest checks write the same inside their job folder.
    patterns = ("*/*/validation/validated.csv", "ingested/*/*/*/validation/validated.csv")
    found = [p for pattern in patterns for p in runs_dir.glob(pattern)]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def configured_token(settings: Settings) -> str | None:
    """The bearer token: the environment's wins over the config's; a short one is refused, not used."""
    token = os.environ.get(TOKEN_ENV) or settings.api.token
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"{TOKEN_ENV}: an API token needs at least {MIN_TOKEN_CHARS} characters")
    return token


def create_app(config_path: str | None = None) -> FastAPI:
    settings, contract = load_settings_and_contract(config_path)
    codebook = load_codebook_for(settings)
    feature_columns = [c for c in contract.columns if c != settings.data.target]
    example = settings.api.example_patient
    Patient = patient_model(contract, settings.data.target, codebook, example)
    # The example must itself pass the contract: it is what /health scores and what the docs offer.
    probe_row = _frame([Patient.model_validate(example)], feature_columns)
    champion = ChampionCache(settings, probe_row)
    max_records = settings.api.max_records_per_request
    jobs = IngestJobs(
        settings,
        Retention(settings.api.ingest.keep_last, settings.api.ingest.max_age_days),
        settings.api.ingest.max_running_jobs,
    )
    runs_dir = settings.resolve(settings.outputs.runs_dir)
    token = configured_token(settings)

    app = FastAPIOffline(
        title="heart-pipeline",
        version="1",
        description=(
            "Heart-disease risk from the registered champion model. Fields follow the data contract and the "
            f"codebook; a record outside them is a 422 naming the field. At most {max_records} records per request "
            f"and {settings.api.max_request_kb} KB per body."
        ),
        static_url="/docs-assets",
        # Swagger UI's validator badge would call an outside host.
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.add_middleware(
        BodySizeLimit,
        default_limit=settings.api.max_request_kb * 1024,
        limits={"/ingest": int(settings.data.max_file_mb * 2**20)},
    )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default handler echoes the input once per error: a 5 MB body made a 73 MB answer.
        return JSONResponse(status_code=422, content=bounded_errors(exc.errors(), settings.api.max_errors_shown))

    bearer = HTTPBearer(auto_error=False, description=f"the token set in {TOKEN_ENV} or api.token")

    def require_token(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if token is None:
            raise HTTPException(
                status_code=403, detail=f"ingest is off: set {TOKEN_ENV} (or api.token in the config) to enable it"
            )
        if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
            raise HTTPException(
                status_code=401, detail="a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )

    one_or_more = Annotated[
        Patient | Annotated[list[Patient], Field(min_length=1, max_length=max_records)],  # type: ignore[valid-type]
        Body(
            description=f"one patient record, or a list of 1 to {max_records}",
            openapi_examples={
                "one patient": Example(summary="one patient (the README's)", value=example),
                "two patients": Example(
                    summary="a list of records", value=[example, {**example, "age": 45, "sex": 0, "cp": 0}]
                ),
            },
        ),
    ]
    errors_doc: dict[int | str, dict[str, Any]] = {
        413: {"description": "request body above api.max_request_kb"},
        422: {"description": f"invalid fields: at most {settings.api.max_errors_shown} errors, values cut short"},
        503: {"description": "no champion model can be served"},
    }

    health_example = {
        "status": "ok",
        "registered_model": settings.mlflow.registered_model,
        "champion_version": "3",
        "serving_version": "3",
        "probe_probability": 0.42,
    }

    @app.get(
        "/health",
        response_class=JSONResponse,
        responses={
            200: {"description": "serving the champion", "content": {"application/json": {"example": health_example}}},
            503: {"description": "the champion cannot be served (status unavailable, unhealthy or degraded), and why"},
        },
    )
    def health() -> JSONResponse:
        """Healthy only when the serving model is the current champion and it scored the probe patient
        (`api.example_patient`) just now. A champion that was refused (untrusted, unloadable, cannot
        score) gives 503 with the reason, while the last good champion keeps serving /predict."""
        champion.refresh()
        name = settings.mlflow.registered_model
        body: dict[str, Any] = {
            "registered_model": name,
            "champion_version": champion.champion,
            "serving_version": champion.version,
        }
        if champion.model is None:
            return JSONResponse(status_code=503, content={"status": "unavailable", **body, "reason": champion.problem})
        try:
            body["probe_probability"] = probe(champion.model, probe_row)
        except Exception as exc:  # noqa: BLE001 - health reports the failure rather than raising it
            return JSONResponse(status_code=503, content={"status": "unhealthy", **body, "reason": str(exc)})
        if champion.problem:
            return JSONResponse(
                status_code=503,
                content={
                    "status": "degraded",
                    **body,
                    "reason": champion.problem,
                    "note": f"serving the last good champion, v{champion.version}",
                },
            )
        return JSONResponse(content={"status": "ok", **body})

    @app.post("/predict", response_model=PredictionResponse, responses=errors_doc)
    def predict(patients: one_or_more) -> PredictionResponse:
        """Probability of heart disease and a label at the model's own threshold, for each record, in order."""
        records = patients if isinstance(patients, list) else [patients]
        model, version = champion.serving()
        probabilities, labels = predict_with_threshold(model, _frame(records, feature_columns))
        return PredictionResponse(
            registered_model=settings.mlflow.registered_model,
            model_version=version,
            threshold=float(model.threshold),
            predictions=[
                Prediction(probability=float(p), label=int(lbl)) for p, lbl in zip(probabilities, labels, strict=True)
            ],
        )

    @app.post("/preprocess", responses=errors_doc)
    def preprocess(patients: one_or_more) -> dict[str, Any]:
        """The champion's fitted preprocessor applied to raw records: the features the classifier sees."""
        records = patients if isinstance(patients, list) else [patients]
        model, version = champion.serving()
        preprocessor = model.estimator_.named_steps["preprocess"]
        matrix = preprocessor.transform(_frame(records, feature_columns))
        return {
            "model_version": version,
            "columns": preprocessor.get_feature_names_out().tolist(),
            "rows": matrix.tolist(),
        }

    @app.post(
        "/ingest",
        status_code=202,
        dependencies=[Depends(require_token)],
        openapi_extra={"requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}}},
        responses={
            401: {"description": "missing or wrong bearer token"},
            403: {"description": "ingest is off: no token configured"},
            413: {"description": "CSV above data.max_file_mb"},
            429: {"description": "api.ingest.max_running_jobs checks are already running"},
        },
    )
    async def ingest(request: Request) -> dict[str, Any]:
        """Upload a CSV (the request body, text/csv). It is streamed to disk and checked against the data
        contract by a background `heart-pipeline validate`; the answer is at once, with the job's status
        URL. Needs the bearer token. Old uploads are deleted by the `api.ingest` retention rule."""
        if jobs.busy():
            raise HTTPException(
                status_code=429,
                detail=f"{settings.api.ingest.max_running_jobs} checks are running; try again later",
                headers={"Retry-After": "30"},
            )
        job_id, size = await jobs.store(request.stream())
        if size == 0:
            jobs.discard(job_id)
            raise HTTPException(status_code=422, detail="the request body must be a CSV file")
        state = jobs.start(job_id)
        removed = jobs.enforce_retention()
        return {
            "job_id": job_id,
            "state": state["state"],
            "bytes": size,
            "status_url": str(request.url_for("job_status", job_id=job_id).path),
            "uploads_deleted_by_retention": len(removed),
        }

    @app.get("/jobs/{job_id}", dependencies=[Depends(require_token)], responses={404: {"description": "no such job"}})
    def job_status(job_id: str) -> dict[str, Any]:
        """The state of an /ingest check: running, passed (with the data-quality summary), failed (with the
        one-line reason naming rows, column and rule), or interrupted (the API stopped while it ran)."""
        status = jobs.status(job_id)
        if status is None:
            raise HTTPException(status_code=404, detail="no such job")
        return status

    @app.get("/quality-checks", responses={404: {"description": "no check has finished yet"}})
    def quality_checks() -> dict[str, Any]:
        """The result of the most recent finished /ingest check (read only: nothing runs)."""
        latest = jobs.latest_finished()
        if latest is None:
            raise HTTPException(status_code=404, detail="no data-quality check has finished yet: POST /ingest a CSV")
        return latest

    @app.get("/data", responses={404: {"description": "nothing validated yet"}})
    def data(limit: Annotated[int, Query(ge=1, le=1000, description="rows to return")] = 10) -> dict[str, Any]:
        """A sample of the rows that passed the most recent validation (a flow run or an /ingest check)."""
        latest = _latest_validated(runs_dir)
        if latest is None:
            raise HTTPException(status_code=404, detail="no validated data yet: run a flow or POST /ingest")
        frame = pd.read_csv(latest, nrows=limit)
        sample = frame.astype(object).where(frame.notna(), None)
        return {
            "source": public_paths(str(latest), runs_dir),
            "rows_total": _count_rows(latest),
            "rows": sample.to_dict(orient="records"),
        }

    return app
