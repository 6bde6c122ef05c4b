"""The prediction API's endpoints, one router per concern: scoring, ingest checks, and the data views.

Each router is built for one app from its ``ApiState`` (the patient model is made from the contract
at start-up, so the routes cannot be module-level). ``heart_pipeline.serving.app.create_app`` composes them.
"""

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import pandas as pd
from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError

from heart_pipeline.config import Settings
from heart_pipeline.serving.champion import ChampionCache, probe
from heart_pipeline.serving.ingest_jobs import IngestJobs, public_paths
from heart_pipeline.serving.launches import LAUNCHABLE, DataQualityParameters, LaunchRefused, PrefectLauncher
from heart_pipeline.serving.schema import Prediction, PredictionResponse, patients_body, patients_frame
from heart_pipeline.serving.window import PredictionWindow
from heart_pipeline.tracking.registry import predict_with_threshold

TOKEN_ENV = "HEART_PIPELINE_API_TOKEN"
EMBEDDED = "embedded"
# The flows POST /runs/{flow} can start: one member per LAUNCHABLE entry, so the docs list them.
LaunchableFlow = Enum("LaunchableFlow", {name: name for name in LAUNCHABLE}, type=str)  # type: ignore[misc]


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
    launcher: PrefectLauncher | None  # None: no Prefect API configured, the API runs checks itself (embedded)
    window: PredictionWindow  # /predict's records, recorded for monitoring a window at a time


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
    frame = patients_frame(records, state.feature_columns)
    probabilities, labels = predict_with_threshold(model, frame)
    state.window.add(version, frame, probabilities)
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
                status_code=403,
                detail=f"ingest and launching are off: set {TOKEN_ENV} (or api.token in the config) to enable them",
            )
        if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
            raise HTTPException(
                status_code=401, detail="a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )

    return require_token


def ingest_router(state: ApiState) -> APIRouter:
    """/ingest and /jobs/{id}: a CSV checked against the contract (a job or a deployment run); needs the token."""
    router = APIRouter(dependencies=[Depends(token_guard(state.token))])

    @router.post(
        "/ingest",
        status_code=202,
        openapi_extra={"requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}}},
        responses={
            401: {"description": "missing or wrong bearer token"},
            403: {"description": "ingest is off: no token configured"},
            413: {"description": "CSV above data.max_file_mb"},
            429: {"description": "api.ingest.max_running_jobs checks (api.max_running_launches runs) are running"},
        },
    )
    async def ingest(request: Request) -> dict[str, Any]:
        """Upload a CSV (the request body, text/csv), streamed to disk and checked against the data contract:
        with a Prefect API, by a `heart-data-quality` deployment run (it shows in the Prefect UI; follow it at
        /runs/{id}); without one, by a background `heart-pipeline validate`. The answer is at once, with the
        job's status URL and the mode that served it. Needs the bearer token. Old uploads are deleted by the
        `api.ingest` retention rule."""
        return await ingest_response(state, request)

    @router.get("/jobs/{job_id}", responses={404: {"description": "no such job"}})
    def job_status(job_id: str) -> dict[str, Any]:
        """The state of an /ingest check: running, passed (with the data-quality summary), failed (with the
        one-line reason naming rows, column and rule), or interrupted (the API stopped while it ran)."""
        status = state.jobs.status(job_id)
        if status is None:
            raise HTTPException(status_code=404, detail="no such job")
        return status

    return router


async def ingest_response(state: ApiState, request: Request) -> dict[str, Any]:
    jobs, limits = state.jobs, state.settings.api.ingest
    embedded = state.launcher is None
    # Embedded checks run here: their place is taken before the upload streams in (Prefect runs are
    # bounded by api.max_running_launches instead).
    if embedded and not jobs.reserve():
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
        if embedded:
            jobs.release()
        raise
    job_url = str(request.url_for("job_status", job_id=job_id).path)
    if state.launcher is None:
        started, status_url = jobs.start(job_id), job_url
    else:
        started = await run_in_threadpool(launch_ingest_check, state, job_id)
        status_url = f"/runs/{started['flow_run_id']}"
    removed = jobs.enforce_retention()
    return {
        "job_id": job_id,
        "mode": started["mode"],
        "state": started["state"],
        "bytes": size,
        "status_url": status_url,
        "job_url": job_url,
        **({"flow_run_id": started["flow_run_id"], "ui_url": started["ui_url"]} if "flow_run_id" in started else {}),
        "uploads_deleted_by_retention": len(removed),
    }


def launch_ingest_check(state: ApiState, job_id: str) -> dict[str, Any]:
    """A `heart-data-quality` deployment run on the stored upload, writing into the job's folder."""
    assert state.launcher is not None
    upload, config = state.jobs.prepare(job_id)
    parameters = DataQualityParameters.model_validate({"data_path": str(upload)}, context={"settings": state.settings})
    try:
        launched = state.launcher.launch("data-quality", parameters, str(config))
    except LaunchRefused as exc:
        state.jobs.discard(job_id)
        raise refusal(exc) from None
    return state.jobs.record_launch(job_id, launched)


def refusal(exc: LaunchRefused) -> HTTPException:
    headers = {"Retry-After": "30"} if exc.status_code == 429 else None
    return HTTPException(status_code=exc.status_code, detail=exc.detail, headers=headers)


def no_prefect_api() -> HTTPException:
    return HTTPException(
        status_code=503,
        detail={
            "mode": EMBEDDED,
            "reason": "no Prefect API is configured: set PREFECT_API_URL (make up) to launch runs",
        },
    )


def launch_response(state: ApiState, flow: str, body: dict[str, Any] | None) -> JSONResponse:
    """Validate the parameters (nothing starts on a 422), then create a deployment run and answer at once."""
    launchable = LAUNCHABLE[flow]
    try:
        parameters = launchable.parameters.model_validate(body or {}, context={"settings": state.settings})
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None
    if state.launcher is None:
        raise no_prefect_api()
    try:
        launched = state.launcher.launch(flow, parameters)
    except LaunchRefused as exc:
        raise refusal(exc) from None
    # The status URL is added after the paths are made public: it starts with "/" too, and would be cut to its id.
    answer = {**public_paths(launched, state.runs_dir), "status_url": f"/runs/{launched['flow_run_id']}"}
    return JSONResponse(status_code=202, content=answer)


def run_status_response(state: ApiState, flow_run_id: UUID) -> dict[str, Any]:
    if state.launcher is None:
        raise no_prefect_api()
    status = state.launcher.status(flow_run_id)
    if status is None:
        raise HTTPException(status_code=404, detail="no run of a launchable deployment has this id")
    return dict(public_paths(status, state.runs_dir))


LAUNCH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or wrong bearer token"},
    403: {"description": "launching is off: no token configured"},
    422: {"description": "invalid parameters (a data path outside the data or ingest folder, an unknown field)"},
    429: {"description": "api.max_running_launches runs started by the API are not finished"},
    503: {"description": "no Prefect API configured (embedded mode), or the deployment is not deployed"},
}


def runs_router(state: ApiState) -> APIRouter:
    """POST /runs/{flow} and GET /runs/{id}: deployment runs started through Prefect; needs the token."""
    router = APIRouter(dependencies=[Depends(token_guard(state.token))])

    @router.post("/runs/{flow}", status_code=202, responses=LAUNCH_RESPONSES)
    def launch(flow: LaunchableFlow, parameters: Annotated[dict[str, Any] | None, Body()] = None) -> JSONResponse:
        """Start a flow run of that flow's deployment (prefect.yaml) with these parameters, through the
        Prefect API; the answer is at once (202) with its id, state and Prefect UI link. Parameters:
        training: data_path, models, seed, disease_label; data-quality: data_path, disease_label;
        batch-scoring: data_path (required); external-validation: data_paths (required, one labelled file
        per site), sites, version or alias (default @champion), disease_label. Every data path must be a
        file inside the data folder or the ingest folder. Needs the bearer token and a Prefect API
        (PREFECT_API_URL)."""
        return launch_response(state, flow.value, parameters)

    @router.get("/runs/{flow_run_id}", responses={404: {"description": "no such launchable run"}})
    def run_status(flow_run_id: UUID) -> dict[str, Any]:
        """A launched run's state; once finished, its summary in `decision` (training: the champion decision;
        external validation: the headline figures per site), its artifacts' descriptions and, when it failed,
        its one-line reason."""
        return run_status_response(state, flow_run_id)

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
