"""The prediction API's endpoints, one router per concern: scoring, ingest checks, and the data views.

Each router is built for one app from its ``ApiState`` (the patient model is made from the contract
at start-up, so the routes cannot be module-level). ``heart_pipeline.serving.app.create_app`` composes them.
"""

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from heart_pipeline.config import Settings
from heart_pipeline.serving.champion import ChampionCache, probe
from heart_pipeline.serving.ingest_jobs import IngestJobs, public_paths
from heart_pipeline.serving.schema import Prediction, PredictionResponse, patients_body, patients_frame
from heart_pipeline.tracking.registry import predict_with_threshold

TOKEN_ENV = "HEART_PIPELINE_API_TOKEN"


@dataclass(frozen=True)
class ApiState:
    """What the endpoints of one app share, built once by ``create_app``."""

    settings: Settings
    patient: type[BaseModel]
    feature_columns: list[str]
    probe_row: pd.DataFrame
    champion: ChampionCache
    jobs: IngestJobs
    runs_dir: Path
    token: str | None


def count_rows(path: Path) -> int:
    with path.open("rb") as handle:
        return max(0, sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(2**20), b"")) - 1)


def latest_validated(runs_dir: Path) -> Path | None:
    # Flow runs write runs/<flow>/<run>/validation/; ingest checks write the same inside their job folder.
    patterns = ("*/*/validation/validated.csv", "ingested/*/*/*/validation/validated.csv")
    found = [p for pattern in patterns for p in runs_dir.glob(pattern)]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def scoring_errors(settings: Settings) -> dict[int | str, dict[str, Any]]:
    """The error answers /predict and /preprocess document."""
    return {
        413: {"description": "request body above api.max_request_kb"},
        422: {"description": f"invalid fields: at most {settings.api.max_errors_shown} errors, values cut short"},
        503: {"description": "no champion model can be served"},
    }


def health_responses(settings: Settings) -> dict[int | str, dict[str, Any]]:
    """/health's documented answers, with an example of a healthy one."""
    example = {
        "status": "ok",
        "registered_model": settings.mlflow.registered_model,
        "champion_version": "3",
        "serving_version": "3",
        "probe_probability": 0.42,
    }
    return {
        200: {"description": "serving the champion", "content": {"application/json": {"example": example}}},
        503: {"description": "the champion cannot be served (status unavailable, unhealthy or degraded), and why"},
    }


def health_response(state: ApiState) -> JSONResponse:
    """Healthy only when the serving model is the current champion and it scored the probe patient
    (`api.example_patient`) just now. A champion that was refused (untrusted, unloadable, cannot
    score) gives 503 with the reason, while the last good champion keeps serving /predict."""
    champion = state.champion
    champion.refresh()
    body: dict[str, Any] = {
        "registered_model": state.settings.mlflow.registered_model,
        "champion_version": champion.champion,
        "serving_version": champion.version,
    }
    if champion.model is None:
        return JSONResponse(status_code=503, content={"status": "unavailable", **body, "reason": champion.problem})
    try:
        body["probe_probability"] = probe(champion.model, state.probe_row)
    except Exception as exc:  # noqa: BLE001 - health reports the failure rather than raising it
        return JSONResponse(status_code=503, content={"status": "unhealthy", **body, "reason": str(exc)})
    if champion.problem:
        note = f"serving the last good champion, v{champion.version}"
        return JSONResponse(
            status_code=503, content={"status": "degraded", **body, "reason": champion.problem, "note": note}
        )
    return JSONResponse(content={"status": "ok", **body})


def predict_response(state: ApiState, patients: Any) -> PredictionResponse:
    """Score one record or a list with the serving champion, at the model's own threshold."""
    records = patients if isinstance(patients, list) else [patients]
    model, version = state.champion.serving()
    probabilities, labels = predict_with_threshold(model, patients_frame(records, state.feature_columns))
    return PredictionResponse(
        registered_model=state.settings.mlflow.registered_model,
        model_version=version,
        threshold=float(model.threshold),
        predictions=[
            Prediction(probability=float(p), label=int(lbl)) for p, lbl in zip(probabilities, labels, strict=True)
        ],
    )


def preprocess_response(state: ApiState, patients: Any) -> dict[str, Any]:
    """The serving champion's fitted preprocessor applied to raw records."""
    records = patients if isinstance(patients, list) else [patients]
    model, version = state.champion.serving()
    preprocessor = model.estimator_.named_steps["preprocess"]
    matrix = preprocessor.transform(patients_frame(records, state.feature_columns))
    return {
        "model_version": version,
        "columns": preprocessor.get_feature_names_out().tolist(),
        "rows": matrix.tolist(),
    }


def scoring_router(state: ApiState) -> APIRouter:
    """/health, /predict and /preprocess: the champion, as the last good model that scored the probe.
    The body type is built from the contract at start-up, so the endpoints are registered here; their
    work is in the module-level functions above."""
    router = APIRouter()
    settings = state.settings
    one_or_more = patients_body(state.patient, settings.api.example_patient, settings.api.max_records_per_request)

    @router.get("/health", response_class=JSONResponse, responses=health_responses(settings))
    def health() -> JSONResponse:
        """Healthy only when the serving model is the current champion and it scored the probe patient
        (`api.example_patient`) just now. A champion that was refused (untrusted, unloadable, cannot
        score) gives 503 with the reason, while the last good champion keeps serving /predict."""
        return health_response(state)

    @router.post("/predict", response_model=PredictionResponse, responses=scoring_errors(settings))
    def predict(patients: one_or_more) -> PredictionResponse:  # type: ignore[valid-type]
        """Probability of heart disease and a label at the model's own threshold, for each record, in order."""
        return predict_response(state, patients)

    @router.post("/preprocess", responses=scoring_errors(settings))
    def preprocess(patients: one_or_more) -> dict[str, Any]:  # type: ignore[valid-type]
        """The champion's fitted preprocessor applied to raw records: the features the classifier sees."""
        return preprocess_response(state, patients)

    return router


def token_guard(token: str | None) -> Callable[..., None]:
    """A dependency that lets a request through only with the configured bearer token (compared in constant time)."""
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

    return require_token


def ingest_router(state: ApiState) -> APIRouter:
    """/ingest and /jobs/{id}: a CSV checked against the contract by a background job; needs the token."""
    router = APIRouter(dependencies=[Depends(token_guard(state.token))])
    jobs, limits = state.jobs, state.settings.api.ingest

    @router.post(
        "/ingest",
        status_code=202,
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
        if not jobs.reserve():
            raise HTTPException(
                status_code=429,
                detail=f"{limits.max_running_jobs} checks are running; try again later",
                headers={"Retry-After": "30"},
            )
        try:
            job_id, size = await jobs.store(request.stream())
            if size == 0:
                jobs.discard(job_id)
                raise HTTPException(status_code=422, detail="the request body must be a CSV file")
        except BaseException:
            jobs.release()
            raise
        started = jobs.start(job_id)
        removed = jobs.enforce_retention()
        return {
            "job_id": job_id,
            "state": started["state"],
            "bytes": size,
            "status_url": str(request.url_for("job_status", job_id=job_id).path),
            "uploads_deleted_by_retention": len(removed),
        }

    @router.get("/jobs/{job_id}", responses={404: {"description": "no such job"}})
    def job_status(job_id: str) -> dict[str, Any]:
        """The state of an /ingest check: running, passed (with the data-quality summary), failed (with the
        one-line reason naming rows, column and rule), or interrupted (the API stopped while it ran)."""
        status = jobs.status(job_id)
        if status is None:
            raise HTTPException(status_code=404, detail="no such job")
        return status

    return router


def data_router(state: ApiState) -> APIRouter:
    """/quality-checks and /data: read-only views of the latest check and the latest validated rows."""
    router = APIRouter()

    @router.get("/quality-checks", responses={404: {"description": "no check has finished yet"}})
    def quality_checks() -> dict[str, Any]:
        """The result of the most recent finished /ingest check (read only: nothing runs)."""
        latest = state.jobs.latest_finished()
        if latest is None:
            raise HTTPException(status_code=404, detail="no data-quality check has finished yet: POST /ingest a CSV")
        return latest

    @router.get("/data", responses={404: {"description": "nothing validated yet"}})
    def data(limit: Annotated[int, Query(ge=1, le=1000, description="rows to return")] = 10) -> dict[str, Any]:
        """A sample of the rows that passed the most recent validation (a flow run or an /ingest check)."""
        latest = latest_validated(state.runs_dir)
        if latest is None:
            raise HTTPException(status_code=404, detail="no validated data yet: run a flow or POST /ingest")
        frame = pd.read_csv(latest, nrows=limit)
        sample = frame.astype(object).where(frame.notna(), None)
        return {
            "source": public_paths(str(latest), state.runs_dir),
            "rows_total": count_rows(latest),
            "rows": sample.to_dict(orient="records"),
        }

    @router.get(
        "/model-card",
        response_class=HTMLResponse,
        responses={404: {"description": "no such version, or no champion yet"}},
    )
    def model_card(
        version: Annotated[str | None, Query(pattern=r"^[0-9]{1,9}$", description="default: @champion")] = None,
        format: Annotated[str, Query(pattern="^(html|markdown)$")] = "html",
    ) -> Response:
        """The model card of a registered version (the serving champion by default): intended use, training
        data, metrics with intervals, subgroups, external validations and limitations, as one offline page."""
        return model_card_response(state, version, format)

    return router


def model_card_response(state: ApiState, version: str | None, form: str) -> Response:
    """The card read from the registry now (it reflects every validation recorded so far)."""
    from heart_pipeline.errors import PipelineError
    from heart_pipeline.evidence.model_card import render_html, render_markdown
    from heart_pipeline.tracking.model_cards import card_for

    try:
        card = card_for(state.settings, version)
    except PipelineError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    except Exception as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc) or "not found" in str(exc).lower():
            raise HTTPException(status_code=404, detail=f"model version {version} not found") from None
        raise
    if form == "markdown":
        return PlainTextResponse(render_markdown(card), media_type="text/markdown")
    return HTMLResponse(render_html(card))
