"""The KV Connect HTTP API as an ASGI application (Starlette).

Routes: `POST /` (metadata), `POST /v2/snapshot_read`, `POST /v2/atomic_write`,
`POST /v2/watch`. Every error is a plain-text body with upstream's exact text;
5xx is kept for conditions a client should retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from google.protobuf.message import Message
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from denokv import limits as L
from denokv.console import DEFAULT_MODE, console_app
from denokv.engine import Engine
from denokv.health import Component
from denokv.operations import EngineClosed, EngineUnavailable
from denokv.proto import datapath_pb2 as pb
from denokv.server import convert
from denokv.server.auth import Authenticator
from denokv.server.errors import HttpError
from denokv.server.metadata import Endpoint, negotiate, response_body
from denokv.server.ops import Metrics, healthz_handler, metrics_handler, problems, readyz_handler
from denokv.server.unary import UnaryCalls, parse_message
from denokv.watch import Subscription

log = logging.getLogger("denokv.server")

PROTOBUF = "application/x-protobuf"
WATCH_KEEPALIVE_S = 5.0
_KEEPALIVE_FRAME = b"\x00\x00\x00\x00"

Handler = Callable[[Request], Awaitable[Response]]
M = TypeVar("M", bound=Message)


@dataclass
class ServerConfig:
    access_token: str
    endpoints: list[Endpoint] = field(default_factory=lambda: [Endpoint("/v2", "strong")])
    watch_keepalive_s: float = WATCH_KEEPALIVE_S
    metrics_on_main_port: bool = True
    # A replica serves reads from its own copy and cannot take writes itself.
    accept_writes: bool = True
    reads_strongly_consistent: bool = True
    # Where writes and strong reads go instead, when set (a replica with a primary).
    forwarder: Forwarder | None = None
    # Why data requests must wait (e.g. a replica still bootstrapping), or None.
    not_ready: Callable[[], str | None] | None = None
    console: str = DEFAULT_MODE  # "read-write", "read-only" or "off" (denokv.console)


class Forwarder(Protocol):
    async def forward(self, method: str, body: bytes) -> tuple[int, bytes, bytes]:
        """Send a data-path call to the primary; its (status, content type, body), unchanged."""
        ...


class KvServer:
    """Binds an engine to the HTTP routes. `app` is the ASGI application."""

    def __init__(self, engine: Engine, config: ServerConfig) -> None:
        self.engine = engine
        self.config = config
        self.auth = Authenticator(config.access_token)
        self.closing = False
        # The parts that report metrics, readiness and status; the shipper or the
        # follower add themselves when they run beside the server.
        self.components: list[Component] = engine.components()
        self.metrics = Metrics(self.components)
        routes = [
            Route("/", self._guard("metadata", self.metadata), methods=["POST"]),
            Route("/v2/watch", self._guard("watch", self.watch), methods=["POST"]),
            Route("/healthz", healthz_handler(self.fatal_problem), methods=["GET"]),
            Route("/readyz", readyz_handler(self.problems), methods=["GET"]),
        ]
        if config.forwarder is not None:
            routes.append(
                Route("/strong/v2/watch", self._guard("watch", self.watch), methods=["POST"])
            )
        if config.metrics_on_main_port:
            routes.append(Route("/metrics", metrics_handler(self.metrics), methods=["GET"]))
        self._framework = Starlette(
            routes=routes,
            exception_handlers={404: _not_found, 405: _method_not_allowed, 500: _internal},
        )
        self.unary = UnaryCalls(self)
        self.log = log
        self.console = console_app(self, config.console)

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        """The ASGI application: unary data calls on the fast path, the rest on Starlette."""
        if scope["type"] == "http":
            route = self.unary.routes.get(scope["path"])
            if route is not None:
                await self.unary.handle(route[0], route[1], scope, receive, send)
                return
            if self.console is not None and scope["path"].startswith("/console"):
                await self.console(scope, receive, send)
                return
        await self._framework(scope, receive, send)

    def problems(self) -> list[str]:
        """Why the server should not take traffic now (empty: ready)."""
        found = []
        if self.closing:
            found.append("shutting down")
        if self.engine.closed:
            found.append("database closed")
        return found + problems(self.components)

    def fatal_problem(self) -> str | None:
        """What keeps this process from ever serving writes again, if anything."""
        writer = self.engine.writer
        if writer is not None and not writer.alive:
            return f"the writer stopped ({writer.stopped})"
        return None

    def begin_shutdown(self) -> None:
        """Stop taking new requests and end watch streams; writes in flight still finish."""
        self.closing = True
        self.engine.watches.wake_all()

    # -- routes -----------------------------------------------------------------

    async def metadata(self, request: Request) -> Response:
        body = await read_body(request)
        version = negotiate(request.headers.get("content-type"), body)
        self.auth.check_bearer(request.headers.get("authorization"))
        document = response_body(
            version,
            str(self.auth.database_id),
            self.config.endpoints,
            self.config.access_token,
            None,
        )
        return Response(document, media_type="application/json")

    async def watch(self, request: Request) -> Response:
        msg = await self._data_request(request, pb.Watch())
        keys = convert.watch_keys(msg)
        # Subscribe before the first read so no commit slips between the two.
        subscription = self.engine.watch(keys)
        return StreamingResponse(
            self._watch_frames(keys, subscription), media_type="application/octet-stream"
        )

    async def _watch_frames(
        self, keys: list[bytes], subscription: Subscription
    ) -> AsyncIterator[bytes]:
        engine = self.engine
        keepalive = self.config.watch_keepalive_s
        try:
            yield _KEEPALIVE_FRAME
            last: list[bytes | None] | None = None
            loop = asyncio.get_running_loop()
            next_keepalive = loop.time() + keepalive
            while not (self.closing or engine.closed):
                entries = engine.get_entries(keys)
                stamps = [e.versionstamp if e else None for e in entries]
                if stamps != last:
                    # Every key is sent as changed, as upstream does: Deno's remote
                    # client reads `changed = false` as "no entry". What we add is
                    # silence when no watched key really changed.
                    yield _frame(convert.watch_output(entries))
                    last = stamps
                    next_keepalive = loop.time() + keepalive
                while not await subscription.wait(max(0.0, next_keepalive - loop.time())):
                    if self.closing or engine.closed:
                        return
                    yield _KEEPALIVE_FRAME
                    next_keepalive = loop.time() + keepalive
        except EngineClosed:
            return
        finally:
            subscription.close()

    # -- plumbing -----------------------------------------------------------------

    def admit(self, headers: Any) -> None:
        """The checks every data-path call passes before its body is read."""
        if self.closing:
            raise HttpError(503, L.UNAVAILABLE)
        self.auth.check_data_path(headers)
        not_ready = self.config.not_ready
        if not_ready is not None and (reason := not_ready()):
            raise HttpError(503, reason)

    async def _data_request(self, request: Request, msg: M) -> M:
        self.admit(request.headers)
        return parse_message(msg, await read_body(request))

    def _guard(self, name: str, handler: Handler) -> Handler:
        """Turn errors into their plain-text answers and count every request."""
        observe = self.metrics.observe

        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            try:
                response = await handler(request)
            except HttpError as exc:
                response = PlainTextResponse(exc.text, exc.status)
            except EngineUnavailable as exc:
                response = PlainTextResponse(str(exc), 503)
            except sqlite3.Error as exc:
                log.error("database error on %s: %s", request.url.path, exc)
                response = PlainTextResponse(L.INTERNAL_ERROR, 500)
            except ClientDisconnect:
                response = PlainTextResponse("client disconnected", 400)
            observe(name, response.status_code, time.perf_counter() - started)
            return response

        return endpoint


async def read_body(request: Request) -> bytes:
    """Read at most 2 MiB; refuse larger bodies before buffering them."""
    declared = request.headers.get("content-length")
    if declared is not None:
        with contextlib.suppress(ValueError):
            if int(declared) > L.MAX_REQUEST_BODY:
                raise HttpError(413, L.BODY_TOO_LARGE)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > L.MAX_REQUEST_BODY:
            raise HttpError(413, L.BODY_TOO_LARGE)
        chunks.append(chunk)
    return b"".join(chunks)


def _frame(payload: bytes) -> bytes:
    return struct.pack("<I", len(payload)) + payload


async def _not_found(request: Request, exc: HTTPException) -> Response:
    return PlainTextResponse(L.NOT_FOUND, 404)


async def _method_not_allowed(request: Request, exc: HTTPException) -> Response:
    return Response(status_code=405, headers=dict(exc.headers or {}))


async def _internal(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.url.path, exc_info=exc)
    return PlainTextResponse(L.INTERNAL_ERROR, 500)
