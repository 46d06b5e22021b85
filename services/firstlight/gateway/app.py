"""The ASGI application: the ``/v1`` API, its OpenAPI document and docs page, the Portal and
its static files, one error shape, and the security headers. Everything is served from the
package: no page loads a script, style or font from anywhere else (Content-Security-Policy
``'self'``), so it works in an air-gapped cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from firstlight import errors
from firstlight.blobstore import open_blob_store
from firstlight.clients import Addresses, Clients
from firstlight.clients.policy import INTERNAL_POLICY
from firstlight.config import GatewaySettings
from firstlight.gateway import api, map_api, portal, portal_map, portal_quality, portal_video, quality_api, video_api
from firstlight.gateway.errors import error_body, error_response
from firstlight.gateway.media import Media
from firstlight.gateway.session import SessionCodec

HERE = Path(__file__).parent
STATIC = HERE / "static"

#: Scripts, styles, images and fonts only from this origin; no inline script; no framing.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; font-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


def create_app(settings: GatewaySettings, clients: Clients | None = None) -> FastAPI:
    """The gateway. ``clients`` is made at start-up from the settings' addresses unless given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = clients is None
        app.state.clients = clients or Clients(
            Addresses(settings.ingestion_addr, settings.search_addr, settings.inference_addr, settings.training_addr, settings.curation_addr),
            tls_root_cert=settings.tls_root_cert_file,
            # Shorter than the SDK's: an HTTP caller has its own timeout and retries on 503 too.
            policy=INTERNAL_POLICY,
        )
        try:
            yield
        finally:
            if own:
                await app.state.clients.close()

    app = FastAPI(
        title="Firstlight HTTP API",
        version="1",
        description=(
            "Every resource of the gRPC services over HTTP/JSON. Authenticate with `Authorization: Bearer <key>`: "
            'the same API keys and app scoping as gRPC. Errors: `{"error": {"code", "status", "message"}}`.'
        ),
        openapi_url="/v1/openapi.json",
        docs_url=None,  # FastAPI's Swagger UI loads from a CDN: /v1/docs is served from the package
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.sessions = SessionCodec(settings.session_secret.get_secret_value(), settings.session_ttl_s)
    app.state.media = Media(open_blob_store(settings.blob_url), settings.thumbnail_px, settings.thumbnail_cache)

    @app.exception_handler(errors.FirstlightError)
    async def _domain_error(request: Request, exc: errors.FirstlightError) -> Response:
        if isinstance(exc, errors.Unauthenticated) and portal.wants_html(request):
            return RedirectResponse("/portal/sign-in", status_code=303)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        parts = ["/".join(str(p) for p in e.get("loc", ())) + ": " + str(e.get("msg", "")) for e in exc.errors()]
        return JSONResponse(error_body(grpc.StatusCode.INVALID_ARGUMENT, 400, "; ".join(parts)), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: grpc.StatusCode.NOT_FOUND, 405: grpc.StatusCode.UNIMPLEMENTED}.get(exc.status_code, grpc.StatusCode.INVALID_ARGUMENT)
        return JSONResponse(error_body(code, exc.status_code, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Response:
        return error_response(exc)

    @app.middleware("http")
    async def _limits_and_headers(request: Request, call_next):  # type: ignore[no-untyped-def]
        length = request.headers.get("content-length")
        # A video upload streams through (never held): its limit is the video's own.
        video = video_api.is_video_upload(request.url.path)
        limit, name = (
            (settings.max_video_bytes + video_api.FORM_SLACK_BYTES, "FIRSTLIGHT_MAX_VIDEO_BYTES")
            if video
            else (settings.max_request_bytes, "FIRSTLIGHT_MAX_REQUEST_BYTES")
        )
        if length and length.isdigit() and int(length) > limit:
            return error_response(errors.ResourceExhausted(f"request body of {int(length):,} bytes is over the limit of {limit:,} ({name})"))
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    @app.get("/v1/docs", include_in_schema=False)
    async def docs() -> FileResponse:
        return FileResponse(STATIC / "docs.html", media_type="text/html")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/portal/", status_code=303)

    app.include_router(api.health_router)
    app.include_router(api.router)
    app.include_router(video_api.router)
    app.include_router(quality_api.router)
    app.include_router(map_api.router)
    app.include_router(portal.router)
    app.include_router(portal_video.router)
    app.include_router(portal_quality.router)
    app.include_router(portal_map.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
