"""HTTP server: the Analytics API v4 and report-stats API over FastAPI, with a typed OpenAPI
contract, health, readiness and Prometheus metrics, and docs served offline."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import re
import sys
import threading
import time
from collections.abc import AsyncIterator
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import numpy as np
import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from metrics_etl.publish.snapshot import current_id
from metrics_etl.serve import api_models, params
from metrics_etl.serve.keys import KeyStore
from metrics_etl.serve.reader import ANALYTICS, ApiError, Reader, Snapshot
from metrics_etl.timeparse import shown

LOG = logging.getLogger(__name__)
# Printable ASCII is passed to the parser as sent (percent escapes included, decoded there once);
# other bytes of the request target (raw UTF-8, say) are percent-encoded first.
URL_SAFE = bytes(range(0x21, 0x7F)).decode("ascii")
DOCS_ASSETS = "/docs-assets"
WATCH_SECONDS = 0.25  # how often the server looks whether `current` moved
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
ROUTE_CONVERTER = re.compile(r":\w+}")  # `{organization:path}` is labelled `{organization}`
UNAUTHORIZED = "missing or invalid API key; send Authorization: Bearer <key>"


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A JSON error answer (the body every error of the API has)."""
    return JSONResponse(ApiError(status, code, message).body(), status_code=status, headers=headers)


def request_target(request: Request) -> str:
    """The path and query as the client sent them, not yet percent-decoded (Starlette's
    `request.url.path` is decoded, and the parser decodes each path segment itself)."""
    path = quote(request.scope.get("raw_path") or request.url.path.encode(), safe=URL_SAFE)
    query = quote(request.scope.get("query_string", b""), safe=URL_SAFE)
    return path + (f"?{query}" if query else "")


def etag_of(content: bytes) -> str:
    """A strong entity tag of an answer's bytes."""
    return '"' + hashlib.blake2b(content, digest_size=16).hexdigest() + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names the tag (weak comparison, `*` matches any)."""
    if not if_none_match:
        return False
    tags = [tag.strip() for tag in if_none_match.split(",")]
    return "*" in tags or etag in (tag.removeprefix("W/") for tag in tags)


def index_bytes(root: Any) -> int:
    """Approximate memory of a serving index: the bytes of its NumPy arrays plus the size of
    the containers and objects holding them (large containers are not walked item by item)."""
    total, seen, stack = 0, set(), [root]
    while stack:
        item = stack.pop()
        if id(item) in seen or isinstance(item, str | bytes | int | float | bool | type(None)):
            continue
        seen.add(id(item))
        if isinstance(item, np.ndarray):
            total += item.nbytes
            continue
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            if len(item) <= 1000:
                stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            if len(item) <= 1000:
                stack.extend(item)
        else:
            with contextlib.suppress(TypeError):
                stack.extend(vars(item).values())
    return total


def published_at(snap: Snapshot) -> float | None:
    """When a snapshot was published (Unix seconds), from its manifest."""
    with contextlib.suppress(KeyError, TypeError, ValueError):
        return datetime.fromisoformat(snap.manifest["published_at"]).timestamp()
    return None


class Ops:
    """The operable side of one app: readiness, the snapshot being served, its load log line,
    and Prometheus metrics in a registry of the app's own."""

    def __init__(self, reader: Reader, settle: bool = False) -> None:
        self.reader = reader
        self.settle = settle  # freeze the long-lived heap after each switch (settle_heap)
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.served: Snapshot | None = None
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "metrics_etl_http_requests",
            "HTTP requests answered",
            ["endpoint", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "metrics_etl_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["endpoint", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.snapshot_info = Gauge(
            "metrics_etl_snapshot_info",
            "The snapshot being served (value 1)",
            ["snapshot_id"],
            registry=r,
        )
        self.snapshot_age = Gauge(
            "metrics_etl_snapshot_age_seconds",
            "Seconds since the served snapshot was published",
            registry=r,
        )
        self.snapshot_age.set_function(self.age)
        self.load_seconds = Gauge(
            "metrics_etl_index_load_seconds",
            "Seconds to load the served snapshot's serving index (from noticing it to serving it)",
            registry=r,
        )
        self.index_size = Gauge(
            "metrics_etl_index_bytes", "Approximate memory of the served serving index", registry=r
        )
        self.loads = Counter(
            "metrics_etl_snapshot_loads", "Snapshots loaded and switched to", registry=r
        )
        self.is_ready = Gauge("metrics_etl_ready", "1 once a snapshot's index is ready", registry=r)

    def age(self) -> float:
        """Seconds since the served snapshot was published (0 before one is served)."""
        at = published_at(self.served) if self.served is not None else None
        return max(time.time() - at, 0.0) if at is not None else 0.0

    def watch(self) -> None:
        """Load the first snapshot's whole index, then follow `current`: each new snapshot is
        loaded aside by the reader and logged once it is served."""
        noticed = time.monotonic()
        while not self.stop.is_set():
            try:
                if not self.ready.is_set():
                    self.reader.warm()  # the first load: requests wait for the parts they need
                snap = self.reader.snapshot()  # a moved `current` starts loading aside
            except ApiError:  # nothing published (yet, or any more): not ready
                snap = None
                if self.served is not None:
                    self.unserved()
            except Exception:  # a snapshot removed while loading: the next look retries
                LOG.exception("looking for the current snapshot failed; retrying in 5 s")
                self.stop.wait(5)
                continue
            if snap is not None and (self.served is None or snap is not self.served):
                self.switched(snap, time.monotonic() - noticed)
                snap.index.prefetch()  # once served: readiness does not wait for the disk
                if self.settle:
                    settle_heap()
            if snap is None or self._current() == snap.snapshot_id:
                noticed = time.monotonic()
            self.stop.wait(WATCH_SECONDS)

    def _current(self) -> str | None:
        """The snapshot id `current` points at, or None."""
        return current_id(self.reader.warehouse)

    def unserved(self) -> None:
        """Record that no snapshot can be served (`current` is gone)."""
        LOG.warning("no current snapshot any more: not ready")
        if self.served is not None:
            self.snapshot_info.remove(self.served.snapshot_id)
        self.served = None
        self.ready.clear()
        self.is_ready.set(0)

    def switched(self, snap: Snapshot, seconds: float) -> None:
        """Record and log that a snapshot is now served."""
        size = index_bytes(snap.index)
        previous, self.served = self.served, snap
        if previous is not None:
            self.snapshot_info.remove(previous.snapshot_id)
        self.snapshot_info.labels(snap.snapshot_id).set(1)
        self.load_seconds.set(seconds)
        self.index_size.set(size)
        self.loads.inc()
        self.ready.set()
        self.is_ready.set(1)
        LOG.info(
            "serving snapshot %s%s: index loaded in %.2f s, %d bytes",
            snap.snapshot_id,
            f" (switched from {previous.snapshot_id})" if previous is not None else "",
            seconds,
            size,
        )

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        """Count a request and its latency."""
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint, str(status)).observe(seconds)


class Observed:
    """ASGI middleware: every HTTP request's latency and status, by route template."""

    def __init__(self, app: Any, ops: Ops) -> None:
        self.app = app
        self.ops = ops

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def sending(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = getattr(scope.get("route"), "path", None)
            endpoint = ROUTE_CONVERTER.sub("}", path) if path else "other"
            self.ops.observe(endpoint, status, time.perf_counter() - started)


BEARER = HTTPBearer(auto_error=False, description="An API key: `metrics-etl keys create`")


async def account(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> int:
    """The caller's account, from a valid bearer key; else a 401."""
    store: KeyStore = request.app.state.keys
    found = store.account_for(credentials.credentials) if credentials else None
    if found is None:
        raise ApiError(401, "unauthorized", UNAUTHORIZED)
    return found


async def parsed(request: Request) -> params.ApiRequest:
    """The request, parsed once into its typed form (400/404 as the README orders them)."""
    return params.parse(request_target(request))


# FastAPI dependencies, solved in this order: the key first (401), then the parameters.
Account = Annotated[int, Depends(account)]
Parsed = Annotated[params.ApiRequest, Depends(parsed)]


def _configure_log() -> None:
    """Make the server's INFO lines visible under uvicorn (which configures only its own)."""
    if not LOG.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        LOG.addHandler(handler)
        LOG.setLevel(logging.INFO)


def settle_heap() -> None:
    """Collect the garbage now and freeze what survives (imports, the served index), so that
    the cyclic collector's full passes, which walk every tracked object, never pause a request
    (at 100M events up to 43 ms, the p99 of the list endpoints: benchmarks/gc_pauses.py). Unfreezing first lets
    a replaced snapshot's cycles be collected; the collection itself runs once per switch, on
    the watch thread."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def create_app(warehouse: Path, settle: bool = False) -> FastAPI:
    """Build the app serving one warehouse; new snapshots are picked up as they are published.
    `settle`: the server process's own app freezes its heap after each switch (settle_heap);
    an app embedded in another process (tests, TestClient) leaves that process's heap alone."""
    _configure_log()
    reader = Reader(Path(warehouse), background=True)
    ops = Ops(reader, settle)
    threading.Thread(target=ops.watch, daemon=True, name="metrics-etl-watch").start()
    store = KeyStore(Path(warehouse))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        ops.stop.set()

    app = FastAPI(
        redirect_slashes=False,  # a trailing slash is a 404 (README), not a 307 redirect
        title="metrics-etl API",
        description="Analytics API v4 and report-stats batch API, served from published "
        "snapshots. Authenticate with `Authorization: Bearer <key>` (see `metrics-etl keys "
        "create`). Every answer names its snapshot in `X-Snapshot-Id` and carries an `ETag`; "
        "send it back in `If-None-Match` to get a 304 while the answer is unchanged.",
        version="4",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.ops = ops
    app.state.keys = store
    app.add_middleware(Observed, ops=ops)

    def respond(request: Request, api_request: params.ApiRequest, account_id: int) -> Response:
        """Answer a typed request: JSON, the snapshot id, an ETag, or 304 when unchanged."""
        status, body, snapshot_id = params.respond(reader, api_request, account_id)
        content = orjson.dumps(body)
        headers = {"X-Snapshot-Id": snapshot_id} if snapshot_id is not None else {}
        if status == 200:
            headers["ETag"] = etag = etag_of(content)
            if etag_matches(request.headers.get("if-none-match"), etag):
                return Response(status_code=304, headers=headers)
        return Response(content, status_code=status, headers=headers, media_type="application/json")

    for endpoint in ANALYTICS:

        async def handler(request: Request, account_id: Account, api_request: Parsed) -> Response:
            return respond(request, api_request, account_id)

        handler.__name__ = endpoint
        app.get(
            f"/api/v4/analytics/{endpoint}",
            name=endpoint,
            summary=api_models.SUMMARIES[endpoint],
            description=api_models.ERRORS_IN_ORDER,
            tags=["Analytics API v4"],
            responses=api_models.api_responses(api_models.ANALYTICS_MODELS[endpoint]),
            openapi_extra={"parameters": api_models.analytics_params(endpoint)},
            response_class=Response,
        )(handler)

    # `:path` so that an organization holding an encoded slash (%2F) reaches the parser, which
    # splits the raw path and decodes each segment once.
    @app.get(
        "/batch/{organization:path}/report_stats",
        summary="One page of report stats, ordered by report_id",
        description="Checked in this order: the organization (404), `include_spaces`, `page`, "
        "`per_page` (400).",
        tags=["Report stats"],
        responses=api_models.api_responses(api_models.ReportStats),
        openapi_extra={"parameters": api_models.REPORT_STATS_PARAMS},
        response_class=Response,
    )
    async def report_stats(request: Request, account_id: Account, api_request: Parsed) -> Response:
        return respond(request, api_request, account_id)

    @app.get(
        "/healthz",
        summary="Alive: the process answers",
        tags=["Operations"],
        response_model=api_models.Health,
    )
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="Ready: a snapshot's serving index is loaded (503 until then)",
        tags=["Operations"],
        response_model=api_models.Readiness,
        responses={503: {"model": api_models.Readiness, "description": "Not ready yet"}},
    )
    def readyz() -> JSONResponse:
        snap = ops.served if ops.ready.is_set() else None
        body = {
            "status": "ready" if snap is not None else "loading",
            "snapshot_id": snap.snapshot_id if snap is not None else None,
            "snapshot_age_seconds": round(ops.age(), 3) if snap is not None else None,
        }
        return JSONResponse(body, status_code=200 if snap is not None else 503)

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        tags=["Operations"],
        response_class=Response,
        responses={
            200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}
        },
    )
    def metrics() -> Response:
        return Response(generate_latest(ops.registry), media_type=CONTENT_TYPE_LATEST)

    _docs(app)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _error(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, "bad_request", shown(str(exc.errors()[:1]), 200))  # never a 422

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


def _docs(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc, their assets served from the fastapi-offline
    package (no CDN: they work offline)."""
    assets = files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )


def app_from_env() -> FastAPI:
    """The app over the warehouse that METRICS_ETL_WAREHOUSE names: the factory each worker
    process of `metrics-etl serve --workers N` imports (uvicorn `factory=True`)."""
    from metrics_etl import settings

    return create_app(settings.load().warehouse, settle=True)
