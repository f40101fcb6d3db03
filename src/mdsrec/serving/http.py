"""The HTTP service of ``mdsrec serve``: a FastAPI app over a :class:`~mdsrec.serving.recommender.Recommender`, run
by uvicorn, with server-side micro-batching (``serving.batching``) and Prometheus metrics.

Routes (request and response bodies: ``serving.api``; ``/openapi.json`` and ``/docs`` describe them):

* ``GET /health/live``: 200 while the process answers; ``GET /health/ready``: 200 once the model is loaded and one
  warm-up forward pass has run, 503 before (or after a failed warm-up, with the reason);
* ``GET /v1/model``: model, run, data fingerprint, number of items, config, commit, when loaded, limits;
* ``POST /v1/recommend`` ``{"requests": [...]}``: users (``{"user": TOKEN, ...}``) and sessions (``{"history":
  [KEY, ...], ...}``) with ``mdsrec recommend``'s options each; a request that fails gets ``{"id", "error"}`` in
  its place, the others their lists; ``GET /v1/recommend?user=TOKEN[&top&exclude_history&stage]``: one list;
* ``GET /metrics``: Prometheus text (requests by route, method and status; latency; batch sizes; queue depth).

Every answer carries an ``X-Request-ID`` header, also in the access log line. Errors are ``{"error": ..., "request_id":
...}``: 400/404/422 for a bad request (422 names the field that breaks the schema or a limit), 405 for a method a
route does not take (HEAD answers like GET), 413 for a body over ``max_body_bytes``, 500 for an unexpected failure
(logged with the request id and traceback). Text from the request is escaped before it is logged.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time.

import asyncio
import gc
import inspect
import json
import logging
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, replace
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request as HTTPRequest

from mdsrec import __version__
from mdsrec.errors import MdsrecError
from mdsrec.rundir import RUN_INFO, read_json
from mdsrec.serving.api import (
    ErrorBody,
    Health,
    Limits,
    ModelInfo,
    Recommendation,
    RecommendResponse,
    Stage,
    request_models,
)
from mdsrec.serving.batching import MicroBatcher
from mdsrec.serving.recommender import Options, Recommender, Request, check_cold_start

log = logging.getLogger(__name__)
access_log = logging.getLogger("mdsrec.serving.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

REQUEST_ID = "mdsrec.request_id"  # scope key: the id of the request being answered
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")  # metric labels; others count as OTHER
# FastAPI's 400 for a body json.loads raised on with anything but a JSONDecodeError (UnicodeDecodeError,
# RecursionError, the 4,300-digit limit on integers)
FASTAPI_UNREADABLE_BODY = "There was an error parsing the body"


@dataclass(frozen=True)
class ServeSettings:
    """How ``mdsrec serve`` listens, batches and limits (every field is a flag of the command)."""

    host: str = "127.0.0.1"
    port: int = 8000
    cold_start: str = "error"  # default for sessions without a known item: "error" or "popular"
    batch_size: int = 64  # most requests ranked by one score_all call
    batch_wait_ms: float = 2.0  # longest wait for a batch to fill after its first request
    threads: int = 2  # torch threads of the model (the event loop answering HTTP shares the cores)
    max_top: int = 1000
    max_history: int = 1000
    max_requests: int = 256  # requests in one POST
    max_body_bytes: int = 1 << 20
    max_connections: int = 1000  # open connections; requests beyond get 503 (uvicorn limit_concurrency)
    keep_alive_s: float = 5.0  # an idle keep-alive connection is closed after this
    graceful_timeout_s: float = 30.0  # on SIGTERM/SIGINT, longest wait for requests in flight
    access_log: bool = True

    def check(self) -> None:
        check_cold_start(self.cold_start)
        for name in (
            "batch_size",
            "threads",
            "max_top",
            "max_history",
            "max_requests",
            "max_body_bytes",
            "max_connections",
        ):
            if getattr(self, name) < 1:
                raise MdsrecError(f"{name} ({getattr(self, name)}) must be >= 1")
        for name in ("batch_wait_ms", "keep_alive_s", "graceful_timeout_s"):
            if not getattr(self, name) >= 0:
                raise MdsrecError(f"{name} ({getattr(self, name)}) must be >= 0")
        if not 0 <= self.port <= 65535:
            raise MdsrecError(f"port ({self.port}) must be in 0..65535")

    @property
    def limits(self) -> Limits:
        return Limits(self.max_top, self.max_history, self.max_requests)


class Metrics:
    """The service's Prometheus metrics, in a registry of its own (several apps can live in one process)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mdsrec_http_requests",
            "HTTP requests answered, by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mdsrec_http_request_duration_seconds",
            "Time from a request's arrival to its answer, by route",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "mdsrec_batch_rows",
            "Requests ranked per score_all call (micro-batch size)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "mdsrec_batch_seconds",
            "Time to rank one micro-batch (forward pass, masking, top-k)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "mdsrec_queue_depth", "Requests waiting for a micro-batch", registry=self.registry
        )
        self.ready = Gauge(
            "mdsrec_ready", "1 once the model is loaded and warmed up, else 0", registry=self.registry
        )

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class Service:
    """What the routes share: the recommender, the settings, the batcher, the metrics and the readiness."""

    def __init__(self, rec: Recommender, settings: ServeSettings) -> None:
        settings.check()
        self.rec = rec
        rec.unknown_hint = 'set "skip_unknown": true to drop them'
        self.settings = settings
        self.metrics = Metrics()
        self.batcher = MicroBatcher(
            rec.rank,
            settings.batch_size,
            settings.batch_wait_ms / 1000,
            on_batch=self._on_batch,
            on_queue=self.metrics.queue_depth.set,
        )
        self.ready = False
        self.failure: str | None = None  # why the warm-up failed
        self._warm_up_task: asyncio.Task[None] | None = None
        self.info = self._model_info()

    def _on_batch(self, rows: int, seconds: float) -> None:
        self.metrics.batch_rows.observe(rows)
        self.metrics.batch_seconds.observe(seconds)

    def _model_info(self) -> dict[str, Any]:
        rec, s = self.rec, self.settings
        run_info: dict[str, Any] = {}
        if rec.run is not None and (rec.run / RUN_INFO).is_file():
            run_info = read_json(rec.run / RUN_INFO)
        return {
            "model": rec.model.name,
            "run": None if rec.run is None else rec.run.resolve().name,
            "data": {
                "name": rec.data.name,
                "fingerprint": rec.data.fingerprint,
                "items": rec.data.num_items,
                "users": rec.data.num_users,
            },
            "config": rec.exp.cfg.to_dict(),
            "commit": run_info.get("git_commit"),
            "mdsrec_version": __version__,
            "loaded_at": rec.loaded_at.isoformat(timespec="seconds"),
            "exclude_history": rec.run_excludes_history,
            "cold_start": s.cold_start,
            "limits": {**asdict(s.limits), "max_body_bytes": s.max_body_bytes},
        }

    async def start(self) -> None:
        await self.batcher.start()
        self._warm_up_task = asyncio.get_running_loop().create_task(self._warm_up())

    async def stop(self) -> None:
        if self._warm_up_task is not None:
            await self._warm_up_task
        await self.batcher.stop()

    async def _warm_up(self) -> None:
        """Build the lookup tables and run one forward pass on the model's thread; ready when it has."""
        t0 = time.perf_counter()
        try:
            await self.batcher.call(self._warm_up_pass)
        except Exception as e:  # noqa: BLE001 - the service stays up, not ready, and says why
            self.failure = f"warm-up forward pass failed: {e}"
            log.exception("not ready: %s", self.failure)
            return
        self.ready = True
        self.metrics.ready.set(1)
        log.info("ready: warm-up forward pass took %.2f s", time.perf_counter() - t0)

    def _warm_up_pass(self) -> None:
        rec = self.rec
        rec.item_ids([], "key")
        if rec.data.num_users:
            rec.user_request(rec.data.user_tokens[0])
        rec.rank([Request("warm-up", np.ones(1, dtype=np.int64))], [Options(top=1)])

    def prepare(self, query: BaseModel, position: int) -> tuple[Request, Options]:
        """The library request of one query of a call (MdsrecError: what is wrong with it)."""
        q: Any = query
        rec = self.rec
        if hasattr(q, "user"):
            request = rec.user_request(q.user, stage=q.stage)
            if q.id is not None:
                request = replace(request, id=q.id)
        else:
            sid = q.id if q.id is not None else str(position)
            cold_start = q.cold_start or self.settings.cold_start
            request = rec.session_request(sid, q.history, q.item_field, q.skip_unknown, cold_start)
        blocked = None
        if q.candidates is not None:
            blocked = rec.candidate_mask(q.candidates, q.item_field, q.skip_unknown)
        return request, Options(q.top, q.exclude_history, blocked)


def printable(text: str, limit: int = 1000) -> str:
    """``text`` safe for a log line: control characters and escape sequences escaped, at most ``limit`` chars."""
    out = repr(text)[1:-1]
    return out if len(out) <= limit else out[:limit] + "..."


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def _request_id(request: HTTPRequest) -> str | None:
    return request.scope.get(REQUEST_ID)


class Gate:
    """Pure ASGI middleware around the app: request id, body-size limit, HEAD as GET, metrics, access log, and a
    500 (never a dropped connection) for anything that fails unexpectedly."""

    def __init__(self, app: Callable[..., Awaitable[None]], service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        rid = uuid.uuid4().hex[:16]
        method = scope["method"]
        # HEAD answers like GET (uvicorn leaves the body out)
        inner: Scope = {**scope, REQUEST_ID: rid, "method": "GET" if method == "HEAD" else method}
        limit = self.service.settings.max_body_bytes
        state = {"status": 0, "too_large": False, "received": 0}
        header_id = (b"x-request-id", rid.encode())

        async def answer(status: int, error: str) -> None:
            body = json.dumps({"error": error, "request_id": rid}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": status, "headers": [*headers, header_id]})
            await send({"type": "http.response.body", "body": body})
            state["status"] = status

        async def receive_limited() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["too_large"] = True
                    return {"type": "http.disconnect"}  # the app stops reading; its answer is replaced below
            return message

        async def send_tagged(message: Message) -> None:
            if state["too_large"]:  # replace whatever the app made of a cut body with the 413
                if message["type"] == "http.response.start":
                    await answer(413, f"request body: over the limit of {limit} bytes (max_body_bytes)")
                return
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                message = {**message, "headers": [*message.get("headers", []), header_id]}
            await send(message)

        try:
            declared = _content_length(scope)
            if declared is not None and declared > limit:
                await answer(
                    413, f"request body: {declared} bytes, over the limit of {limit} (max_body_bytes)"
                )
            else:
                await self.app(inner, receive_limited, send_tagged)
        except Exception:  # noqa: BLE001 - answered and logged instead of dropping the connection
            log.exception(
                "request %s failed unexpectedly: %s %s", rid, method, printable(_target(scope), 200)
            )
            if state["too_large"] and state["status"] == 0:
                await answer(413, f"request body: over the limit of {limit} bytes (max_body_bytes)")
            elif state["status"] == 0:
                await answer(500, "internal error: the server's log has the details under this request id")
        finally:
            self._observe(scope, inner, method, int(state["status"]), rid, time.perf_counter() - t0)

    def _observe(
        self, scope: Scope, inner: Scope, method: str, status: int, rid: str, seconds: float
    ) -> None:
        route = inner.get("route")
        label = getattr(route, "path", "unmatched")
        metrics = self.service.metrics
        metrics.requests.labels(label, method if method in METHODS else "OTHER", str(status)).inc()
        metrics.latency.labels(label).observe(seconds)
        if self.service.settings.access_log:
            client = scope.get("client") or ("-", 0)
            access_log.info(
                '%s:%s "%s %s" %d %.1fms id=%s',
                client[0],
                client[1],
                method,
                printable(_target(scope)),
                status,
                seconds * 1000,
                rid,
            )


def _content_length(scope: Scope) -> int | None:
    """The declared body size (None: not declared, or not a byte count, which the server refuses itself; the
    bytes are counted as they arrive in any case)."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdecimal() and len(text) < 19 else None
    return None


def _target(scope: Scope) -> str:
    raw = scope.get("raw_path") or scope.get("path", "").encode()
    query = scope.get("query_string", b"")
    return (raw + (b"?" + query if query else b"")).decode("latin-1")


def _field(loc: tuple[Any, ...]) -> str:
    """A validation error's location as a field name: ('body', 'requests', 0, 'SessionQuery', 'top') ->
    'requests[0].top'; ('query', 'top') -> 'top (query)'."""
    parts = [p for p in loc[1:] if p not in ("UserQuery", "SessionQuery")]
    name = ""
    for p in parts:
        name += f"[{p}]" if isinstance(p, int) else (f".{p}" if name else str(p))
    where = loc[0] if loc else "body"
    if where == "body":
        return name or "body"
    return f"{name} ({where})" if name else str(where)


def create_app(rec: Recommender, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app of ``mdsrec serve`` over ``rec`` (run it with uvicorn: :func:`serve`). Its lifespan starts
    the micro-batcher and the warm-up pass, and on shutdown ranks what is queued before it stops."""
    service = Service(rec, settings or ServeSettings())
    s = service.settings
    models = request_models(s.limits)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorBody, "description": what}
        for code, what in [
            (405, "method not allowed on this route"),
            (413, "request body over max_body_bytes"),
            (500, "unexpected failure (logged under the request id)"),
        ]
    }
    app = FastAPI(
        title="mdsrec",
        version=__version__,
        description=f"Top-N next items from a trained {rec.model.name} run ({s.limits}).",
        lifespan=lifespan,
        responses=errors,
    )
    app.state.service = service
    app.add_middleware(Gate, service=service)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: HTTPRequest, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors()[:5]:
            msg = e.get("msg", "invalid")
            if e.get("type") == "json_invalid":  # loc: ("body", character position)
                where = e.get("loc", ("body", "?"))[-1]
                problems.append(
                    f"body: not valid JSON ({e.get('ctx', {}).get('error', msg)}, at character {where})"
                )
                continue
            problems.append(f"{_field(tuple(e.get('loc', ())))}: {msg}")
        more = len(exc.errors()) - len(problems)
        text = "; ".join(problems) + (f"; and {more} more" if more > 0 else "")
        return _json(422, {"error": text, "request_id": _request_id(request)})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: HTTPRequest, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            allowed = _allowed(app, request.url.path)
            headers["Allow"] = ", ".join(allowed)
            text = (
                f"method {request.method} not allowed on {request.url.path} (allowed: {', '.join(allowed)})"
            )
        elif exc.status_code == 404 and exc.detail == "Not Found":
            text = f"unknown path {request.url.path}; see /docs"
        elif exc.status_code == 400 and exc.detail == FASTAPI_UNREADABLE_BODY:
            text = "body: not readable JSON (not UTF-8, nested too deep, or a number over 4300 digits)"
        else:
            text = str(exc.detail)
        return _json(exc.status_code, {"error": text, "request_id": _request_id(request)}, headers)

    unready: dict[int | str, dict[str, Any]] = {
        503: {"model": Health, "description": "not ready yet, or the warm-up failed"}
    }

    @app.get("/health/live", response_model=Health, tags=["health"])
    async def live() -> Any:
        """The process is up and answering."""
        return _json(200, {"status": "live"})

    @app.get("/health/ready", response_model=Health, responses=unready, tags=["health"])
    async def ready() -> Any:
        """Ready once the model is loaded and one warm-up forward pass has run."""
        if service.ready:
            return _json(200, {"status": "ready"})
        if service.failure is not None:
            return _json(503, {"status": "failed", "reason": service.failure})
        return _json(503, {"status": "starting"})

    @app.get("/v1/model", response_model=ModelInfo, tags=["model"])
    async def model_info() -> Any:
        """The model being served and where it comes from."""
        return _json(200, service.info)

    @app.get(
        "/metrics", response_class=Response, tags=["health"], responses={200: {"content": {"text/plain": {}}}}
    )
    async def metrics() -> Response:
        """Prometheus metrics (text exposition format)."""
        body, content_type = service.metrics.render()
        return Response(body, media_type=content_type)

    rejected: dict[int | str, dict[str, Any]] = {
        400: {"model": ErrorBody, "description": "the request cannot be ranked (e.g. ranking failed for it)"},
        422: {
            "model": ErrorBody,
            "description": "a field breaks the schema or a limit (the message names it)",
        },
    }

    async def recommend(body: Any) -> Any:
        """Rank one or many requests together (users by token, sessions of item keys), each with its options.
        A request that cannot be ranked (unknown user or item, empty history...) gets ``{"id", "error"}`` in its
        place; the others their lists."""
        queries = body.requests
        results: list[dict[str, Any] | None] = [None] * len(queries)
        todo: list[tuple[int, Request, Options]] = []
        for i, q in enumerate(queries):
            try:
                todo.append((i, *service.prepare(q, i)))
            except MdsrecError as e:
                results[i] = {"id": _default_id(q, i), "error": str(e)}
        ranked = await service.batcher.rank([t[1] for t in todo], [t[2] for t in todo])
        for (i, request, _), out in zip(todo, ranked, strict=True):
            if isinstance(out, MdsrecError):
                results[i] = {"id": request.id, "error": str(out)}
            elif isinstance(out, Exception):
                raise out
            else:
                results[i] = out
        return _json(200, {"results": results})

    # the body's model is made for this service's limits: FastAPI reads it from the signature
    recommend.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("body", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=models.body)],
        return_annotation=Any,
    )
    app.post("/v1/recommend", response_model=RecommendResponse, responses=rejected, tags=["recommend"])(
        recommend
    )

    @app.get(
        "/v1/recommend",
        response_model=Recommendation,
        responses={404: {"model": ErrorBody, "description": "unknown user"}, **rejected},
        tags=["recommend"],
    )
    async def recommend_user(
        http: HTTPRequest,
        user: Annotated[str, Query(description="a user token of users.tsv")],
        top: Annotated[int, Query(ge=1, le=s.max_top, description="items in the list")] = 10,
        exclude_history: Annotated[
            bool | None, Query(description="leave the history's items out (default: the run's)")
        ] = None,
        stage: Annotated[
            Stage, Query(description="next, or the history before the test/valid item")
        ] = "next",
    ) -> Any:
        """One user's list (as one request of ``POST /v1/recommend``)."""
        try:
            request = rec.user_request(user, stage=stage)
        except MdsrecError as e:
            return _json(404, {"error": str(e), "request_id": _request_id(http)})
        (out,) = await service.batcher.rank([request], [Options(top, exclude_history)])
        if isinstance(out, MdsrecError):
            return _json(400, {"error": str(out), "request_id": _request_id(http)})
        if isinstance(out, Exception):
            raise out
        return _json(200, out)

    return app


def _default_id(query: Any, position: int) -> str:
    if query.id is not None:
        return str(query.id)
    return str(query.user) if hasattr(query, "user") else str(position)


def _allowed(app: FastAPI, path: str) -> list[str]:
    methods = {m for r in app.routes if isinstance(r, APIRoute) and r.path == path for m in r.methods or ()}
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (bound here, so that a failure is one line and port 0's pick known)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        raise MdsrecError(f"cannot listen on {host}:{port}: {e}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise MdsrecError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def serve(
    rec: Recommender, settings: ServeSettings, on_listening: Callable[[str], None] | None = None
) -> None:
    """Serve ``rec`` over HTTP until SIGTERM or SIGINT; then stop accepting connections, finish the requests in
    flight (at most ``graceful_timeout_s``), rank what is queued, and return. ``on_listening(url)`` is called once
    the socket listens (port 0: the port picked)."""
    import torch
    import uvicorn

    app = create_app(rec, settings)
    sock = _listen(settings.host, settings.port)
    # The model runs on one thread with `threads` torch threads while the event loop parses and answers on
    # another. Torch releases the GIL inside each operation and takes it back after; with the default switch
    # interval of 5 ms a busy event loop can hold the model thread up that long after every operation (a
    # forward pass has dozens), 1 ms keeps batches moving. Two torch threads beat one on 2 cores even though the
    # event loop shares them (SASRec, Sports size, 32 clients: 844-860 against 563-679 requests/s,
    # benchmarks/serve_load.py); more threads than free cores spin on a busy or shared machine.
    torch.set_num_threads(settings.threads)
    sys.setswitchinterval(0.001)
    # Everything loaded so far (the run's data, the model) lives as long as the server: moved out of the garbage
    # collector's reach, so that a full collection, which the objects each request allocates trigger now and then,
    # does not traverse it all while every request in flight waits (without this: one 150-200 ms stall per ~2,000
    # requests at 32 clients on the Sports-size run, which was the whole p99; benchmarks/serve_load.py).
    gc.collect()
    gc.freeze()
    config = uvicorn.Config(
        app,
        log_config=None,  # the CLI configures logging; uvicorn's loggers propagate to it
        access_log=False,  # the Gate writes the access log, escaped and with the request id
        server_header=False,
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=max(1, round(settings.keep_alive_s)),
        timeout_graceful_shutdown=max(1, round(settings.graceful_timeout_s)),
    )
    server = uvicorn.Server(config)
    host, port = sock.getsockname()[:2]
    if on_listening is not None:
        on_listening(f"http://{host if ':' not in host else f'[{host}]'}:{port}")
    # uvicorn stops gracefully on SIGINT/SIGTERM, then raises the caught signal again with the handlers that were
    # in place before it ran: these just note it, so that a server stopped on purpose returns (exit status 0)
    # instead of dying of SIGTERM or raising KeyboardInterrupt.
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, frame: None)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
