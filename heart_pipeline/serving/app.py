"""The prediction API: FastAPI over models:/heart-disease@champion, plus the data-quality endpoints.

Field types and bounds come from the data contract (great_expectations/), each code's meaning from
the codebook (``api_schema``); the champion is served by ``api_serving``; the endpoints are in
``api_routes``. Every bound (body size, records, errors shown, uploads kept) is in config/config.yaml.
The docs pages (/docs, /redoc) load their scripts from this server (fastapi-offline ships them),
so they work with no internet.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline

from heart_pipeline.config import Settings, load_codebook_for, load_settings_and_contract
from heart_pipeline.errors import ConfigError
from heart_pipeline.serving.champion import ChampionCache
from heart_pipeline.serving.ingest_jobs import IngestJobs, Retention
from heart_pipeline.serving.launches import PrefectLauncher
from heart_pipeline.serving.limits import BodySizeLimit, bounded_errors
from heart_pipeline.serving.routes import TOKEN_ENV, ApiState, data_router, ingest_router, runs_router, scoring_router
from heart_pipeline.serving.schema import patient_model, patients_frame
from heart_pipeline.serving.window import PredictionWindow

__all__ = ["TOKEN_ENV", "configured_token", "create_app"]

MIN_TOKEN_CHARS = 16  # the same bound as api.token in config.py
DOCS_ASSETS = "/docs-assets"
REDOC_SCRIPT = "/docs-offline/redoc.standalone.js"
REDOC_LOGO_URL = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def configured_token(settings: Settings) -> str | None:
    """The bearer token: the environment's wins over the config's; a short one is refused, not used."""
    token = os.environ.get(TOKEN_ENV) or settings.api.token
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"{TOKEN_ENV}: an API token needs at least {MIN_TOKEN_CHARS} characters")
    return token


def launcher_for(settings: Settings, config_path: str | None, prefect_api_url: str | None) -> PrefectLauncher | None:
    """Deployment runs through Prefect when a Prefect API is given or set in PREFECT_API_URL; else None (embedded)."""
    url = prefect_api_url or os.environ.get("PREFECT_API_URL")
    config = str(Path(config_path).resolve()) if config_path else None  # the worker may start elsewhere
    return PrefectLauncher(url, settings.api.max_running_launches, config) if url else None


def api_state(config_path: str | None, prefect_api_url: str | None = None) -> ApiState:
    """Everything the endpoints share, from the config, the contract and the codebook."""
    settings, contract = load_settings_and_contract(config_path)
    feature_columns = [c for c in contract.columns if c != settings.data.target]
    example = settings.api.example_patient
    patient = patient_model(contract, settings.data.target, load_codebook_for(settings), example)
    # The example must itself pass the contract: it is what /health scores and what the docs offer.
    probe_row = patients_frame([patient.model_validate(example)], feature_columns)
    ingest = settings.api.ingest
    return ApiState(
        settings=settings,
        patient=patient,
        feature_columns=feature_columns,
        probe_row=probe_row,
        champion=ChampionCache(settings, probe_row),
        jobs=IngestJobs(settings, Retention(ingest.keep_last, ingest.max_age_days), ingest.max_running_jobs),
        runs_dir=settings.resolve(settings.outputs.runs_dir),
        token=configured_token(settings),
        launcher=launcher_for(settings, config_path, prefect_api_url),
        window=PredictionWindow(settings),
    )


def create_app(config_path: str | None = None, prefect_api_url: str | None = None) -> FastAPI:
    """The API over ``config_path``'s store. With a Prefect API (``prefect_api_url``, else PREFECT_API_URL)
    /runs and /ingest start deployment runs through it; without one, /ingest checks run in the background."""
    state = api_state(config_path, prefect_api_url)
    api = state.settings.api

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        state.window.close()  # the last, partial window is recorded too

    app = FastAPIOffline(
        lifespan=lifespan,
        title="heart-pipeline",
        version="1",
        description=(
            "Heart-disease risk from the registered champion model. Fields follow the data contract and the "
            f"codebook; a record outside them is a 422 naming the field. At most {api.max_records_per_request} "
            f"records per request and {api.max_request_kb} KB per body."
        ),
        static_url=DOCS_ASSETS,
        redoc_url=None,  # served below, with ReDoc's logo taken from this server
        # Swagger UI's validator badge would call an outside host.
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.add_middleware(
        BodySizeLimit,
        default_limit=api.max_request_kb * 1024,
        limits={"/ingest": int(state.settings.data.max_file_mb * 2**20)},
    )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default handler echoes the input once per error: a 5 MB body made a 73 MB answer.
        return JSONResponse(status_code=422, content=bounded_errors(exc.errors(), api.max_errors_shown))

    for router in (scoring_router(state), ingest_router(state), runs_router(state), data_router(state)):
        app.include_router(router)
    add_offline_redoc(app)
    return app


def offline_redoc_script() -> bytes:
    """fastapi-offline's ReDoc bundle with its one outside request (the Redocly logo) pointed at this
    server's favicon: the bundle hard-codes the logo's CDN address and has no option to drop it."""
    bundle = (Path(fastapi_offline.__file__).parent / "static" / "redoc.standalone.js").read_bytes()
    return bundle.replace(REDOC_LOGO_URL.encode(), f"{DOCS_ASSETS}/favicon.png".encode())


def add_offline_redoc(app: FastAPI) -> None:
    """/redoc from this server only: the page, its script (patched once, kept in memory) and its favicon."""
    script = offline_redoc_script()

    @app.get(REDOC_SCRIPT, include_in_schema=False)
    def redoc_script() -> Response:
        return Response(script, media_type="text/javascript", headers={"Cache-Control": "max-age=3600"})

    @app.get("/redoc", include_in_schema=False)
    def redoc_page(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{REDOC_SCRIPT}",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )
