"""The review service's HTTP face: the versioned REST API, /healthz, /metrics and the web UI.

`create_app` takes the task, the token store and a metrics registry; the ReviewService (its
Kafka and Redis clients live as long as the event loop) is put on `app.state.service` by the
lifespan, with `app.state.ingest` telling whether the queue is ready.

(No `from __future__ import annotations` here: FastAPI reads the routes' annotations, which
name dependencies local to `create_app`.)
"""

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
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
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loopline.schemas import (
    Answer,
    Correction,
    InvalidAnswer,
    LeaseNotHeld,
    RoutedItem,
    TaskConfig,
)
from loopline.streams.review.queue import Lease, Rebuilding
from loopline.streams.review.service import (
    AnswerRequest,
    Forbidden,
    KafkaUnavailable,
    Reviewer,
    ReviewService,
)
from loopline.streams.review.tokens import TokenStore
from loopline.streams.review.validation import token_offsets

STATIC = Path(__file__).parent / "static"
API = "/api/v1/tasks/{task}"


class LeasedItem(BaseModel):
    lease_id: str
    expires_at: datetime
    item: RoutedItem
    tokens: list[tuple[int, int]] | None = None  # NER: where selections snap


class NextItems(BaseModel):
    items: list[LeasedItem]


class AnswerWritten(BaseModel):
    answer: Answer
    correction: Correction | None


class LeaseRenewed(BaseModel):
    lease_id: str
    expires_at: datetime


class ReviewMetrics:
    """Prometheus figures of one service, in a registry of its own."""

    def __init__(self, registry: CollectorRegistry, task: str) -> None:
        self.registry = registry
        self.task = task
        self.requests = Histogram(
            "loopline_review_request_seconds",
            "Review API requests by route and status.",
            ["task", "route", "status"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10),
        )
        self.answers = Counter(
            "loopline_review_answers_total",
            "Answers written to Kafka, by decision.",
            ["task", "decision"],
            registry=registry,
        )

        self.items = Gauge(
            "loopline_review_queue_items",
            "Review items by state (refreshed every few seconds).",
            ["task", "state"],
            registry=registry,
        )

    def queue_sizes(self, counts: dict[str, Any]) -> None:
        for state in ("pending", "leased", "decided"):
            self.items.labels(self.task, state).set(counts[state])

    def answered(self, decision: str) -> None:
        self.answers.labels(self.task, decision).inc()


class BodyLimit:
    """Refuse request bodies over `max_bytes` with 413 before they are read into memory."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and int(declared or 0) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body over {self.max_bytes} bytes; send one answer per request"},
            status_code=413,
        )
        await response(scope, receive, send)


class Timed:
    """Request latencies by route and status (a plain ASGI middleware: Starlette's
    BaseHTTPMiddleware costs more than a review request)."""

    def __init__(self, app: ASGIApp, metrics: ReviewMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            route = getattr(scope.get("route"), "path", "other")
            self.metrics.requests.labels(self.metrics.task, route, str(status)).observe(
                time.perf_counter() - started
            )


class _TooLarge(Exception):
    pass


def create_app(
    config: TaskConfig,
    tokens: TokenStore,
    metrics: ReviewMetrics,
    *,
    lifespan: Any = None,
    max_body_bytes: int = 256_000,
) -> FastAPI:
    app = FastAPI(
        title=f"loopline review: {config.name}",
        version="1",
        description="Leases, answers and figures of a loopline review queue.",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(Timed, metrics=metrics)
    bearer = HTTPBearer(auto_error=False)

    async def reviewer(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Reviewer:
        record = tokens.lookup(credentials.credentials) if credentials else None
        if record is None:
            raise _Unauthorized
        return Reviewer(record.name, record.role)

    def this_task(name: str) -> None:
        if name != config.name:
            raise _UnknownTask(name)

    async def current_service(request: Request) -> ReviewService:
        return request.app.state.service

    Who = Annotated[Reviewer, Depends(reviewer)]
    Service = Annotated[ReviewService, Depends(current_service)]

    @app.exception_handler(_Unauthorized)
    async def unauthorized(_: Request, __: Exception) -> JSONResponse:
        return JSONResponse(
            {
                "detail": "missing or unknown token: send Authorization: Bearer <token> "
                "(`loopline review token add NAME` makes one)"
            },
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    @app.exception_handler(_UnknownTask)
    async def unknown_task(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            {"detail": f"unknown task {exc.args[0]!r}; this service reviews {config.name!r}"},
            status_code=404,
        )

    statuses = {
        InvalidAnswer: 422,
        LeaseNotHeld: 409,
        Forbidden: 403,
        KafkaUnavailable: 503,
    }
    for error, status in statuses.items():

        async def handler(_: Request, exc: Exception, status: int = status) -> JSONResponse:
            return JSONResponse({"detail": str(exc)}, status_code=status)

        app.add_exception_handler(error, handler)

    @app.exception_handler(Rebuilding)
    async def rebuilding(_: Request, __: Exception) -> JSONResponse:
        return JSONResponse(
            {"detail": "the review queue is being rebuilt from Kafka; retry in a few seconds"},
            status_code=503,
            headers={"Retry-After": "2"},
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'][1:]) or 'body'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        return JSONResponse({"detail": f"invalid request: {problems}"}, status_code=422)

    @app.get("/healthz")
    async def healthz(request: Request) -> dict[str, Any]:
        ingest = getattr(request.app.state, "ingest", None)
        ready = ingest is not None and ingest.ready.is_set()
        return {"status": "ok", "task": config.name, "ready": ready}

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/v1/tasks")
    async def tasks(_: Who) -> dict[str, Any]:
        return {"tasks": [describe(config)]}

    @app.get(API)
    async def task_info(task: str, _: Who) -> dict[str, Any]:
        this_task(task)
        return describe(config)

    @app.get(f"{API}/queue/next", response_model=NextItems)
    async def next_items(
        task: str, who: Who, service: Service, n: Annotated[int, Query(ge=1, le=50)] = 1
    ) -> JSONResponse:
        this_task(task)
        leases = await service.next(who, n)
        return JSONResponse({"items": [leased(lease, config) for lease in leases]})

    @app.post(f"{API}/answers", status_code=201, response_model=AnswerWritten)
    async def answer(task: str, body: AnswerRequest, who: Who, service: Service) -> JSONResponse:
        this_task(task)
        written = await service.answer(who, body)
        return Response(written, status_code=201, media_type="application/json")

    @app.post(f"{API}/leases/{{lease_id}}/release", status_code=204)
    async def release(task: str, lease_id: str, who: Who, service: Service) -> Response:
        this_task(task)
        await service.release(who, lease_id)
        return Response(status_code=204)

    @app.post(f"{API}/leases/{{lease_id}}/renew", response_model=LeaseRenewed)
    async def renew(task: str, lease_id: str, who: Who, service: Service) -> dict[str, Any]:
        this_task(task)
        expires = await service.renew(who, lease_id)
        return {"lease_id": lease_id, "expires_at": _iso(expires)}

    @app.get(f"{API}/stats")
    async def stats(task: str, _: Who, service: Service) -> dict[str, Any]:
        this_task(task)
        return await service.stats()

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def describe(task: TaskConfig) -> dict[str, Any]:
    return {
        "name": task.name,
        "kind": task.kind,
        "labels": task.labels,
        "overlap": task.review.overlap,
        "lease_ttl_s": task.review.lease_ttl_s,
    }


def leased(lease: Lease, task: TaskConfig) -> dict[str, Any]:
    return {
        "lease_id": lease.lease_id,
        "expires_at": _iso(lease.expires_ms),
        "item": lease.item.model_dump(mode="json"),
        "tokens": token_offsets(lease.item.item.text) if task.kind == "ner" else None,
    }


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


class _Unauthorized(Exception):
    pass


class _UnknownTask(Exception):
    pass
