"""HTTP server: the Analytics API v4 and report-stats API over FastAPI."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import orjson
from fastapi import FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from metrics_etl.serve.keys import KeyStore
from metrics_etl.serve.reader import ANALYTICS, ApiError, Reader
from metrics_etl.timeparse import shown

AuthHeader = Annotated[str | None, Header(description="Bearer <API key>")]
OptionalQuery = Annotated[str | None, Query()]
# Printable ASCII is passed to the reader as sent (percent escapes included, decoded there once);
# other bytes of the request target (raw UTF-8, say) are percent-encoded first.
URL_SAFE = bytes(range(0x21, 0x7F)).decode("ascii")


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A JSON error answer."""
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


def request_target(request: Request) -> str:
    """The path and query as the client sent them, not yet percent-decoded (Starlette's
    `request.url.path` is decoded, and the reader decodes each path segment itself)."""
    path = quote(request.scope.get("raw_path") or request.url.path.encode(), safe=URL_SAFE)
    query = quote(request.scope.get("query_string", b""), safe=URL_SAFE)
    return path + (f"?{query}" if query else "")


def _warm(reader: Reader) -> None:
    """Load the serving index at start-up, so the first requests need not."""
    with contextlib.suppress(ApiError):  # nothing published yet: a later request loads it
        reader.warm()


def create_app(warehouse: Path) -> FastAPI:
    """Build the app serving one warehouse; new snapshots are picked up per request."""
    reader = Reader(Path(warehouse), background=True)
    threading.Thread(target=_warm, args=(reader,), daemon=True).start()
    store = KeyStore(Path(warehouse))
    app = FastAPI(
        redirect_slashes=False,  # a trailing slash is a 404 (README), not a 307 redirect
        title="metrics-etl API",
        description="Analytics API v4 and report-stats batch API, served from published snapshots. "
        "Authenticate with `Authorization: Bearer <key>` (see `metrics-etl keys create`).",
        version="4",
    )

    def answer(request: Request, authorization: str | None) -> Response:
        """Authenticate, then let the reader answer the raw path and query."""
        scheme, _, secret = (authorization or "").partition(" ")
        account_id = store.account_for(secret.strip()) if scheme.lower() == "bearer" else None
        if account_id is None:
            return _error(
                401,
                "unauthorized",
                "missing or invalid API key; send Authorization: Bearer <key>",
                {"WWW-Authenticate": "Bearer"},
            )
        status, body = reader.get(request_target(request), account_id)
        return Response(orjson.dumps(body), status_code=status, media_type="application/json")

    for endpoint in ANALYTICS:

        def handler(
            request: Request,
            channel_id: Annotated[str | None, Query(description="channel id (integer)")] = None,
            start_date: Annotated[str | None, Query(description="ISO 8601, inclusive")] = None,
            end_date: Annotated[str | None, Query(description="ISO 8601, exclusive")] = None,
            authorization: AuthHeader = None,
        ) -> Response:
            return answer(request, authorization)

        handler.__name__ = endpoint
        app.get(f"/api/v4/analytics/{endpoint}", name=endpoint, summary=endpoint.replace("_", " "))(
            handler
        )

    # `:path` so that an organization holding an encoded slash (%2F) reaches the reader, which
    # splits the raw path and decodes each segment once.
    @app.get("/batch/{organization:path}/report_stats", summary="report stats")
    def report_stats(
        request: Request,
        organization: Annotated[str, PathParam(description="organization username")],
        page: Annotated[str | None, Query(description="page, from 1")] = None,
        per_page: Annotated[str | None, Query(description="1 to 1000, default 1000")] = None,
        include_spaces: Annotated[
            str | None, Query(description="'all' to include personal spaces")
        ] = None,
        authorization: AuthHeader = None,
    ) -> Response:
        return answer(request, authorization)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, "bad_request", str(exc.errors()[:1]))

    @app.exception_handler(404)
    async def missing(request: Request, exc: Exception) -> JSONResponse:
        return _error(404, "not_found", f"no endpoint at {shown(request.url.path, 200)}; see /docs")

    @app.exception_handler(405)
    async def method(request: Request, exc: Exception) -> JSONResponse:
        return _error(405, "method_not_allowed", "only GET is supported", {"Allow": "GET"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, "internal", "internal error; the server log has details")

    return app


def app_from_env() -> FastAPI:
    """The app over the warehouse that METRICS_ETL_WAREHOUSE names: the factory each worker
    process of `metrics-etl serve --workers N` imports (uvicorn `factory=True`)."""
    from metrics_etl import settings

    return create_app(settings.load().warehouse)
