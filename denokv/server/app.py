"""The KV Connect server: routes, admission checks, and the watch stream.

KV Connect's routes (`POST /` metadata, `/v2/snapshot_read`, `/v2/atomic_write`,
`/v2/watch`, and `/strong/v2/...` on a replica that forwards) are served by
the request pipeline directly; everything else (`/healthz`, `/readyz`,
`/metrics`, unknown paths) by a small Starlette app. Both go through the same
body reader and error ladder (`pipeline.py`). `__rsgi__` is the entry point
on granian's RSGI interface (the default, and the cheapest), `app` the ASGI
one (hypercorn). Every error is a plain-text body with upstream's exact text;
5xx is kept for conditions a client should retry.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from denokv import limits as L
from denokv import texts as T
from denokv.console import DEFAULT_MODE, console_app
from denokv.engine import Engine
from denokv.engine_errors import EngineClosed, EngineUnavailable, WriteError
from denokv.health import Component
from denokv.proto import datapath_pb2 as pb
from denokv.server import convert
from denokv.server.asgi import AsgiFront
from denokv.server.auth import Authenticator
from denokv.server.errors import HttpError
from denokv.server.host import Forwarder, Incoming, KvRoute, MainHealth
from denokv.server.metadata import Endpoint
from denokv.server.ops import Metrics, healthz_handler, metrics_handler, problems, readyz_handler
from denokv.server.pipeline import OCTETS, BodyPolicy, ClientGone, Stream, error_reply
from denokv.server.relay import Relay
from denokv.server.rsgi import RsgiFront
from denokv.server.tcp import AckNudger
from denokv.server.unary import UnaryCalls, parse_message
from denokv.watch import Subscription

log = logging.getLogger("denokv.server")

WATCH_KEEPALIVE_S = 5.0
STRONG_PREFIX = "/strong/v2"  # a replica's forwarded calls
PROBES = {"/healthz": "healthz", "/readyz": "readyz"}  # path: metrics label
_KEEPALIVE_FRAME = b"\x00\x00\x00\x00"


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
    # Every token accepted (default: access_token alone); the first is the main one.
    access_tokens: list[str] | None = None
    # Where `reload_tokens` (SIGHUP) reads the accepted tokens again, if anywhere.
    token_source: Callable[[], list[str]] | None = None
    body_timeout_s: float = L.REQUEST_BODY_TIMEOUT_S
    # Prompt ACKs for clients that leave Nagle on (Deno): see tcp.py.
    quickack: bool = True
    console: str = DEFAULT_MODE  # "read-write", "read-only" or "off" (denokv.console)
    # A worker process: every route but the KV calls and the probes goes to the
    # main process here, and the probes add what the main process reports.
    relay_path: str | None = None
    main_health: MainHealth | None = None


class KvServer:
    """Binds an engine to the HTTP routes: `__rsgi__` (granian) or `app` (ASGI)."""

    def __init__(self, engine: Engine, config: ServerConfig) -> None:
        self.engine = engine
        self.config = config
        self.auth = Authenticator(config.access_tokens or [config.access_token])
        self.closing = False
        # The parts that report metrics, readiness and status; the shipper or the
        # follower add themselves when they run beside the server.
        self.components: list[Component] = engine.components()
        self.metrics = Metrics(self.components, cache=engine.read_cache)
        self.observe = self.metrics.observe
        self.body_policy = BodyPolicy(config.body_timeout_s)
        self.nudger = AckNudger() if config.quickack else None
        if self.nudger is not None:
            self.components.append(self.nudger)
        self.log = log
        self.unary = unary = UnaryCalls(self)
        self.routes: dict[str, KvRoute] = {
            "/": KvRoute("metadata", unary.metadata),
            "/v2/snapshot_read": KvRoute("snapshot_read", unary.snapshot_read),
            "/v2/atomic_write": KvRoute("atomic_write", unary.atomic_write),
            "/v2/watch": KvRoute("watch", self.watch),
        }
        # Where the metadata sends strong calls (a replica with a primary, and each of
        # its worker processes), so every process of one server answers them alike.
        if any(e.url == STRONG_PREFIX for e in config.endpoints):
            self.routes["/strong/v2/snapshot_read"] = KvRoute(
                "strong_snapshot_read", unary.forward_snapshot_read
            )
            self.routes["/strong/v2/atomic_write"] = KvRoute("atomic_write", unary.atomic_write)
            self.routes["/strong/v2/watch"] = KvRoute("watch", self.watch)
        self.console = console_app(self, config.console)
        self.relay = Relay(config.relay_path) if config.relay_path else None
        self.operations = self._framework_app()  # /healthz, /readyz, /metrics (Starlette)
        self.framework = self._framework
        self.__rsgi__ = RsgiFront(self)
        self.app = AsgiFront(self)

    def _framework_app(self) -> Starlette:
        routes = [
            Route("/healthz", healthz_handler(self.fatal_problem), methods=["GET"]),
            Route("/readyz", readyz_handler(self.problems), methods=["GET"]),
        ]
        if self.config.metrics_on_main_port:
            routes.append(Route("/metrics", metrics_handler(self.metrics), methods=["GET"]))
        # Errors in these routes take the same ladder as the KV routes: the
        # handler for Exception (Starlette's 500) logs the traceback, once.
        handlers: dict[Any, Any] = {
            exc: _framework_error
            for exc in (HttpError, EngineUnavailable, WriteError, ClientGone, Exception)
        }
        handlers.update({404: _not_found, 405: _method_not_allowed})
        return Starlette(routes=routes, exception_handlers=handlers)

    async def _framework(self, scope: Any, receive: Any, send: Any) -> None:
        """Every request that is not a KV call: the console, or the operations routes."""
        path = scope.get("path", "")
        if path in PROBES:  # answered here, in a worker too: a probe costs no hop
            await self._counted(PROBES[path], self.operations, scope, receive, send)
            return
        if self.relay is not None and scope.get("type") == "http":  # a worker's other routes
            await self._counted("relayed", self.relay, scope, receive, send)
            return
        if self.console is not None and path.startswith("/console"):
            await self.console(scope, receive, send)
            return
        await self.operations(scope, receive, send)

    async def _counted(self, name: str, app: Any, scope: Any, receive: Any, send: Any) -> None:
        """Run an ASGI app for this request and count it under `name` with its status."""
        started = time.perf_counter()
        status = 0

        async def counting_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, counting_send)
        finally:
            self.observe(name, status, time.perf_counter() - started)

    def problems(self) -> list[str]:
        """Why the server should not take traffic now (empty: ready)."""
        found = []
        if self.closing:
            found.append("shutting down")
        if self.engine.closed:
            found.append("database closed")
        if self.config.main_health is not None:
            found += self.config.main_health.problems()
        return found + problems(self.components)

    def fatal_problem(self) -> str | None:
        """What keeps this process from ever serving writes again, if anything."""
        writer = self.engine.writer
        if writer is not None and not writer.alive:
            return f"the writer stopped ({writer.stopped})"
        if self.config.main_health is not None:
            return self.config.main_health.fatal()
        return None

    def begin_shutdown(self) -> None:
        """Stop taking new requests and end watch streams; writes in flight still finish."""
        self.closing = True
        self.engine.watches.wake_all()

    def reload_tokens(self) -> None:
        """Read the accepted access tokens again (SIGHUP); keep the old ones on failure."""
        source = self.config.token_source
        if source is None:
            log.info("SIGHUP: no --access-token-file to reload; tokens unchanged")
            return
        try:
            tokens = source()
            self.auth.replace_tokens(tokens)
        except (OSError, ValueError) as exc:
            log.error("SIGHUP: could not reload the access tokens, keeping the old ones: %s", exc)
            return
        log.info("SIGHUP: access tokens reloaded (%d accepted)", len(tokens))

    def admit(self, headers: Any) -> None:
        """The checks every data-path call passes before its body is read."""
        if self.closing:
            raise HttpError(503, T.UNAVAILABLE)
        self.auth.check_data_path(headers)
        not_ready = self.config.not_ready
        if not_ready is not None and (reason := not_ready()):
            raise HttpError(503, reason)

    # -- watch ----------------------------------------------------------------------

    async def watch(self, request: Incoming) -> Stream:
        self.admit(request.headers)
        keys = convert.watch_keys(parse_message(pb.Watch(), await request.body()))
        # Subscribe before the first read so no commit slips between the two.
        subscription = self.engine.watch(keys)
        return Stream(OCTETS, self._watch_frames(keys, subscription))

    async def _watch_frames(
        self, keys: list[bytes], subscription: Subscription
    ) -> AsyncGenerator[bytes, None]:
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


def _frame(payload: bytes) -> bytes:
    return struct.pack("<I", len(payload)) + payload


async def _framework_error(request: Request, exc: Exception) -> Response:
    reply = error_reply(exc, request.url.path)
    if reply is None:  # the client is gone: this answer is never delivered
        return Response(status_code=400)
    status, content_type, body = reply
    return Response(body, status, media_type=content_type)


async def _not_found(request: Request, exc: HTTPException) -> Response:
    return PlainTextResponse(T.NOT_FOUND, 404)


async def _method_not_allowed(request: Request, exc: HTTPException) -> Response:
    return Response(status_code=405, headers=dict(exc.headers or {}))
